"""tf.data input of prepared data: the random-cut training sampler and the evaluation protocol's cut.

Item ids become the model's indices here, once (padding 0, unknown 1, items 2..; see remi_tf.models).
"""

from __future__ import annotations

import os
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from pipelines import schema
from remi_tf.config import RemiConfig
from remi_tf import models
from remi_tf.models import item_lookup, target_probability

MIN_CUT = 4  # the first cut position of a training example (0-based), as the reference code
EVAL_CUT_FRACTION = 0.8
PREFETCH_BATCHES = 16


def read_vocabulary(data_dir: str) -> list[str]:
    """Item ids of `items.tsv` in file order (most frequent first)."""
    path = os.path.join(data_dir, "items.tsv")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: is {data_dir!r} a directory written by `remi prepare`?")
    return models.read_vocabulary(path)


def split_files(data_dir: str, split: str) -> list[str]:
    """The sequence shards of one split, sorted."""
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*-of-*.tfrecord*")))
    if not files:
        raise FileNotFoundError(f"no {split}-*-of-*.tfrecord[.gz] shards in {data_dir!r}; run `remi prepare`")
    return files


def _compression(files: Sequence[str]) -> str:
    return "GZIP" if files[0].endswith(".gz") else ""


def read_indexed_sequences(files: Sequence[str], vocabulary: Sequence[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(user id, [n] int64 item indices) per sequence record of `files`, in file order."""
    lookup = item_lookup(vocabulary)
    dataset = tf.data.TFRecordDataset(files, compression_type=_compression(files))
    dataset = dataset.batch(1024).map(schema.parse_sequences)
    dataset = dataset.map(lambda record: (record["user_id"], lookup(record["item_ids"])))
    for user_ids, items in dataset.as_numpy_iterator():
        for user_id, user_items in zip(user_ids, items):
            yield user_id.decode("utf-8"), user_items


def load_sequences(data_dir: str, split: str, vocabulary: Sequence[str]) -> tuple[list[str], list[np.ndarray]]:
    """(user ids, item-index arrays) of one split, in memory."""
    user_ids, item_sequences = [], []
    for user_id, items in read_indexed_sequences(split_files(data_dir, split), vocabulary):
        user_ids.append(user_id)
        item_sequences.append(items)
    return user_ids, item_sequences


def random_cut(items: tf.RaggedTensor, max_history: int, min_cut: int = MIN_CUT) -> dict[str, tf.Tensor]:
    """Vectorised random-cut sampler: one training example per sequence of the batch.

    For a sequence x_0..x_{n-1}, k is uniform in [min_cut, n); history = the last <= L items before k,
    left-aligned and 0-padded at the end (as the reference); target = x_k.

    Args:
      items: [batch, None] int64 ragged item indices; every row must have n > min_cut.

    Returns:
      {"history": [batch, L] int64, "target": [batch] int64}.
    """
    lengths = tf.cast(items.row_lengths(), tf.int64)  # [B]
    row_starts = tf.cast(items.row_starts(), tf.int64)  # [B]
    num_choices = tf.cast(lengths - min_cut, tf.float32)
    cut = min_cut + tf.cast(tf.floor(tf.random.uniform(tf.shape(lengths)) * num_choices), tf.int64)
    cut = tf.minimum(cut, lengths - 1)  # guards the float rounding at u -> 1
    start = tf.maximum(cut - max_history, 0)
    positions = start[:, tf.newaxis] + tf.range(max_history, dtype=tf.int64)[tf.newaxis, :]  # [B, L]
    valid = positions < cut[:, tf.newaxis]
    gathered = tf.gather(items.values, row_starts[:, tf.newaxis] + tf.minimum(positions, cut[:, tf.newaxis] - 1))
    history = tf.where(valid, gathered, tf.zeros_like(gathered))
    target = tf.gather(items.values, row_starts + cut)
    return {"history": history, "target": target}


def training_dataset(data_dir: str, vocabulary: Sequence[str], batch_size: int, max_history: int,
                     seed: int | None = None, input_context: tf.distribute.InputContext | None = None
                     ) -> tf.data.Dataset:
    """Endless training batches: each pass visits every training user once with a fresh random cut.

    The (sharded) training sequences are read once into one in-memory ragged tensor; each pass draws a
    random permutation of the users and slices it into batches, so that the per-batch work is one gather
    and the vectorised cut (no per-user dataset ops: the step and the input share two cores).

    Args:
      batch_size: the global batch size (divided by the number of replicas under `input_context`).
      input_context: shards files across input pipelines when there are at least as many files.

    Returns:
      Dataset of {"history": [batch, L] int64, "target": [batch] int64}; the users left over after the
      last full batch of a pass are skipped in that pass (a different few each pass).
    """
    files = split_files(data_dir, "train")
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        if len(files) >= input_context.num_input_pipelines:
            files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
    sequences = [items for _, items in read_indexed_sequences(files, vocabulary)]
    return sequence_dataset(sequences, batch_size, max_history, seed)


def sequence_dataset(sequences: Sequence[np.ndarray], batch_size: int, max_history: int,
                     seed: int | None = None) -> tf.data.Dataset:
    """The endless random-cut batches of `training_dataset`, from in-memory item-index sequences.

    Sequences with at most MIN_CUT items are skipped (they have no valid cut).
    """
    sequences = [items for items in sequences if len(items) > MIN_CUT]
    if len(sequences) < batch_size:
        raise ValueError(f"{len(sequences)} training users with more than {MIN_CUT} items, fewer than one "
                         f"batch of {batch_size}; lower batch_size")
    all_items = tf.RaggedTensor.from_row_lengths(np.concatenate(sequences).astype(np.int64),
                                                 [len(s) for s in sequences])
    num_users, batches_per_pass = len(sequences), len(sequences) // batch_size
    generator = tf.random.Generator.from_seed(seed) if seed is not None else \
        tf.random.Generator.from_non_deterministic_state()

    def one_pass(_: tf.Tensor) -> tf.data.Dataset:
        permutation = tf.argsort(generator.uniform([num_users]))[:batches_per_pass * batch_size]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(permutation, [batches_per_pass, batch_size]))

    dataset = tf.data.Dataset.range(1).repeat().flat_map(one_pass)
    dataset = dataset.map(lambda users: random_cut(tf.gather(all_items, users), max_history))
    # The map costs microseconds per batch: a fixed prefetch, and tf.data's autotuning off, whose
    # background work was seen to pace whole training runs at one step per ~10 ms tick on two cores.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(PREFETCH_BATCHES).with_options(options)


def evaluation_examples(item_sequences: Sequence[np.ndarray], max_history: int
                        ) -> tuple[np.ndarray, list[np.ndarray]]:
    """The protocol's evaluation cut: k = floor(0.8 n), history = last <= L items before k, targets = x_k..

    Returns:
      (histories [users, L] int64, left-aligned and 0-padded; targets per user).
    """
    histories = np.zeros((len(item_sequences), max_history), np.int64)
    targets = []
    for row, sequence in enumerate(item_sequences):
        cut = int(len(sequence) * EVAL_CUT_FRACTION)
        history = sequence[max(cut - max_history, 0):cut]
        histories[row, :len(history)] = history
        targets.append(np.asarray(sequence[cut:], np.int64))
    return histories, targets


class TrainingInputs(NamedTuple):
    """Everything `remi train` reads from a prepared data directory."""

    vocabulary: list[str]
    target_probability: np.ndarray  # [vocabulary + 2] q of each index as a training target
    valid_histories: np.ndarray  # [valid users, L]
    valid_targets: list[np.ndarray]
    dataset: tf.data.Dataset  # endless {"history", "target"} batches


def training_inputs(data_dir: str, config: RemiConfig) -> TrainingInputs:
    """Reads the vocabulary, the training target distribution, the valid split and the training stream
    (one replica; `training_dataset` shards by InputContext). The train split is read once."""
    vocabulary = read_vocabulary(data_dir)
    _, train_sequences = load_sequences(data_dir, "train", vocabulary)
    _, valid_sequences = load_sequences(data_dir, "valid", vocabulary)
    probability = target_probability(train_sequences, len(vocabulary), MIN_CUT)
    valid_histories, valid_targets = evaluation_examples(valid_sequences, config.max_history)
    dataset = sequence_dataset(train_sequences, config.batch_size, config.max_history, seed=config.seed)
    return TrainingInputs(vocabulary, probability, valid_histories, valid_targets, dataset)
