"""Two training steps of a RemiModel on a fixed global batch, under a chosen strategy; writes the loss and
the updated weights (SGD, learning rate 1: the update is minus the gradient), and the streaming logQ
estimator's state, to an .npz file.

Run by tests/remi_tf/test_distribute.py in fresh processes (logical devices must be set before TensorFlow
starts):
  python -m tests.remi_tf.distributed_step --strategy one-device --output ref.npz
  python -m tests.remi_tf.distributed_step --strategy mirrored --replicas 2 --output mirrored.npz
  TF_CONFIG=... python -m tests.remi_tf.distributed_step --strategy multi-worker --output w.npz
"""

from __future__ import annotations

import argparse

import numpy as np

from tests.configs import remi_config
import remi_tf  # noqa: F401  (legacy Keras)
import tensorflow as tf

from remi_tf import distribute, item_index, models
from remi_tf.feature_tables import FeatureTable
from remi_tf.optimizers import LazyAdam

VOCABULARY_SIZE, GLOBAL_BATCH, HISTORY = 40, 16, 6


ITEM_FEATURES = FeatureTable([f"item{i}" for i in range(VOCABULARY_SIZE)],
                             {"category": [f"c{i % 5}" + ("|c9" if i % 7 == 0 else "") for i in range(VOCABULARY_SIZE)]})
USER_VOCABULARIES = {"segment": ["s0", "s1", "s2"], "age": ["20", "30"]}


def global_batch(side_features: bool = False) -> dict[str, np.ndarray]:
    """A fixed batch whose targets repeat across the halves (accidental hits that cross replicas); with
    side features, each row's raw profile values (an unknown value and a two-value list among them)."""
    rng = np.random.default_rng(7)
    history = rng.integers(item_index.FIRST_ITEM_INDEX, VOCABULARY_SIZE + 2, size=(GLOBAL_BATCH, HISTORY))
    history[::3, 4:] = 0  # some padding
    target = rng.integers(item_index.FIRST_ITEM_INDEX, 14, size=GLOBAL_BATCH)  # few distinct ids: repeats
    target[GLOBAL_BATCH // 2] = target[0]
    batch = {"history": history.astype(np.int64), "target": target.astype(np.int64)}
    if side_features:
        segments = rng.choice(["s0", "s1", "s2", "s1|s2", "unknown"], size=GLOBAL_BATCH)
        ages = rng.choice(["20", "30", ""], size=GLOBAL_BATCH)
        batch["user_features"] = np.stack([segments, ages], axis=-1).astype(bytes)
    return batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--replicas", type=int, default=1, help="logical CPU devices (mirrored)")
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--logq", default="counts", help="logq_correction: counts or streaming")
    parser.add_argument("--optimizer", default="sgd", help="sgd (learning rate 1: the update is minus the "
                        "gradient) or lazy_adam (epsilon 1: the update is smooth in the gradient)")
    parser.add_argument("--side-features", action="store_true", help="item categories and user profiles")
    parser.add_argument("--sasrec", action="store_true", help="encoder sasrec trained on every position (no dropout)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    if args.replicas > 1:
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * args.replicas)
    cluster = distribute.read_cluster()
    strategy = distribute.make_strategy(args.strategy, cluster, VOCABULARY_SIZE + 2, timeout_s=60)
    config = remi_config(embedding_dim=8, num_interests=3, max_history=HISTORY, batch_size=GLOBAL_BATCH,
                        beta=args.beta, routing_lambda=50.0, steps_per_execution=1, logq_correction=args.logq,
                        logq_buckets=64, logq_alpha=0.5)
    if args.sasrec:
        config = config.replace(encoder="sasrec", routing="last_position", num_interests=1, training_positions="every",
                                encoder_heads=2, encoder_dropout=0.0).validate()
    q = np.random.default_rng(3).uniform(0.5, 1.5, VOCABULARY_SIZE + 2)
    with strategy.scope():
        model = models.RemiModel(config, VOCABULARY_SIZE, q / q.sum(), [f"item{i}" for i in range(VOCABULARY_SIZE)],
                                 *((ITEM_FEATURES, USER_VOCABULARIES) if args.side_features else ()))
        rng = np.random.default_rng(0)
        initial = [rng.normal(0, 0.5, weight.shape).astype(np.float32) for weight in model.trainable_weights]
        for weight, value in zip(model.trainable_weights, initial):
            weight.assign(value)
        optimizer = tf.keras.optimizers.SGD(learning_rate=1.0) if args.optimizer == "sgd" else \
            LazyAdam(learning_rate=0.1, epsilon=1.0)
        model.compile(optimizer=optimizer, steps_per_execution=1)
    batch = global_batch(args.side_features)
    if args.sasrec:  # the first replica's rows hold fewer positions than the second's
        batch["history"][1, 2:] = 0
    num_replicas = strategy.num_replicas_in_sync

    def replica_batches(context: tf.distribute.InputContext) -> tf.data.Dataset:
        """This input pipeline's replicas' rows, replica by replica: replica r gets rows [r*b, (r+1)*b)."""
        per_replica = GLOBAL_BATCH // num_replicas
        per_pipeline = num_replicas // context.num_input_pipelines
        first = context.input_pipeline_id * per_pipeline * per_replica
        rows = {key: value[first:first + per_pipeline * per_replica] for key, value in batch.items()}
        return tf.data.Dataset.from_tensor_slices(rows).batch(per_replica).repeat()

    history = model.fit(tf.keras.utils.experimental.DatasetCreator(replica_batches), epochs=1, steps_per_epoch=2,
                        verbose=0)  # two steps: the streaming estimator's second reads its first's state
    table_reads = dense_table_reads(strategy, model, replica_batches)
    estimator = model.frequency_estimator
    state = {} if estimator is None else {f"estimator_{w.name.split('/')[-1].split(':')[0]}": w.numpy()
                                          for w in estimator.weights}
    cluster = distribute.read_cluster()
    if cluster is None or cluster.is_chief():
        np.savez(args.output, loss=history.history["loss"][0],
                 retrieval_loss=history.history["retrieval_loss"][0], table_reads=table_reads, **state,
                 **{f"w{i}": w.numpy() for i, w in enumerate(model.trainable_weights)},
                 **{f"initial{i}": value for i, value in enumerate(initial)})


def dense_table_reads(strategy: tf.distribute.Strategy, model: models.RemiModel, replica_batches) -> int:
    """ReadVariableOps that read a whole [rows, d] table (item table or optimizer slot) in a traced
    training step: each one copies the table once it has had sparse updates."""
    batches = strategy.distribute_datasets_from_function(replica_batches)
    step = tf.function(lambda batch: strategy.run(model.train_step, (batch,)))
    graph = step.get_concrete_function(next(iter(batches))).graph
    table_shape = model.item_embedding.embeddings.shape
    reads = [op for op in graph.get_operations() if op.type == "ReadVariableOp" and op.outputs[0].shape == table_shape]
    nested = [node for function in graph._functions.values() for node in function.definition.node_def
              if node.op == "ReadVariableOp"]  # control flow bodies (none expected)
    return len(reads) + len(nested)


if __name__ == "__main__":
    main()
