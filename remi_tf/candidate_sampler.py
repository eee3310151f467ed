"""The candidate columns of a training batch: the positives (gathered across replicas under a synchronous
strategy), the uniformly sampled negatives of config `negatives`, and each column's q for the logQ correction (from
prepare's counts, or the streaming estimator)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from remi_tf import collectives, frequency
from remi_tf.config import RemiConfig
from remi_tf.item_index import FIRST_ITEM_INDEX


class Candidates(NamedTuple):
    """A training batch's candidate columns: the positives (column i is row i's), then extra negatives."""

    ids: tf.Tensor  # [C] item indices
    vectors: tf.Tensor  # [C, d]
    sampling_probability: tf.Tensor | None  # [C] q_j for the logQ correction (None: no correction)
    num_positives: tf.Tensor  # [] the global batch: columns [0, num_positives) are positives


def target_probability_table(target_probability: np.ndarray | None, vocabulary_size: int) -> tf.Tensor:
    """[vocabulary_size + 2] q by item index (uniform when None), checked against the vocabulary."""
    num_rows = vocabulary_size + FIRST_ITEM_INDEX
    if target_probability is None:
        target_probability = np.full([num_rows], 1.0 / vocabulary_size)
    if len(target_probability) != num_rows:
        raise ValueError(f"target_probability has {len(target_probability)} entries, expected "
                         f"vocabulary_size + 2 = {num_rows}")
    return tf.constant(target_probability, tf.float32)


def streaming_estimator(config: RemiConfig, vocabulary: Sequence[str] | None, vocabulary_size: int
                        ) -> tuple[frequency.StreamingFrequencyEstimator, tf.Tensor]:
    """The streaming logQ estimator of `config` and the hash buckets [hashes, vocabulary_size + 2] of each index."""
    if vocabulary is None or len(vocabulary) != vocabulary_size:
        raise ValueError("logq_correction 'streaming' needs the vocabulary's item ids (the estimator hashes them)")
    buckets = tf.constant(frequency.item_buckets(vocabulary, config.logq_buckets, frequency.NUM_HASHES))
    estimator = frequency.StreamingFrequencyEstimator(config.logq_buckets, frequency.NUM_HASHES, config.logq_alpha,
                                                      name="frequency_estimator")
    return estimator, buckets


class CandidateSampler:
    """Draws a training batch's candidates (a plain object: the estimator's state belongs to the model, which
    checkpoints it).

    Args:
      config: negatives, num_sampled_negatives and logq_correction are read.
      vocabulary_size: N, the real items (indices 2 .. N + 1).
      item_vectors: item indices [...] -> the item tower's vectors [..., d].
      target_probability: [N + 2] q by index (logq_correction "counts").
      estimator, buckets: the streaming estimator and each index's hash buckets (logq_correction "streaming").
    """

    def __init__(self, config: RemiConfig, vocabulary_size: int, item_vectors: Callable[[tf.Tensor], tf.Tensor],
                 target_probability: tf.Tensor, estimator: frequency.StreamingFrequencyEstimator | None = None,
                 buckets: tf.Tensor | None = None) -> None:
        self.config = config
        self.vocabulary_size = vocabulary_size
        self.item_vectors = item_vectors
        self.target_probability = target_probability
        self.estimator, self.buckets = estimator, buckets

    def __call__(self, target: tf.Tensor, positive_embeddings: tf.Tensor, training: bool) -> Candidates:
        """The positives (of every replica's rows under a synchronous strategy with in-batch negatives, this
        replica's first), then the uniformly sampled negatives, with each column's q.

        Args:
          target: [b] this replica's positive item indices; positive_embeddings: [b, d] their vectors.
        """
        candidate_ids = tf.cast(target, tf.int64)
        vectors = positive_embeddings
        replica = tf.distribute.get_replica_context()
        if collectives.gathers_candidates(replica) and self.config.negatives != "sampled":
            candidate_ids = collectives.gather_candidate_ids(replica, candidate_ids)
            vectors = self.item_vectors(candidate_ids)
        num_positives = tf.shape(candidate_ids)[0]
        if self.config.negatives != "in_batch":
            sampled_ids = tf.random.uniform([self.config.num_sampled_negatives], FIRST_ITEM_INDEX,
                                            self.vocabulary_size + FIRST_ITEM_INDEX, dtype=tf.int64)
            candidate_ids = tf.concat([candidate_ids, sampled_ids], axis=0)
            vectors = tf.concat([vectors, self.item_vectors(sampled_ids)], axis=0)
        sampling_probability = None
        if self.config.logq_correction != "none":
            sampling_probability = self.sampling_probability(candidate_ids, num_positives, training)
        return Candidates(candidate_ids, vectors, sampling_probability, num_positives)

    def sampling_probability(self, candidate_ids: tf.Tensor, batch_size: tf.Tensor, training: bool) -> tf.Tensor:
        """[C] q_j: in-batch columns get their target frequency (from the counts, or the streaming estimate after
        it has seen this batch's targets), uniformly sampled columns 1 / N.

        With negatives="sampled" every column, the positive included, comes from the uniform sampler's point of
        view (as the reference code), so all columns get 1 / N.
        """
        uniform = 1.0 / self.vocabulary_size
        if self.config.negatives == "sampled":
            return tf.fill(tf.shape(candidate_ids), uniform)
        q = self.target_probability_of(candidate_ids[:batch_size], batch_size, training)
        if self.config.negatives == "in_batch":
            return q
        return tf.concat([q, tf.fill([self.config.num_sampled_negatives], uniform)], axis=0)

    def target_probability_of(self, ids: tf.Tensor, batch_size: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[n] q of item indices `ids` [n] as in-batch columns of a batch of `batch_size` positives: from the counts,
        or the streaming estimate (after counting `ids` with training=True); with negatives="sampled", 1 / N."""
        if self.config.negatives == "sampled":
            return tf.fill(tf.shape(ids), 1.0 / self.vocabulary_size)
        if self.estimator is None:
            return tf.gather(self.target_probability, ids)
        # occurrences per step / examples per step: the per-example q, on the uniform columns' scale
        occurrences = self.estimator(tf.gather(self.buckets, ids, axis=1), training)
        return occurrences / tf.cast(batch_size, occurrences.dtype)
