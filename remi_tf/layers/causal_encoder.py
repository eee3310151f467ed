"""SASRec's sequence encoder (Kang and McAuley, ICDM 2018): learned positions and causal self-attention blocks that
turn a history's item vectors into contextual vectors, position t reading positions <= t only."""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

LAYER_NORM_EPSILON = 1e-8  # SASRec's (kang205/SASRec, pmixer/SASRec.pytorch)


class TransformerBlock(tf.keras.layers.Layer):
    """One SASRec block: x <- LN(x) + MHA(LN(x), x, x) under the attention mask, then y = LN(x),
    x <- y + FFN(y) with FFN = Dense(d, relu) -> Dense(d) and dropout after each, as kang205/SASRec.

    Call: x [B, L, d], attention_mask [B, L, L] bool (query t may read key s) -> [B, L, d].
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="attention_norm")
        self.attention = tf.keras.layers.MultiHeadAttention(num_heads, dim // num_heads, dropout=dropout,
                                                            name="attention")
        self.feed_forward_norm = tf.keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                                    name="feed_forward_norm")
        self.hidden = tf.keras.layers.Dense(dim, activation="relu", name="hidden")
        self.output_projection = tf.keras.layers.Dense(dim, name="output_projection")
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, attention_mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        queries = self.attention_norm(x)
        x = queries + self.attention(queries, x, x, attention_mask=attention_mask, training=training)
        normalized = self.feed_forward_norm(x)
        hidden = self.dropout(self.hidden(normalized), training=training)
        return normalized + self.dropout(self.output_projection(hidden), training=training)


@tf.keras.utils.register_keras_serializable(package="remi_tf")
class CausalSelfAttentionEncoder(tf.keras.layers.Layer):
    """SASRec's query tower up to the user vector: E sqrt(d) + P, dropout, `num_blocks` causal transformer blocks
    (padding zeroed after each), a final layer norm.

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
        keep = tf.cast(mask, item_embeddings.dtype)[:, :, tf.newaxis]  # [B, L, 1]
        dim, length = item_embeddings.shape[-1], tf.shape(mask)[1]
        positions = tf.cast(self.position_embedding[:length], item_embeddings.dtype)  # [L, d] (histories up to L)
        x = self.input_dropout(item_embeddings * math.sqrt(dim) + positions, training=training) * keep
        causal = tf.cast(tf.linalg.band_part(tf.ones([length, length]), -1, 0), tf.bool)  # [L, L] t reads s <= t
        attention_mask = tf.logical_and(causal[tf.newaxis], mask[:, tf.newaxis, :])  # [B, L, L]
        for block in self.blocks:
            x = block(x, attention_mask, training=training) * keep
        return self.final_norm(x) * keep

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_length": self.max_length, "num_blocks": self.num_blocks,
                "num_heads": self.num_heads, "dropout": self.dropout_rate}
