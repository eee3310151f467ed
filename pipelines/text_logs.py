"""Delimited text logs (CSV, TSV, RecBole .inter, Taobao), plain or gzipped, local or on any TensorFlow
file system, read line by line under the record checks."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import typing
from collections.abc import Iterator

import tensorflow as tf

from remi_tf import atomic
from remi_tf.pipelines import headers
from remi_tf.pipelines.record_checks import BadRecord, BadRecordLog, Event, validate


class _GFileReader(io.RawIOBase):
    """A file on any TensorFlow file system (gs://, hdfs://, ...) as a raw binary stream."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._file = tf.io.gfile.GFile(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]  # typeshed: Buffer (3.12)
        data = self._file.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


@contextlib.contextmanager
def _open_text(path: str) -> Iterator[io.TextIOBase]:
    """A text log (gzipped when named .gz), local or on a TensorFlow file system; a UTF-8 byte order mark is
    skipped, undecodable bytes are kept as surrogates for `validate` to reject."""
    with contextlib.ExitStack() as stack:
        opened: io.BufferedIOBase = io.BufferedReader(_GFileReader(path)) if atomic.is_remote(path) \
            else open(path, "rb")
        raw = stack.enter_context(opened)
        if path.endswith(".gz"):
            raw = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        binary = typing.cast(typing.BinaryIO, raw)  # typeshed's TextIOWrapper takes no BufferedIOBase
        yield stack.enter_context(io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline=""))


def read_delimited(path: str, file_index: int, delimiter: str, columns: dict[str, str] | None,
                    log: BadRecordLog, behavior: str | None = None, min_rating: float | None = None,
                    time_digits: int = 0) -> Iterator[Event]:
    """A delimited file; `columns` maps our field names to header names (None: Taobao's fixed columns).
    With `min_rating`, events whose `rating` column is below it are skipped (counted). Timestamps are read in
    the unit of `time_digits` digits of a second (record_checks.parse_timestamp)."""
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
                raise ValueError(headers.missing_columns_message(path, header, columns, delimiter))
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
            if min_rating is not None:
                try:
                    rating = float(row[index["rating"]])
                except ValueError:
                    log.add(BadRecord(path, position, "rating", f"not a number: {row[index['rating']]!r}"))
                    continue
                if rating < min_rating:
                    log.skipped["below_min_rating"] += 1
                    continue
            checked = validate(path, position, row[index["user_id"]].strip(), row[index["item_id"]].strip(),
                               row[index["timestamp"]], time_digits)
            if isinstance(checked, BadRecord):
                log.add(checked)
                continue
            yield Event(*checked, position=(file_index, line_number),
                        category=row[index["category"]].strip() if "category" in index else None,
                        behavior=row[index["behavior"]].strip() if "behavior" in index else None)
        if empty:
            log.skipped["empty_files"] += 1
