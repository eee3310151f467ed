"""Full-corpus evaluation of a REMI model with the paper's protocol (merged K-interest top-N)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from remi_tf import diversity, feature_tables, merging, metrics
from remi_tf.item_index import FIRST_ITEM_INDEX
from remi_tf.models import RemiModel

logger = logging.getLogger(__name__)

SCORE_CHUNK_BYTES = 256 << 20  # the [users, K, rows] scores of one candidate chunk
CANDIDATE_CHUNK_BYTES = 64 << 20  # the [rows, d] embeddings of one candidate chunk
USER_BATCHES_PER_PASS = 32  # user batches scored in one pass over the corpus (their running top N is held)


TOP_K_BLOCK = 64  # candidates per block of the two-stage top k (BENCHMARKS.md 11.5: 2.2x faster than one top_k)


def blocked_top_k(scores: tf.Tensor, k: int | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """tf.math.top_k(scores, k) over the last axis of [..., n] scores, exactly (ties too: the lower index first),
    in two stages: the k blocks of TOP_K_BLOCK candidates with the highest maxima hold the top k (a block holding
    one of the top k has a maximum at least as high, and fewer than k other blocks can beat it), so one top k
    runs over the block maxima and one over the k blocks' candidates, instead of one over all n."""
    n = tf.shape(scores)[-1]
    num_blocks = -(-n // TOP_K_BLOCK)

    def two_stage() -> tuple[tf.Tensor, tf.Tensor]:
        leading = tf.shape(scores)[:-1]
        padded = tf.pad(tf.reshape(scores, [-1, n]), [[0, 0], [0, num_blocks * TOP_K_BLOCK - n]],
                        constant_values=-np.inf)
        blocks = tf.reshape(padded, [-1, num_blocks, TOP_K_BLOCK])
        chosen = tf.sort(tf.math.top_k(tf.reduce_max(blocks, axis=-1), k=k).indices, axis=-1)  # index order: ties
        best = tf.math.top_k(tf.reshape(tf.gather(blocks, chosen, batch_dims=1), [-1, k * TOP_K_BLOCK]), k=k)
        block = tf.gather(chosen, best.indices // TOP_K_BLOCK, batch_dims=1)
        indices = block * TOP_K_BLOCK + best.indices % TOP_K_BLOCK
        shape = tf.concat([leading, [k]], axis=0)
        return tf.reshape(best.values, shape), tf.reshape(indices, shape)

    def one_stage() -> tuple[tf.Tensor, tf.Tensor]:
        found = tf.math.top_k(scores, k=k)
        return found.values, found.indices
    return tf.cond(num_blocks > 4 * k, two_stage, one_stage)


@tf.function(reduce_retracing=True)
def _update_interest_topk(interests: tf.Tensor, candidates: tf.Tensor, first_index: tf.Tensor, best_scores: tf.Tensor,
                          best_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Each interest's top N so far ([U, K, N] scores and item indices) updated with a chunk of
    candidates [rows, d] whose first row is item index `first_index`."""
    scores = tf.einsum("ukd,nd->ukn", interests, candidates)  # [U, K, rows]
    top_n = tf.shape(best_scores)[-1]
    chunk_scores, chunk_ids = blocked_top_k(scores, tf.minimum(top_n, tf.shape(candidates)[0]))
    scores = tf.concat([best_scores, chunk_scores], axis=-1)
    ids = tf.concat([best_ids, chunk_ids + first_index], axis=-1)
    best = tf.math.top_k(scores, k=top_n)
    return best.values, tf.gather(ids, best.indices, batch_dims=2)


_merge_interests = tf.function(merging.merge_interests, reduce_retracing=True)


class Retrieval(NamedTuple):
    """What `retrieve` found for each user (-1: no result)."""

    item_ids: np.ndarray  # [users, N] merged item indices, best first
    scores: np.ndarray  # [users, N] their scores
    interest: np.ndarray  # [users, N] which interest retrieved each merged item
    interest_item_ids: np.ndarray  # [users, K, N] each interest's own top N, best first
    routing: np.ndarray  # [users, K, L] routing weights


def retrieve(model: RemiModel, histories: np.ndarray, top_n: int, batch_size: int = 512,
             categories: np.ndarray | None = None, diversity_coef: float = 0.0,
             user_features: np.ndarray | None = None, progress: Callable[[float], None] | None = None,
             exclude_history: bool = True) -> Retrieval:
    """Each interest retrieves its top-N over the full corpus; the K lists are merged by score (remi_tf.merging).
    By default the items of each history are left out, as the served model's default signature leaves them out:
    each interest retrieves N + L items, the history's are removed, and the merge reads what remains, so the
    answer is the served one (`exclude_history=False`: the history's items may come back, as the signature
    "include_history" and the evaluation protocol have them).

    Users go in blocks of up to USER_BATCHES_PER_PASS batches. For each block the corpus is read once,
    in chunks whose scores stay under SCORE_CHUNK_BYTES and whose embeddings stay under
    CANDIDATE_CHUNK_BYTES (one chunk for catalogues up to ~30 k items at the default batch), and every
    user batch keeps each interest's top N so far. One chunk is held at a time: an item table sharded
    across parameter servers never sits whole on the caller.

    Args:
      histories: [users, L] item indices (0 pads).
      categories, diversity_coef: with diversity_coef > 0, the K lists are merged by ComiRec's greedy
        category-aware merge (remi_tf.diversity) over `categories` ([rows] category per item index).
      user_features: [users, C] raw profile values, for a model with user features.
      progress: called after each candidate chunk with the users done so far (a block's users count
        in proportion to the share of the corpus scored).

    Returns:
      The merged lists (merged by remi_tf.merging, the retrieval SavedModel's merge), each interest's
      own list and the routing.
    """
    top_n = min(top_n, model.vocabulary_size)
    if diversity_coef > 0 and categories is None:
        raise ValueError("diversity_coef > 0 needs item categories: prepare the data with `remi prepare "
                         "--item-features ITEMS.csv[:COLUMN]`")
    category_table = None if diversity_coef <= 0 else tf.constant(categories, tf.int32)  # made once

    def merge(scores: tf.Tensor, ids: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return _merge_interests(scores, ids, k, category_table, diversity_coef)
    depth = min(top_n + histories.shape[1], model.vocabulary_size) if exclude_history else top_n
    rows_per_chunk = max(depth, min(SCORE_CHUNK_BYTES // (4 * batch_size * model.config.num_interests),
                                    CANDIDATE_CHUNK_BYTES // (4 * model.config.embedding_dim)))
    block = batch_size * USER_BATCHES_PER_PASS
    if model.user_features is not None and user_features is None:
        raise ValueError(f"the model reads user features {model.user_features.columns}: pass their values")
    results = [_retrieve_block(model, histories[start:start + block], top_n, depth, batch_size, rows_per_chunk,
                               merge,
                               None if user_features is None else user_features[start:start + block],
                               None if progress is None else functools.partial(_block_progress, progress, start))
               for start in range(0, len(histories), block)]
    return Retrieval(*(np.concatenate(parts) for parts in zip(*results, strict=True)))


def _retrieve_block(model: RemiModel, histories: np.ndarray, top_n: int, depth: int, batch_size: int,
                    rows_per_chunk: int,
                    merge: Callable[[tf.Tensor, tf.Tensor, int], tuple[tf.Tensor, tf.Tensor, tf.Tensor]],
                    user_features: np.ndarray | None,
                    progress: Callable[[float], None] | None = None) -> Retrieval:
    """retrieve() for one block of users: one pass over the corpus, each interest's `depth` best kept; with a
    depth past `top_n` the history's items are then removed (retrieve's exclude_history)."""
    num_interests = model.config.num_interests
    batches = [model.interests(tf.constant(histories[start:start + batch_size], tf.int64),
                            None if model.user_features is None or user_features is None else
                            tf.constant(user_features[start:start + batch_size].astype(str)))
               for start in range(0, len(histories), batch_size)]
    best = [(tf.fill([len(interests), num_interests, depth], -np.inf),
             tf.fill([len(interests), num_interests, depth], -1)) for interests, _ in batches]
    for first_item, rows in model.corpus.chunks(rows_per_chunk):
        candidates = tf.constant(rows.numpy())  # one copy here, wherever the table's shard lives
        first_index = tf.constant(first_item + FIRST_ITEM_INDEX, tf.int32)
        best = [_update_interest_topk(interests, candidates, first_index, *batch_best)
                for (interests, _), batch_best in zip(batches, best, strict=True)]
        if progress is not None:
            progress(len(histories) * min(1.0, (first_item + len(rows)) / model.vocabulary_size))
    if depth > top_n:
        best = [_without_history(*batch_best, histories[start:start + batch_size])
                for start, batch_best in zip(range(0, len(histories), batch_size), best, strict=True)]
    ids, scores, interest, interest_ids = [], [], [], []
    for best_scores, best_ids in best:
        merged_scores, merged_ids, merged_interest = merge(best_scores, best_ids, top_n)
        scores.append(merged_scores.numpy())
        ids.append(np.where(np.isinf(scores[-1]), -1, merged_ids.numpy()))  # -1: no result (metrics' padding)
        interest.append(merged_interest.numpy())
        own = tf.math.top_k(best_scores, k=top_n)  # each interest's own top N (what remains of it)
        interest_ids.append(np.where(np.isinf(own.values.numpy()), -1,
                                     tf.gather(best_ids, own.indices, batch_dims=2).numpy()))
    return Retrieval(np.concatenate(ids), np.concatenate(scores), np.concatenate(interest),
                     np.concatenate(interest_ids),
                     np.concatenate([routing.numpy() for _, routing in batches]))


def _without_history(scores: tf.Tensor, ids: tf.Tensor, histories: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """[U, K, n] per-interest results with the items of each user's history ([U, L] item indices, 0 pads)
    removed (score -inf), as the served model's default signature removes them."""
    history = tf.constant(histories, ids.dtype)[:, tf.newaxis, tf.newaxis, :]
    seen = tf.reduce_any(tf.equal(ids[:, :, :, tf.newaxis], history), axis=-1)
    return tf.where(seen, tf.constant(-np.inf, scores.dtype), scores), ids


def _block_progress(progress: Callable[[float], None], block_start: int, users_done: float) -> None:
    progress(block_start + users_done)


def user_profiles(model: RemiModel, data_dir: str, user_ids: Sequence[str]) -> np.ndarray | None:
    """[users, C] the raw profile values of `user_ids` from the data directory's user features, for a model
    with user features (None without; users or columns the data does not list: "", the OOV bucket)."""
    if model.user_features is None:
        return None
    table = feature_tables.read_user_table(data_dir)
    if table is None:
        logger.warning("%s has no user features: every user gets the OOV bucket", data_dir)
    return feature_tables.values_of(table, user_ids, model.user_features.columns)


def evaluate(model: RemiModel, histories: np.ndarray, targets: Sequence[np.ndarray],
             top_ns: Sequence[int] = metrics.TOP_NS, batch_size: int = 512, categories: np.ndarray | None = None,
             diversity_coef: float = 0.0, user_features: np.ndarray | None = None,
             progress: Callable[[float], None] | None = None) -> dict[str, object]:
    """Recall/NDCG/HitRate@N and per-interest routing diagnostics.

    Args:
      histories: [users, L] item indices of the evaluation histories (0 pads).
      targets: per user, the held-out item indices.
      categories: [rows] category per item index, when the data has item features (adds
        category_diversity@N); diversity_coef, user_features, progress: see `retrieve`.

    Returns:
      A JSON-ready report: metric@N floats, "num_users", "routing_entropy" and "routing_max_weight" lists,
      "interest_pair_overlap" ([K, K] the Jaccard index of each pair of the K per-interest top-max(N) lists,
      averaged over the users), "interest_overlap" (its mean over the pairs) and
      "interest_share" (each interest's share of the merged top max(N)), "oracle_recall@N" (each user's best
      single-interest list: an upper bound of any choice between the interests), "union_recall@N" and
      "union_size@N" (the K lists together: what a merge could reach, and their distinct items).
    """
    found = retrieve(model, histories, max(top_ns), batch_size, categories, diversity_coef, user_features, progress,
                     exclude_history=False)  # the protocol: a history item may be a target
    report: dict[str, object] = dict(metrics.ranking_metrics(found.item_ids, targets, top_ns))
    if categories is not None:
        for n in top_ns:
            report[f"category_diversity@{n}"] = diversity.category_diversity(found.item_ids[:, :n], categories)
    report["num_users"] = len(targets)
    report.update(metrics.routing_diagnostics(found.routing, histories >= FIRST_ITEM_INDEX))
    pair_overlap = metrics.interest_pair_overlap(found.interest_item_ids)
    report["interest_pair_overlap"] = pair_overlap
    report["interest_overlap"] = metrics.mean_pair_overlap(pair_overlap)
    report["interest_share"] = metrics.interest_share(found.interest, model.config.num_interests)
    report.update(metrics.interest_list_coverage(found.interest_item_ids, targets, top_ns))
    return report
