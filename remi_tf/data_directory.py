"""The data directory (`remi prepare --output`, `remi convert --output`): its files, their TFRecord
schemas (defined once: writers, parsers and serving signatures share these specs) and their readers.

  {train,valid,test}-NNNNN-of-NNNNN.tfrecord[.gz]  sequence records, one per user (below)
  items.tsv            item_id, count, q (the item's probability of being a training target under the
                       random-cut sampler, for logQ); most frequent first; model index of line i is i + 2
  item_features.tsv, user_features.tsv   side features (remi_tf.feature_tables)
  manifest.json        source, filters, seed, counts per split, schema version, cleaning summary, the
                       timestamps' unit (TIME_UNITS); written last (remi_tf.atomic): a directory without it is
                       incomplete
A converted event log holds events-NNNNN-of-NNNNN.tfrecord[.gz] shards (event records) and manifest.json.
pipelines/ writes these files; remi_tf reads them. docs/data-directory.md describes them for users.

Event log record (one tf.train.Example per interaction): user_id bytes, item_id bytes, timestamp int64,
optional category bytes and behavior bytes.
Sequence record (one tf.train.Example per user): user_id bytes, item_ids bytes list (time order),
timestamps int64 list, and in the valid/test records of a time split history_length int64: the events
before the split's boundary (the history; the rest are the targets). Without it (-1) evaluation cuts at
floor(0.8 n), the user split's protocol.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from remi_tf import atomic

SCHEMA_VERSION = 1
ITEMS_FILE = "items.tsv"
MANIFEST_FILE = "manifest.json"
MIN_CUT = 4  # the first cut position of a training example (0-based), as the reference code; items.tsv's q assumes it

EVENT_FEATURES = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "item_id": tf.io.FixedLenFeature([], tf.string),
    "timestamp": tf.io.FixedLenFeature([], tf.int64),
    "category": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "behavior": tf.io.FixedLenFeature([], tf.string, default_value=""),
}

SEQUENCE_FEATURES = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "item_ids": tf.io.RaggedFeature(tf.string),
    "timestamps": tf.io.RaggedFeature(tf.int64),
    "history_length": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}

SPLITS = ("train", "valid", "test")
READ_BUFFER_BYTES = 256 * 1024  # TFRecordDataset's default, given (left unsaid, it logs an INFO line per reader)

# manifest.json's `timestamp_unit`, by the digits of a second the timestamps hold: "input" keeps the log's integers
# as written (unix seconds for ISO times); a log with fractional seconds (ISO or decimal) is read in the coarsest
# of ms, us and ns that holds every one of its digits, its integer times taken as seconds.
TIME_UNITS = {0: "input", 3: "ms", 6: "us", 9: "ns"}


def time_digits(manifest: dict[str, Any]) -> int:
    """The digits of a second a data directory's timestamps hold (0 for manifests written before the key)."""
    unit = manifest.get("timestamp_unit", TIME_UNITS[0])
    digits = [digits for digits, name in TIME_UNITS.items() if name == unit]
    if not digits:
        raise ValueError(f"manifest.json: timestamp_unit {unit!r} is not one of {', '.join(TIME_UNITS.values())} (a "
                         "data directory of a newer remi-tf, or edited by hand)")
    return digits[0]


