"""Item and user side features from CSVs, carried next to the prepared data (`remi prepare --item-features
ITEMS.csv --user-features USERS.csv`).

A CSV has a header whose first column is `item_id` / `user_id` (the event log's ids); the named columns
(default: all others) are categorical features; a `|`-separated value is multi-valued (`categories`). The
data directory gets `item_features.tsv` / `user_features.tsv`: a header (the id and the columns), then
for items one line per item of `items.tsv` in its order, for users one line per user of the log that the
CSV lists, by user id; each with the raw values ("" or an unlisted item: the features' OOV bucket). The
files depend only on the CSV and the prepared data, so both runners of `remi prepare` write the same bytes.
"""

from __future__ import annotations

import csv
import io
import os
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from remi_tf import atomic

ITEM_FEATURES_FILE = "item_features.tsv"
USER_FEATURES_FILE = "user_features.tsv"
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


def read_feature_csv(spec: str, key: str = "item_id") -> FeatureCsv:
    """Reads and checks `spec`'s CSV (`FILE.csv[:COL,COL]`) whose first column is `key`.

    Raises:
      FileNotFoundError; ValueError naming the file, line and field of a malformed row, a missing or
      reserved column or a repeated id.
    """
    path, columns = parse_spec(spec)
    option = "--item-features" if key == "item_id" else "--user-features"
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{option}: {path} not found")
    with tf.io.gfile.GFile(path, "r") as stream:
        rows = csv.reader(io.StringIO(stream.read()))
        header = next(rows, None)
        if not header or header[0].strip() != key:
            raise ValueError(f"{path}: line 1: the first column must be {key!r}, got "
                             f"{header[:1] if header else 'nothing'}")
        names = [name.strip() for name in header]
        columns = columns or names[1:]
        missing = [column for column in columns if column not in names[1:]]
        if missing or not columns:
            raise ValueError(f"{path}: line 1: no column {missing or columns} among the features {names[1:]}")
        reserved = [column for column in columns if column in RESERVED_COLUMNS or not column.isidentifier()]
        if reserved:
            raise ValueError(f"{path}: line 1: feature column names must be identifiers other than "
                             f"{list(RESERVED_COLUMNS)} (they name the served models' inputs), got {reserved}")
        positions = [names.index(column) for column in columns]
        values: dict[str, list[str]] = {}
        for line, row in enumerate(rows, start=2):
            if len(row) != len(names):
                raise ValueError(f"{path}: line {line}: {len(row)} fields, expected {len(names)} ({', '.join(names)})")
            row_id = row[0].strip()
            if row_id in values:
                raise ValueError(f"{path}: line {line}: {key} {row_id!r} repeats an earlier line")
            values[row_id] = [row[position].strip() for position in positions]
            for column, value in zip(columns, values[row_id]):
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
    rows = ids if items else sorted(known)
    lines = ["\t".join([features.key, *features.columns])] + [
        "\t".join([row_id, *features.values.get(row_id, empty)]) for row_id in rows]
    atomic.write_text(os.path.join(data_dir, ITEM_FEATURES_FILE if items else USER_FEATURES_FILE),
                      "\n".join(lines) + "\n")
    return {"file": os.path.abspath(features.path), "columns": features.columns, f"{kind}_with_features": len(known),
            f"{kind}_without_features": len(ids) - len(known),
            "rows_not_in_log": len(set(features.values) - set(ids))}


class FeatureTable(NamedTuple):
    """A data directory's feature table: ids (items.tsv's order, or users by id) and raw values per column."""

    ids: list[str]
    values: dict[str, list[str]]  # column -> one raw value per id


def read_feature_table(path: str) -> FeatureTable:
    """Reads an `item_features.tsv` / `user_features.tsv` written by `remi prepare`."""
    with tf.io.gfile.GFile(path, "r") as stream:
        lines = stream.read().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty; rerun `remi prepare`")
    columns = lines[0].split("\t")[1:]
    rows = [line.split("\t") for line in lines[1:]]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(columns) + 1:
            raise ValueError(f"{path}: line {number}: {len(row)} fields, expected {len(columns) + 1}; rerun "
                             "`remi prepare`")
    return FeatureTable([row[0] for row in rows],
                        {column: [row[position] for row in rows] for position, column in enumerate(columns, start=1)})


def values_of(table: FeatureTable | None, ids: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """[len(ids), len(columns)] raw values (object strings) of `ids`; "" (the OOV bucket) for an id or a
    column the table does not have, or without a table."""
    rows = {} if table is None else {row_id: row for row, row_id in enumerate(table.ids)}
    by_column = [None if table is None else table.values.get(column) for column in columns]
    values = [[values[rows[row_id]] if values is not None and row_id in rows else "" for values in by_column]
              for row_id in ids]
    return np.array(values, dtype=object).reshape([len(ids), len(columns)])


def read_item_table(data_dir: str, vocabulary: Sequence[str]) -> FeatureTable | None:
    """The data directory's item features (checked against items.tsv's ids), or None without them."""
    path = os.path.join(data_dir, ITEM_FEATURES_FILE)
    if not tf.io.gfile.exists(path):
        return None
    table = read_feature_table(path)
    if table.ids != list(vocabulary):
        raise ValueError(f"{path}: its {len(table.ids):,} item ids are not items.tsv's {len(vocabulary):,} in "
                         "order; rerun `remi prepare`")
    return table


def read_user_table(data_dir: str) -> FeatureTable | None:
    """The data directory's user features, or None without them."""
    path = os.path.join(data_dir, USER_FEATURES_FILE)
    return read_feature_table(path) if tf.io.gfile.exists(path) else None


def read_categories(data_dir: str, vocabulary: Sequence[str], first_index: int) -> np.ndarray | None:
    """Each model index's category for diversity: the first value of item_features.tsv's first column
    (the first of a `|`-separated list); None without item features.

    Returns:
      [len(vocabulary) + first_index] int32 category ids; padding, OOV and items without a value share
      one "unknown" category (0).
    """
    table = read_item_table(data_dir, vocabulary)
    if table is None:
        return None
    ids: dict[str, int] = {"": 0}
    categories = np.zeros(len(vocabulary) + first_index, np.int32)
    for index, value in enumerate(next(iter(table.values.values()))):
        categories[first_index + index] = ids.setdefault(value.split("|")[0], len(ids))
    return categories
