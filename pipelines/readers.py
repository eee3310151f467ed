"""Readers of interaction logs, in file order: `user_id,item_id,timestamp` CSV/TSV (optionally gzipped),
RecBole atomic `.inter` files, Taobao UserBehavior CSV, and TFRecord event logs (plain or GZIP); local
paths or URLs of any TensorFlow file system (gs://, hdfs://, ...). TFRecord logs are read as columns
(numpy arrays), checked a batch at a time; text logs line by line.

Dirty input rules (each bad record is named with its file, line or record number, and field):
- a malformed line or record, a missing or empty user/item id, an id that is not valid UTF-8, a missing,
  non-numeric or negative timestamp, a corrupt TFRecord (the rest of that file is unreadable): a bad
  record. Up to `max_bad_records` (default 0) are skipped and summarised; one more stops the run.
- an empty file (no events): skipped and counted.
- events whose behavior is not the one asked for (`--behavior pv`; Taobao logs and TFRecord event logs
  with a behavior field): skipped and counted.
Duplicate events and short users are handled later, by the sequence rules (pipelines.sequences).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import gzip
import io
import os
import sys
from collections import Counter
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from pipelines import schema, sequences
from remi_tf import atomic

FORMATS = ("csv", "tsv", "recbole", "taobao", "tfrecord")
TFRECORD_BATCH = 4096
READ_BUFFER_BYTES = 8 << 20  # larger reads: ~12% faster GZIP shards than the default


class Event(NamedTuple):
    user_id: str
    item_id: str
    timestamp: int
    position: tuple[int, int] = (0, 0)  # (file index, record index): breaks timestamp ties in file order
    category: str | None = None
    behavior: str | None = None


class BadRecord(NamedTuple):
    path: str
    position: str  # "line 12" or "record 7"
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.position}: field {self.field!r}: {self.reason}"


class BadRecordLog:
    """Counts skipped input; raises a ValueError naming the record once more than `max_bad_records` are bad."""

    def __init__(self, max_bad_records: int = 0) -> None:
        self.max_bad_records = max_bad_records
        self.bad: Counter = Counter()  # reason -> count
        self.examples: list[str] = []
        self.skipped: Counter = Counter()  # rule -> count (not errors: empty files, other behaviors, ...)

    def add(self, record: BadRecord) -> None:
        self.bad[record.reason] += 1
        if len(self.examples) < 10:
            self.examples.append(str(record))
        total = sum(self.bad.values())
        if total > self.max_bad_records:
            raise ValueError(f"{record} (bad record {total}; --max-bad-records is {self.max_bad_records}: raise it "
                             "to skip such records)")

    def summary(self) -> dict:
        return {"bad_records": sum(self.bad.values()), "bad_by_reason": dict(self.bad),
                "bad_examples": self.examples, "skipped": dict(self.skipped)}


def _is_utf8(value: str) -> bool:
    """False when the text came from bytes that are not UTF-8 (decoded with surrogateescape)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def validate(path: str, position: str, user_id: str, item_id: str, timestamp: str | int
             ) -> BadRecord | tuple[str, str, int]:
    """The shared per-record checks: ids present and UTF-8, timestamp a non-negative integer."""
    def bad(field: str, reason: str) -> BadRecord:
        return BadRecord(path, position, field, reason)

    for field, value in (("user_id", user_id), ("item_id", item_id)):
        if not value:
            return bad(field, "missing or empty")
        if not _is_utf8(value):
            return bad(field, "not valid UTF-8")
    if isinstance(timestamp, str):
        if not timestamp.strip():
            return bad("timestamp", "missing or empty")
        try:
            timestamp = int(float(timestamp))
        except ValueError:
            return bad("timestamp", f"not a number: {timestamp!r}")
    if timestamp == MISSING_TIMESTAMP:
        return bad("timestamp", "missing")
    if timestamp < 0:
        return bad("timestamp", f"negative: {timestamp}")
    return user_id, item_id, timestamp


