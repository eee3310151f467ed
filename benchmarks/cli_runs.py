"""`remi` commands in fresh processes, as a user runs them: the benchmarks' shared runner."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Iterator, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}


def remi(*args: str, timeout: float = 7200) -> float:
    """Runs `remi ARGS`; returns its wall seconds (raises with the output's tail on failure)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "remi", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"remi {' '.join(args)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - start


@contextlib.contextmanager
def remi_serve(export_dir: str, *options: str, program: Sequence[str] | None = None, stdout: int = subprocess.DEVNULL
               ) -> Iterator[tuple[subprocess.Popen, int, int]]:
    """`remi serve --export-dir EXPORT_DIR OPTIONS` on free 127.0.0.1 ports, as a subprocess:
    (process, REST port, gRPC port), not yet necessarily answering; stopped by pid on exit, also on failure.
    `program`: what runs instead of `-m remi serve` (a script and its arguments taking remi serve's flags);
    `stdout`: subprocess.PIPE to read its lines (serving_lines)."""
    from remi_tf.local_cluster import free_ports

    port, grpc_port = free_ports(2)
    server = subprocess.Popen([sys.executable, *(program or ("-m", "remi", "serve")), "--export-dir", export_dir,
                               "--port", str(port), "--grpc-port", str(grpc_port), *options], env=ENV,
                              stdout=stdout, stderr=subprocess.DEVNULL, text=True)
    try:
        yield server, port, grpc_port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def serving_lines(server: subprocess.Popen, count: int, timeout_s: float = 300.0) -> None:
    """Waits until `server` (started with stdout=PIPE) has printed `count` lines starting "serving" (one per
    process of `remi serve --workers N`: each has loaded its models); raises after `timeout_s`."""
    from remi_tf.process_output import read_lines

    try:
        read_lines(server.stdout, lambda lines: sum(line.startswith("serving") for line in lines) >= count, timeout_s)
    except TimeoutError as error:
        raise TimeoutError(f"remi serve printed fewer than {count} 'serving' lines (exit status {server.poll()}): "
                           f"{error}") from None


def resident_gib(pid: int) -> float | None:
    """The resident memory of process `pid` in GiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as stream:
            return next(int(line.split()[1]) for line in stream if line.startswith("VmRSS")) / 2 ** 20
    except (OSError, StopIteration):
        return None
