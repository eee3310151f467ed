"""The merge of the K per-interest retrievals into one list per user, in TensorFlow: evaluation and the
retrieval SavedModel call `merge_interests`, so what is measured is what is served (tests hold numpy twins).

The K lists merge by score, de-duplicated (the paper's), or with ComiRec's category-aware diversity (Cen et al.,
KDD 2020, section 3.4: config `diversity_coef`), where a candidate's score is lowered by coef x (the number of items
of its category already picked).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

NO_INTEREST = -1  # the interest of a slot without a result


def merge_interest_results(scores: tf.Tensor, indices: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Merges per-interest results by score (stable: earlier interests win ties), de-duplicated keeping
    the best score: the merge of evaluation and of the retrieval SavedModel (tests hold a numpy twin).

    A stable sort by (item index, descending score) groups each item's entries, its best first (ties: the
    earlier interest); every later entry of a group is dropped (mapped back by the inverse permutation:
    tf.math.invert_permutation over the rows laid end to end, not a second sort), then top_k picks the k best of
    what is left in the original order, so equal scores keep the earlier interest and position.

    Args:
      scores: [batch, K, n] float32 per-interest scores (-inf marks a removed result).
      indices: [batch, K, n] item indices in (-2^31, 2^31).

    Returns:
      (scores [batch, k], indices [batch, k], interest [batch, k] int32: which interest retrieved each
      item; -1 where fewer than k results exist, with index 0 and score -inf).
    """
    batch, per_interest = tf.shape(scores)[0], tf.shape(scores)[2]
    flat_scores = tf.reshape(scores, [batch, -1])  # [B, K n]
    flat_indices = tf.reshape(indices, [batch, -1])
    key = tf.cast(flat_indices, tf.int64) * (1 << 32) + _descending_order_key(flat_scores)
    grouped = tf.argsort(key, axis=-1, stable=True)  # [B, K n] positions: by item, its best score first
    grouped_indices = tf.gather(flat_indices, grouped, batch_dims=1)
    repeat = tf.concat([tf.zeros_like(grouped_indices[:, :1], tf.bool),
                        tf.equal(grouped_indices[:, 1:], grouped_indices[:, :-1])], axis=1)
    width = tf.shape(grouped)[1]  # back to positions: the inverse permutation of all rows at once, in linear time
    rows_grouped = tf.reshape(grouped + tf.range(batch)[:, tf.newaxis] * width, [-1])
    duplicate = tf.reshape(tf.gather(tf.reshape(repeat, [-1]), tf.math.invert_permutation(rows_grouped)), [batch, -1])
    kept_scores = tf.where(duplicate, tf.constant(-float("inf"), scores.dtype), flat_scores)
    top = tf.math.top_k(kept_scores, k=k)  # stable within equal scores: the earlier position first
    top_indices = tf.gather(flat_indices, top.indices, batch_dims=1)
    missing = tf.math.is_inf(top.values)
    return (top.values, tf.where(missing, tf.zeros_like(top_indices), top_indices),
            tf.where(missing, NO_INTEREST, top.indices // per_interest))


def _descending_order_key(scores: tf.Tensor) -> tf.Tensor:
    """[...] float32 -> [...] int64 in [0, 2^32) whose ascending order is the scores' descending order (equal
    scores, equal keys, -0.0 as 0.0; -inf last). A float's bits read as int32 order the non-negative floats;
    the negative ones order once their bits other than the sign are flipped."""
    if scores.dtype != tf.float32:
        raise TypeError(f"merge scores must be float32, got {scores.dtype.name}")
    bits = tf.bitcast(tf.where(scores == 0, tf.zeros_like(scores), scores), tf.int32)  # -0.0 as 0.0
    ascending = tf.where(bits >= 0, bits, tf.bitwise.bitwise_xor(bits, tf.constant(0x7FFFFFFF, tf.int32)))
    return tf.constant((1 << 31) - 1, tf.int64) - tf.cast(ascending, tf.int64)


def diverse_merge(scores: tf.Tensor, indices: tf.Tensor, categories: tf.Tensor, coef: float, k: int
                  ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """ComiRec's greedy merge of per-interest results (duplicates keep their best score first).

    Args:
      scores: [batch, K, n] per-interest scores (-inf marks a removed result).
      indices: [batch, K, n] item indices.
      categories: [rows] int32 category of each item index (any integers; equal = same category).
      coef: the penalty per already-picked item of the same category (>= 0).
      k: results per row.

    Returns:
      (scores [batch, k] the picked items' own scores, indices [batch, k], interest [batch, k] int32),
      in pick order; -1 interest, index 0 and score -inf where fewer than k candidates exist.
    """
    num_candidates = tf.shape(scores)[1] * tf.shape(scores)[2]
    candidate_scores, candidate_indices, candidate_interest = merge_interest_results(
        scores, indices, num_candidates)  # every distinct candidate, best score first, duplicates dropped
    candidate_categories = tf.gather(categories, candidate_indices)  # [B, C]
    penalty = tf.zeros_like(candidate_scores)  # coef x picked items of each candidate's category
    available = candidate_scores
    picks, found = tf.TensorArray(tf.int32, size=k), tf.TensorArray(tf.bool, size=k)
    for step in tf.range(k):
        pick = tf.argmax(available - penalty, axis=-1, output_type=tf.int32)  # [B] the first best
        picks = picks.write(step, pick)
        found = found.write(step, tf.reduce_max(available, axis=-1) > -np.inf)  # [B] a candidate was left
        picked_category = tf.gather(candidate_categories, pick[:, tf.newaxis], batch_dims=1)  # [B, 1]
        penalty += coef * tf.cast(tf.equal(candidate_categories, picked_category), penalty.dtype)
        available = tf.tensor_scatter_nd_update(
            available, tf.stack([tf.range(tf.shape(pick)[0]), pick], axis=1),
            tf.fill(tf.shape(pick), tf.constant(-np.inf, available.dtype)))
    order = tf.transpose(picks.stack())  # [B, k] candidate positions in pick order
    missing = tf.logical_not(tf.transpose(found.stack()))
    picked_scores = tf.where(missing, tf.constant(-np.inf, candidate_scores.dtype),
                             tf.gather(candidate_scores, order, batch_dims=1))
    return (picked_scores, tf.where(missing, tf.zeros_like(order, candidate_indices.dtype),
                                    tf.gather(candidate_indices, order, batch_dims=1)),
            tf.where(missing, NO_INTEREST, tf.gather(candidate_interest, order, batch_dims=1)))


def draws_from_each_top_k(diversity_coef: float) -> bool:
    """Whether the merged top k holds only items of each interest's own top k (in score order), so that the
    merge of those lists equals the merge of deeper ones: true of the merge by score without the diversity
    penalty. Items of interest j below its k-th are preceded by k distinct items of j's scoring at least as
    high (earlier on ties)."""
    return diversity_coef <= 0


def merge_interests(scores: tf.Tensor, indices: tf.Tensor, k: int, categories: tf.Tensor | None = None,
                    diversity_coef: float = 0.0) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The merge by score, or ComiRec's diverse merge when diversity_coef > 0 (module docstring).

    Args:
      scores, indices: [batch, K, n] per-interest results (-inf: removed).

    Returns:
      (scores [batch, k], indices [batch, k], interest [batch, k] int32; -inf, 0, -1 for empty slots).
    """
    if diversity_coef > 0:
        if categories is None:
            raise ValueError("diversity_coef > 0 needs item categories")
        return diverse_merge(scores, indices, categories, diversity_coef, k)
    return merge_interest_results(scores, indices, k)
