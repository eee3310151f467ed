"""`remi serve --workers N`: N server processes sharing the REST and gRPC ports (SO_REUSEPORT).

A Python server's per-request work (parsing, tensor conversion, the response) holds one core per process
(the GIL); more processes answer more requests where cores are left over (BENCHMARKS.md 7.5). Each process
loads every model, polls for new versions and batches its own requests; the kernel spreads new connections
over the processes. Each process's TensorFlow op thread pools are sized to its share of the cores
(local_cluster.shared_cores_env; TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS already set are kept), not
to all of them in every process (BENCHMARKS.md 7.8). This process only starts them, and stops them all when
one ends or it is stopped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from remi_tf import local_cluster

STOP_TIMEOUT_S = 30.0
REMI_COMMAND = (sys.executable, "-m", "remi")  # what each process runs (a benchmark may replace it)


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run(remi_arguments: Sequence[str], workers: int, host: str, port: int, grpc_port: int) -> int:
    """Runs `workers` processes of `remi REMI_ARGUMENTS --workers 1 --port P --grpc-port G --reuse-port` (the
    `remi serve ...` command line as given: the options appended replace its own, argparse keeping the last;
    ports 0: free ones, chosen here) until one of them ends (its exit status is returned) or this process gets
    SIGTERM / Ctrl-C (0); the others are then stopped by pid, killed after STOP_TIMEOUT_S."""
    spare = iter(local_cluster.free_ports(2, host))  # together: two picks in turn may return one port
    port, grpc_port = port or next(spare), grpc_port or next(spare)
    command = [*REMI_COMMAND, *remi_arguments, "--workers", "1", "--port", str(port), "--grpc-port", str(grpc_port),
               "--reuse-port"]
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    processes: list[subprocess.Popen] = []
    try:
        environment = local_cluster.shared_cores_env(workers)
        processes = [subprocess.Popen(command, env=environment) for _ in range(workers)]
        print(f"{workers} server processes (pids {', '.join(str(p.pid) for p in processes)}): REST "
              f"http://{host}:{port}, gRPC {host}:{grpc_port}", flush=True)
        while True:
            for process in processes:
                if process.poll() is not None:
                    return process.returncode
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(processes)
        signal.signal(signal.SIGTERM, previous)
