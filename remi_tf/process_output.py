"""The lines a child process prints, read with a deadline (the tests and benchmarks that start `remi serve`).

Reads the pipe's file descriptor itself: a buffered `readline()` after `select()` can leave lines that arrived
together in Python's buffer, where `select()` no longer sees them, and wait for the deadline instead.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import IO


def read_lines(stream: IO, until: Callable[[list[str]], bool], timeout_s: float) -> list[str]:
    """Lines of `stream` (a child's stdout pipe, not read before) until `until(lines)` holds; TimeoutError when
    the child closes it or `timeout_s` passes first. Bytes after the last line returned are dropped."""
    descriptor, pending = stream.fileno(), b""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while not until(lines):
        if b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            lines.append(line.decode(errors="replace") + "\n")
            continue
        ready, _, _ = select.select([descriptor], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(descriptor, 65536) if ready else b""
        if not chunk:
            raise TimeoutError(f"{'output ended' if ready else f'no line in {timeout_s:g} s'} after {lines}")
        pending += chunk
    return lines
