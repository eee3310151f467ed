"""Outputs that appear whole or not at all: write to a temporary name, then rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replaces `path` with `text` in one rename, creating its directory when missing."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(tmp_path, path)


def write_json(path: str | os.PathLike, value: object) -> None:
    write_text(path, json.dumps(value, indent=2))


def publish_directory(build: Callable[[str], None], output_dir: str, overwrite: bool = False) -> str:
    """Runs `build(tmp_dir)` in a hidden sibling of `output_dir` and renames it to `output_dir` only if it
    succeeds; a failure leaves neither a partial output nor the temporary directory.

    Returns:
      The absolute output directory.
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; remove it or pass --overwrite")
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
    try:
        build(tmp_dir)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(tmp_dir, output_dir)
    finally:
        if os.path.exists(tmp_dir):
            shutil.rmtree(tmp_dir)
    return output_dir
