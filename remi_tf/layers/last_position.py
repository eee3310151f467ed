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
        interests = tf.gather(vectors, last_positions(mask), batch_dims=1)[:, tf.newaxis, :]  # [B, 1, d]
        return interests, last_position_routing(mask, vectors.dtype)

    def prefix_interests(self, vectors: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The user vector after every prefix (for training on every position): (vectors [batch, L, 1, d], the
        routing [batch, 1, L] of the whole histories)."""
        return vectors[:, :, tf.newaxis, :], last_position_routing(mask, vectors.dtype)


def last_positions(mask: tf.Tensor) -> tf.Tensor:
    """[batch, L] bool of left-aligned histories -> [batch] int32 index of each one's last real item (0 if none)."""
    positions = tf.range(tf.shape(mask)[1], dtype=tf.int32)[tf.newaxis, :]  # [1, L]
    return tf.maximum(tf.reduce_max(tf.where(tf.cast(mask, tf.bool), positions, -1), axis=1), 0)


def last_position_routing(mask: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """[batch, L] bool -> [batch, 1, L] the routing of one interest read at the last real item: one-hot there."""
    return tf.one_hot(last_positions(mask), tf.shape(mask)[1], dtype=dtype)[:, tf.newaxis, :]
