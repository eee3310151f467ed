"""Warm start (`remi train --warm-start PREVIOUS_MODEL_DIR`): a model for new logs begins where the previous
one ended. Item rows are carried over by item id into the new vocabulary (tf.keras.utils.
warmstart_embedding_matrix: new items get fresh random rows at the carried rows' scale, items that left
are dropped), then the table is shrunk by `warm_start_shrink` ("shrink and perturb", Ash & Adams,
"On Warm-Starting Neural Network Training", NeurIPS 2020: carried rows at full scale saturate the
logits and hold back learning the new data; on amazon-grocery a warm start at full scale stayed at a
third of retraining's next-window recall for 400 steps, shrunk by 0.3 it matched it at 1/3 of the steps);
the routing layer, the sasrec encoder, the position embeddings and the streaming logQ state (hashed by item id)
are carried as they are; side-feature embeddings are carried by value for the columns both models embed. The optimizer
starts fresh.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf

from remi_tf import data_directory, model_directory
from remi_tf.config import RemiConfig
from remi_tf.item_index import FIRST_ITEM_INDEX
from remi_tf.layers.feature_embeddings import ItemFeatureEmbedding, UserFeatureEmbedding
from remi_tf.models import RemiModel

SHAPE_KEYS = ("embedding_dim", "num_interests", "max_history", "use_position_embedding", "routing", "encoder",
              "encoder_blocks", "encoder_heads")
ESTIMATOR_KEYS = ("logq_buckets",)


class CarriedOver(NamedTuple):
    """What a warm start carried: items kept (rows copied), new (initialised) and dropped, and whether the
    streaming logQ state came along."""

    kept_items: int
    new_items: int
    dropped_items: int
    frequency_state: bool


def check_parent(model_dir: str, config: RemiConfig, child_dir: str | None = None) -> None:
    """Stops a warm start from a directory that is not a finished remi model, whose shapes differ from
    this run's, or that is the run's own `child_dir` (its best/ would be overwritten by the child's), before
    anything is written; no TensorFlow op runs, so it may precede the strategy."""
    if child_dir is not None and os.path.realpath(model_dir) == os.path.realpath(child_dir):
        raise ValueError(f"--warm-start {model_dir} is this run's own --model-dir: the new run would overwrite the "
                         "checkpoint it starts from; train into a new --model-dir")
    missing = model_directory.missing_files(model_dir)
    if missing:
        raise ValueError(f"--warm-start {model_dir}: not a remi model directory (no {', '.join(missing)}; "
                         "expected the --model-dir of a finished `remi train`)")
    parent = model_directory.read_config(model_dir)
    different = [f"{key} {getattr(parent, key)!r} (this run: {getattr(config, key)!r})"
                 for key in SHAPE_KEYS if getattr(parent, key) != getattr(config, key)]
    if different:
        raise ValueError(f"--warm-start {model_dir}: the model was trained with {', '.join(different)}; a warm "
                         "start needs the same shapes")


def parent_cutoff(model_dir: str, data_dir: str) -> int:
    """The first timestamp the parent did not train on: the time boundary (valid_from) of its data directory's
    time split, in the unit of the timestamps of `data_dir` (the new data: its manifest's timestamp_unit).

    Raises:
      ValueError when the parent's data is not a time split (or its manifest is gone).
    """
    parent_data = model_directory.read_run(model_dir)["data_dir"]
    manifest_path = os.path.join(parent_data, data_directory.MANIFEST_FILE)
    manifest = data_directory.read_manifest(parent_data) or {}
    if manifest.get("split") != "time":
        raise ValueError(f"--warm-start {model_dir}: warm_start_recent_fraction needs a parent trained on a time "
                         f"split (`remi prepare --split time`), so that its newest training event is known; "
                         f"{manifest_path} " + ("is not one" if manifest else "is missing"))
    new_data = data_directory.read_manifest(data_dir) or {}
    return data_directory.in_time_unit(int(manifest["valid_from"]), data_directory.time_digits(manifest),
                                       data_directory.time_digits(new_data))


def warm_start(model: RemiModel, vocabulary: Sequence[str], parent_dir: str) -> CarriedOver:
    """Copies the best weights of the model in `parent_dir` into `model` (built for `vocabulary`), item
    rows by item id, the item table times model.config.warm_start_shrink."""
    parent = model_directory.load_trained(parent_dir)
    tokens = ["", "[UNK]"]  # the padding and OOV rows (item_index.item_lookup's layout) carry over too
    parent_table = parent.model.item_embedding.embeddings
    # New rows at the trained rows' scale: at the initial scale (norms ~3x smaller after training) a new
    # item would score below every carried one and stay unretrieved until trained up.
    scale = float(tf.sqrt(tf.reduce_mean(tf.square(parent_table[FIRST_ITEM_INDEX:]))))
    table = tf.keras.utils.warmstart_embedding_matrix(
        tf.constant(tokens + list(parent.vocabulary)), tf.constant(tokens + list(vocabulary)), parent_table,
        tf.keras.initializers.RandomNormal(stddev=scale))
    model.item_embedding.embeddings.assign(table * model.config.warm_start_shrink)
    tower, parent_tower = model.query_tower, parent.model.query_tower
    carried_layers: list[tf.keras.layers.Layer] = [tower.routing] + ([] if tower.encoder is None else [tower.encoder])
    parent_layers: list[tf.keras.layers.Layer] = [parent_tower.routing] + (
        [] if parent_tower.encoder is None else [parent_tower.encoder])  # check_parent: the same encoder
    for layer, parent_layer in zip(carried_layers, parent_layers, strict=True):
        for weight, parent_weight in zip(layer.weights, parent_layer.weights, strict=True):
            weight.assign(parent_weight)
    for kind in ("item_features", "user_features"):
        layer, parent_layer = getattr(model, kind), getattr(parent.model, kind)
        if layer is not None and parent_layer is not None:
            carry_feature_tables(layer, parent_layer)
    estimator, parent_estimator = model.frequency_estimator, parent.model.frequency_estimator
    carries_state = False
    if estimator is not None and parent_estimator is not None and all(
            getattr(model.config, key) == getattr(parent.config, key) for key in ESTIMATOR_KEYS):
        carries_state = True
        for weight, parent_weight in zip(estimator.weights, parent_estimator.weights, strict=True):
            weight.assign(parent_weight)
    kept = len(set(vocabulary) & set(parent.vocabulary))
    return CarriedOver(kept, len(vocabulary) - kept, len(parent.vocabulary) - kept, carries_state)


def carry_feature_tables(layer: ItemFeatureEmbedding | UserFeatureEmbedding,
                          parent_layer: ItemFeatureEmbedding | UserFeatureEmbedding) -> None:
    """Copies each shared column's value rows (and OOV row) by value; new values keep their fresh rows."""
    for column, vocabulary in layer.vocabularies.items():
        if column not in parent_layer.vocabularies:
            continue
        table, parent_table = layer.embedding.tables[column], parent_layer.embedding.tables[column]
        table.assign(tf.keras.utils.warmstart_embedding_matrix(
            tf.constant(["[OOV]"] + parent_layer.vocabularies[column]), tf.constant(["[OOV]"] + vocabulary),
            parent_table, tf.constant_initializer(table.numpy())))
