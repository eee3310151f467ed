"""Servable modules of a trained REMI model: the query tower, and end-to-end K-interest retrieval.

Both take `history`: [batch, T] string item ids in time order (oldest first; "" pads, T free). Unknown
ids map to the OOV bucket and are ignored; the last `max_history` known items are used. A row with no
known item gets popularity candidates: the most frequent training items, score 0, interest -1.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf.models import FIRST_ITEM_INDEX, RemiModel, item_lookup

HISTORY_SIGNATURE = tf.TensorSpec([None, None], tf.string, name="history")
NO_INTEREST = -1


class QueryModule(tf.Module):
    """History of raw item ids -> K interest embeddings."""

    def __init__(self, model: RemiModel, vocabulary: Sequence[str]) -> None:
        super().__init__()
        self.query_tower = model.query_tower
        self.lookup = item_lookup(vocabulary)
        self.max_history = model.config.max_history

    def indices(self, history: tf.Tensor) -> tf.Tensor:
        """[batch, T] string -> [batch, L] model indices: the last L known items, left-aligned, 0-padded."""
        indices = self.lookup(history)
        known = tf.ragged.boolean_mask(indices, indices >= FIRST_ITEM_INDEX)
        return known[:, -self.max_history:].to_tensor(0, shape=[None, self.max_history])

    @tf.function(input_signature=[HISTORY_SIGNATURE])
    def serve(self, history: tf.Tensor) -> dict[str, tf.Tensor]:
        interests, _ = self.query_tower(self.indices(history))
        return {"interests": interests}


def merge_interest_results(scores: tf.Tensor, indices: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Merges per-interest results by score, de-duplicated (the TF twin of remi_tf.metrics.merge_interest_topk).

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


class RetrievalModule(tf.Module):
    """History of raw item ids -> merged top-k candidates and the K per-interest retrievals.

    Args:
      model: the trained model; vocabulary: its items (index i + 2 is vocabulary[i]).
      index: "scann" (tfrs ScaNN layer; needs the ScaNN ops to load) or "brute-force" (exact).
      k: results per interest and merged.
    """

    def __init__(self, model: RemiModel, vocabulary: Sequence[str], index: str, k: int,
                 scann_options: dict | None = None) -> None:
        super().__init__()
        self.query = QueryModule(model, vocabulary)
        self.k = k
        self.item_ids = tf.Variable(["", "[UNK]"] + list(vocabulary), trainable=False, name="item_ids")
        candidates = model.candidate_embeddings()
        # Retrieve extra results per interest so that k remain after the history's items are removed.
        self.per_interest = min(k + model.config.max_history, int(candidates.shape[0]))
        identifiers = tf.range(FIRST_ITEM_INDEX, FIRST_ITEM_INDEX + tf.shape(candidates)[0], dtype=tf.int64)
        if index == "scann":
            self.index = tfrs.layers.factorized_top_k.ScaNN(k=self.per_interest, **(scann_options or {}))
        elif index == "brute-force":
            self.index = tfrs.layers.factorized_top_k.BruteForce(k=self.per_interest)
        else:
            raise ValueError(f"index must be 'scann' or 'brute-force', got {index!r}")
        self.index.index(candidates, identifiers)
        self.num_interests = model.config.num_interests

    def retrieve(self, history: tf.Tensor, exclude_history: bool) -> dict[str, tf.Tensor]:
        indices = self.query.indices(history)  # [B, L]
        interests, _ = self.query.query_tower(indices)  # [B, K, d]
        batch = tf.shape(interests)[0]
        scores, found = self.index(tf.reshape(interests, [-1, interests.shape[-1]]))  # [B*K, n]
        scores = tf.reshape(scores, [batch, self.num_interests, -1])
        found = tf.reshape(found, [batch, self.num_interests, -1])
        if exclude_history:
            seen = tf.reduce_any(tf.equal(found[:, :, :, tf.newaxis], indices[:, tf.newaxis, tf.newaxis, :]), -1)
            scores = tf.where(seen, tf.constant(-float("inf"), scores.dtype), scores)
        # Per-interest lists: the k best remaining results of each interest, in score order.
        per_interest = tf.math.top_k(scores, k=self.k)
        interest_indices = tf.gather(found, per_interest.indices, batch_dims=2)
        merged_scores, merged_indices, interest = merge_interest_results(scores, found, self.k)

        # Popularity candidates for rows without a known item (the vocabulary is most-frequent-first).
        empty = tf.reduce_all(indices == 0, axis=-1)  # [B]
        popular = tf.range(FIRST_ITEM_INDEX, FIRST_ITEM_INDEX + self.k, dtype=merged_indices.dtype)
        merged_indices = tf.where(empty[:, tf.newaxis], popular[tf.newaxis, :], merged_indices)
        merged_scores = tf.where(empty[:, tf.newaxis], tf.zeros_like(merged_scores), merged_scores)
        interest = tf.where(empty[:, tf.newaxis], NO_INTEREST, interest)
        return {
            "item_ids": tf.gather(self.item_ids, merged_indices),
            "scores": merged_scores,
            "interest": interest,
            "interest_item_ids": tf.gather(self.item_ids, interest_indices),
            "interest_scores": per_interest.values,
        }

    @tf.function(input_signature=[HISTORY_SIGNATURE])
    def serve(self, history: tf.Tensor) -> dict[str, tf.Tensor]:
        """The default signature: candidates exclude the items of the history."""
        return self.retrieve(history, exclude_history=True)

    @tf.function(input_signature=[HISTORY_SIGNATURE])
    def serve_including_history(self, history: tf.Tensor) -> dict[str, tf.Tensor]:
        """Candidates may include the items of the history (re-consumption)."""
        return self.retrieve(history, exclude_history=False)


def save(module: tf.Module, path: str) -> None:
    """Saves `module` with its signatures; the Scann op namespace is allowed for the ScaNN index."""
    signatures = {"serving_default": module.serve}
    if isinstance(module, RetrievalModule):
        signatures["include_history"] = module.serve_including_history
    tf.saved_model.save(module, path, signatures=signatures,
                        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
