"""Outputs that appear whole or not at all: write to a temporary name, then rename.

Paths may be local or on any TensorFlow file system (`gs://`, `hdfs://`, ...; through tf.io.gfile). A
local directory is renamed into place in one step. Object stores cannot rename a directory at once, so
there the files are moved one by one with the caller's completion markers last (a data directory's
`manifest.json`, remi_tf.data_directory.publish): a directory without them is incomplete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

logger = logging.getLogger(__name__)


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


def read_json(path: str) -> Any:
    """A JSON file's value (dicts, lists, str, numbers: the caller knows which shape it wrote)."""
    with tf.io.gfile.GFile(path) as stream:
        return json.load(stream)


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def publish_directory(build: Callable[[str], None], output_dir: str, overwrite: bool = False,
                      last: Sequence[str] = ()) -> str:
    """Runs `build(tmp_dir)` in a hidden sibling of `output_dir` and moves it to `output_dir` only if it
    succeeds; a failure leaves neither a partial output nor the temporary directory. With `overwrite`, a
    local output is replaced by renames (old aside, new in, then the old deleted), so a kill at any point
    leaves the old or the new data set whole. Temporaries of earlier runs of the same output whose
    process is gone are removed first (and an old output set aside by a killed run is put back). `last`:
    top-level file names moved after all others on an object store (the directory's completion markers).

    Returns:
      The absolute output directory.
    """
    output_dir = absolute(output_dir).rstrip("/")
    parent, name = os.path.split(output_dir)
    check_output(output_dir, overwrite)
    tf.io.gfile.makedirs(parent)
    if is_remote(output_dir):
        tmp_dir = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
        tf.io.gfile.makedirs(tmp_dir)
    else:
        tmp_dir = tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=parent)
        os.chmod(tmp_dir, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide it from other users (TF Serving)
    try:
        build(tmp_dir)
        if is_remote(output_dir):
            if tf.io.gfile.exists(output_dir):
                tf.io.gfile.rmtree(output_dir)
            _move_files(tmp_dir, output_dir, last)
        else:
            _replace_local(tmp_dir, output_dir)
    finally:
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
    return output_dir


def check_output(output_dir: str, overwrite: bool) -> None:
    """What a command that publishes `output_dir` checks before it reads any input: the temporaries that killed
    runs of the same output left beside it are swept (sweep_stale, a local output), and an existing output
    without `overwrite` is refused."""
    output_dir = absolute(output_dir).rstrip("/")
    if not is_remote(output_dir):
        sweep_stale(*os.path.split(output_dir))
    if tf.io.gfile.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; remove it or pass --overwrite")


def _replace_local(new_dir: str, output_dir: str) -> None:
    """Renames `new_dir` to `output_dir`, an existing one set aside first and deleted last."""
    if not os.path.exists(output_dir):
        os.replace(new_dir, output_dir)
        return
    parent, name = os.path.split(output_dir)
    aside = os.path.join(parent, f".{name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.replace(output_dir, aside)
    os.replace(new_dir, output_dir)
    tf.io.gfile.rmtree(aside)


def sweep_stale(parent: str, name: str | None = None) -> None:
    """Removes `.NAME.tmp-PID-*`, `.NAME.old-PID-*` and `.NAME.spill-PID-*` (a bounded prepare's buckets) in
    `parent` left by runs whose process PID is gone (killed; with `name` None: those of any name), saying so;
    an old output set aside by such a run goes back in place when the output is missing. Those of running
    processes are left alone."""
    if not os.path.isdir(parent):
        return
    for entry in sorted(os.listdir(parent)):
        match = re.fullmatch(r"\.(.+)\.(tmp|old|spill)-(\d+)-.*", entry)
        if match is None or (name is not None and match.group(1) != name) or _is_running(int(match.group(3))):
            continue
        path, output = os.path.join(parent, entry), os.path.join(parent, match.group(1))
        if match.group(2) == "old" and not os.path.exists(output):
            os.replace(path, output)
            logger.info(f"{output}: put back from {entry}, where a killed run (process {match.group(3)}) had set it "
                        "aside")
        else:
            tf.io.gfile.rmtree(path)
            logger.info(f"removed {path}: left by a killed run (process {match.group(3)} is gone)")


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process of this machine can have
        return False
    except PermissionError:
        return True
    return True


def _move_files(source: str, target: str, last: Sequence[str]) -> None:
    """Moves every file below `source` to the same place below `target`; top-level files named in `last`
    go last."""
    files = [os.path.join(directory, name)[len(source) + 1:]
             for directory, _, names in tf.io.gfile.walk(source) for name in names]
    for relative in sorted(files, key=lambda path: (path in last, path)):
        tf.io.gfile.makedirs(os.path.dirname(os.path.join(target, relative)))
        tf.io.gfile.rename(os.path.join(source, relative), os.path.join(target, relative))
