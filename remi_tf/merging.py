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
    duplicate = _repeated(sorted_indices)
    kept_scores = tf.where(duplicate, tf.constant(-float("inf"), scores.dtype), sorted_scores)
    top = tf.math.top_k(kept_scores, k=k)  # stable within equal scores: keeps the sorted order
    top_indices = tf.gather(sorted_indices, top.indices, batch_dims=1)
    top_interest = tf.gather(sorted_interest, top.indices, batch_dims=1)
    missing = tf.math.is_inf(top.values)
    return (top.values, tf.where(missing, tf.zeros_like(top_indices), top_indices),
            tf.where(missing, NO_INTEREST, top_interest))


def _repeated(values: tf.Tensor) -> tf.Tensor:
    """[batch, n] -> [batch, n] bool: True where the value already occurs earlier in its row.

    Sorting (stably) by value puts each value's occurrences together in their original order; all but
    the first of a group are repeats. O(n log n) per row: the all-pairs comparison it replaces cost
    more than the ScaNN search for one history (K*(k+L) = 280 results).
    """
    grouped = tf.argsort(values, axis=-1, stable=True)  # [B, n] positions, grouped by value
    grouped_values = tf.gather(values, grouped, batch_dims=1)
    repeat = tf.concat([tf.zeros_like(grouped_values[:, :1], tf.bool),
                        tf.equal(grouped_values[:, 1:], grouped_values[:, :-1])], axis=1)
    return tf.gather(repeat, tf.argsort(grouped, axis=-1, stable=True), batch_dims=1)  # back to positions
