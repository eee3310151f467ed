"""Item and user side features from CSVs, carried next to the prepared data (`remi prepare --item-features
ITEMS.csv --user-features USERS.csv`).

A CSV has a header whose first column is `item_id` / `user_id` (the event log's ids); the named columns
(default: all others) are categorical features; a `|`-separated value is multi-valued (`categories`).
RecBole's atomic files (`ml-100k.item`, `ml-100k.user`: tab-separated, a `name:type` header) are read too,
by their column names; a `token_seq` / `float_seq` field is multi-valued (its values separated by spaces). The
data directory gets `item_features.tsv` / `user_features.tsv`: a header (the id and the columns), then
for items one line per item of `items.tsv` in its order, for users one line per user of the log that the
CSV lists, by user id; each with the raw values ("" or an unlisted item: the features' OOV bucket). The
files depend only on the CSV and the prepared data, so both runners of `remi prepare` write the same bytes.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf

from remi_tf import feature_tables

RESERVED_COLUMNS = ("history",)  # the served signatures' own input


def parse_spec(spec: str) -> tuple[str, list[str] | None]:
    """`FILE.csv[:COL,COL]` -> (path, columns, or None for every column after the id)."""
    path, separator, columns = spec.rpartition(":")
    if not separator or not path or "/" in columns or not columns:
        return spec, None
    return path, [column.strip() for column in columns.split(",")]


class FeatureCsv(NamedTuple):
    """A checked side-features CSV: its path, id column (item_id / user_id), the feature columns, and each
    listed id's raw values."""

    path: str
    key: str
    columns: list[str]
    values: dict[str, list[str]]


RECBOLE_SEQUENCE_TYPES = ("token_seq", "float_seq")


def _recbole_header(line: str) -> tuple[list[str], list[bool]] | None:
    """A RecBole atomic file's header (`item_id:token<TAB>class:token_seq`) -> (names, multi-valued per
    column); None for any other header."""
    fields = line.rstrip("\r\n").split("\t")
    typed = [field.rpartition(":") for field in fields]
    if len(fields) < 2 or not all(separator and name for name, separator, _ in typed):
        return None
    return [name.strip() for name, _, _ in typed], [kind.strip() in RECBOLE_SEQUENCE_TYPES for _, _, kind in typed]


def read_feature_csv(spec: str, key: str = "item_id") -> FeatureCsv:
    """Reads and checks `spec`'s CSV (`FILE.csv[:COL,COL]`) whose first column is `key`, or RecBole
    atomic file (`FILE.item[:COL,COL]`, `FILE.user`: multi-valued fields become `|` lists).

    Raises:
      FileNotFoundError; ValueError naming the file, line and field of a malformed row, a missing or
      reserved column or a repeated id.
    """
    path, columns = parse_spec(spec)
    option = "--item-features" if key == "item_id" else "--user-features"
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{option}: {path} not found")
    with tf.io.gfile.GFile(path, "r") as stream:
        text = stream.read()
    recbole = _recbole_header(text.partition("\n")[0])
    rows = csv.reader(io.StringIO(text), delimiter="\t" if recbole else ",", quoting=csv.QUOTE_NONE if recbole
                      else csv.QUOTE_MINIMAL)
    header = next(rows, None)
    names = recbole[0] if recbole else [name.strip() for name in header or []]
    if not names or names[0] != key:
        raise ValueError(f"{path}: line 1: the first column must be {key!r}, got {names[:1] or 'nothing'}")
    columns = columns or names[1:]
    missing = [column for column in columns if column not in names[1:]]
    if missing or not columns:
        raise ValueError(f"{path}: line 1: no column {missing or columns} among the features {names[1:]}")
    reserved = [column for column in columns if column in RESERVED_COLUMNS or not column.isidentifier()]
    if reserved:
        raise ValueError(f"{path}: line 1: feature column names must be identifiers other than "
                         f"{list(RESERVED_COLUMNS)} (they name the served models' inputs), got {reserved}")
    positions = [names.index(column) for column in columns]
    multi_valued = [recbole[1][position] for position in positions] if recbole else [False] * len(positions)
    values: dict[str, list[str]] = {}
    for line, row in enumerate(rows, start=2):
        if len(row) != len(names):
            raise ValueError(f"{path}: line {line}: {len(row)} fields, expected {len(names)} ({', '.join(names)})")
        row_id = row[0].strip()
        if row_id in values:
            raise ValueError(f"{path}: line {line}: {key} {row_id!r} repeats an earlier line")
        values[row_id] = ["|".join(row[position].split()) if sequence else row[position].strip()
                          for position, sequence in zip(positions, multi_valued, strict=True)]
        for column, value in zip(columns, values[row_id], strict=True):
            if "\t" in value or "\n" in value:
                raise ValueError(f"{path}: line {line}: field {column!r} has a tab or line break: {value!r}")
    return FeatureCsv(path, key, columns, values)


def write_feature_table(features: FeatureCsv, data_dir: str, ids: Sequence[str]) -> dict:
    """Writes the data directory's feature table for the log's `ids` (items: items.tsv's ids, in order,
    every one; users: the log's user ids, those the CSV lists, sorted).

    Returns:
      {"file", "columns", "<items|users>_with_features", "<items|users>_without_features", "rows_not_in_log"}.

    Raises:
      ValueError when the file lists none of the log's ids.
    """
    items = features.key == "item_id"
    kind = "items" if items else "users"
    known = [row_id for row_id in ids if row_id in features.values]
    if not known:
        raise ValueError(f"{features.path}: none of its {len(features.values):,} {features.key}s is one of the "
                         f"log's {len(ids):,} {kind} (e.g. {list(ids)[:3]}); are they the event log's {features.key}s?")
    empty = [""] * len(features.columns)
    rows = list(ids) if items else sorted(known)
    values = [features.values.get(row_id, empty) for row_id in rows]
    table = feature_tables.FeatureTable(rows, {column: [row[position] for row in values]
                                               for position, column in enumerate(features.columns)})
    feature_tables.write_table(os.path.join(data_dir, feature_tables.ITEM_FEATURES_FILE if items else
                                            feature_tables.USER_FEATURES_FILE), features.key, table)
    return {"file": os.path.abspath(features.path), "columns": features.columns, f"{kind}_with_features": len(known),
            f"{kind}_without_features": len(ids) - len(known),
            "rows_not_in_log": len(set(features.values) - set(ids))}
