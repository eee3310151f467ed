"""The training application: a prepared data directory and a config -> a trained model directory.

What `remi train` runs, and what the Python API and the benchmarks call: it reads the cluster (TF_CONFIG),
picks the strategy, checks the model directory and a warm start's parent before anything is written,
builds the input and the model, writes the model directory's run files and trains (remi_tf.train).
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf

from remi_tf import atomic, distribute, item_index, model_directory, models
from remi_tf import input as input_lib
from remi_tf import train as train_lib
from remi_tf import warm_start as warm_start_lib
from remi_tf.config import RemiConfig

logger = logging.getLogger(__name__)


def run(data_dir: str, model_dir: str, config: RemiConfig, warm_start_from: str | None = None,
        verbose: int = 1) -> dict[str, Any] | None:
    """Trains the model of `config` on `data_dir` into `model_dir` (resuming a killed run there), starting
    from the best weights of `warm_start_from` (a model directory) when given.

    In a cluster every task calls it; parameter-server workers and ps tasks serve the chief until it stops
    them. `verbose`: Keras's progress (1: a bar, 0: none).

    Returns:
      validation.json's state (the valid evaluations, "best", "best_step") where this process trained as
      the chief; None where it had nothing to train (a finished directory, left as it was) or is not the chief.
    """
    cluster = distribute.read_cluster()
    strategy_name = distribute.resolve_strategy(config.strategy, cluster)
    if strategy_name == "parameter-server" and cluster is not None and cluster.task_type in ("worker", "ps"):
        distribute.serve_forever(cluster)  # the chief runs the training loop on these tasks; they own nothing
        return None
    done = train_lib.finished(model_dir, config)
    if done is not None:  # before anything is written: a finished model directory is left as it was
        logger.info(done)
        return None
    recent_from = None
    if warm_start_from:
        warm_start_lib.check_parent(warm_start_from, config, model_dir)
        if config.warm_start_recent_fraction:
            recent_from = warm_start_lib.parent_cutoff(warm_start_from, data_dir)
    chief = cluster is None or cluster.is_chief()
    if chief:  # the chief owns the model directory (a restarted worker joins whatever the chief runs)
        train_lib.check_resumable(model_dir)
    logger.info(f"strategy: {strategy_name}" + ("" if cluster is None else f" ({cluster.task_type}:"
                                                f"{cluster.task_index} of {cluster.cluster})"))
    # The strategy first: multi-worker collectives must be configured before TensorFlow runs any op.
    vocabulary = input_lib.read_vocabulary(data_dir)
    strategy = distribute.make_strategy(strategy_name, cluster, len(vocabulary) + item_index.FIRST_ITEM_INDEX,
                                        config.cluster_timeout_s)
    inputs = input_lib.training_inputs(data_dir, config, parameter_server=strategy_name == "parameter-server",
                                       vocabulary=vocabulary, recent_from=recent_from)
    tf.keras.utils.set_random_seed(config.seed)  # the initial weights and the sampler's passes (train docstring)
    with strategy.scope():
        user_vocabularies = None if inputs.user_features is None else models.user_vocabularies(inputs.user_features)
        model = models.RemiModel(config, len(inputs.vocabulary), inputs.target_probability, inputs.vocabulary,
                                 inputs.item_features, user_vocabularies)
    warm = carry_parent(model, inputs.vocabulary, warm_start_from) if warm_start_from else {}
    # One process reads its training records now, so that a corrupt shard stops the run before anything is written.
    train_data = inputs.dataset_fn(None) if strategy_name == "one-device" else \
        tf.keras.utils.experimental.DatasetCreator(inputs.dataset_fn)
    tf.io.gfile.makedirs(model_dir)
    if chief:
        model_directory.copy_vocabulary(data_dir, model_dir)
        model_directory.save_side_features(model_dir, inputs.item_features, user_vocabularies)
        model_directory.write_run(model_dir, {
            "data_dir": atomic.absolute(data_dir), "vocabulary_size": len(inputs.vocabulary),
            "strategy": strategy_name, "training_input": "streaming" if inputs.streaming else "in_memory",
            "replicas": strategy.num_replicas_in_sync,
            "item_table_shards": distribute.variable_shards(model.item_embedding.embeddings), **warm})
    state = train_lib.train(model, config, train_data, inputs.valid_histories, inputs.valid_targets, model_dir,
                            verbose=verbose, strategy=strategy, chief=chief,
                            valid_user_features=inputs.valid_user_features)
    return state if chief else None


def carry_parent(model: models.RemiModel, vocabulary: list[str], parent_dir: str) -> dict[str, Any]:
    """Warm-starts `model` from the best weights of `parent_dir`; returns what run.json records of it."""
    carried = warm_start_lib.warm_start(model, vocabulary, parent_dir)
    logger.info(f"warm start from {parent_dir}: {carried.kept_items:,} item rows carried, "
                f"{carried.new_items:,} new, {carried.dropped_items:,} dropped"
                + ("; streaming logQ state carried" if carried.frequency_state else ""))
    return {"warm_start_from": atomic.absolute(parent_dir), "warm_start": carried._asdict()}
