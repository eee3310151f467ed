"""The REMI retrieval task: interest-aware hard-negative (IHN) softmax with logQ correction."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf import losses


class InterestAwareRetrieval(tf.keras.layers.Layer, tfrs.tasks.Task):
    """In-batch softmax whose negatives are re-weighted by hardness (REMI's IHN), a TFRS task.

    Score adjustments, in TFRS's order: scores -> temperature -> logQ correction -> accidental hits ->
    hardness weights -> loss. With beta = 0 the loss equals `tfrs.tasks.Retrieval` (mean over the
    batch) with the same sampling-probability correction and accidental-hit removal.

    Args:
      beta: hardness of the negative weights w_bj = M_b * softmax_j(beta * s_bj).
      temperature: scores are divided by it.
      remove_accidental_hits: exclude negatives whose id equals the row's positive id (needs
        `candidate_ids`).
      in_batch_negatives: if False, the other rows' positives (columns [0, batch) off the diagonal) are
        not negatives, and only the extra columns are: the reference code's sampled softmax.
    """

    def __init__(self, beta: float = 0.0, temperature: float = 1.0, remove_accidental_hits: bool = True,
                 in_batch_negatives: bool = True, name: Optional[str] = None) -> None:
        super().__init__(name=name, autocast=False)  # keep the inputs' dtype (float64 in tests)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.remove_accidental_hits = remove_accidental_hits
        self.in_batch_negatives = in_batch_negatives

    def call(self, query_embeddings: tf.Tensor, candidate_embeddings: tf.Tensor,
             candidate_sampling_probability: Optional[tf.Tensor] = None,
             candidate_ids: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Mean IHN loss over the batch.

        Args:
          query_embeddings: [batch, d], the selected interest per example.
          candidate_embeddings: [C, d], C >= batch; column b is row b's positive, columns past the batch
            are extra negatives shared by every row.
          candidate_sampling_probability: optional [C], q_j for the logQ correction.
          candidate_ids: [C] ids, needed when removing accidental hits.

        Returns:
          Scalar loss.
        """
        similarities = tf.matmul(query_embeddings, candidate_embeddings, transpose_b=True)  # [B, C]
        similarities = similarities / self.temperature
        logits = similarities
        if candidate_sampling_probability is not None:
            logits = tfrs.layers.loss.SamplingProbablityCorrection()(logits, candidate_sampling_probability)

        batch_size = tf.shape(similarities)[0]
        num_candidates = tf.shape(similarities)[1]
        is_positive = tf.cast(tf.eye(batch_size, num_candidates), tf.bool)
        negative_mask = tf.logical_not(is_positive)
        if not self.in_batch_negatives:
            is_extra = tf.range(num_candidates) >= batch_size
            negative_mask = tf.logical_and(negative_mask, is_extra[tf.newaxis, :])
        if self.remove_accidental_hits:
            if candidate_ids is None:
                raise ValueError("InterestAwareRetrieval(remove_accidental_hits=True) needs candidate_ids; "
                                 "pass them or construct the task with remove_accidental_hits=False.")
            positive_ids = candidate_ids[:batch_size]
            accidental_hit = tf.equal(positive_ids[:, tf.newaxis], candidate_ids[tf.newaxis, :])
            negative_mask = tf.logical_and(negative_mask, tf.logical_not(accidental_hit))

        positive_logits = tf.linalg.diag_part(logits[:, :batch_size])  # [B]
        per_example = losses.interest_aware_softmax_loss(
            similarities, logits, negative_mask, positive_logits, self.beta)
        return tf.reduce_mean(per_example)