class _GFileReader(io.RawIOBase):
    """A file on any TensorFlow file system (gs://, hdfs://, ...) as a raw binary stream."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._file = tf.io.gfile.GFile(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        data = self._file.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


@contextlib.contextmanager
def _open_text(path: str) -> Iterator[io.TextIOBase]:
    """A text log (gzipped when named .gz), local or on a TensorFlow file system; undecodable bytes are
    kept as surrogates for `validate` to reject."""
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(io.BufferedReader(_GFileReader(path)) if atomic.is_remote(path) else open(path, "rb"))
        if path.endswith(".gz"):
            raw = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        yield stack.enter_context(io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline=""))


def _read_delimited(path: str, file_index: int, delimiter: str, columns: dict[str, str] | None,
                    log: BadRecordLog, behavior: str | None = None) -> Iterator[Event]:
    """A delimited file; `columns` maps our field names to header names (None: Taobao's fixed columns)."""
    with _open_text(path) as stream:
        reader = csv.reader(stream, delimiter=delimiter)
        if columns is None:
            index = {"user_id": 0, "item_id": 1, "category": 2, "behavior": 3, "timestamp": 4}
            first_line = 1
        else:
            header = next(reader, None)
            if header is None:
                log.skipped["empty_files"] += 1
                return
            header = [name.strip() for name in header]
            missing = [name for name in columns.values() if name not in header]
            if missing:
                raise ValueError(f"{path}: line 1: header {header} lacks column(s) {missing}")
            index = {field: header.index(name) for field, name in columns.items()}
            first_line = 2
        width = max(index.values()) + 1
        empty = True
        for line_number, row in enumerate(reader, start=first_line):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            empty = False
            position = f"line {line_number}"
            if len(row) < width:
                log.add(BadRecord(path, position, "(line)", f"expected {width} fields, got {len(row)}"))
                continue
            if behavior is not None and row[index["behavior"]].strip() != behavior:
                log.skipped["other_behavior"] += 1
                continue
            checked = validate(path, position, row[index["user_id"]].strip(), row[index["item_id"]].strip(),
                               row[index["timestamp"]])
            if isinstance(checked, BadRecord):
                log.add(checked)
                continue
            yield Event(*checked, position=(file_index, line_number),
                        category=row[index["category"]].strip() if "category" in index else None,
                        behavior=row[index["behavior"]].strip() if "behavior" in index else None)
        if empty:
            log.skipped["empty_files"] += 1


def _decode(value: bytes) -> str:
    return value.decode("utf-8", errors="surrogateescape")


# Parsing with defaults for the required fields, so that a record missing one does not fail its whole
# batch: `validate` then reports the default as that record's missing field.
MISSING_TIMESTAMP = -(2 ** 63)
_LENIENT_EVENT_FEATURES = {
    **schema.EVENT_FEATURES,
    "user_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "item_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "timestamp": tf.io.FixedLenFeature([], tf.int64, default_value=MISSING_TIMESTAMP),
}
_FIELDS = ("user_id", "item_id", "timestamp", "category", "behavior")
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
                                                            batch["timestamp"].tolist())):
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


