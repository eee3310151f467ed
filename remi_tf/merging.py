"""The merge of the K per-interest retrievals into one list per user, in TensorFlow: evaluation and the
retrieval SavedModel call `merge_interests`, so what is measured is what is served (tests hold numpy twins).

Merges (config `merge`):
- score: by score, de-duplicated (the paper's).
- quota (Octopus / MIP): interest k gets round(N * pi_k) of the N slots (largest remainder); duplicates go
  to whichever interest reaches them first, and slots an interest cannot fill pass to the best remaining
  results of the others.
- weighted: interest k's scores gain lambda * log pi_k, then the merge by score.
Each composes with ComiRec's category-aware diversity (Cen et al., KDD 2020, section 3.4): a candidate's
score is lowered by coef x (the number of items of its category already picked).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

MERGES = ("score", "quota", "weighted")

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


def slot_quotas(weights: tf.Tensor, k: int) -> tf.Tensor:
    """[batch, K] interest weights (rows sum to 1) -> [batch, K] int32 slots of k, round(k * pi) by the
    largest remainder: floor(k * pi_i) each, then one more to the largest remainders (ties: the lower
    interest) until the row sums to k."""
    exact = tf.cast(k, weights.dtype) * weights
    base = tf.floor(exact)
    leftover = k - tf.cast(tf.reduce_sum(base, axis=-1, keepdims=True), tf.int32)  # [B, 1]
    order = tf.argsort(exact - base, axis=-1, direction="DESCENDING", stable=True)
    rank = tf.argsort(order, axis=-1, stable=True)  # each interest's place in that order
    return tf.cast(base, tf.int32) + tf.cast(rank < leftover, tf.int32)


def quota_merge(scores: tf.Tensor, indices: tf.Tensor, weights: tf.Tensor, k: int,
                categories: tf.Tensor | None = None, diversity_coef: float = 0.0
                ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Merges per-interest results by slot quotas (`slot_quotas`), one pick per slot.

    Each slot goes to the interest furthest below its quota (the smallest (filled + 0.5) / quota; ties: the
    lower interest), which gives its best remaining result; so every prefix of the list is close to the
    quotas. An item is taken once, by the first interest that reaches it; when no interest below its quota
    has a result left, the slot goes to the best remaining result of any interest (slots passed on). With
    diversity_coef > 0, "best" is score - coef x the picked items of the candidate's category.

    Args:
      scores, indices: [batch, K, n] per-interest results (-inf marks a removed result).
      weights: [batch, K] pi(u).
      categories: [rows] int32 category of each item index (needed with diversity_coef > 0).

    Returns:
      (scores [batch, k] each pick's own score, indices [batch, k], interest [batch, k] int32), in pick
      order; -inf, 0 and -1 where fewer than k distinct results exist.
    """
    quotas = slot_quotas(weights, k)  # [B, K]
    batch, num_interests = tf.shape(scores)[0], tf.shape(scores)[1]
    negative_infinity = tf.constant(-np.inf, scores.dtype)
    available = scores > negative_infinity  # [B, K, n]
    filled = tf.zeros([batch, num_interests], tf.int32)
    penalty = tf.zeros_like(scores)
    entry_categories = None if diversity_coef <= 0 else tf.gather(categories, indices)
    picked_scores = tf.TensorArray(scores.dtype, size=k)
    picked_indices = tf.TensorArray(indices.dtype, size=k)
    picked_interest = tf.TensorArray(tf.int32, size=k)
    rows = tf.range(batch)
    for step in tf.range(k):
        value = tf.where(available, scores - penalty, negative_infinity)  # [B, K, n]
        best_entry = tf.argmax(value, axis=-1, output_type=tf.int32)  # [B, K]
        has_results = tf.reduce_any(available, axis=-1)  # [B, K]
        below_quota = tf.logical_and(has_results, filled < quotas)
        progress = tf.where(below_quota,
                            (tf.cast(filled, tf.float32) + 0.5) / tf.cast(tf.maximum(quotas, 1), tf.float32), np.inf)
        chosen = tf.where(tf.reduce_any(below_quota, axis=-1), tf.argmin(progress, axis=-1, output_type=tf.int32),
                          tf.argmax(tf.reduce_max(value, axis=-1), axis=-1, output_type=tf.int32))  # [B]
        found = tf.reduce_any(has_results, axis=-1)  # [B]
        position = tf.stack([rows, chosen, tf.gather(best_entry, chosen[:, tf.newaxis], batch_dims=1)[:, 0]], axis=1)
        score, index = tf.gather_nd(scores, position), tf.gather_nd(indices, position)
        taken = tf.logical_and(tf.equal(indices, index[:, tf.newaxis, tf.newaxis]), found[:, tf.newaxis, tf.newaxis])
        available = tf.logical_and(available, tf.logical_not(taken))
        filled += tf.one_hot(chosen, num_interests, dtype=tf.int32) * tf.cast(found, tf.int32)[:, tf.newaxis]
        if entry_categories is not None:
            picked_category = tf.gather_nd(entry_categories, position)
            same = tf.logical_and(tf.equal(entry_categories, picked_category[:, tf.newaxis, tf.newaxis]),
                                  found[:, tf.newaxis, tf.newaxis])
            penalty += diversity_coef * tf.cast(same, penalty.dtype)
        picked_scores = picked_scores.write(step, tf.where(found, score, negative_infinity))
        picked_indices = picked_indices.write(step, tf.where(found, index, tf.zeros_like(index)))
        picked_interest = picked_interest.write(step, tf.where(found, chosen, NO_INTEREST))
    return (tf.transpose(picked_scores.stack()), tf.transpose(picked_indices.stack()),
            tf.transpose(picked_interest.stack()))


