"""Side-feature tables of a data or model directory (`item_features.tsv`, `user_features.tsv`): a header
(the id column and the feature columns), then one line per id with the raw values ("" = unknown, the
features' OOV bucket); items in items.tsv's order, users by id. `remi prepare` writes them
(pipelines/feature_csvs.py); training, evaluation and export read them here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from remi_tf import atomic

ITEM_FEATURES_FILE = "item_features.tsv"
USER_FEATURES_FILE = "user_features.tsv"


class FeatureTable(NamedTuple):
    """A data directory's feature table: ids (items.tsv's order, or users by id) and raw values per column."""

    ids: list[str]
    values: dict[str, list[str]]  # column -> one raw value per id


def write_table(path: str, key: str, table: FeatureTable) -> None:
    """Writes `table` at `path` (atomically) with `key` ("item_id" / "user_id") as the id column's name."""
    columns = list(table.values)
    lines = ["\t".join([key, *columns])] + ["\t".join([row_id, *(table.values[column][row] for column in columns)])
                                            for row, row_id in enumerate(table.ids)]
    atomic.write_text(path, "\n".join(lines) + "\n")


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
