"""TFRecord event logs (plain or GZIP) read as columns: parsed in tf.data threads, checked a batch at a
time column-wise (record by record only where a batch has a bad record), and a parallel path that reads
several clean shards at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from remi_tf import data_directory
from remi_tf.pipelines import sequences
from remi_tf.pipelines.record_checks import MISSING_TIMESTAMP, BadRecord, BadRecordLog, Event, validate

TFRECORD_BATCH = 4096
READ_BUFFER_BYTES = 8 << 20  # larger reads: ~12% faster GZIP shards than the default


def _decode(value: bytes) -> str:
    return value.decode("utf-8", errors="surrogateescape")


# Parsing with defaults for the required fields, so that a record missing one does not fail its whole
# batch: `validate` then reports the default as that record's missing field.
_LENIENT_EVENT_FEATURES = {
    **data_directory.EVENT_FEATURES,
    "user_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "item_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "timestamp": tf.io.FixedLenFeature([], tf.int64, default_value=MISSING_TIMESTAMP),
}
FIELDS = ("user_id", "item_id", "timestamp", "category", "behavior")
_RECORD_MASK = (1 << sequences.POSITION_FILE_SHIFT) - 1


def _parsed_batches(path: str, log: BadRecordLog, fields: Sequence[str]
                    ) -> Iterator[tuple[int, dict[str, np.ndarray] | None]]:
    """(first record number, {field: values [n]} or None for a record that is not an event) per batch.

    Decompression and parsing run in tf.data threads, overlapping the Python work on the previous
    batch. A batch that fails (a record that is not an Example, or corrupt data) is re-read one record
    at a time: a non-Example record becomes None and a bad record; corrupt data ends the file with one
    bad record, keeping the records before it.
    """
    features = {field: _LENIENT_EVENT_FEATURES[field] for field in fields}

    def columns(parsed: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
        return {field: parsed[field].numpy() for field in fields}

    dataset = tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else "",
                                      buffer_size=READ_BUFFER_BYTES)
    batches = dataset.batch(TFRECORD_BATCH).map(lambda batch: tf.io.parse_example(batch, features),
                                                num_parallel_calls=2).prefetch(2)
    count = 0
    iterator = iter(batches)
    while True:
        try:
            parsed = next(iterator)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
            break
        batch = columns(parsed)
        yield count, batch
        count += len(batch["user_id"])
    iterator = iter(dataset.skip(count))
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except tf.errors.DataLossError as error:
            log.add(BadRecord(path, f"record {count}", "(file)", "corrupt TFRecord data; the rest of the file is "
                              f"unreadable ({error.message.splitlines()[0][:100]})"))
            return
        try:
            yield count, columns(tf.io.parse_example(record[tf.newaxis], features))
        except tf.errors.InvalidArgumentError:
            log.add(BadRecord(path, f"record {count}", "(record)", "not an event tf.train.Example"))
            yield count, None
        count += 1


def _all_utf8(values: np.ndarray) -> bool:
    """True when every id is valid UTF-8 (a newline cannot complete or continue a multi-byte character)."""
    try:
        b"\n".join(values.tolist()).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _is_clean(batch: dict[str, np.ndarray]) -> bool:
    """Whether every record passes `validate`, checked column-wise (the fast path)."""
    users, items = batch["user_id"], batch["item_id"]
    return bool((batch["timestamp"] >= 0).all() and not (users == b"").any() and not (items == b"").any()
                and _all_utf8(users) and _all_utf8(items))


def _valid_rows(path: str, batch: dict[str, np.ndarray], log: BadRecordLog) -> np.ndarray | None:
    """None when every record of the batch passes `validate` (checked column-wise); else a row mask,
    with each bad record logged by record number."""
    if _is_clean(batch):
        return None
    records = (batch["position"] & _RECORD_MASK).tolist()
    valid = np.ones(len(records), dtype=bool)
    for row, (user_id, item_id, timestamp) in enumerate(zip(batch["user_id"], batch["item_id"],
                                                            batch["timestamp"].tolist(), strict=True)):
        checked = validate(path, f"record {records[row]}", _decode(user_id), _decode(item_id), timestamp)
        if isinstance(checked, BadRecord):
            log.add(checked)
            valid[row] = False
    return valid


def _rows(batch: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {field: values[keep] for field, values in batch.items()}


def _numbered(batch: dict[str, np.ndarray], file_index: int, first: int) -> dict[str, np.ndarray]:
    """Adds the positions (file index << 40 | record number) of a batch whose first record is `first`."""
    size = len(batch["user_id"])
    batch["position"] = (file_index << sequences.POSITION_FILE_SHIFT) + first + np.arange(size, dtype=np.int64)
    return batch


def _without_other_behaviors(batch: dict[str, np.ndarray], behavior: str | None
                             ) -> tuple[dict[str, np.ndarray], int]:
    """(the batch's events of `behavior`, how many others were dropped); every event when it is None."""
    if behavior is None:
        return batch, 0
    other = batch["behavior"] != behavior.encode("utf-8")
    return (_rows(batch, ~other), int(other.sum())) if other.any() else (batch, 0)


def tfrecord_columns(path: str, file_index: int, log: BadRecordLog, fields: Sequence[str],
                      behavior: str | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The valid events of one event-log shard in record order, in batches of columns, with positions;
    with `behavior`, only the events of that behavior (the others are counted as skipped)."""
    fields = tuple(fields) + (("behavior",) if behavior is not None and "behavior" not in fields else ())
    count = 0
    for first, batch in _parsed_batches(path, log, fields):
        if batch is None:
            count += 1
            continue
        count += len(batch["user_id"])
        batch, skipped = _without_other_behaviors(_numbered(batch, file_index, first), behavior)
        if skipped:
            log.skipped["other_behavior"] += skipped
        valid = _valid_rows(path, batch, log)
        yield batch if valid is None else _rows(batch, valid)
    if count == 0:
        log.skipped["empty_files"] += 1


def read_tfrecord(path: str, file_index: int, log: BadRecordLog, behavior: str | None = None
                   ) -> Iterator[list[Event]]:
    """One event-log shard in record order, in batches of events."""
    for batch in tfrecord_columns(path, file_index, log, FIELDS, behavior):
        positions = [divmod(position, 1 << sequences.POSITION_FILE_SHIFT) for position in batch["position"].tolist()]
        yield [Event(_decode(user_id), _decode(item_id), timestamp, position, _decode(category) or None,
                     _decode(event_behavior) or None)
               for user_id, item_id, timestamp, position, category, event_behavior in zip(
                   batch["user_id"], batch["item_id"], batch["timestamp"].tolist(), positions, batch["category"],
                   batch["behavior"], strict=True)]


def to_block(batch: dict[str, np.ndarray]) -> sequences.EventBlock:
    return sequences.EventBlock(batch["user_id"], batch["item_id"], batch["timestamp"], batch["position"])


class NotClean(Exception):
    """The interleaved fast path met a bad record or an unreadable file."""


def interleaved_clean_blocks(paths: Sequence[str], behavior: str | None
                              ) -> Iterator[tuple[int, sequences.EventBlock, int]]:
    """(file index, block, events of other behaviors skipped) from several event-log shards read and
    parsed in parallel, in a deterministic order; raises NotClean at the first batch that is not clean."""
    fields = FIELDS[:3] + (("behavior",) if behavior is not None else ())
    features = {field: _LENIENT_EVENT_FEATURES[field] for field in fields}

    def numbered_batches(path: tf.Tensor, file_index: tf.Tensor) -> tf.data.Dataset:
        compression = tf.where(tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", "")
        records = tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=READ_BUFFER_BYTES)
        return records.batch(TFRECORD_BATCH).enumerate().map(
            lambda number, batch: (file_index, number * TFRECORD_BATCH, batch))

    files = tf.data.Dataset.from_tensor_slices((list(paths), tf.range(len(paths), dtype=tf.int64)))
    batches = (files.interleave(numbered_batches, cycle_length=2, num_parallel_calls=2, deterministic=True)
               .map(lambda index, first, batch: (index, first, tf.io.parse_example(batch, features)),
                    num_parallel_calls=2)
               .prefetch(2))
    try:
        for file_index, first, parsed in batches:
            batch = _numbered({field: parsed[field].numpy() for field in features}, int(file_index), int(first))
            batch, skipped = _without_other_behaviors(batch, behavior)
            if not _is_clean(batch):
                raise NotClean()
            yield int(file_index), to_block(batch), skipped
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        raise NotClean() from error
