"""Servable modules of a trained REMI model: the query tower, and end-to-end K-interest retrieval.

Both take `history`: [batch, T] string item ids in time order (oldest first; "" pads, T free). Unknown
ids map to the OOV bucket and are ignored; the last `max_history` known items are used. A row with no
known item gets popularity candidates: the most frequent training items, score 0, interest -1.
A model with user profile features also takes one [batch] string input per feature column, named by the
column (raw values, `|`-separated for several; "" or an unknown value: the OOV bucket). Item features need
no input: they live in the model with its items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf import merging
from remi_tf.item_index import FIRST_ITEM_INDEX, item_lookup
from remi_tf.models import RemiModel

HISTORY_SIGNATURE = tf.TensorSpec([None, None], tf.string, name="history")


class QueryModule(tf.Module):
    """History of raw item ids (and profile values) -> K interest embeddings."""

    def __init__(self, model: RemiModel, vocabulary: Sequence[str]) -> None:
        super().__init__()
        self.query_tower = model.query_tower
        self.lookup = item_lookup(vocabulary)
        self.max_history = model.config.max_history
        self.feature_columns = [] if model.user_features is None else list(model.user_features.columns)

    def input_specs(self) -> dict[str, tf.TensorSpec]:
        """The signatures' inputs: history, then one [batch] string per user feature column."""
        return {"history": HISTORY_SIGNATURE,
                **{column: tf.TensorSpec([None], tf.string, name=column) for column in self.feature_columns}}

    def interests(self, history: tf.Tensor, profile: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """([B, K, d] interests, [B, L] the history's model indices)."""
        indices = self.indices(history)
        user_features = None
        if self.feature_columns:
            user_features = tf.stack([profile[column] for column in self.feature_columns], axis=-1)  # [B, C]
        interests, _ = self.query_tower(indices, user_features)
        return interests, indices

    def indices(self, history: tf.Tensor) -> tf.Tensor:
        """[batch, T] string -> [batch, L] model indices: the last L known items, left-aligned, 0-padded."""
        indices = self.lookup(history)
        known = tf.ragged.boolean_mask(indices, indices >= FIRST_ITEM_INDEX)
        return known[:, -self.max_history:].to_tensor(0, shape=[None, self.max_history])

    @tf.function
    def serve(self, history: tf.Tensor, **profile: tf.Tensor) -> dict[str, tf.Tensor]:
        interests, _ = self.interests(history, profile)
        return {"interests": interests}


def per_interest_depth(k: int, max_history: int, num_items: int) -> int:
    """How many items each interest retrieves: k, plus max_history so that k remain once the history's items
    are removed (at most the num_items of the catalogue)."""
    return min(k + max_history, num_items)


def item_index(model: RemiModel, index: str, k: int, scann_options: dict | None = None
               ) -> tfrs.layers.factorized_top_k.TopK:
    """The model's items indexed for per-interest retrieval: [Q, d] queries -> ([Q, n] scores, [Q, n] item
    indices), n = per_interest_depth(k, max_history, N items). index: "scann" (tfrs ScaNN layer with
    `scann_options`; needs the ScaNN ops to load) or "brute-force" (exact)."""
    candidates = model.corpus.embeddings()
    depth = per_interest_depth(k, model.config.max_history, int(candidates.shape[0]))
    identifiers = tf.range(FIRST_ITEM_INDEX, FIRST_ITEM_INDEX + tf.shape(candidates)[0], dtype=tf.int64)
    if index == "scann":
        layer = tfrs.layers.factorized_top_k.ScaNN(k=depth, **(scann_options or {}))
    elif index == "brute-force":
        layer = tfrs.layers.factorized_top_k.BruteForce(k=depth)
    else:
        raise ValueError(f"index must be 'scann' or 'brute-force', got {index!r}")
    return layer.index(candidates, identifiers)


class RetrievalModule(tf.Module):
    """History of raw item ids -> merged top-k candidates and the K per-interest retrievals.

    Args:
      model: the trained model; vocabulary: its items (index i + 2 is vocabulary[i]).
      index: "scann" (item_index's ScaNN with tfrs' default options) or "brute-force", or an item_index layer
        already built for this model and k (the export's ScaNN, its recall measured: export/scann_tuning.py).
      k: results per interest and merged.
      categories, diversity_coef: with diversity_coef > 0 the K lists are merged with ComiRec's greedy
        category-aware penalty (remi_tf.merging) over `categories` ([vocabulary + 2] category per item
        index), kept inside the SavedModel.
    """

    def __init__(self, model: RemiModel, vocabulary: Sequence[str], index: str | tfrs.layers.factorized_top_k.TopK,
                 k: int, categories: np.ndarray | None = None, diversity_coef: float = 0.0) -> None:
        super().__init__()
        if diversity_coef > 0 and categories is None:
            raise ValueError("a diversity coefficient > 0 needs item categories (`remi prepare --item-features`)")
        self.diversity_coef = diversity_coef
        self.categories = None if diversity_coef <= 0 else tf.Variable(
            tf.constant(categories, tf.int32), trainable=False, name="item_categories")
        self.query = QueryModule(model, vocabulary)
        self.k = k
        self.item_ids = tf.Variable(["", "[UNK]"] + list(vocabulary), trainable=False, name="item_ids")
        self.index = item_index(model, index, k) if isinstance(index, str) else index
        self.num_interests = model.config.num_interests

    def input_specs(self) -> dict[str, tf.TensorSpec]:
        return self.query.input_specs()

    def retrieve(self, history: tf.Tensor, profile: dict[str, tf.Tensor], exclude_history: bool
                 ) -> dict[str, tf.Tensor]:
        interests, indices = self.query.interests(history, profile)  # [B, K, d], [B, L]
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
        if merging.draws_from_each_top_k(self.diversity_coef):  # the same answer from fewer results
            scores, found = per_interest.values, interest_indices
        merged_scores, merged_indices, interest = merging.merge_interests(
            scores, found, self.k, self.categories, self.diversity_coef)

        # Popularity candidates for rows without a known item (the vocabulary is most-frequent-first).
        empty = tf.reduce_all(indices == 0, axis=-1)  # [B]
        popular = tf.range(FIRST_ITEM_INDEX, FIRST_ITEM_INDEX + self.k, dtype=merged_indices.dtype)
        merged_indices = tf.where(empty[:, tf.newaxis], popular[tf.newaxis, :], merged_indices)
        merged_scores = tf.where(empty[:, tf.newaxis], tf.zeros_like(merged_scores), merged_scores)
        interest = tf.where(empty[:, tf.newaxis], merging.NO_INTEREST, interest)
        return {
            "item_ids": tf.gather(self.item_ids, merged_indices),
            "scores": merged_scores,
            "interest": interest,
            "interest_item_ids": tf.gather(self.item_ids, interest_indices),
            "interest_scores": per_interest.values,
        }

    @tf.function
    def serve(self, history: tf.Tensor, **profile: tf.Tensor) -> dict[str, tf.Tensor]:
        """The default signature: candidates exclude the items the model reads, the history's last
        `max_history` known items (older items of a longer history are not excluded)."""
        return self.retrieve(history, profile, exclude_history=True)

    @tf.function
    def serve_including_history(self, history: tf.Tensor, **profile: tf.Tensor) -> dict[str, tf.Tensor]:
        """Candidates may include the items of the history (re-consumption)."""
        return self.retrieve(history, profile, exclude_history=False)


def save(module: QueryModule | RetrievalModule, path: str) -> None:
    """Saves `module` with its signatures (inputs: `module.input_specs()`); the Scann op namespace is
    allowed for the ScaNN index."""
    specs = module.input_specs()
    signatures = {"serving_default": module.serve.get_concrete_function(**specs)}
    if isinstance(module, RetrievalModule):
        signatures["include_history"] = module.serve_including_history.get_concrete_function(**specs)
    tf.saved_model.save(module, path, signatures=signatures,
                        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
