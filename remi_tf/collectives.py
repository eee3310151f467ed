"""The collectives of a training step across replicas: cross-replica candidates, the gradients summed in
one all-gather, replica-local variables, and the chief's decisions on every worker (cluster control is
remi_tf.distribute).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


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