def in_time_unit(timestamp: int, digits: int, to_digits: int) -> int:
    """A timestamp holding `digits` digits of a second in the unit of `to_digits` (rounded up when coarser: the
    first tick at or after it, so that `t < boundary` keeps its meaning)."""
    if to_digits >= digits:
        return timestamp * 10 ** (to_digits - digits)
    return -(-timestamp // 10 ** (digits - to_digits))


class _EventEncoder(threading.local):
    """Serializes events by refilling one tf.train.Example per set of fields present: ~15x faster than
    building a message per event. One per thread (the messages are reused)."""

    def __init__(self) -> None:
        self.templates: dict[tuple[str, ...], tuple[tf.train.Example, list]] = {}

    def encode(self, values: dict[str, bytes | int]) -> bytes:
        fields = tuple(values)
        if fields not in self.templates:
            example = tf.train.Example()
            slots = []
            for field in fields:
                feature = example.features.feature[field]
                slot = feature.int64_list.value if field == "timestamp" else feature.bytes_list.value
                slot.append(0 if field == "timestamp" else b"")
                slots.append(slot)
            self.templates[fields] = example, slots
        example, slots = self.templates[fields]
        for slot, value in zip(slots, values.values(), strict=True):
            slot[0] = value
        return example.SerializeToString(deterministic=True)


_event_encoder = _EventEncoder()


def encode_event(user_id: str, item_id: str, timestamp: int, category: str | None = None,
                 behavior: str | None = None) -> bytes:
    """One interaction as a serialized event-log tf.train.Example."""
    values: dict[str, bytes | int] = {"user_id": user_id.encode("utf-8"), "item_id": item_id.encode("utf-8"),
                                      "timestamp": timestamp}
    if category is not None:
        values["category"] = category.encode("utf-8")
    if behavior is not None:
        values["behavior"] = behavior.encode("utf-8")
    return _event_encoder.encode(values)


def encode_sequence(user_id: bytes, item_ids: Sequence[bytes], timestamps: Sequence[int],
                    history_length: int | None = None) -> bytes:
    """One user's time-ordered history (ids as UTF-8 bytes) as a serialized sequence tf.train.Example;
    `history_length`: where the evaluation targets begin (time split), None: at the protocol's cut."""
    if len(item_ids) != len(timestamps):
        raise ValueError(f"user {user_id!r}: {len(item_ids)} item ids but {len(timestamps)} timestamps")
    example = tf.train.Example()
    features = example.features.feature
    features["user_id"].bytes_list.value.append(user_id)
    features["item_ids"].bytes_list.value.extend(item_ids)  # extend(): ~4x faster than building Feature messages
    features["timestamps"].int64_list.value.extend(timestamps)
    if history_length is not None:
        features["history_length"].int64_list.value.append(history_length)
    return example.SerializeToString(deterministic=True)


def parse_sequences(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses a batch [batch] of serialized sequence records into {user_id, item_ids, timestamps}."""
    return tf.io.parse_example(serialized, SEQUENCE_FEATURES)


def shard_name(split: str, index: int, num_shards: int, compressed: bool = False) -> str:
    """`<split>-00000-of-00004.tfrecord[.gz]`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord" + (".gz" if compressed else "")


def shard_pattern(data_dir: str, split: str) -> str:
    return os.path.join(data_dir, f"{split}-*-of-*.tfrecord*")


def split_files(data_dir: str, split: str) -> list[str]:
    """The sequence shards of one split, sorted."""
    files = sorted(tf.io.gfile.glob(shard_pattern(data_dir, split)))
    if not files:
        raise FileNotFoundError(f"no {split}-*-of-*.tfrecord[.gz] shards in {data_dir!r}; run `remi prepare`")
    return files


def compression_type(files: Sequence[str]) -> str:
    """TFRecordDataset's compression_type for shards named like `files` (GZIP for .gz)."""
    return "GZIP" if files and files[0].endswith(".gz") else ""


def record_batches(files: Sequence[str], batch_size: int) -> tf.data.Dataset:
    """The serialized records of `files` in batches of up to `batch_size`, then one empty batch, the end
    marker `until_end_marker` stops at: tf.data answers a read past the end with an OUT_OF_RANGE error,
    which TensorFlow logs in eager mode ("Local rendezvous is aborting with status: OUT_OF_RANGE")."""
    records = tf.data.TFRecordDataset(list(files), compression_type=compression_type(files),
                                      buffer_size=READ_BUFFER_BYTES).batch(batch_size)
    return records.concatenate(tf.data.Dataset.from_tensors(tf.constant([], tf.string)))


def until_end_marker(batches: tf.data.Dataset) -> Iterator[Any]:
    """The NumPy batches of a `record_batches` pipeline (mapped as the caller needs) up to its end marker, the
    first batch whose first component has no rows; the iterator is never asked past it."""
    for batch in batches.as_numpy_iterator():
        if not len(tf.nest.flatten(batch)[0]):
            return
        yield batch


def items_path(data_dir: str) -> str:
    return os.path.join(data_dir, ITEMS_FILE)


def read_item_ids(items_tsv: str) -> list[str]:
    """Item ids of an `items.tsv` (item_id<TAB>count<TAB>q), in file order, most frequent first: line i is the
    model's index i + 2 (remi_tf.item_index)."""
    with tf.io.gfile.GFile(items_tsv) as stream:
        return [line.split("\t", 1)[0] for line in stream if line.strip()]


def read_target_probability(items_tsv: str) -> np.ndarray:
    """[items] q of each item of an `items.tsv`, in file order: its probability of being the target of a random-cut
    training example (pipelines/sequences.target_probability, written by `remi prepare`)."""
    values = []
    with tf.io.gfile.GFile(items_tsv) as stream:
        for line_number, line in enumerate((line for line in stream if line.strip()), start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 3:
                raise ValueError(f"{items_tsv}, line {line_number}: {len(fields)} columns, expected item_id, count and "
                                 "target_probability (an older `remi prepare` wrote two: run it again)")
            try:
                values.append(float(fields[2]))
            except ValueError:
                raise ValueError(f"{items_tsv}, line {line_number}: target_probability {fields[2]!r} is not a "
                                 "number") from None
    return np.asarray(values, np.float64)


def read_manifest(data_dir: str) -> dict[str, Any] | None:
    """manifest.json, or None when the directory has none (an incomplete or foreign directory)."""
    path = os.path.join(data_dir, MANIFEST_FILE)
    return atomic.read_json(path) if tf.io.gfile.exists(path) else None


def write_manifest(directory: str, manifest: dict[str, Any]) -> None:
    atomic.write_json(os.path.join(directory, MANIFEST_FILE), manifest)


def publish(build: Callable[[str], None], output_dir: str, overwrite: bool = False) -> str:
    """atomic.publish_directory with manifest.json moved last (the directory's completion marker)."""
    return atomic.publish_directory(build, output_dir, overwrite, last=(MANIFEST_FILE,))
