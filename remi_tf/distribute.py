"""tf.distribute for training: the cluster from TF_CONFIG, the strategy, the chief, cross-replica candidates.

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


def broadcast_from_chief(strategy: tf.distribute.Strategy, values: Sequence[bool], chief: bool) -> list[bool]:
    """Under multi-worker training, the chief's `values` on every worker (one all-reduce); else `values`."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return list(values)
    mine = tf.constant([float(v) if chief else 0.0 for v in values])

    def chief_replica_only(context: tf.distribute.ValueContext) -> tf.Tensor:
        return mine if context.replica_id_in_sync_group == 0 else tf.zeros_like(mine)

    values = strategy.experimental_distribute_values_from_function(chief_replica_only)
    shared = strategy.reduce("SUM", values, axis=None)
    return [bool(v > 0.5) for v in shared.numpy()]


def worker_temp_dir(model_dir: str) -> str:
    """A directory of this (non-chief) task's own, for writes that every worker must make."""
    cluster = read_cluster()
    suffix = "" if cluster is None else f"{cluster.task_type}_{cluster.task_index}"
    return os.path.join(model_dir, f".workertemp_{suffix}")


def gathers_candidates(context: tf.distribute.ReplicaContext | None) -> bool:
    """True where replicas train one synchronous global batch (mirrored strategies with several replicas)."""
    if context is None or context.num_replicas_in_sync <= 1:
        return False
    return not isinstance(context.strategy, tf.distribute.experimental.ParameterServerStrategy)


def gather_candidate_ids(context: tf.distribute.ReplicaContext, ids: tf.Tensor) -> tf.Tensor:
    """Every replica's positive ids as this replica's candidates, its own first.

    Replica r holds rows [r*b, (r+1)*b) of the global batch. The gathered [R*b] ids are rotated by r*b,
    so that column i is still row i's positive and the task needs no offset; the other replicas'
    positives follow in a fixed cyclic order. Each replica embeds all R*b candidates itself: its loss
    then reaches every candidate's row, and the gradients summed over replicas (as the optimizer sums
    them) are the one-process gradients, with one integer collective per step and none in the backward
    pass. The ids travel in one all-reduce of an [R, b] matrix in which each replica fills its own row
    (an all-gather is two collectives, the shapes and then the values); every replica must have b rows,
    as the training input gives.

    Args:
      ids: [b] this replica's positive ids.

    Returns:
      [R*b] ids.
    """
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    own_row = tf.scatter_nd([[replica]], ids[tf.newaxis], [context.num_replicas_in_sync, tf.shape(ids)[0]])
    all_ids = tf.reshape(context.all_reduce(tf.distribute.ReduceOp.SUM, _placed(context, own_row)), [-1])
    shift = -tf.cast(context.replica_id_in_sync_group, tf.int32) * tf.shape(ids)[0]
    return tf.roll(all_ids, shift, axis=0)


