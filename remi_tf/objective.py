"""REMI's training objective over a batch's candidates: the queries' similarities, computed once (the K interests
combined by `interest_scoring`, or MIND's label-aware read-out), the task's IHN softmax (plus, with
served_score_weight, the same scores combined as served), and the routing regularization, as this replica's
share of the global batch's loss."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from remi_tf import collectives, losses, scoring
from remi_tf.candidate_sampler import Candidates
from remi_tf.config import RemiConfig
from remi_tf.item_index import FIRST_ITEM_INDEX
from remi_tf.layers import label_aware_readout
from remi_tf.layers.last_position import last_positions
from remi_tf.tasks import InterestAwareRetrieval


class RetrievalObjective:
    """The loss and the terms the trackers report (a plain object: the tasks belong to the model).

    Args:
      config: readout, readout_power, interest_scoring, served_score_weight, routing_lambda,
        routing_regularization_mode, embedding_dim and negatives are read.
      task: the IHN softmax; served_task: the served score's softmax (with served_score_weight > 0), or None.
    """

    def __init__(self, config: RemiConfig, task: InterestAwareRetrieval,
                 served_task: InterestAwareRetrieval | None) -> None:
        self.config, self.task, self.served_task = config, task, served_task

    def __call__(self, interests: tf.Tensor, routing: tf.Tensor, positive_embeddings: tf.Tensor,
                 candidates: Candidates) -> tuple[tf.Tensor, tf.Tensor]:
        """Under a synchronous strategy with R replicas (one global batch), each replica's loss is its share of the
        global objective: its rows' per-example losses summed and divided by the global batch, plus its rows'
        routing regularization (a sum over rows); the gradients summed over replicas are then the one-process
        gradients at the global batch.

        Args:
          interests: [b, K, d]; routing: [b, K, L]; positive_embeddings: [b, d] this replica's rows.

        Returns:
          loss: [] this replica's loss.
          terms: [3] this replica's shares of (retrieval loss, routing regularization, loss); summed over the
            replicas they are the global batch's values (one replica: the values themselves).
        """
        retrieval_loss = self.retrieval_loss(interests, positive_embeddings, candidates)
        regularization = self.routing_regularization(routing)
        replica = tf.distribute.get_replica_context()
        if collectives.gathers_candidates(replica):  # the retrieval loss is a mean over this replica's rows
            rows = tf.cast(tf.shape(positive_embeddings)[0], retrieval_loss.dtype)
            retrieval_loss *= rows / (tf.cast(candidates.num_positives, retrieval_loss.dtype)
                                      if self.config.negatives != "sampled" else rows * replica.num_replicas_in_sync)
        loss = retrieval_loss + self.config.routing_lambda * regularization
        return loss, tf.stack([retrieval_loss, regularization, loss])

    def retrieval_loss(self, interests: tf.Tensor, positive_embeddings: tf.Tensor, candidates: Candidates
                       ) -> tf.Tensor:
        """[] the task's loss (a mean over this replica's rows), with the served term when there is one: both
        from one [b, K, C] matrix of per-interest scores."""
        correction = {"candidate_sampling_probability": candidates.sampling_probability,
                      "candidate_ids": candidates.ids}
        if self.config.readout == "label_aware":
            query = label_aware_readout(interests, positive_embeddings, self.config.readout_power)  # [b, d]
            return self.task.loss_of_similarities(tf.matmul(query, candidates.vectors, transpose_b=True),
                                                  **correction)
        per_interest = scoring.per_interest_scores(interests, candidates.vectors)  # [b, K, C]
        loss = self.task.loss_of_similarities(scoring.combine_interest_scores(
            per_interest, interests, candidates.vectors, self.config.interest_scoring), **correction)
        if self.served_task is not None:  # the same scores as served: the max over the K interests
            loss += self.config.served_score_weight * self.served_task.loss_of_similarities(
                scoring.combine_interest_scores(per_interest, interests, candidates.vectors, "max"), **correction)
        return loss

    def every_position(self, interests: tf.Tensor, routing: tf.Tensor, mask: tf.Tensor, history: tf.Tensor,
                       target: tf.Tensor, candidates: Candidates, item_vectors: Callable[[tf.Tensor], tf.Tensor],
                       target_probability_of: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
                       ) -> tuple[tf.Tensor, tf.Tensor]:
        """SASRec's objective (training_positions "every"): the interests after each real position t of the
        history score item t + 1 (the target after the last) against the batch's candidates, combined by
        `interest_scoring`, in the IHN softmax's mean over the positions; the routing regularization of the
        whole histories' routing.

        Args:
          interests: [b, L, K, d] after each prefix; routing: [b, K, L]; mask: [b, L] real items; history: [b, L];
          target: [b]; candidates: the batch's; item_vectors: indices -> [.., d]; target_probability_of: (ids [n],
          batch size) -> [n] q, the sampler's.

        Returns:
          (loss, terms) as `__call__`: under a synchronous strategy each replica's retrieval loss is its share of the
          mean over every replica's positions (its positions' losses summed, over all replicas' positions).
        """
        next_items = next_item_targets(history, target, mask)  # [b, L]
        positions = tf.where(tf.logical_and(mask, next_items >= FIRST_ITEM_INDEX))  # [n, 2]
        positive_ids = tf.gather_nd(next_items, positions)  # [n]
        # every position's next item is looked up, not the n real ones: the table's sparse gradient keeps b * L rows
        # on every replica (collectives.sum_gradients needs equal shapes)
        positive_vectors = tf.gather_nd(item_vectors(next_items), positions)  # [n, d]
        positive_similarities, similarities = scoring.positive_and_candidate_scores(
            tf.gather_nd(interests, positions), positive_vectors, candidates.vectors,
            self.config.interest_scoring)  # [n], [n, C]
        positive_probability = None if candidates.sampling_probability is None else target_probability_of(
            positive_ids, candidates.num_positives)
        retrieval_loss = self.task.loss_of_positives(
            positive_similarities, similarities, positive_ids, candidates.ids, candidates.num_positives,
            positive_probability, candidates.sampling_probability)
        replica = tf.distribute.get_replica_context()
        if collectives.gathers_candidates(replica):  # this replica's share of the mean over all replicas' positions
            positions_here = tf.cast(tf.shape(positive_ids)[0], retrieval_loss.dtype)
            retrieval_loss *= positions_here / replica.all_reduce(tf.distribute.ReduceOp.SUM, positions_here)
        regularization = self.routing_regularization(routing)
        loss = retrieval_loss + self.config.routing_lambda * regularization
        return loss, tf.stack([retrieval_loss, regularization, loss])

    def routing_regularization(self, routing: tf.Tensor) -> tf.Tensor:
        """[] RR of [b, K, L] routing (none for routing "last_position", whose routing is fixed)."""
        if self.config.routing == "last_position":
            return tf.zeros([], routing.dtype)
        return losses.routing_regularization(routing, self.config.embedding_dim,
                                             self.config.routing_regularization_mode)


def next_item_targets(history: tf.Tensor, target: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """[b, L] the item after each position of left-aligned histories [b, L] (mask [b, L] its real items): the next
    history item, and at the last real position the cut's target [b]; padding after."""
    shifted = tf.concat([history[:, 1:], tf.zeros_like(history[:, :1])], axis=1)
    is_last = tf.equal(tf.range(tf.shape(history)[1])[tf.newaxis, :], last_positions(mask)[:, tf.newaxis])
    return tf.where(is_last, tf.cast(target, history.dtype)[:, tf.newaxis], shifted)
