"""Readers of raw interaction logs: `user_id,item_id,timestamp` CSV/TSV (optionally gzipped) and RecBole
atomic `.inter` files. Each yields `Event`s in file order; a bad line raises a ValueError naming the file,
the line number and the field."""

from __future__ import annotations

import csv
import gzip
import io
import os
from typing import Iterator, NamedTuple

FORMATS = ("csv", "tsv", "recbole")


class Event(NamedTuple):
    user_id: str
    item_id: str
    timestamp: int


def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _parse_timestamp(value: str, path: str, line: int) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{path}:{line}: field 'timestamp' must be a number, got {value!r}") from None


def _read_delimited(path: str, delimiter: str, columns: dict[str, str]) -> Iterator[Event]:
    """Reads a delimited file with a header; `columns` maps our field name to the header's name."""
    with _open_text(path) as stream:
        reader = csv.reader(stream, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: the file is empty; expected a header with {sorted(columns.values())}")
        header = [name.strip() for name in header]
        missing = [name for name in columns.values() if name not in header]
        if missing:
            raise ValueError(f"{path}:1: header {header} lacks column(s) {missing}")
        user_col, item_col, time_col = (header.index(columns[f]) for f in ("user_id", "item_id", "timestamp"))
        width = max(user_col, item_col, time_col) + 1
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < width:
                raise ValueError(f"{path}:{line_number}: expected at least {width} fields, got {len(row)}: {row}")
            user_id, item_id = row[user_col].strip(), row[item_col].strip()
            for field, value in (("user_id", user_id), ("item_id", item_id)):
                if not value:
                    raise ValueError(f"{path}:{line_number}: field {field!r} is empty")
            yield Event(user_id, item_id, _parse_timestamp(row[time_col], path, line_number))


def guess_format(path: str) -> str:
    """csv, tsv or recbole, from the file name."""
    name = os.path.basename(path).removesuffix(".gz")
    if name.endswith(".inter"):
        return "recbole"
    if name.endswith(".tsv"):
        return "tsv"
    return "csv"


def read_events(path: str, file_format: str | None = None) -> Iterator[Event]:
    """Events of one file in file order.

    Args:
      path: a .csv/.tsv (optionally .gz) with a header naming user_id, item_id, timestamp; or a RecBole
        `.inter` file (tab-separated, header `user_id:token item_id:token ... timestamp:float`).
      file_format: "csv", "tsv" or "recbole"; guessed from the name when None.
    """
    file_format = file_format or guess_format(path)
    if file_format == "csv":
        return _read_delimited(path, ",", {f: f for f in Event._fields})
    if file_format == "tsv":
        return _read_delimited(path, "\t", {f: f for f in Event._fields})
    if file_format == "recbole":
        return _read_delimited(path, "\t", {"user_id": "user_id:token", "item_id": "item_id:token",
                                            "timestamp": "timestamp:float"})
    raise ValueError(f"unknown input format {file_format!r}; expected one of {FORMATS}")
