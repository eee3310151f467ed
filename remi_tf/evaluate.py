"""Full-corpus evaluation of a REMI model with the paper's protocol (merged K-interest top-N)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from remi_tf import metrics
from remi_tf.models import FIRST_ITEM_INDEX, RemiModel


@tf.function(reduce_retracing=True)
def _interest_topk(query_tower: tf.keras.Model, candidates: tf.Tensor, history: tf.Tensor, top_n: int
                   ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    interests, routing = query_tower(history)  # [U, K, d], [U, K, L]
    scores = tf.einsum("ukd,nd->ukn", interests, candidates)  # [U, K, N]
    top = tf.math.top_k(scores, k=top_n)
    return top.indices, top.values, routing


def retrieve(model: RemiModel, histories: np.ndarray, top_n: int, batch_size: int = 512
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each interest retrieves its top-N over the full corpus; the K lists are merged by score.

    Args:
      histories: [users, L] item indices (0 pads).

    Returns:
      (ids [users, top_n] item indices, scores [users, top_n], routing [users, K, L]).
    """
    candidates = model.candidate_embeddings()
    top_n = min(top_n, int(candidates.shape[0]))
    ids, scores, routings = [], [], []
    for start in range(0, len(histories), batch_size):
        batch = tf.constant(histories[start:start + batch_size], tf.int64)
        interest_ids, interest_scores, routing = _interest_topk(model.query_tower, candidates, batch, top_n)
        merged_ids, merged_scores = metrics.merge_interest_topk(
            interest_ids.numpy() + FIRST_ITEM_INDEX, interest_scores.numpy(), top_n)
        ids.append(merged_ids)
        scores.append(merged_scores)
        routings.append(routing.numpy())
    return np.concatenate(ids), np.concatenate(scores), np.concatenate(routings)


def evaluate(model: RemiModel, histories: np.ndarray, targets: Sequence[np.ndarray],
             top_ns: Sequence[int] = (20, 50), batch_size: int = 512) -> dict[str, object]:
    """Recall/NDCG/HitRate@N and per-interest routing diagnostics.

    Args:
      histories: [users, L] item indices of the evaluation histories (0 pads).
      targets: per user, the held-out item indices.

    Returns:
      A JSON-ready report: metric@N floats, "num_users", "routing_entropy" and "routing_max_weight" lists.
    """
    retrieved, _, routing = retrieve(model, histories, max(top_ns), batch_size)
    report: dict[str, object] = dict(metrics.ranking_metrics(retrieved, targets, top_ns))
    report["num_users"] = len(targets)
    report.update(metrics.routing_diagnostics(routing, histories >= FIRST_ITEM_INDEX))
    return report
