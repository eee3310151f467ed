"""The user vector of a sequential encoder (SASRec): its output at the history's last real item."""

from __future__ import annotations

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="remi_tf")
class LastPosition(tf.keras.layers.Layer):
    """One interest: the vector at the last real position of a left-aligned history, with the routing contract of
    the multi-interest layers (the routing row is one-hot there).

    Call: vectors [batch, L, d], mask [batch, L] bool (real items first, padding after; unknown items inside are
    False) -> (interests [batch, 1, d], routing [batch, 1, L]); an empty history reads position 0.
    """

    def call(self, vectors: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        last = last_positions(mask)  # [B]
        interests = tf.gather(vectors, last, batch_dims=1)[:, tf.newaxis, :]  # [B, 1, d]
        routing = tf.one_hot(last, tf.shape(mask)[1], dtype=vectors.dtype)[:, tf.newaxis, :]  # [B, 1, L]
        return interests, routing

    def prefix_interests(self, vectors: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The user vector after every prefix (for training on every position): (vectors [batch, L, 1, d], the
        routing [batch, 1, L] of the whole histories)."""
        return vectors[:, :, tf.newaxis, :], self(vectors, mask)[1]


def last_positions(mask: tf.Tensor) -> tf.Tensor:
    """[batch, L] bool of left-aligned histories -> [batch] int32 index of each one's last real item (0 if none)."""
    positions = tf.range(tf.shape(mask)[1], dtype=tf.int32)[tf.newaxis, :]  # [1, L]
    return tf.maximum(tf.reduce_max(tf.where(tf.cast(mask, tf.bool), positions, -1), axis=1), 0)
