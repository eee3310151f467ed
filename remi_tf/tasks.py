"""The REMI retrieval task: interest-aware hard-negative (IHN) softmax with logQ correction."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf import losses, scoring

MASKED_SCORE = tfrs.layers.loss.MIN_FLOAT  # the scores of columns the loss ignores, for batch metrics


class InterestAwareRetrieval(tf.keras.layers.Layer, tfrs.tasks.Task):
    """In-batch softmax whose negatives are re-weighted by hardness (REMI's IHN), a TFRS task.

    Score adjustments, in TFRS's order: scores -> temperature -> logQ correction -> accidental hits ->
    hardness weights -> loss. With beta = 0 the loss equals `tfrs.tasks.Retrieval` with a
    SUM_OVER_BATCH_SIZE cross-entropy (sum_b w_b l_b / B: the mean when there are no sample weights)
    and the same sampling-probability correction and accidental-hit removal. It takes Retrieval's
    metrics arguments with their meaning: `metrics` (tfrs.metrics.Factorized, e.g. FactorizedTopK,
    updated with the positives' embeddings), `batch_metrics` (Keras metrics of the in-batch labels and
    the adjusted scores), `loss_metrics` (of the loss), and `compute_metrics` / `compute_batch_metrics`
    in call.

    Queries are one vector per row ([batch, d], e.g. a read-out interest: Retrieval's contract) or the K
    interests of each row ([batch, K, d]), which score the candidates as `interest_scoring` says
    (remi_tf.scoring: the hard read-out, or the max over the interests, as served); every later
    step (temperature, logQ, accidental hits, hardness weights, loss) sees the combined [batch, C] scores.

    Args:
      beta: hardness of the negative weights w_bj = M_b * softmax_j(beta * s_bj).
      temperature: scores are divided by it.
      remove_accidental_hits: exclude negatives whose id equals the row's positive id (needs
        `candidate_ids`).
      in_batch_negatives: if False, the other rows' positives (columns [0, batch) off the diagonal) are
        not negatives, and only the extra columns are: the reference code's sampled softmax.
      interest_scoring: "hard" or "max": how [batch, K, d] queries score a candidate.
    """

    def __init__(self, beta: float = 0.0, temperature: float = 1.0, remove_accidental_hits: bool = True,
                 in_batch_negatives: bool = True, interest_scoring: str = "hard",
                 metrics: tfrs.metrics.Factorized | Sequence[tfrs.metrics.Factorized] | None = None,
                 batch_metrics: Sequence[tf.keras.metrics.Metric] | None = None,
                 loss_metrics: Sequence[tf.keras.metrics.Metric] | None = None,
                 name: str | None = None) -> None:
        super().__init__(name=name, autocast=False)  # keep the inputs' dtype (float64 in tests)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if interest_scoring not in scoring.INTEREST_SCORINGS:
            raise ValueError(f"interest_scoring must be one of {scoring.INTEREST_SCORINGS}, got {interest_scoring!r}")
        self.interest_scoring = interest_scoring
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.remove_accidental_hits = remove_accidental_hits
        self.in_batch_negatives = in_batch_negatives
        self.factorized_metrics = list(metrics) if isinstance(metrics, Sequence) else [metrics] if metrics else []
        self.batch_metrics = list(batch_metrics or [])
        self.loss_metrics = list(loss_metrics or [])

    def call(self, query_embeddings: tf.Tensor, candidate_embeddings: tf.Tensor,
             sample_weight: tf.Tensor | None = None, candidate_sampling_probability: tf.Tensor | None = None,
             candidate_ids: tf.Tensor | None = None, compute_metrics: bool = True,
             compute_batch_metrics: bool = True) -> tf.Tensor:
        """The IHN loss, sum_b w_b l_b / batch (the mean over the batch without weights).

        Args (tfrs.tasks.Retrieval's order):
          query_embeddings: [batch, d] (the selected interest per example) or [batch, K, d] (the K interests,
            combined by `interest_scoring`).
          candidate_embeddings: [C, d], C >= batch; column b is row b's positive, columns past the batch
            are extra negatives shared by every row.
          sample_weight: optional [batch] weights w_b.
          candidate_sampling_probability: optional [C], q_j for the logQ correction.
          candidate_ids: [C] ids, needed when removing accidental hits.
          compute_metrics, compute_batch_metrics: update `metrics` / `batch_metrics` (loss_metrics always).

        Returns:
          Scalar loss.
        """
        multi_interest = query_embeddings.shape.rank == 3
        if multi_interest and self.factorized_metrics:
            raise ValueError("factorized metrics take one query vector per row; pass [batch, d] queries")
        if multi_interest:
            similarities = scoring.interest_similarities(query_embeddings, candidate_embeddings,
                                                         self.interest_scoring)  # [B, C]
        else:
            similarities = tf.matmul(query_embeddings, candidate_embeddings, transpose_b=True)  # [B, C]
        updates = []
        if compute_metrics and self.factorized_metrics:
            batch_size = tf.shape(similarities)[0]
            true_ids = None if candidate_ids is None else candidate_ids[:batch_size]
            updates += [metric.update_state(query_embeddings, candidate_embeddings[:batch_size],
                                            true_candidate_ids=true_ids, sample_weight=sample_weight)
                        for metric in self.factorized_metrics]
        with tf.control_dependencies([update for update in updates if update is not None]):
            return self.loss_of_similarities(similarities, sample_weight, candidate_sampling_probability,
                                             candidate_ids, compute_batch_metrics)

    def loss_of_similarities(self, similarities: tf.Tensor, sample_weight: tf.Tensor | None = None,
                             candidate_sampling_probability: tf.Tensor | None = None,
                             candidate_ids: tf.Tensor | None = None, compute_batch_metrics: bool = True) -> tf.Tensor:
        """The IHN loss of [batch, C] similarities s_bj (row b's positive: column b), the task's steps after the
        scoring: the temperature, logQ (TFRS's SamplingProbablityCorrection), the negatives' mask (the diagonal,
        accidental hits, and without in-batch negatives the other rows' positives), the hardness weights and the
        loss; batch and loss metrics. tfrs.tasks.Retrieval does the first steps alike but not the IHN weights,
        whose hardness reads the similarities before the correction, so its loss cannot be reused."""
        similarities, logits = self.corrected_logits(similarities, candidate_sampling_probability)

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
        if sample_weight is not None:
            per_example = per_example * tf.cast(tf.reshape(sample_weight, [-1]), per_example.dtype)
        loss = tf.reduce_mean(per_example)
        updates = [metric.update_state(loss) for metric in self.loss_metrics]
        if compute_batch_metrics and self.batch_metrics:
            considered = tf.logical_or(is_positive, negative_mask)  # what the loss sees, as TFRS's scores
            scores = tf.where(considered, logits, tf.cast(MASKED_SCORE, logits.dtype))
            labels = tf.cast(is_positive, logits.dtype)
            updates += [metric.update_state(labels, scores, sample_weight=sample_weight)
                        for metric in self.batch_metrics]
        with tf.control_dependencies([update for update in updates if update is not None]):
            return tf.identity(loss)

    def corrected_logits(self, similarities: tf.Tensor, sampling_probability: tf.Tensor | None
                         ) -> tuple[tf.Tensor, tf.Tensor]:
        """[..., C] similarities -> (similarities / temperature, those minus log q: TFRS's SamplingProbablityCorrection,
        with q [C] the columns' sampling probability, or unchanged when it is None)."""
        if self.temperature != 1.0:
            similarities = similarities / self.temperature
        if sampling_probability is None:
            return similarities, similarities
        return similarities, tfrs.layers.loss.SamplingProbablityCorrection()(similarities, sampling_probability)

    def loss_of_positives(self, positive_similarities: tf.Tensor, similarities: tf.Tensor, positive_ids: tf.Tensor,
                          candidate_ids: tf.Tensor, num_positives: tf.Tensor,
                          positive_probability: tf.Tensor | None = None,
                          candidate_probability: tf.Tensor | None = None) -> tf.Tensor:
        """The IHN loss of rows whose positive is not a candidate column (SASRec's every position), the steps of
        `loss_of_similarities`: temperature, logQ, the negatives' mask (a candidate whose id is the row's positive
        is an accidental hit; without in-batch negatives, columns [0, num_positives) are not negatives either),
        the hardness weights, the mean over the rows.

        Args:
          positive_similarities: [n] s(row, its positive); similarities: [n, C] s(row, candidate).
          positive_ids: [n] item indices; candidate_ids: [C].
          num_positives: [] the candidate columns that are the batch's targets (the rest: sampled negatives).
          positive_probability: [n] and candidate_probability: [C] q for the logQ correction (None: none).
        """
        similarities, logits = self.corrected_logits(similarities, candidate_probability)
        _, positive_logits = self.corrected_logits(positive_similarities, positive_probability)
        negative_mask = tf.not_equal(positive_ids[:, tf.newaxis], candidate_ids[tf.newaxis, :])  # [n, C]
        if not self.in_batch_negatives:
            is_extra = tf.range(tf.shape(candidate_ids)[0]) >= num_positives
            negative_mask = tf.logical_and(negative_mask, is_extra[tf.newaxis, :])
        loss = tf.reduce_mean(losses.interest_aware_softmax_loss(similarities, logits, negative_mask, positive_logits,
                                                                 self.beta))
        updates = [metric.update_state(loss) for metric in self.loss_metrics]
        with tf.control_dependencies([update for update in updates if update is not None]):
            return tf.identity(loss)
