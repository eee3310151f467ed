"""Diversity of the merged K-interest retrieval: ComiRec's greedy category-aware merge and its metric.

ComiRec (Cen et al., KDD 2020, section 3.4 and its public code) merges the K per-interest lists greedily:
among the unpicked candidates it picks the one with the largest score - coef x (the number of items of
its category already picked), until k are picked. coef = 0 is the merge by score.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from remi_tf import merging


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
    candidate_scores, candidate_indices, candidate_interest = merging.merge_interest_results(
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
            tf.where(missing, merging.NO_INTEREST, tf.gather(candidate_interest, order, batch_dims=1)))


def category_diversity(item_ids: np.ndarray, categories: np.ndarray) -> float:
    """ComiRec's diversity of retrieved lists: the share of a list's item pairs whose categories differ,
    averaged over the lists with at least two items.

    Args:
      item_ids: [users, N] item indices (< 0: no result, skipped).
      categories: [rows] category of each item index.
    """
    shares = []
    for row in item_ids:
        found = categories[row[row >= 0]]
        n = len(found)
        if n >= 2:
            same_pairs = (np.sum(found[:, None] == found[None, :]) - n) / 2
            shares.append(1.0 - same_pairs / (n * (n - 1) / 2))
    return float(np.mean(shares)) if shares else 0.0
