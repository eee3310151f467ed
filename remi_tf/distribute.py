"""tf.distribute for training: the cluster from TF_CONFIG, the strategy, the tasks' roles (the collectives
inside a step are remi_tf.collectives).

Every task of a cluster runs the same `remi train` command; its role comes from `TF_CONFIG`, as
TensorFlow's own conventions have it:
  {"cluster": {"chief": ["host:port"], "worker": ["host:port", ...], "ps": ["host:port", ...]},
   "task": {"type": "worker", "index": 1}}
Strategies (config key `strategy`):
  one-device        the default strategy (one process, one device)
  mirrored          MirroredStrategy over this machine's devices (GPUs; CPUs if none)
  multi-worker      MultiWorkerMirroredStrategy: synchronous data parallelism across processes
  parameter-server  ParameterServerStrategy: the chief coordinates, workers run steps asynchronously,
                    the item table and its optimizer slots are sharded across the `ps` tasks
  auto              from TF_CONFIG: `ps` tasks -> parameter-server, several workers -> multi-worker,
                    else one-device
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import tensorflow as tf

from remi_tf.config import STRATEGIES

logger = logging.getLogger(__name__)

TASK_TYPES = ("chief", "worker", "ps", "evaluator")


class ClusterConfig(NamedTuple):
    """The parsed TF_CONFIG: jobs -> task addresses, and this task's type and index."""

    cluster: dict[str, list[str]]
    task_type: str
    task_index: int

    @property
    def num_workers(self) -> int:
        """Tasks that run training steps (a chief counts under multi-worker, where it is worker 0's role)."""
        return len(self.cluster.get("worker", [])) + len(self.cluster.get("chief", []))

    @property
    def num_ps(self) -> int:
        return len(self.cluster.get("ps", []))

    @property
    def address(self) -> str:
        return self.cluster[self.task_type][self.task_index]

    def is_chief(self) -> bool:
        """The chief task, or worker 0 when the cluster has no chief job (TensorFlow's convention)."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def read_cluster(environ: Mapping[str, str] | None = None) -> ClusterConfig | None:
    """Parses and checks `TF_CONFIG`; None when it is unset or names no cluster.

    Raises:
      ValueError naming TF_CONFIG and the offending part.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got {text[:200]!r}")
    cluster = value.get("cluster") or {}
    if not cluster:
        return None
    if not isinstance(cluster, dict):
        raise ValueError(f"TF_CONFIG 'cluster' must map job names to lists of 'host:port', got {cluster!r}")
    for job, addresses in cluster.items():
        if job not in TASK_TYPES:
            raise ValueError(f"TF_CONFIG cluster job {job!r} is not one of {TASK_TYPES}")
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses):
            raise ValueError(f"TF_CONFIG cluster job {job!r} must be a non-empty list of 'host:port', got "
                             f"{addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"TF_CONFIG cluster has {len(cluster['chief'])} chief tasks; at most one")
    task = value.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG 'task' must be {{'type': ..., 'index': ...}}, got {task!r}")
    task_type, task_index = task["type"], task["index"]
    if task_type not in cluster:
        raise ValueError(f"TF_CONFIG task type {task_type!r} is not a job of the cluster {sorted(cluster)}")
    if not isinstance(task_index, int) or not 0 <= task_index < len(cluster[task_type]):
        raise ValueError(f"TF_CONFIG task index {task_index!r} is out of range: job {task_type!r} has "
                         f"{len(cluster[task_type])} task(s)")
    return ClusterConfig({job: list(addresses) for job, addresses in cluster.items()}, task_type, task_index)


def resolve_strategy(requested: str, cluster: ClusterConfig | None) -> str:
    """The strategy to run: `requested`, or for `auto` the one TF_CONFIG's cluster calls for.

    Raises:
      ValueError when the strategy does not match the cluster.
    """
    if requested not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {requested!r}")
    if requested == "auto":
        if cluster is None:
            return "one-device"
        if cluster.num_ps:
            return "parameter-server"
        return "multi-worker" if cluster.num_workers > 1 else "one-device"
    described = "no TF_CONFIG cluster" if cluster is None else f"TF_CONFIG's cluster {cluster.cluster}"
    if requested == "parameter-server":
        if cluster is None or not cluster.num_ps or "chief" not in cluster.cluster or "worker" not in cluster.cluster:
            raise ValueError(f"strategy 'parameter-server' needs a TF_CONFIG cluster with 'chief', 'worker' and 'ps' "
                             f"jobs; found {described}")
    elif cluster is not None and cluster.num_ps:
        raise ValueError(f"strategy {requested!r} does not use the 'ps' tasks of {described}; use 'parameter-server'"
                         " or 'auto'")
    elif requested in ("one-device", "mirrored") and cluster is not None and cluster.num_workers > 1:
        raise ValueError(f"strategy {requested!r} trains in one process, but {described} has "
                         f"{cluster.num_workers} workers; use 'multi-worker' or 'auto'")
    return requested


def item_table_partitioner(num_rows: int, num_shards: int) -> Callable[[tf.TensorShape, tf.DType], list[int]]:
    """A variable partitioner that splits variables of `num_rows` rows (the item table and its optimizer
    slots) into `num_shards` along the rows and keeps every other variable whole."""

    def partition(shape: tf.TensorShape, dtype: tf.DType) -> list[int]:
        shape = tf.TensorShape(shape)
        if shape.rank and shape[0] == num_rows:
            return [min(num_shards, num_rows)] + [1] * (shape.rank - 1)
        return [1] * max(shape.rank or 0, 1)

    return partition


def wait_for_tasks(addresses: Sequence[str], timeout_s: float, what: str) -> None:
    """Waits until every `host:port` accepts TCP connections.

    Raises:
      RuntimeError naming the tasks that did not answer within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = unreachable(addresses)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: no answer from {waiting} within {timeout_s:.0f} s (TF_CONFIG's cluster); "
                               "are those tasks started and reachable?")
        time.sleep(0.5)


def unreachable(addresses: Sequence[str]) -> list[str]:
    """The `host:port`s that refuse a TCP connection now."""
    missing = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
        except OSError:
            missing.append(address)
    return missing


def rendezvous(cluster: ClusterConfig, timeout_s: float) -> None:
    """Waits, for at most `timeout_s`, until every other task of the cluster answers on its port.

    TensorFlow's own start-up waits for absent tasks without a bound (and without releasing Python), so
    each task first listens on its own port, waits for the others' listeners (or their TensorFlow
    servers, for tasks already past this point), and then hands its port to TensorFlow.

    Raises:
      RuntimeError naming the tasks that did not answer.
    """
    port = int(cluster.address.rpartition(":")[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))
    except OSError as error:
        raise RuntimeError(f"this task ({cluster.task_type}:{cluster.task_index}) cannot listen on {cluster.address}, "
                           f"its TF_CONFIG address: {error.strerror}") from None
    listener.listen(64)
    try:
        peers = [address for job in cluster.cluster.values() for address in job if address != cluster.address]
        wait_for_tasks(peers, timeout_s, f"{cluster.task_type}:{cluster.task_index} waiting for its cluster "
                                         f"{cluster.cluster}")
    finally:
        listener.close()


def make_strategy(name: str, cluster: ClusterConfig | None, item_table_rows: int,
                  timeout_s: float) -> tf.distribute.Strategy:
    """The tf.distribute strategy `name` (already resolved) for this task.

    Multi-worker: joins the cluster (every task must answer within `timeout_s`). Parameter servers: the
    chief connects to the workers and ps tasks and shards `item_table_rows`-row variables across the ps.
    """
    if name == "one-device":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if cluster is None:
        raise ValueError(f"strategy {name!r} needs a cluster: set TF_CONFIG (or run `remi train --local-cluster`)")
    if name == "multi-worker":
        rendezvous(cluster, timeout_s)
        # No CommunicationOptions timeout: TensorFlow keeps a thread per collective op for its duration,
        # thousands per minute at our step rates. A lost worker is noticed by the coordination service.
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    wait_for_tasks([a for job in ("worker", "ps") for a in cluster.cluster[job]], timeout_s, "parameter servers")
    partitioner = item_table_partitioner(item_table_rows, cluster.num_ps)
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)


def serve_forever(cluster: ClusterConfig) -> None:
    """A `worker` or `ps` task of parameter-server training: serves the chief's requests until stopped."""
    server = tf.distribute.Server(tf.train.ClusterSpec(cluster.cluster), job_name=cluster.task_type,
                                  task_index=cluster.task_index, protocol="grpc", start=True)
    logger.info("%s:%s serving at %s until stopped", cluster.task_type, cluster.task_index, cluster.address)
    server.join()


def variable_shards(variable: tf.Variable) -> list[dict]:
    """[{"device", "rows"}] of each shard of a (possibly ShardedVariable) table, for run.json."""
    shards = getattr(variable, "variables", [variable])
    return [{"device": shard.device, "rows": int(shard.shape[0])} for shard in shards]


def worker_temp_dir(model_dir: str) -> str:
    """A directory of this (non-chief) task's own, for writes that every worker must make."""
    cluster = read_cluster()
    suffix = "" if cluster is None else f"{cluster.task_type}_{cluster.task_index}"
    return os.path.join(model_dir, f".workertemp_{suffix}")
