"""Item side features from a CSV, carried next to the prepared data (`remi prepare --item-features`).

The CSV has a header whose first column is `item_id` (the event log's ids); the named columns (default:
all others) are categorical features; a `|`-separated value is multi-valued (`categories`). The data
directory gets `item_features.tsv`: a header (`item_id` and the columns), then one line per item of
`items.tsv`, in its order, with the item's raw values; an item the CSV does not list, or an empty value,
has "" (the features' OOV bucket). The file depends only on the CSV and items.tsv, so both runners of
`remi prepare` write the same bytes.
"""

from __future__ import annotations

import csv
import io
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from remi_tf import atomic

ITEM_FEATURES_FILE = "item_features.tsv"


def parse_spec(spec: str) -> tuple[str, list[str] | None]:
    """`ITEMS.csv[:COL,COL]` -> (path, columns, or None for every column after item_id)."""
    path, separator, columns = spec.rpartition(":")
    if not separator or not path or "/" in columns or not columns:
        return spec, None
    return path, [column.strip() for column in columns.split(",")]


class ItemFeatures(NamedTuple):
    """A checked item-features CSV: its path, the feature columns, and each listed item's raw values."""

    path: str
    columns: list[str]
    values: dict[str, list[str]]


def read_item_features(spec: str) -> ItemFeatures:
    """Reads and checks `spec`'s CSV (`ITEMS.csv[:COL,COL]`).

    Raises:
      FileNotFoundError; ValueError naming the file, line and field of a malformed row, a missing column
      or a repeated id.
    """
    path, columns = parse_spec(spec)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"--item-features: {path} not found")
    with tf.io.gfile.GFile(path, "r") as stream:
        rows = csv.reader(io.StringIO(stream.read()))
        header = next(rows, None)
        if not header or header[0].strip() != "item_id":
            raise ValueError(f"{path}: line 1: the first column must be 'item_id', got "
                             f"{header[:1] if header else 'nothing'}")
        names = [name.strip() for name in header]
        columns = columns or names[1:]
        missing = [column for column in columns if column not in names[1:]]
        if missing or not columns:
            raise ValueError(f"{path}: line 1: no column {missing or columns} among the features {names[1:]}")
        positions = [names.index(column) for column in columns]
        values: dict[str, list[str]] = {}
        for line, row in enumerate(rows, start=2):
            if len(row) != len(names):
                raise ValueError(f"{path}: line {line}: {len(row)} fields, expected {len(names)} ({', '.join(names)})")
            item_id = row[0].strip()
            if item_id in values:
                raise ValueError(f"{path}: line {line}: item_id {item_id!r} repeats an earlier line")
            values[item_id] = [row[position].strip() for position in positions]
            for column, value in zip(columns, values[item_id]):
                if "\t" in value or "\n" in value:
                    raise ValueError(f"{path}: line {line}: field {column!r} has a tab or line break: {value!r}")
    return ItemFeatures(path, columns, values)


def write_item_features(features: ItemFeatures, data_dir: str, vocabulary: list[str]) -> dict:
    """Writes `data_dir/item_features.tsv` for `vocabulary` (items.tsv's ids) from a read CSV.

    Returns:
      {"file", "columns", "items_with_features", "items_without_features", "rows_not_in_log"}.

    Raises:
      ValueError when the file lists none of the log's items.
    """
    known = sum(item in features.values for item in vocabulary)
    if not known:
        raise ValueError(f"{features.path}: none of its {len(features.values):,} item ids is one of the log's "
                         f"{len(vocabulary):,} items (e.g. {vocabulary[:3]}); are they the event log's item_ids?")
    empty = [""] * len(features.columns)
    lines = ["\t".join(["item_id", *features.columns])] + [
        "\t".join([item, *features.values.get(item, empty)]) for item in vocabulary]
    atomic.write_text(os.path.join(data_dir, ITEM_FEATURES_FILE), "\n".join(lines) + "\n")
    return {"file": os.path.abspath(features.path), "columns": features.columns, "items_with_features": known,
            "items_without_features": len(vocabulary) - known,
            "rows_not_in_log": len(set(features.values) - set(vocabulary))}


def read_categories(data_dir: str, vocabulary_size: int, first_index: int) -> np.ndarray | None:
    """Each model index's category for diversity: the first value of item_features.tsv's first column
    (the first of a `|`-separated list); None without item features.

    Returns:
      [vocabulary_size + first_index] int32 category ids; padding, OOV and items without a value share
      one "unknown" category (0).
    """
    path = os.path.join(data_dir, ITEM_FEATURES_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as stream:
        lines = stream.read().splitlines()[1:]
    if len(lines) != vocabulary_size:
        raise ValueError(f"{path}: {len(lines):,} items, but items.tsv has {vocabulary_size:,}; rerun `remi prepare`")
    ids: dict[str, int] = {"": 0}
    categories = np.zeros(vocabulary_size + first_index, np.int32)
    for index, line in enumerate(lines):
        value = line.split("\t")[1].split("|")[0] if "\t" in line else ""
        categories[first_index + index] = ids.setdefault(value, len(ids))
    return categories
