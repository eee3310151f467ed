"""Readers of interaction logs, in file order: `user_id,item_id,timestamp` CSV/TSV (optionally gzipped),
RecBole atomic `.inter` files, Taobao UserBehavior CSV, and TFRecord event logs (plain or GZIP); local
paths or URLs of any TensorFlow file system (gs://, hdfs://, ...). TFRecord logs are read as columns
(numpy arrays), checked a batch at a time (pipelines.tfrecord_logs); text logs line by line
(pipelines.text_logs); both under the dirty-input rules of pipelines.record_checks (each bad record
named with its file, line or record number, and field). This module picks the reader per format and
expands the inputs.
"""

from __future__ import annotations

import copy
import glob
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from remi_tf import data_directory
from remi_tf.pipelines import record_checks, sequences, text_logs, tfrecord_logs
from remi_tf.pipelines.record_checks import BadRecordLog, Event
from remi_tf.suggestions import did_you_mean

logger = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "recbole", "taobao", "tfrecord")


def _batched(events: Iterator[Event], size: int = tfrecord_logs.TFRECORD_BATCH) -> Iterator[list[Event]]:
    batch = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


CONVERTED_SHARDS = "events-*-of-*.tfrecord*"  # the event log shards of a `remi convert` output
NOT_DATA = (data_directory.MANIFEST_FILE,)  # side files of a prepared or converted directory


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
                logger.warning(f"{pattern}: skipping {len(skipped)} file(s) that are not event data: "
                      f"{', '.join(os.path.basename(path) for path in skipped)}")
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
                       file_index: int = 0, behavior: str | None = None, columns: Mapping[str, str] | None = None,
                       min_rating: float | None = None, time_digits: int = 0) -> Iterator[list[Event]]:
    """Events of one file in file order, in batches; bad records go to `log` (default: none allowed).
    `columns`: CSV/TSV header names of the fields (user_id, item_id, timestamp, behavior) where they differ
    from the field names (parse_columns). `min_rating`: keep events whose rating column is at least it
    (CSV/TSV `rating`, RecBole `rating:float`). `time_digits`: a text log's timestamps in that many digits of a
    second (record_checks.TIME_UNITS; a finer one raises FinerTimeUnit); TFRecord timestamps are kept as they
    are."""
    log = log if log is not None else BadRecordLog()
    file_format = file_format or guess_format(path)
    if columns and file_format not in ("csv", "tsv"):
        raise ValueError(f"--columns names the header columns of CSV/TSV logs; {path} is {file_format}")
    if min_rating is not None and file_format not in ("csv", "tsv", "recbole"):
        raise ValueError(f"--min-rating reads the rating column of CSV/TSV or RecBole logs; {path} is {file_format}")
    plain = {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp"}
    if file_format == "tfrecord":
        return tfrecord_logs.read_tfrecord(path, file_index, log, behavior)
    if behavior is not None:  # a column named behavior (behavior:token in RecBole files)
        plain["behavior"] = "behavior"
    if min_rating is not None:
        plain["rating"] = "rating"
    plain.update(columns or {})
    if file_format == "csv":
        return _batched(text_logs.read_delimited(path, file_index, ",", plain, log, behavior, min_rating, time_digits))
    if file_format == "tsv":
        return _batched(text_logs.read_delimited(path, file_index, "\t", plain, log, behavior, min_rating,
                                                 time_digits))
    if file_format == "recbole":
        return _batched(text_logs.read_delimited(path, file_index, "\t", {
            "user_id": "user_id:token", "item_id": "item_id:token", "timestamp": "timestamp:float",
            **({"behavior": "behavior:token"} if behavior is not None else {}),
            **({"rating": "rating:float"} if min_rating is not None else {})}, log, behavior, min_rating, time_digits))
    if file_format == "taobao":
        return _batched(text_logs.read_delimited(path, file_index, ",", None, log, behavior, time_digits=time_digits))
    raise ValueError(f"unknown input format {file_format!r}; expected one of {FORMATS}")


def read_blocks(path: str, file_format: str | None = None, log: BadRecordLog | None = None, file_index: int = 0,
                behavior: str | None = None, columns: Mapping[str, str] | None = None,
                min_rating: float | None = None, time_digits: int = 0) -> Iterator[sequences.EventBlock]:
    """The user, item, timestamp and position columns of one file's events, in file order, in blocks;
    `time_digits`: see read_event_batches."""
    log = log if log is not None else BadRecordLog()
    if (file_format or guess_format(path)) == "tfrecord":
        for batch in tfrecord_logs.tfrecord_columns(path, file_index, log, tfrecord_logs.FIELDS[:3], behavior):
            yield tfrecord_logs.to_block(batch)
        return
    for events in read_event_batches(path, file_format, log, file_index, behavior, columns, min_rating, time_digits):
        yield sequences.EventBlock(
            sequences.object_array([event.user_id.encode("utf-8") for event in events]),
            sequences.object_array([event.item_id.encode("utf-8") for event in events]),
            np.array([event.timestamp for event in events], dtype=np.int64),
            np.array([(event.position[0] << sequences.POSITION_FILE_SHIFT) | event.position[1] for event in events],
                     dtype=np.int64))


def read_timed_blocks(path: str, file_format: str | None, log: BadRecordLog, file_index: int = 0,
                      behavior: str | None = None, columns: Mapping[str, str] | None = None,
                      min_rating: float | None = None) -> Iterator[tuple[int, sequences.EventBlock]]:
    """read_blocks in the coarsest unit that holds the file's timestamps: (digits of a second, block) pairs.
    Reading starts in the log's own unit (digits 0); at a timestamp with more digits of a second (FinerTimeUnit)
    the file is read again in the finer unit from its start, its events already given skipped, so that each
    block holds its events once, exactly, in the unit it names (rescaled_block brings them to one unit). Bad
    records and skips are counted once: the counts of the reading that reached the end are kept."""
    if (file_format or guess_format(path)) == "tfrecord":  # integers, in the unit of the `remi convert` beside them
        digits = converted_time_digits(path)
        for block in read_blocks(path, file_format, log, file_index, behavior):
            yield digits, block
        return
    digits, given = 0, -1  # the position of the last event given
    while True:
        attempt = copy.deepcopy(log)
        try:
            for block in read_blocks(path, file_format, attempt, file_index, behavior, columns, min_rating, digits):
                new = block if not len(block.positions) or block.positions[0] > given else \
                    sequences.EventBlock(*(column[block.positions > given] for column in block))
                given = int(block.positions[-1]) if len(block.positions) else given
                if len(new.positions):
                    yield digits, new
            log.bad, log.examples, log.skipped = attempt.bad, attempt.examples, attempt.skipped
            return
        except record_checks.FinerTimeUnit as finer:
            logger.info(f"{finer}: reading {path} again in {record_checks.TIME_UNITS[finer.digits]}")
            digits = finer.digits


def converted_time_digits(path: str) -> int:
    """The digits of a second of a TFRecord event log's timestamps: the `timestamp_unit` of the `remi convert`
    manifest beside it, 0 (its integers as they are) without one."""
    manifest = data_directory.read_manifest(os.path.dirname(path)) or {}
    return data_directory.time_digits(manifest)


def rescaled_block(block: sequences.EventBlock, digits: int, to_digits: int) -> sequences.EventBlock:
    """A block whose timestamps hold `digits` digits of a second, in the finer unit of `to_digits`, exactly; a
    timestamp that does not fit int64 there is an error naming its file (by index) and line."""
    if digits == to_digits:
        return block
    factor = 10 ** (to_digits - digits)
    too_large = np.flatnonzero(np.abs(block.timestamps) > np.iinfo(np.int64).max // factor)
    if len(too_large):
        position = int(block.positions[too_large[0]])
        raise ValueError(f"input file {(position >> sequences.POSITION_FILE_SHIFT) + 1}, line "
                         f"{position & ((1 << sequences.POSITION_FILE_SHIFT) - 1)}: timestamp "
                         f"{block.timestamps[too_large[0]]} does not fit int64 in "
                         f"{record_checks.TIME_UNITS[to_digits]}, the unit the log's fractional seconds need "
                         "(its integer times are read as seconds then)")
    return block._replace(timestamps=block.timestamps * factor)


def finest(timed: Sequence[tuple[int, sequences.EventBlock]]) -> tuple[list[sequences.EventBlock], int]:
    """(digits, block) pairs -> the blocks in the finest of their units, and its digits."""
    digits = max((block_digits for block_digits, _ in timed), default=0)
    return [rescaled_block(block, block_digits, digits) for block_digits, block in timed], digits


ESTIMATE_SAMPLE_BYTES = 1 << 20  # decompressed bytes read from the start of each file to estimate its events


def estimate_events(paths: Sequence[str], file_format: str | None = None) -> int:
    """About how many events `paths` hold, from each file's size and the first ESTIMATE_SAMPLE_BYTES of its
    decompressed content: bytes per event there (lines, or TFRecord records) and, for a .gz file, the
    compression ratio reached so far. Reads a megabyte per file, whatever the file's size."""
    import gzip

    import tensorflow as tf

    total = 0.0
    for path in paths:
        size = tf.io.gfile.stat(path).length
        with tf.io.gfile.GFile(path, "rb") as raw:
            if path.endswith(".gz"):
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                    sample = stream.read(ESTIMATE_SAMPLE_BYTES)
                    ratio = len(sample) / max(raw.tell(), 1)
            else:
                sample, ratio = raw.read(ESTIMATE_SAMPLE_BYTES), 1.0
        if (file_format or guess_format(path)) == "tfrecord":
            count, offset = 0, 0
            while offset + 12 <= len(sample):  # length (8 bytes), its crc (4), data, data crc (4)
                offset += 16 + int.from_bytes(sample[offset:offset + 8], "little")
                count += 1
        else:
            count = sample.count(b"\n")
        total += size * ratio * count / max(len(sample), 1)
    return int(total)


def read_all_blocks(paths: Sequence[str], file_format: str | None, log: BadRecordLog, behavior: str | None = None,
                    on_block: Callable[[int], None] = lambda size: None, columns: Mapping[str, str] | None = None,
                    min_rating: float | None = None) -> tuple[list[sequences.EventBlock], int]:
    """Every file's events as blocks of columns (`on_block(size)` after each, for progress), with timestamps
    in the finest unit any file needs (read_timed_blocks), and that unit's digits of a second.

    Several TFRecord shards are first read in parallel, assuming clean input; at the first bad record
    everything is read again one file at a time by the path that names and counts bad records.
    """
    if len(paths) > 1 and all((file_format or guess_format(path)) == "tfrecord" for path in paths):
        blocks, files_with_records, other_behavior = [], set(), 0
        file_digits = [converted_time_digits(path) for path in paths]
        try:
            for file_index, block, skipped in tfrecord_logs.interleaved_clean_blocks(paths, behavior):
                blocks.append((file_digits[file_index], block))
                files_with_records.add(file_index)
                other_behavior += skipped
                on_block(len(block.users))
            if len(files_with_records) < len(paths):
                log.skipped["empty_files"] += len(paths) - len(files_with_records)
            if other_behavior:
                log.skipped["other_behavior"] += other_behavior
            return finest(blocks)
        except tfrecord_logs.NotClean:
            on_block(-sum(len(block.users) for _, block in blocks))
    timed = []
    for file_index, path in enumerate(paths):
        for digits, block in read_timed_blocks(path, file_format, log, file_index, behavior, columns, min_rating):
            timed.append((digits, block))
            on_block(len(block.users))
    return finest(timed)


def read_all(paths: Sequence[str], file_format: str | None, log: BadRecordLog, behavior: str | None = None,
             columns: Mapping[str, str] | None = None, min_rating: float | None = None,
             time_digits: int = 0) -> Iterator[list[Event]]:
    """Event batches of every file, in order (timestamps in `time_digits` digits of a second)."""
    for file_index, path in enumerate(paths):
        yield from read_event_batches(path, file_format, log, file_index, behavior, columns, min_rating, time_digits)


FIELD_NAMES = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "behavior": "behavior",
               "rating": "rating"}


def parse_columns(spec: str | None) -> dict[str, str] | None:
    """`--columns user=uid,item=sku,timestamp=ts[,behavior=action]` -> {field: header name}."""
    if not spec:
        return None
    columns = {}
    for part in spec.split(","):
        field, separator, header = part.partition("=")
        if not separator or field.strip() not in FIELD_NAMES or not header.strip():
            raise ValueError(f"--columns {spec!r}: expected FIELD=HEADER pairs separated by commas, FIELD one of "
                             f"{', '.join(FIELD_NAMES)} (e.g. user=uid,item=sku,timestamp=ts)"
                             + (f"; FIELD {field.strip()!r}{did_you_mean(field.strip(), FIELD_NAMES)}"
                                if separator and field.strip() not in FIELD_NAMES else ""))
        columns[FIELD_NAMES[field.strip()]] = header.strip()
    return columns