def weighted_scores(scores: tf.Tensor, weights: tf.Tensor, merge_lambda: float) -> tf.Tensor:
    """[batch, K, n] scores + merge_lambda * log pi_k of their interest (pi_k = 0: -inf, removed)."""
    log_weights = tf.math.log(tf.cast(weights, scores.dtype))
    if merge_lambda == 0:
        log_weights = tf.where(weights > 0, tf.zeros_like(log_weights), log_weights)
    return scores + merge_lambda * log_weights[:, :, tf.newaxis]


RESCORED = ("logsumexp", "mixture")  # the interest scorings whose lookups re-score the retrieved items


def rescore(interests: tf.Tensor, indices: tf.Tensor, item_vectors: tf.Tensor, scores: tf.Tensor, mode: str,
            temperature: float, mixture: tf.keras.layers.Layer | None = None) -> tf.Tensor:
    """The per-interest results re-scored by the score training used (remi_tf.scoring): every retrieved item
    gets its score over all K interests (removed results stay -inf). Needed for RESCORED only: for "hard"
    and "max" the merge by score already ranks an item by its best interest.

    Args:
      interests: [batch, K, d]; indices: [batch, K, n] item indices; item_vectors: [rows, d] the candidate
        vector of each item index; scores: [batch, K, n]; mixture: the gate of "mixture"
        (remi_tf.layers.InterestMixture).
    """
    if mode not in RESCORED:
        return scores
    vectors = tf.gather(item_vectors, indices)  # [B, K, n, d]
    if mode == "mixture":
        if mixture is None:
            raise ValueError("rescore 'mixture' needs the model's gate (RemiModel.interest_mixture)")
        combined = mixture.rescore(interests, vectors)
    else:
        per_interest = tf.einsum("bjd,bknd->bknj", interests, vectors)  # [B, K, n, K]: interest j on each result
        combined = temperature * tf.reduce_logsumexp(per_interest / temperature, axis=-1)
    return tf.where(scores > -np.inf, tf.cast(combined, scores.dtype), scores)


def draws_from_each_top_k(merge: str, diversity_coef: float) -> bool:
    """Whether the merged top k holds only items of each interest's own top k (in score order), so that the
    merge of those lists equals the merge of deeper ones: true of the merges by score ("score", and
    "weighted", which shifts an interest's scores by one constant) without the diversity penalty. Items of
    interest j below its k-th are preceded by k distinct items of j's scoring at least as high (earlier on
    ties). Not of "quota", whose interests reach past their top k when others took their items first."""
    return merge in ("score", "weighted") and diversity_coef <= 0


def merge_interests(scores: tf.Tensor, indices: tf.Tensor, weights: tf.Tensor, k: int, merge: str = "score",
                    merge_lambda: float = 1.0, categories: tf.Tensor | None = None, diversity_coef: float = 0.0
                    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The merge of config `merge` (module docstring), with ComiRec's diversity when diversity_coef > 0.

    Args:
      scores, indices: [batch, K, n] per-interest results (-inf: removed); weights: [batch, K] pi(u).

    Returns:
      (scores [batch, k], indices [batch, k], interest [batch, k] int32; -inf, 0, -1 for empty slots).
    """
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    if diversity_coef > 0 and categories is None:
        raise ValueError("diversity_coef > 0 needs item categories")
    if merge == "quota":
        return quota_merge(scores, indices, weights, k, categories, diversity_coef)
    if merge == "weighted":
        scores = weighted_scores(scores, weights, merge_lambda)
    if diversity_coef > 0:
        return diverse_merge(scores, indices, categories, diversity_coef, k)
    return merge_interest_results(scores, indices, k)
