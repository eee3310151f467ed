"""Which interest to trust: a small predictor of pi(u) over the K interests (TiMiRec's target-interest
predictor; Wang et al., CIKM 2022), read by the quota and weighted merges (remi_tf.merging)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="remi_tf")
class InterestWeights(tf.keras.layers.Layer):
    """Logits of pi(u) over the K interests, from the interests and the recent history.

    The recent history is summarised by a learned attention over recency ranks (rank 0: the newest valid
    item; histories may be left-aligned or right-aligned): c = sum_l a_l h_l, a = softmax over valid positions
    of w[rank_l]. Each interest k is scored by one shared MLP on [u_k, c, u_k * c, m_k], where
    m_k = sum_l a_l A_kl is how much of the recent history routes to interest k; so the predictor is the
    same function of every interest (no interest index is learned).

    Its inputs are read with the gradient stopped: the distillation term trains the predictor only, and the
    interests stay what the retrieval objective makes them.

    Call arguments:
      interests: [batch, K, d]; history: [batch, L, d] the vectors the routing read; mask: [batch, L] bool;
      routing: [batch, K, L] the routing weights.

    Returns:
      [batch, K] logits (pi = softmax of them).
    """

    def __init__(self, max_length: int, hidden_units: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.hidden_units = hidden_units

    def build(self, input_shape: Any) -> None:
        dim = int(tf.TensorShape(input_shape)[-1])
        self.recency_logits = self.add_weight(name="recency_logits", shape=(self.max_length,), initializer="zeros")
        self.hidden = tf.keras.layers.Dense(self.hidden_units, activation="relu", name="hidden")
        self.output_logit = tf.keras.layers.Dense(1, name="output_logit")
        self.hidden.build(tf.TensorShape([None, 3 * dim + 1]))
        self.output_logit.build(tf.TensorShape([None, self.hidden_units]))
        super().build(input_shape)

    def call(self, interests: tf.Tensor, history: tf.Tensor, mask: tf.Tensor, routing: tf.Tensor) -> tf.Tensor:
        interests, history, routing = (tf.stop_gradient(x) for x in (interests, history, routing))
        mask = tf.cast(mask, tf.bool)
        valid = tf.cast(mask, tf.int32)
        # recency rank of each valid position: 0 for the newest (the last valid position of the row)
        rank = tf.reduce_sum(valid, axis=-1, keepdims=True) - tf.cumsum(valid, axis=-1)  # [B, L]
        logits = tf.gather(self.recency_logits, tf.clip_by_value(rank, 0, self.max_length - 1))
        logits = tf.where(mask, logits, tf.cast(-1e9, logits.dtype))
        attention = tf.nn.softmax(logits, axis=-1) * tf.cast(mask, logits.dtype)  # [B, L]; 0 for empty rows
        context = tf.einsum("bl,bld->bd", attention, history)  # [B, d]
        recent_routing = tf.einsum("bl,bkl->bk", attention, routing)[:, :, tf.newaxis]  # [B, K, 1]
        context = tf.broadcast_to(context[:, tf.newaxis, :], tf.shape(interests))  # [B, K, d]
        features = tf.concat([interests, context, interests * context, recent_routing], axis=-1)
        return tf.squeeze(self.output_logit(self.hidden(features)), axis=-1)  # [B, K]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_length": self.max_length, "hidden_units": self.hidden_units}