def sum_gradients(context: tf.distribute.ReplicaContext, gradients: Sequence[tf.Tensor | tf.IndexedSlices | None],
                  extra: tf.Tensor, varying_rows: Sequence[bool] | None = None
                  ) -> tuple[list[tf.Tensor | tf.IndexedSlices | None], tf.Tensor]:
    """The gradients, and a small `extra` vector, summed over the replicas in one all-gather.

    The optimizer's own aggregation makes one collective per pack of dense gradients and three per
    sparse one (lengths, values, indices), and Keras all-reduces each logged metric every step; across
    processes each is a round trip. Here every replica's gradients travel as one flat float32 vector: a
    sparse gradient's values [n, d] with its indices bitcast into two more columns, then the dense
    gradients, then `extra` (e.g. the loss terms the trackers report). Dense parts are summed on
    arrival; sparse ones are concatenated (the optimizer sums repeated rows when it de-duplicates).
    Every replica's gradients must have the same shapes: equal per-replica batches, as the training
    input gives. A sparse gradient whose number of rows differs between replicas (`varying_rows`: a side
    feature's table, where each row of the batch lists its own number of values) travels dense, with a
    count per table row, and comes back as the IndexedSlices of the rows some replica touched (what one
    process's de-duplicated gradient holds).

    Args:
      gradients: per variable, this replica's gradient (dense, IndexedSlices with static d, or None).
      extra: [m] float32, this replica's share of values to sum.
      varying_rows: per variable, whether its sparse gradient's row count may differ between replicas.

    Returns:
      The summed gradients, in the same structure, and [m] the summed `extra`.
    """
    varying_rows = varying_rows or [False] * len(gradients)
    pieces = []
    for gradient, varying in zip(gradients, varying_rows, strict=True):
        if isinstance(gradient, tf.IndexedSlices) and varying:
            rows = tf.cast(gradient.dense_shape[0], tf.int32)
            dense = tf.math.unsorted_segment_sum(gradient.values, gradient.indices, rows)  # [rows, d]
            touched = tf.math.unsorted_segment_sum(tf.ones_like(gradient.indices, tf.float32), gradient.indices, rows)
            pieces.append(tf.concat([tf.reshape(dense, [-1]), touched], axis=0))
        elif isinstance(gradient, tf.IndexedSlices):
            index_bits = tf.bitcast(tf.cast(gradient.indices, tf.int64), tf.float32)  # [n, 2]
            pieces.append(tf.reshape(tf.concat([gradient.values, index_bits], axis=1), [-1]))
        elif gradient is not None:
            pieces.append(tf.reshape(gradient, [-1]))
    pieces.append(tf.cast(extra, tf.float32))
    gathered = context.all_gather(_placed(context, tf.concat(pieces, axis=0)), axis=0)
    per_replica = tf.split(tf.reshape(gathered, [context.num_replicas_in_sync, -1]),
                           [tf.size(piece) for piece in pieces], axis=1)  # each [R, size]
    summed, parts = [], iter(per_replica)
    for gradient, varying in zip(gradients, varying_rows, strict=True):
        if isinstance(gradient, tf.IndexedSlices) and varying:
            rows = tf.cast(gradient.dense_shape[0], tf.int32)
            total = tf.reduce_sum(next(parts), axis=0)  # [rows * d + rows]
            dense, touched = tf.reshape(total[:-rows], [-1, gradient.values.shape[-1]]), total[-rows:]
            touched_rows = tf.cast(tf.where(touched > 0)[:, 0], gradient.indices.dtype)
            summed.append(tf.IndexedSlices(tf.gather(dense, touched_rows), touched_rows, gradient.dense_shape))
        elif isinstance(gradient, tf.IndexedSlices):
            width = gradient.values.shape[-1]
            rows = tf.reshape(next(parts), [-1, width + 2])  # every replica's rows, replica after replica
            indices = tf.cast(tf.bitcast(rows[:, width:], tf.int64), gradient.indices.dtype)
            summed.append(tf.IndexedSlices(rows[:, :width], indices, gradient.dense_shape))
        elif gradient is not None:
            summed.append(tf.reshape(tf.reduce_sum(next(parts), axis=0), tf.shape(gradient)))
        else:
            summed.append(None)
    return summed, tf.ensure_shape(tf.cast(tf.reduce_sum(next(parts), axis=0), extra.dtype), extra.shape)


def replica_local(variable: tf.Variable) -> tf.Variable:
    """This replica's own copy of a mirrored variable; any other variable as it is.

    In a replica (or a `Strategy.extended.update`) context a mirrored variable's `handle` is its
    component's; outside one there is no local copy to pick. Reading rows of the component
    (`tf.gather`, `tf.nn.embedding_lookup`) is a ResourceGather; reading the mirrored variable is a dense
    read of the whole table, which TensorFlow copies once the table has had sparse updates.
    """
    if not isinstance(variable, tf.distribute.DistributedValues):
        return variable
    try:
        handle = variable.handle
    except ValueError:  # cross-replica context
        return variable
    return next(component for component in variable.values if component.handle is handle)


def _placed(context: tf.distribute.ReplicaContext, tensor: tf.Tensor) -> tf.Tensor:
    """`tensor` with a device: MultiWorkerMirroredStrategy traces a one-device worker's step without a
    device scope, and its collectives need placed inputs."""
    devices = context.strategy.extended.worker_devices
    if tensor.device or len(devices) != 1:
        return tensor
    with tf.device(devices[0]):
        return tf.identity(tensor)
