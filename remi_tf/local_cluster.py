"""A training cluster of processes on 127.0.0.1, for development, tests and trying the README's commands.

`remi train --local-cluster workers=2,ps=2 ...` starts one process per task, each with its `TF_CONFIG`,
prefixes and streams their output, and stops every process it started when the chief ends, when any
task fails, or when the wait runs out. On real machines, run one `remi train` per machine with its own
`TF_CONFIG` instead (Kubernetes operators and managed training services set it).

Clusters: `workers=N` (no ps) -> N multi-worker tasks, worker 0 is the chief;
`workers=N,ps=M` -> a chief (the coordinator) + N workers + M parameter servers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
STOP_GRACE_S = 10.0
PARENT_ENV = "REMI_LOCAL_CLUSTER_PARENT"  # the process id of the LocalCluster that started a task
PARENT_POLL_S = 1.0


class ClusterShape(NamedTuple):
    workers: int
    ps: int


def parse_shape(text: str) -> ClusterShape:
    """`workers=2,ps=2` -> ClusterShape(2, 2); ps defaults to 0."""
    values = {"workers": 0, "ps": 0}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in values or not value.strip().isdigit():
            raise ValueError(f"--local-cluster expects workers=N[,ps=M], got {text!r}")
        values[key.strip()] = int(value)
    if not values["workers"]:
        raise ValueError(f"--local-cluster needs workers >= 1, got {text!r}")
    return ClusterShape(values["workers"], values["ps"])


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Ports on `host` that were free a moment ago (bound together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cluster_spec(shape: ClusterShape) -> dict[str, list[str]]:
    """Jobs -> addresses on free local ports."""
    jobs = [("worker", shape.workers)] if not shape.ps else [("chief", 1), ("worker", shape.workers), ("ps", shape.ps)]
    ports = iter(free_ports(sum(count for _, count in jobs)))
    return {job: [f"{HOST}:{next(ports)}" for _ in range(count)] for job, count in jobs}


def tasks_of(cluster: Mapping[str, Sequence[str]]) -> list[tuple[str, int]]:
    """(type, index) of every task, the chief (or worker 0) first."""
    return [(job, index) for job in ("chief", "worker", "ps") for index in range(len(cluster.get(job, ())))]


class LocalCluster:
    """Runs `command` once per task of `cluster` with its TF_CONFIG; use as a context manager, so that every
    process is stopped (by its process group) also on failure."""

    def __init__(self, cluster: Mapping[str, Sequence[str]], command: Sequence[str],
                 env: Mapping[str, str] | None = None, output=None) -> None:
        self.cluster = {job: list(addresses) for job, addresses in cluster.items()}
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.output = output or sys.stdout
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}
        self._pumps: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def chief(self) -> tuple[str, int]:
        return tasks_of(self.cluster)[0]

    def __enter__(self) -> LocalCluster:
        for task in tasks_of(self.cluster):
            self.start_task(task)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start_task(self, task: tuple[str, int]) -> subprocess.Popen:
        """Starts (or restarts) one task."""
        job, index = task
        env = {**self.env, "TF_CONFIG": json.dumps({"cluster": self.cluster, "task": {"type": job, "index": index}}),
               "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
        process = subprocess.Popen(self.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[task] = process
        pump = threading.Thread(target=self._pump, args=(f"[{job}:{index}] ", process), daemon=True)
        pump.start()
        self._pumps.append(pump)
        return process

    def _pump(self, prefix: str, process: subprocess.Popen) -> None:
        assert process.stdout is not None  # started with stdout=PIPE
        for line in iter(process.stdout.readline, b""):
            text = line.decode("utf-8", "replace").rstrip("\r\n").split("\r")[-1]
            with self._lock:
                self.output.write(prefix + text + "\n")
                self.output.flush()

    def wait(self, timeout_s: float) -> int:
        """Waits for the chief to end; a failing task or the timeout ends the wait first.

        Returns:
          The chief's exit status, the first failing task's, or 124 on timeout.
        """
        deadline = time.monotonic() + timeout_s
        chief = self.processes[self.chief]
        while time.monotonic() < deadline:
            if chief.poll() is not None:
                return chief.returncode
            for (job, index), process in self.processes.items():
                if process.poll() not in (None, 0):
                    self.output.write(f"[local-cluster] {job}:{index} exited with status {process.returncode}; "
                                      "stopping the cluster\n")
                    return process.returncode
            time.sleep(0.2)
        self.output.write(f"[local-cluster] the chief did not finish within {timeout_s:.0f} s; stopping the cluster\n")
        return 124

    def stop(self) -> None:
        """Stops every task still running: SIGTERM to its process group, SIGKILL after a grace period."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(STOP_GRACE_S)
        for pump in self._pumps:
            pump.join(STOP_GRACE_S)


def follow_parent(poll_s: float = PARENT_POLL_S) -> None:
    """In a task a LocalCluster started (PARENT_ENV set): end this process (SIGTERM) once that cluster's process is
    gone. Each task runs in a session of its own, so a cluster killed before `stop` (SIGKILL, or a SIGTERM that
    skips its finally) would otherwise leave its parameter servers serving forever."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None or not parent.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass


def shared_cores_env(num_tasks: int, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` with each multi-worker task's TensorFlow op thread pools sized to its share of the cores.

    TensorFlow sizes both pools to all cores in every process; N tasks on one machine then run N times
    as many threads as cores, and collectives wait on descheduled threads (2 workers on 2 cores: 3,880
    examples/s with default pools, 4,728 with one thread each). Parameter-server clusters keep TF's
    pools: with one inter-op thread per task their training stalled. Settings already in `env` are kept.
    """
    env = dict(os.environ if env is None else env)
    threads = str(max(1, (os.cpu_count() or 1) // num_tasks))
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        env.setdefault(name, threads)
    return env


def run(shape: ClusterShape, command: Sequence[str], timeout_s: float) -> int:
    """Runs `command` as every task of a local cluster of `shape` until the chief ends; returns its status."""
    cluster = cluster_spec(shape)
    logger.info("[local-cluster] %s", json.dumps(cluster))
    env = dict(os.environ) if shape.ps else shared_cores_env(len(tasks_of(cluster)))
    with LocalCluster(cluster, command, env=env) as local:
        return local.wait(timeout_s)
