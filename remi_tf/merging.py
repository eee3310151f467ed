"""The merge of the K per-interest retrievals into one list per user, in TensorFlow: evaluation and the
retrieval SavedModel use this one function, so what is measured is what is served."""

from __future__ import annotations

import tensorflow as tf

NO_INTEREST = -1  # the interest of a slot without a result


def merge_interest_results(scores: tf.Tensor, indices: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Merges per-interest results by score (stable: earlier interests win ties), de-duplicated keeping
    the best score: the merge of evaluation and of the retrieval SavedModel (tests hold a numpy twin).

    Args:
      scores: [batch, K, n] per-interest scores (-inf marks a removed result).
      indices: [batch, K, n] item indices.

    Returns:
      (scores [batch, k], indices [batch, k], interest [batch, k] int32: which interest retrieved each
      item; -1 where fewer than k results exist, with index 0 and score -inf).
    """
    batch, num_interests, per_interest = tf.shape(scores)[0], tf.shape(scores)[1], tf.shape(scores)[2]
    flat_scores = tf.reshape(scores, [batch, -1])
    flat_indices = tf.reshape(indices, [batch, -1])
    flat_interest = tf.tile(tf.repeat(tf.range(num_interests), per_interest)[tf.newaxis], [batch, 1])
    order = tf.argsort(flat_scores, axis=-1, direction="DESCENDING", stable=True)
    sorted_scores = tf.gather(flat_scores, order, batch_dims=1)
    sorted_indices = tf.gather(flat_indices, order, batch_dims=1)
    sorted_interest = tf.gather(flat_interest, order, batch_dims=1)
    # A result is a duplicate when the same item appears earlier in the score order.
    same = tf.equal(sorted_indices[:, :, tf.newaxis], sorted_indices[:, tf.newaxis, :])  # [B, n', n']
    earlier = tf.linalg.band_part(tf.ones_like(same[0], tf.int32), -1, 0) - tf.eye(tf.shape(same)[1], dtype=tf.int32)
    duplicate = tf.reduce_any(tf.logical_and(same, tf.cast(earlier, tf.bool)[tf.newaxis]), axis=-1)
    kept_scores = tf.where(duplicate, tf.constant(-float("inf"), scores.dtype), sorted_scores)
    top = tf.math.top_k(kept_scores, k=k)  # stable within equal scores: keeps the sorted order
    top_indices = tf.gather(sorted_indices, top.indices, batch_dims=1)
    top_interest = tf.gather(sorted_interest, top.indices, batch_dims=1)
    missing = tf.math.is_inf(top.values)
    return (top.values, tf.where(missing, tf.zeros_like(top_indices), top_indices),
            tf.where(missing, NO_INTEREST, top_interest))
