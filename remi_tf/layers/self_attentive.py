"""Self-attentive multi-interest routing (ComiRec-SA; Cen et al., KDD 2020), as used by REMI."""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from remi_tf.layers.causal_encoder import causal_mask

# Logit given to padded positions before the softmax (the reference code's -2**32 + 1).
_PADDING_LOGIT = -(2.0 ** 32) + 1.0


@tf.keras.utils.register_keras_serializable(package="remi_tf")
class SelfAttentiveRouting(tf.keras.layers.Layer):
    """Turns a history of item embeddings into K interest embeddings.

    A = softmax_L(W2 tanh(W1 (H + P)))^T, V = A H, with W1: d -> 4d and W2: 4d -> K (no biases),
    padded positions masked out before the softmax.

    Call arguments:
      item_embeddings: [batch, L, d] float, the history's item embeddings (padding rows may be anything:
        they are zeroed with the mask).
      mask: [batch, L] bool or 0/1, True for real items.

    Returns:
      (interests [batch, K, d], routing [batch, K, L]); each routing row sums to 1 over valid positions
      and is 0 on padding (a history with no valid position gets uniform weights over its padding,
      whose embeddings are zero, so its interests are zero).
    """

    def __init__(self, num_interests: int, max_length: int, use_position_embedding: bool = True,
                 hidden_multiplier: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_interests = num_interests
        self.max_length = max_length
        self.use_position_embedding = use_position_embedding
        self.hidden_multiplier = hidden_multiplier

    def build(self, input_shape: Any) -> None:
        dim = int(tf.TensorShape(input_shape)[-1])  # Keras passes the first input's shape: [B, L, d]
        # He-normal initialisation as the reference (kaiming_normal_ on every parameter).
        self.attention_hidden = tf.keras.layers.Dense(
            self.hidden_multiplier * dim, activation="tanh", use_bias=False,
            kernel_initializer="he_normal", name="attention_hidden")
        self.attention_logits = tf.keras.layers.Dense(
            self.num_interests, use_bias=False, kernel_initializer="he_normal", name="attention_logits")
        self.attention_hidden.build(tf.TensorShape([None, dim]))
        self.attention_logits.build(tf.TensorShape([None, self.hidden_multiplier * dim]))
        if self.use_position_embedding:
            self.position_embedding = self.add_weight(
                name="position_embedding", shape=(self.max_length, dim),
                initializer=tf.keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / (self.max_length * dim))))
        super().build(input_shape)

    def call(self, item_embeddings: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        history, logits = self._masked_logits(item_embeddings, mask)  # [B, L, d], [B, K, L]
        routing = tf.nn.softmax(logits, axis=-1)  # [B, K, L]
        interests = tf.matmul(routing, history)  # [B, K, d]
        return interests, routing

    def prefix_interests(self, item_embeddings: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The interests of every prefix of the histories at once (for training on every position), and the routing
        of the whole histories.

        Returns:
          (interests [batch, L, K, d]: at t, the routing of items 0..t alone; routing [batch, K, L], as `call`).
        """
        history, logits = self._masked_logits(item_embeddings, mask)
        prefix_logits = tf.where(causal_mask(tf.shape(logits)[-1]), logits[:, :, tf.newaxis, :],
                                 tf.cast(_PADDING_LOGIT, logits.dtype))  # [B, K, T, S]: t reads s <= t
        interests = tf.einsum("bkts,bsd->btkd", tf.nn.softmax(prefix_logits, axis=-1), history)  # [B, T, K, d]
        return interests, tf.nn.softmax(logits, axis=-1)

    def _masked_logits(self, item_embeddings: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(history [B, L, d] zero at padding, routing logits [B, K, L] with padding at _PADDING_LOGIT)."""
        mask = tf.cast(mask, tf.bool)
        history = item_embeddings * tf.cast(mask, item_embeddings.dtype)[:, :, tf.newaxis]  # [B, L, d]
        features = history + self.position_embedding if self.use_position_embedding else history
        logits = self._valid_position_logits(features, mask)  # [B, L, K]
        logits = tf.where(mask[:, :, tf.newaxis], logits, tf.cast(_PADDING_LOGIT, logits.dtype))
        return history, tf.transpose(logits, [0, 2, 1])

    def _valid_position_logits(self, features: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """W2 tanh(W1 x) at the valid positions only, [B, L, K] with zeros at padding.

        The attention MLP is most of the step's FLOPs and padded positions are masked out anyway, so
        running it on the valid rows alone saves the padding's share of the work (about a third on
        Amazon histories) without changing the result.
        """
        shape = tf.shape(features, out_type=tf.int64)
        flat_features = tf.reshape(features, [-1, features.shape[-1]])  # [B * L, d]
        valid_rows = tf.where(tf.reshape(mask, [-1]))  # [nnz, 1]
        valid_logits = self.attention_logits(self.attention_hidden(tf.gather_nd(flat_features, valid_rows)))
        logits = tf.scatter_nd(valid_rows, valid_logits, tf.stack([shape[0] * shape[1], self.num_interests]))
        return tf.reshape(logits, [shape[0], shape[1], self.num_interests])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_interests": self.num_interests, "max_length": self.max_length,
                "use_position_embedding": self.use_position_embedding,
                "hidden_multiplier": self.hidden_multiplier}
