"""The model directory (`remi train --model-dir`): what files it holds, how each is written and read.

  config.yaml            the resolved configuration
  run.json               the data directory and vocabulary size the model was trained on, the strategy,
                         its shards, the warm start it came from
  items.tsv              the vocabulary (index i + 2 of the embedding table is line i)
  item_features.tsv      the items' side features, when the model embeds them (as in the data directory)
  user_vocabularies.json the user profile features' vocabularies, when the model embeds them
  backup/chief/          resumable training state (model, optimizer, step), every `checkpoint_every` steps
                         and at each evaluation: the latest and the one before it (used when the latest
                         cannot be read), named in its `checkpoint` file
  best/                  weights of the best valid Recall@50 (what evaluate, export and warm starts load)
  validation.json        the history of valid evaluations and the early-stopping state
  history.csv, logs/     training curves (CSV: one row per evaluation, rewritten whole) and TensorBoard logs
  eval-<split>.json      `remi evaluate`'s reports

Every file is written to a temporary name and renamed (remi_tf.atomic). In a cluster the chief writes the
directory. docs/model-directory.md describes the same layout for users.
"""

from __future__ import annotations

import csv
import io
import os
import re
from typing import Any, NamedTuple

import tensorflow as tf

from remi_tf import atomic, data_directory, feature_tables
from remi_tf import config as config_lib
from remi_tf.config import RemiConfig
from remi_tf.models import RemiModel

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
VOCABULARY_FILE = data_directory.ITEMS_FILE  # the data directory's items.tsv, copied
USER_VOCABULARIES_FILE = "user_vocabularies.json"
VALIDATION_FILE = "validation.json"
HISTORY_FILE = "history.csv"
LOGS_DIR = "logs"
BACKUP_DIR = "backup"
CHIEF_BACKUP = "chief"  # <model_dir>/backup/chief/: Keras's BackupAndRestore directory of the chief
BEST_DIR = "best"
# What a finished run leaves (a warm start's parent, an export's source)
REQUIRED_FILES = (CONFIG_FILE, VOCABULARY_FILE, RUN_FILE, os.path.join(BEST_DIR, "ckpt.index"))


def path(model_dir: str, name: str) -> str:
    """`model_dir`/`name`, for one of the names above."""
    return os.path.join(model_dir, name)


def is_model_directory(directory: str) -> bool:
    """Whether `directory` looks like `remi train`'s output (config.yaml and best/)."""
    return os.path.exists(path(directory, CONFIG_FILE)) and os.path.isdir(path(directory, BEST_DIR))


def missing_files(model_dir: str) -> list[str]:
    """The REQUIRED_FILES that `model_dir` lacks."""
    return [name for name in REQUIRED_FILES if not os.path.exists(path(model_dir, name))]


def read_config(model_dir: str) -> RemiConfig:
    """The model's config.yaml (one written before a key existed reads it as that version behaved)."""
    return config_lib.load_saved(path(model_dir, CONFIG_FILE))


def write_config(model_dir: str, config: RemiConfig) -> None:
    config_lib.save(config, path(model_dir, CONFIG_FILE))


def read_run(model_dir: str) -> dict[str, Any]:
    """run.json: {"data_dir", "vocabulary_size", "strategy", "training_input", "replicas",
    "item_table_shards", and after a warm start "warm_start_from", "warm_start"}."""
    return atomic.read_json(path(model_dir, RUN_FILE))


def write_run(model_dir: str, run: dict[str, Any]) -> None:
    atomic.write_json(path(model_dir, RUN_FILE), run)


def copy_vocabulary(data_dir: str, model_dir: str) -> None:
    """The data directory's items.tsv into the model directory (either may be on gs://, hdfs://, ...)."""
    tf.io.gfile.copy(data_directory.items_path(data_dir), path(model_dir, VOCABULARY_FILE), overwrite=True)


def read_validation(model_dir: str) -> dict[str, Any] | None:
    """validation.json ({"evaluations": [{"step", "val_<metric>", ...}], "best", "best_step",
    "evaluations_without_improvement"}), or None before the first evaluation."""
    validation = path(model_dir, VALIDATION_FILE)
    return atomic.read_json(validation) if os.path.exists(validation) else None


def write_validation(model_dir: str, state: dict[str, Any]) -> None:
    atomic.write_json(path(model_dir, VALIDATION_FILE), state)


def read_history(model_dir: str) -> dict[int, dict[str, str]]:
    """history.csv's rows by Keras epoch (epoch e ends at the step of the e-th evaluation), values as written;
    empty before the first evaluation."""
    history = path(model_dir, HISTORY_FILE)
    if not tf.io.gfile.exists(history):
        return {}
    with tf.io.gfile.GFile(history) as stream:
        return {int(row.pop("epoch")): row for row in csv.DictReader(stream)}


