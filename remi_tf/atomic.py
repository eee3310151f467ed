"""Outputs that appear whole or not at all: write to a temporary name, then rename.

Paths may be local or on any TensorFlow file system (`gs://`, `hdfs://`, ...; through tf.io.gfile). A
local directory is renamed into place in one step. Object stores cannot rename a directory at once, so
there the files are moved one by one with the completion marker (`manifest.json`) last: a directory
without it is incomplete.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from typing import Callable, Sequence

import tensorflow as tf

COMPLETION_MARKERS = ("manifest.json",)


def is_remote(path: str) -> bool:
    """True for a URL of a TensorFlow file system (`gs://...`), False for a local path."""
    return "://" in path


def absolute(path: str) -> str:
    """The absolute form of a local path; URLs as they are."""
    return path if is_remote(path) else os.path.abspath(path)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replaces `path` with `text` in one rename, creating its directory when missing."""
    path = absolute(os.fspath(path))
    tf.io.gfile.makedirs(os.path.dirname(path))
    tmp_path = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp_path, "w") as stream:
        stream.write(text)
    tf.io.gfile.rename(tmp_path, path, overwrite=True)


def write_json(path: str | os.PathLike, value: object) -> None:
    write_text(path, json.dumps(value, indent=2))


def read_json(path: str) -> object:
    with tf.io.gfile.GFile(path) as stream:
        return json.load(stream)


def publish_directory(build: Callable[[str], None], output_dir: str, overwrite: bool = False,
                      last: Sequence[str] = COMPLETION_MARKERS) -> str:
    """Runs `build(tmp_dir)` in a hidden sibling of `output_dir` and moves it to `output_dir` only if it
    succeeds; a failure leaves neither a partial output nor the temporary directory.

    Returns:
      The absolute output directory.
    """
    output_dir = absolute(output_dir).rstrip("/")
    if tf.io.gfile.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; remove it or pass --overwrite")
    parent, name = os.path.split(output_dir)
    tf.io.gfile.makedirs(parent)
    if is_remote(output_dir):
        tmp_dir = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
        tf.io.gfile.makedirs(tmp_dir)
    else:
        tmp_dir = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        build(tmp_dir)
        if tf.io.gfile.exists(output_dir):
            tf.io.gfile.rmtree(output_dir)
        if is_remote(output_dir):
            _move_files(tmp_dir, output_dir, last)
        else:
            os.replace(tmp_dir, output_dir)
    finally:
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
    return output_dir


def _move_files(source: str, target: str, last: Sequence[str]) -> None:
    """Moves every file below `source` to the same place below `target`; top-level files named in `last`
    go last."""
    files = [os.path.join(directory, name)[len(source) + 1:]
             for directory, _, names in tf.io.gfile.walk(source) for name in names]
    for relative in sorted(files, key=lambda path: (path in last, path)):
        tf.io.gfile.makedirs(os.path.dirname(os.path.join(target, relative)))
        tf.io.gfile.rename(os.path.join(source, relative), os.path.join(target, relative))
