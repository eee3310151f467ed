"""The catalogue as evaluation and export read it: the real items' candidate vectors, whole or in chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import tensorflow as tf

from remi_tf.item_index import FIRST_ITEM_INDEX
from remi_tf.layers import ItemEmbedding
from remi_tf.layers.feature_embeddings import ItemFeatureEmbedding


class ItemCorpus:
    """The real items' item-tower vectors (the table's row i + 2 is item i, plus its features' embedding).

    Args:
      item_embedding: the item table; item_features: the items' side-feature embedding, or None.
      item_vectors: item indices [...] -> the item tower's vectors [..., d] (the query tower's).
      vocabulary_size: N, the real items.
    """

    def __init__(self, item_embedding: ItemEmbedding, item_features: ItemFeatureEmbedding | None,
                 item_vectors: Callable[[tf.Tensor], tf.Tensor], vocabulary_size: int) -> None:
        self.item_embedding, self.item_features = item_embedding, item_features
        self.item_vectors = item_vectors
        self.vocabulary_size = vocabulary_size

    def embeddings(self) -> tf.Tensor:
        """[N, d] every real item's vector; a table sharded across parameter servers is read whole."""
        return self.item_vectors(tf.range(FIRST_ITEM_INDEX, FIRST_ITEM_INDEX + self.vocabulary_size))

    def chunks(self, max_rows: int) -> Iterator[tuple[int, tf.Tensor]]:
        """The real items' vectors in chunks of at most `max_rows` rows: (index of the chunk's first item among the
        real items, [rows, d]). Rows are gathered where the table lives, so a table sharded across parameter
        servers never travels whole."""
        table = self.item_embedding.embeddings
        shard_start = 0  # table row of the shard's first row
        for shard in getattr(table, "variables", [table]):
            shard_rows = int(shard.shape[0])
            first = max(FIRST_ITEM_INDEX - shard_start, 0)
            for start in range(first, shard_rows, max_rows):
                rows = tf.range(start, min(start + max_rows, shard_rows))
                vectors = tf.gather(shard, rows)
                if self.item_features is not None:
                    vectors += self.item_features(rows + shard_start)
                yield shard_start + start - FIRST_ITEM_INDEX, vectors
            shard_start += shard_rows