def write_history(model_dir: str, rows: dict[int, dict[str, Any]]) -> None:
    """Replaces history.csv with `rows` (by epoch: the training logs and valid scalars of each evaluation), one
    line each in epoch order; a column that a row lacks is left empty."""
    columns = sorted({column for row in rows.values() for column in row})
    text = io.StringIO()
    writer = csv.DictWriter(text, ["epoch", *columns], lineterminator="\n")
    writer.writeheader()
    for epoch in sorted(rows):
        writer.writerow({"epoch": epoch, **rows[epoch]})
    atomic.write_text(path(model_dir, HISTORY_FILE), text.getvalue())


def backup_dir(model_dir: str) -> str:
    return path(model_dir, BACKUP_DIR)


def latest_backup(model_dir: str) -> str | None:
    """The chief's latest backup checkpoint prefix, or None."""
    return tf.train.latest_checkpoint(os.path.join(backup_dir(model_dir), CHIEF_BACKUP))


def backups(chief_dir: str) -> list[str]:
    """The backup prefixes that the `checkpoint` file of `chief_dir` (backup/chief/) names whose index exists,
    oldest first."""
    state = tf.train.get_checkpoint_state(chief_dir)
    names = [] if state is None else list(state.all_model_checkpoint_paths)
    prefixes = [name if os.path.isabs(name) or atomic.is_remote(name) else os.path.join(chief_dir, name)
                for name in names]
    return [prefix for prefix in prefixes if tf.io.gfile.exists(prefix + ".index")]


def save_side_features(model_dir: str, item_features: feature_tables.FeatureTable | None,
                       user_vocabularies: dict[str, list[str]] | None) -> None:
    """Writes what the model's feature layers are built from (load_trained rebuilds them from there)."""
    if item_features is not None:
        feature_tables.write_table(path(model_dir, feature_tables.ITEM_FEATURES_FILE), "item_id", item_features)
    if user_vocabularies is not None:
        atomic.write_json(path(model_dir, USER_VOCABULARIES_FILE), user_vocabularies)


def best_checkpoint_prefix(model_dir: str) -> str:
    return os.path.join(model_dir, BEST_DIR, "ckpt")


def weights_checkpoint(model: RemiModel) -> tf.train.Checkpoint:
    """The model's weights (and the streaming logQ state) without the optimizer's slots (two more tables'
    worth), under the object paths of `tf.train.Checkpoint(model=model)`, so that either restores the other."""
    parts = {"item_embedding": model.item_embedding, "query_tower": model.query_tower}
    if model.frequency_estimator is not None:
        parts["frequency_estimator"] = model.frequency_estimator
    return tf.train.Checkpoint(model=tf.train.Checkpoint(**parts))


def restore_best(model: RemiModel, model_dir: str) -> None:
    """Loads the best (by valid Recall@50) weights into `model`."""
    prefix = best_checkpoint_prefix(model_dir)
    if not os.path.exists(prefix + ".index"):
        raise FileNotFoundError(f"no best checkpoint at {prefix}; train first (`remi train --model-dir ...`)")
    status = weights_checkpoint(model).read(prefix).expect_partial()
    try:  # every weight the model has must come from the checkpoint: a partial restore would evaluate random weights
        status.assert_existing_objects_matched()
    except AssertionError as unmatched:
        missing = re.findall(r"tf\.Variable '([^']+)'", str(unmatched))
        raise ValueError(f"the best checkpoint {prefix} does not hold every weight of the model that "
                         f"{path(model_dir, CONFIG_FILE)} builds (was it trained by another version of remi-tf, or "
                         f"has the config changed?); missing: {', '.join(missing[:5]) or str(unmatched)[:300]}"
                         ) from None


class TrainedModel(NamedTuple):
    """A model directory's config, model (best weights), vocabulary and training data directory."""

    config: RemiConfig
    model: RemiModel
    vocabulary: list[str]
    data_dir: str


def check_trained(model_dir: str) -> None:
    """Raises FileNotFoundError naming the first of config.yaml, items.tsv and run.json that `model_dir` lacks."""
    for name in (CONFIG_FILE, VOCABULARY_FILE, RUN_FILE):
        if not os.path.exists(path(model_dir, name)):
            raise FileNotFoundError(f"{path(model_dir, name)} not found: is {model_dir!r} a directory "
                                    "written by `remi train`?")


def read_vocabulary(model_dir: str) -> list[str]:
    """The model's item ids, in index order (its copy of the data's items.tsv)."""
    return data_directory.read_item_ids(path(model_dir, VOCABULARY_FILE))


def load_trained(model_dir: str) -> TrainedModel:
    """Rebuilds the model of `model_dir` from its resolved config and vocabulary, with the best weights."""
    check_trained(model_dir)
    config = read_config(model_dir)
    vocabulary = read_vocabulary(model_dir)
    user_vocabularies = path(model_dir, USER_VOCABULARIES_FILE)
    model = RemiModel(config, len(vocabulary), vocabulary=vocabulary,
                      item_features=feature_tables.read_item_table(model_dir, vocabulary),
                      user_vocabularies=atomic.read_json(user_vocabularies)
                      if os.path.exists(user_vocabularies) else None)
    restore_best(model, model_dir)
    return TrainedModel(config, model, vocabulary, read_run(model_dir)["data_dir"])
