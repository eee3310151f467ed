"""A number of interests per user (MIND, Li et al., CIKM 2019, section 3.3.3): a user with n known history
items keeps K_u = max(1, min(K, floor(log2 n))) interests.

The K - K_u interests a user does not keep repeat the kept ones (interest k takes interest k mod K_u), so
every tensor keeps its [B, K, d] shape, the SavedModels' signatures are unchanged, and every consumer
scores exactly the K_u kept interests: a repeated interest scores each candidate as its source does (the
hard read-out and max pick among equal scores, its gradient flows into the source), and the merges, which
keep the earlier interest on equal scores, attribute every result to a kept interest.
"""

from __future__ import annotations

import tensorflow as tf


def interests_per_user(mask: tf.Tensor, num_interests: int) -> tf.Tensor:
    """mask [B, L] bool (known history items) -> K_u [B] int32 = max(1, min(K, floor(log2 n)))."""
    count = tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1)
    log2 = tf.math.floor(tf.math.log(tf.cast(tf.maximum(count, 1), tf.float32)) / tf.math.log(2.0) + 1e-6)
    return tf.clip_by_value(tf.cast(log2, tf.int32), 1, num_interests)


def keep_interests(interests: tf.Tensor, kept: tf.Tensor) -> tf.Tensor:
    """interests [B, K, ...], kept K_u [B] int32 in [1, K] -> [B, K, ...] where interest k of row b is row
    b's interest k mod K_u (the first K_u unchanged, the others repeat them)."""
    source = tf.math.floormod(tf.range(tf.shape(interests)[1])[tf.newaxis, :], kept[:, tf.newaxis])  # [B, K]
    return tf.gather(interests, source, batch_dims=1)
