"""Full-corpus evaluation of a REMI model with the paper's protocol (merged K-interest top-N)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from remi_tf import merging, metrics
from remi_tf.models import FIRST_ITEM_INDEX, RemiModel


SCORE_CHUNK_BYTES = 256 << 20  # the [users, K, rows] scores of one candidate chunk


@tf.function(reduce_retracing=True)
def _interest_topk(interests: tf.Tensor, candidates: tf.Tensor, top_n: int) -> tuple[tf.Tensor, tf.Tensor]:
    scores = tf.einsum("ukd,nd->ukn", interests, candidates)  # [U, K, rows]
    top = tf.math.top_k(scores, k=tf.minimum(top_n, tf.shape(candidates)[0]))
    return top.indices, top.values


@tf.function(reduce_retracing=True)
def _merge_chunks(scores: tf.Tensor, indices: tf.Tensor, top_n: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """[U, K, chunks * N] per-chunk results -> each interest's top N over all chunks -> the merged top N."""
    best = tf.math.top_k(scores, k=top_n)
    return merging.merge_interest_results(best.values, tf.gather(indices, best.indices, batch_dims=2), top_n)


def retrieve(model: RemiModel, histories: np.ndarray, top_n: int, batch_size: int = 512
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each interest retrieves its top-N over the full corpus; the K lists are merged by score.

    The corpus is scored in chunks that keep each chunk's scores under SCORE_CHUNK_BYTES (one chunk for
    catalogues up to ~30 k items at the default batch); each chunk's top-N go on to the merge.

    Args:
      histories: [users, L] item indices (0 pads).

    Returns:
      (ids [users, top_n] item indices, scores [users, top_n], routing [users, K, L]), merged by
      remi_tf.merging, the retrieval SavedModel's merge.
    """
    num_items = model.vocabulary_size
    top_n = min(top_n, num_items)
    rows_per_chunk = max(top_n, SCORE_CHUNK_BYTES // (4 * batch_size * model.config.num_interests))
    chunks = list(model.candidate_chunks(rows_per_chunk))
    ids, scores, routings = [], [], []
    for start in range(0, len(histories), batch_size):
        interests, routing = model.query_tower(tf.constant(histories[start:start + batch_size], tf.int64))
        chunk_ids, chunk_scores = [], []
        for first_item, candidates in chunks:
            indices, values = _interest_topk(interests, candidates, top_n)
            chunk_ids.append(indices.numpy() + first_item)
            chunk_scores.append(values.numpy())
        merged_scores, merged_ids, _ = _merge_chunks(np.concatenate(chunk_scores, axis=-1),
                                                     np.concatenate(chunk_ids, axis=-1) + FIRST_ITEM_INDEX, top_n)
        scores.append(merged_scores.numpy())
        ids.append(np.where(np.isinf(scores[-1]), -1, merged_ids.numpy()))  # -1: no result (metrics' padding)
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
