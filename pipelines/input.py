"""tf.data input of prepared data: the random-cut training sampler and the evaluation protocol's cut.

Item ids become the model's indices here, once (padding 0, unknown 1, items 2..; see remi_tf.models).
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from pipelines import schema
from remi_tf.models import item_lookup

MIN_CUT = 4  # the first cut position of a training example (0-based), as the reference code
EVAL_CUT_FRACTION = 0.8


def read_vocabulary(data_dir: str) -> list[str]:
    """Item ids of `items.tsv` in file order (most frequent first)."""
    path = os.path.join(data_dir, "items.tsv")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {data_dir!r} a directory written by `remi prepare`?")
    with open(path, encoding="utf-8") as stream:
        return [line.split("\t", 1)[0] for line in stream if line.strip()]


def split_files(data_dir: str, split: str) -> list[str]:
    """The sequence shards of one split, sorted."""
    files = sorted(glob.glob(os.path.join(data_dir, f"{split}-*-of-*.tfrecord*")))
    if not files:
        raise FileNotFoundError(f"no {split}-*-of-*.tfrecord[.gz] shards in {data_dir!r}; run `remi prepare`")
    return files


def _compression(files: Sequence[str]) -> str:
    return "GZIP" if files[0].endswith(".gz") else ""


def indexed_sequences(data_dir: str, split: str, vocabulary: Sequence[str]) -> tf.data.Dataset:
    """Dataset of {"user_id": string, "items": [n] int64 indices}, one element per user, in file order."""
    files = split_files(data_dir, split)
    lookup = item_lookup(vocabulary)
    dataset = tf.data.TFRecordDataset(files, compression_type=_compression(files))
    dataset = dataset.batch(1024).map(schema.parse_sequences)
    dataset = dataset.map(lambda record: {"user_id": record["user_id"], "items": lookup(record["item_ids"])})
    return dataset.unbatch()


def load_sequences(data_dir: str, split: str, vocabulary: Sequence[str]) -> tuple[list[str], list[np.ndarray]]:
    """(user ids, item-index arrays) of one split, in memory."""
    user_ids, item_sequences = [], []
    for element in indexed_sequences(data_dir, split, vocabulary).as_numpy_iterator():
        user_ids.append(element["user_id"].decode("utf-8"))
        item_sequences.append(element["items"])
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

    Args:
      batch_size: the global batch size (divided by the number of replicas under `input_context`).
      input_context: shards files across input pipelines when there are at least as many files.

    Returns:
      Dataset of {"history": [batch, L] int64, "target": [batch] int64}.
    """
    files = split_files(data_dir, "train")
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        if len(files) >= input_context.num_input_pipelines:
            files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
    lookup = item_lookup(vocabulary)
    dataset = tf.data.TFRecordDataset(files, compression_type=_compression(files),
                                      num_parallel_reads=min(len(files), 4))
    dataset = dataset.batch(1024).map(schema.parse_sequences)
    dataset = dataset.map(lambda record: lookup(record["item_ids"])).unbatch()
    dataset = dataset.filter(lambda items: tf.size(items) > MIN_CUT).cache()
    dataset = dataset.shuffle(200_000, seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.apply(tf.data.experimental.dense_to_ragged_batch(batch_size, drop_remainder=True))
    dataset = dataset.map(lambda items: random_cut(items, max_history), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


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
