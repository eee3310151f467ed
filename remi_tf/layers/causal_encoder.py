"""SASRec's sequence encoder (Kang and McAuley, ICDM 2018): learned positions and causal self-attention blocks that
turn a history's item vectors into contextual vectors, position t reading positions <= t only."""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

LAYER_NORM_EPSILON = 1e-8  # SASRec's (kang205/SASRec, pmixer/SASRec.pytorch)
_MASKED_LOGIT = -1e9  # the attention score of a key a query may not read


class TransformerBlock(tf.keras.layers.Layer):
    """One SASRec block over a batch's real positions only (padding is never computed: the dense layers read
    [n, d] rows, the attention scatters them back into [B, L] sequences):
    x <- LN(x) + Attention(LN(x), x, x), then y = LN(x), x <- y + FFN(y), as kang205/SASRec (queries normalised,
    keys and values not), with a multi-head attention's output projection; FFN = Dense(d, relu) -> Dense(d),
    dropout after each and on the attention weights.

    Call: rows [n, d] the real positions' vectors, positions [n, 1] int64 their indices in the flattened [B * L]
    batch, shape [2] (B, L), attention_bias [B, 1, L, L] (0 where query t may read key s, else -1e9) -> [n, d].
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.dropout_rate = dim, num_heads, dropout
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="attention_norm")
        self.query = tf.keras.layers.Dense(dim, name="query")
        self.key_value = tf.keras.layers.Dense(2 * dim, name="key_value")
        self.attention_output = tf.keras.layers.Dense(dim, name="attention_output")
        self.feed_forward_norm = tf.keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                                    name="feed_forward_norm")
        self.hidden = tf.keras.layers.Dense(dim, activation="relu", name="hidden")
        self.output_projection = tf.keras.layers.Dense(dim, name="output_projection")
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, rows: tf.Tensor, positions: tf.Tensor, shape: tf.Tensor, attention_bias: tf.Tensor,
             training: bool | None = None) -> tf.Tensor:
        queries = self.attention_norm(rows)
        projected = tf.concat([self.query(queries), self.key_value(rows)], axis=-1)  # [n, 3d]
        rows = queries + self.attention_output(self.attend(projected, positions, shape, attention_bias, training))
        normalized = self.feed_forward_norm(rows)
        hidden = self.dropout(self.hidden(normalized), training=training)
        return normalized + self.dropout(self.output_projection(hidden), training=training)

    def attend(self, projected: tf.Tensor, positions: tf.Tensor, shape: tf.Tensor, attention_bias: tf.Tensor,
               training: bool | None) -> tf.Tensor:
        """[n, 3d] queries, keys, values of the real positions -> [n, d] the heads' attention, concatenated."""
        head_dim = self.dim // self.num_heads
        dense = tf.scatter_nd(positions, projected, tf.stack([shape[0] * shape[1], 3 * self.dim]))
        heads = tf.transpose(tf.reshape(dense, [shape[0], shape[1], 3, self.num_heads, head_dim]), [2, 0, 3, 1, 4])
        queries, keys, values = tf.unstack(heads)  # [B, H, L, d / H] each
        scores = tf.matmul(queries, keys, transpose_b=True) / math.sqrt(head_dim) + attention_bias  # [B, H, L, L]
        weights = self.dropout(tf.nn.softmax(scores), training=training)
        attended = tf.reshape(tf.transpose(tf.matmul(weights, values), [0, 2, 1, 3]), [-1, self.dim])  # [B * L, d]
        return tf.gather_nd(attended, positions)


@tf.keras.utils.register_keras_serializable(package="remi_tf")
class CausalSelfAttentionEncoder(tf.keras.layers.Layer):
    """SASRec's query tower up to the user vector: E sqrt(d) + P, dropout, `num_blocks` causal transformer blocks,
    a final layer norm; computed at the real positions only (padding stays zero).

    Histories are left-aligned (padding at the end), so position t is the t-th item read.

    Call arguments:
      item_embeddings: [batch, L', d] the history's item vectors (L' <= max_length).
      mask: [batch, L] bool, True for real items.
      training: dropout on or off.

    Returns:
      [batch, L, d] contextual vectors; the vector at t depends on items 0..t only (zero at padding).
    """

    def __init__(self, max_length: int, num_blocks: int, num_heads: int, dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length, self.num_blocks, self.num_heads, self.dropout_rate = max_length, num_blocks, num_heads, dropout

    def build(self, input_shape: Any) -> None:
        dim = int(tf.TensorShape(input_shape)[-1])
        if dim % self.num_heads:
            raise ValueError(f"{self.num_heads} attention heads do not divide the embedding size {dim}")
        self.position_embedding = self.add_weight(
            name="position_embedding", shape=(self.max_length, dim),
            initializer=tf.keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(dim)))
        self.input_dropout = tf.keras.layers.Dropout(self.dropout_rate)
        self.blocks = [TransformerBlock(dim, self.num_heads, self.dropout_rate, name=f"block_{index}")
                       for index in range(self.num_blocks)]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="final_norm")
        super().build(input_shape)

    def call(self, item_embeddings: tf.Tensor, mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        mask = tf.cast(mask, tf.bool)
        dim, shape = item_embeddings.shape[-1], tf.shape(mask, out_type=tf.int64)
        positions = tf.where(tf.reshape(mask, [-1]))  # [n, 1] the real positions in the flattened [B * L]
        embedded = item_embeddings * math.sqrt(dim) + tf.cast(self.position_embedding[:shape[1]],
                                                              item_embeddings.dtype)  # [B, L, d] (L <= max_length)
        rows = self.input_dropout(tf.gather_nd(tf.reshape(embedded, [-1, dim]), positions), training=training)
        readable = tf.logical_and(causal_mask(shape[1])[tf.newaxis], mask[:, tf.newaxis, :])  # [B, L, L]
        attention_bias = tf.where(readable, 0.0, _MASKED_LOGIT)[:, tf.newaxis]  # [B, 1, L, L]
        attention_bias = tf.cast(attention_bias, item_embeddings.dtype)
        for block in self.blocks:
            rows = block(rows, positions, shape, attention_bias, training=training)
        rows = self.final_norm(rows)
        return tf.reshape(tf.scatter_nd(positions, rows, tf.stack([shape[0] * shape[1], dim])),
                          tf.shape(item_embeddings))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_length": self.max_length, "num_blocks": self.num_blocks,
                "num_heads": self.num_heads, "dropout": self.dropout_rate}


def causal_mask(length: tf.Tensor) -> tf.Tensor:
    """[L, L] bool: position t may read position s when s <= t."""
    return tf.cast(tf.linalg.band_part(tf.ones(tf.stack([length, length])), -1, 0), tf.bool)
