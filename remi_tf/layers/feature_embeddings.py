"""Categorical side features as embeddings: item features (by item index) and user profile features (raw values).

A feature column has a vocabulary of raw values (most frequent first). A row's value is a `|`-separated
list (one value for single-valued columns); its ids are 0 for a value outside the vocabulary or empty (the
OOV bucket) and 1.. for the vocabulary's values, as a ragged row (every row has at least one id). A
column's embedding for a row is the mean of its values' rows; the columns' embeddings are summed.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

VALUE_SEPARATOR = "|"
OOV_ID = 0


def feature_vocabulary(values: Iterable[str]) -> list[str]:
    """The distinct values of a column (lists split at `|`), most frequent first, ties by value; "" (no
    value) is not a vocabulary entry."""
    counts = collections.Counter(part for value in values for part in value.split(VALUE_SEPARATOR) if part)
    return sorted(counts, key=lambda value: (-counts[value], value))


def encode_values(values: Sequence[str], vocabulary: Sequence[str]) -> tf.RaggedTensor:
    """Raw values -> ids [rows, None] int32 (0 OOV, 1.. vocabulary; one id per listed value)."""
    ids = {value: index + 1 for index, value in enumerate(vocabulary)}
    rows = [[ids.get(part, OOV_ID) for part in value.split(VALUE_SEPARATOR)] for value in values]
    return tf.RaggedTensor.from_row_lengths(np.array([i for row in rows for i in row], np.int32),
                                            np.array([len(row) for row in rows], np.int64))


def _initializer(dim: int) -> tf.keras.initializers.Initializer:
    return tf.keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / dim))  # the item table's scale


class CategoricalEmbedding(tf.keras.layers.Layer):
    """Sum over columns of the mean embedding of each row's values.

    Args:
      vocabulary_sizes: {column: number of values}; each column's table has one more row (OOV, id 0).
      dim: embedding size d.

    Call: ids {column: [N, None] int ragged, every row non-empty} (0 OOV, 1.. values) -> [N, d].
    """

    def __init__(self, vocabulary_sizes: Mapping[str, int], dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocabulary_sizes = dict(vocabulary_sizes)
        self.tables = {column: self.add_weight(name=f"{column}_embeddings", shape=(size + 1, dim),
                                               initializer=_initializer(dim))
                       for column, size in self.vocabulary_sizes.items()}

    def call(self, ids: Mapping[str, tf.RaggedTensor]) -> tf.Tensor:
        total = None
        for column, table in self.tables.items():
            column_ids = ids[column]
            rows = tf.gather(table, column_ids.values)  # [values, d]: only the listed values, no padding
            mean = tf.math.segment_mean(rows, column_ids.value_rowids())  # sorted ids; no row is empty
            total = mean if total is None else total + mean
        return total


class ItemFeatureEmbedding(tf.keras.layers.Layer):
    """The item features' part of an item's embedding, by model item index.

    Args:
      values: {column: raw values per item index} (index 0 padding and 1 OOV included, usually "").
      vocabularies: {column: its values}.
      dim: embedding size d.

    Call: item indices [...] int -> [..., d].
    """

    def __init__(self, values: Mapping[str, Sequence[str]], vocabularies: Mapping[str, Sequence[str]], dim: int,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocabularies = {column: list(vocabulary) for column, vocabulary in vocabularies.items()}
        self.ids = {column: encode_values(values[column], vocabularies[column])
                    for column in vocabularies}
        self.embedding = CategoricalEmbedding({column: len(vocabulary) for column, vocabulary in vocabularies.items()},
                                              dim, name="embedding")

    def call(self, indices: tf.Tensor) -> tf.Tensor:
        flat = tf.reshape(indices, [-1])
        embedded = self.embedding({column: tf.gather(ids, flat) for column, ids in self.ids.items()})
        return tf.reshape(embedded, tf.concat([tf.shape(indices), [-1]], axis=0))


class UserFeatureEmbedding(tf.keras.layers.Layer):
    """A user's profile embedding from raw feature values; the vocabularies live in the layer (and so in
    exported SavedModels), unknown values get the OOV row.

    Args:
      vocabularies: {column: its values}, in the order of the call's columns.
      dim: embedding size d.

    Call: values [B, C] string (column c of `vocabularies`' order; `|`-separated lists) -> [B, d].
    """

    def __init__(self, vocabularies: Mapping[str, Sequence[str]], dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocabularies = {column: list(vocabulary) for column, vocabulary in vocabularies.items()}
        self.columns = list(vocabularies)
        # StringLookup without a mask token: OOV 0, the vocabulary 1.. (encode_values' layout).
        self.lookups = {column: tf.keras.layers.StringLookup(vocabulary=list(vocabulary) or None, num_oov_indices=1,
                                                             mask_token=None, name=f"{column}_lookup")
                        for column, vocabulary in vocabularies.items()}
        self.embedding = CategoricalEmbedding({column: len(vocabulary) for column, vocabulary in vocabularies.items()},
                                              dim, name="embedding")

    def call(self, values: tf.Tensor) -> tf.Tensor:
        ids = {}
        for position, column in enumerate(self.columns):
            parts = tf.strings.split(values[:, position], VALUE_SEPARATOR)  # [B, None], "" -> [""] (OOV)
            ids[column] = self.lookups[column](parts)
        return self.embedding(ids)