def _tfrecord_columns(path: str, file_index: int, log: BadRecordLog, fields: Sequence[str],
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


def _read_tfrecord(path: str, file_index: int, log: BadRecordLog, behavior: str | None = None
                   ) -> Iterator[list[Event]]:
    """One event-log shard in record order, in batches of events."""
    for batch in _tfrecord_columns(path, file_index, log, _FIELDS, behavior):
        positions = [divmod(position, 1 << sequences.POSITION_FILE_SHIFT) for position in batch["position"].tolist()]
        yield [Event(_decode(user_id), _decode(item_id), timestamp, position, _decode(category) or None,
                     _decode(event_behavior) or None)
               for user_id, item_id, timestamp, position, category, event_behavior in zip(
                   batch["user_id"], batch["item_id"], batch["timestamp"].tolist(), positions, batch["category"],
                   batch["behavior"])]


def _batched(events: Iterator[Event], size: int = TFRECORD_BATCH) -> Iterator[list[Event]]:
    batch = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


CONVERTED_SHARDS = "events-*-of-*.tfrecord*"  # the event log shards of a `remi convert` output
NOT_DATA = ("manifest.json",)  # side files of a prepared or converted directory


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Paths, globs and `remi convert` output directories -> sorted existing files; a pattern that matches
    nothing is an error. A glob skips side files (manifest.json, hidden or `_`-prefixed names) with a
    note on stderr."""
    files = []
    for pattern in patterns:
        if tf.io.gfile.isdir(pattern):
            matched = sorted(tf.io.gfile.glob(os.path.join(pattern, CONVERTED_SHARDS)))
            if not matched:
                raise FileNotFoundError(f"{pattern!r} is a directory without {CONVERTED_SHARDS} shards (a `remi "
                                        "convert` output); pass its files or a glob")
        elif glob.has_magic(pattern):
            matched = sorted(tf.io.gfile.glob(pattern))
            skipped = [path for path in matched if _is_side_file(path)]
            if skipped:
                print(f"{pattern}: skipping {len(skipped)} file(s) that are not event data: "
                      f"{', '.join(os.path.basename(path) for path in skipped)}", file=sys.stderr)
            matched = [path for path in matched if not _is_side_file(path)]
        else:
            matched = [pattern]
        if not matched or not all(tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path) for path in matched):
            raise FileNotFoundError(f"no input file matches {pattern!r}")
        files.extend(matched)
    return files


def _is_side_file(path: str) -> bool:
    name = os.path.basename(path)
    return name in NOT_DATA or name.startswith((".", "_")) or tf.io.gfile.isdir(path)


def guess_format(path: str) -> str:
    """csv, tsv, recbole or tfrecord, from the file name (Taobao files must be named with --format)."""
    name = os.path.basename(path).removesuffix(".gz")
    if name.endswith(".inter"):
        return "recbole"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(".tfrecord") or ".tfrecord-" in name or name.endswith(".tfrecords"):
        return "tfrecord"
    return "csv"


def read_event_batches(path: str, file_format: str | None = None, log: BadRecordLog | None = None,
                       file_index: int = 0, behavior: str | None = None) -> Iterator[list[Event]]:
    """Events of one file in file order, in batches; bad records go to `log` (default: none allowed)."""
    log = log if log is not None else BadRecordLog()
    file_format = file_format or guess_format(path)
    plain = {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp"}
    if file_format == "tfrecord":
        return _read_tfrecord(path, file_index, log, behavior)
    if file_format == "csv":
        return _batched(_read_delimited(path, file_index, ",", plain, log))
    if file_format == "tsv":
        return _batched(_read_delimited(path, file_index, "\t", plain, log))
    if file_format == "recbole":
        return _batched(_read_delimited(path, file_index, "\t", {
            "user_id": "user_id:token", "item_id": "item_id:token", "timestamp": "timestamp:float"}, log))
    if file_format == "taobao":
        return _batched(_read_delimited(path, file_index, ",", None, log, behavior))
    raise ValueError(f"unknown input format {file_format!r}; expected one of {FORMATS}")


def read_blocks(path: str, file_format: str | None = None, log: BadRecordLog | None = None, file_index: int = 0,
                behavior: str | None = None) -> Iterator[sequences.EventBlock]:
    """The user, item, timestamp and position columns of one file's events, in file order, in blocks."""
    log = log if log is not None else BadRecordLog()
    if (file_format or guess_format(path)) == "tfrecord":
        for batch in _tfrecord_columns(path, file_index, log, _FIELDS[:3], behavior):
            yield _block(batch)
        return
    for events in read_event_batches(path, file_format, log, file_index, behavior):
        yield sequences.EventBlock(
            sequences.object_array([event.user_id.encode("utf-8") for event in events]),
            sequences.object_array([event.item_id.encode("utf-8") for event in events]),
            np.array([event.timestamp for event in events], dtype=np.int64),
            np.array([(event.position[0] << sequences.POSITION_FILE_SHIFT) | event.position[1] for event in events],
                     dtype=np.int64))


def _block(batch: dict[str, np.ndarray]) -> sequences.EventBlock:
    return sequences.EventBlock(batch["user_id"], batch["item_id"], batch["timestamp"], batch["position"])


class _NotClean(Exception):
    """The interleaved fast path met a bad record or an unreadable file."""


def _interleaved_clean_blocks(paths: Sequence[str], behavior: str | None
                              ) -> Iterator[tuple[int, sequences.EventBlock, int]]:
    """(file index, block, events of other behaviors skipped) from several event-log shards read and
    parsed in parallel, in a deterministic order; raises _NotClean at the first batch that is not clean."""
    fields = _FIELDS[:3] + (("behavior",) if behavior is not None else ())
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
                raise _NotClean()
            yield int(file_index), _block(batch), skipped
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        raise _NotClean() from error


def read_all_blocks(paths: Sequence[str], file_format: str | None, log: BadRecordLog, behavior: str | None = None,
                    on_block: Callable[[int], None] = lambda size: None) -> list[sequences.EventBlock]:
    """Every file's events as blocks of columns (`on_block(size)` after each, for progress).

    Several TFRecord shards are first read in parallel, assuming clean input; at the first bad record
    everything is read again one file at a time by the path that names and counts bad records.
    """
    if len(paths) > 1 and all((file_format or guess_format(path)) == "tfrecord" for path in paths):
        blocks, files_with_records, other_behavior = [], set(), 0
        try:
            for file_index, block, skipped in _interleaved_clean_blocks(paths, behavior):
                blocks.append(block)
                files_with_records.add(file_index)
                other_behavior += skipped
                on_block(len(block.users))
            if len(files_with_records) < len(paths):
                log.skipped["empty_files"] += len(paths) - len(files_with_records)
            if other_behavior:
                log.skipped["other_behavior"] += other_behavior
            return blocks
        except _NotClean:
            on_block(-sum(len(block.users) for block in blocks))
    blocks = []
    for file_index, path in enumerate(paths):
        for block in read_blocks(path, file_format, log, file_index, behavior):
            blocks.append(block)
            on_block(len(block.users))
    return blocks


def read_events(path: str, file_format: str | None = None, log: BadRecordLog | None = None, file_index: int = 0,
                behavior: str | None = None) -> Iterator[Event]:
    """Events of one file in file order."""
    for batch in read_event_batches(path, file_format, log, file_index, behavior):
        yield from batch


def read_all(paths: Sequence[str], file_format: str | None, log: BadRecordLog, behavior: str | None = None
             ) -> Iterator[list[Event]]:
    """Event batches of every file, in order."""
    for file_index, path in enumerate(paths):
        yield from read_event_batches(path, file_format, log, file_index, behavior)
