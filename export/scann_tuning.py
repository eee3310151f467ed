"""ScaNN's search options chosen for a target recall, measured at export time against exact search.

The export's tree (~sqrt(N) leaves, remi_tf.export.exporter.scann_options) keeps its size; the number of
leaves searched starts from the default and is halved while ScaNN's top-k over held-out queries still recalls
`target_recall` of the exact top-k, or doubled until it does (or every leaf is searched). BENCHMARKS.md 6.1:
fixed options recall 0.80-0.86 on some catalogues, 0.98 on others; 6.2: 1 M items need half the default's
leaves for 0.95. The export then builds the index it serves with the chosen options and measures that
index on the same queries (`served`): ScaNN's k-means is seeded anew at each build, and a rebuilt tree's
recall differs from the tuning tree's by up to ~0.03 where few leaves are searched (0.918 -> 0.884 at 1 of
141 leaves); while the served index falls short of the target it is built again with twice the leaves searched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
from scann import scann_ops

from remi_tf import input as input_lib
from remi_tf.evaluate import blocked_top_k
from remi_tf.models import RemiModel

logger = logging.getLogger(__name__)

HELD_OUT_QUERIES = 512
EXACT_SCORE_BYTES = 64 << 20  # the [queries, N] scores of exact_top_k held at once
MAX_REORDERING_FACTOR = 8  # the tuning re-ranks up to this many times the options' candidates


class Tuned(NamedTuple):
    """The chosen options, the recall@k they reached and over how many queries; `tried`: (leaves searched,
    candidates re-ranked, recall@k) for each setting the tuning measured on its tree, in the order measured."""

    options: dict[str, Any]
    recall: float
    num_queries: int
    tried: tuple[tuple[int, int, float], ...] = ()


def exact_top_k(candidates: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] the row indices of the k highest dot products of each query with `candidates` [N, d], a few
    queries at a time (their [q, N] scores stay under EXACT_SCORE_BYTES: all 512 at once over a million items
    held 8 GB), by the evaluation's exact top k."""
    step = max(1, EXACT_SCORE_BYTES // (4 * max(len(candidates), 1)))
    table = tf.constant(candidates, tf.float32)
    found = [blocked_top_k(tf.matmul(tf.constant(queries[start:start + step], tf.float32), table, transpose_b=True),
                           k)[1].numpy() for start in range(0, len(queries), step)]
    return np.concatenate(found) if found else np.zeros((0, k), np.int32)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found ∩ exact| / k ([Q, k] each)."""
    return float(np.mean([len(set(row) & set(truth)) / exact.shape[1] for row, truth in zip(found, exact,
                                                                                             strict=True)]))


def searcher(candidates: np.ndarray, k: int, options: dict[str, Any]) -> Any:
    """A ScaNN searcher built as tfrs.layers.factorized_top_k.ScaNN builds the export's (dot product, the tree
    of `options`, asymmetric hashing with 2 dimensions per block, 12 k-means iterations, its re-ranking)."""
    builder = scann_ops.builder(db=tf.constant(candidates, tf.float32), num_neighbors=k, distance_measure="dot_product")
    builder = builder.tree(num_leaves=options["num_leaves"], num_leaves_to_search=options["num_leaves_to_search"],
                           training_iterations=12).score_ah(dimensions_per_block=2)
    return builder.reorder(options["num_reordering_candidates"]).build()


def tune(candidates: np.ndarray, queries: np.ndarray, k: int, target_recall: float,
         options: dict[str, Any]) -> Tuned:
    """The fewest leaves searched at which ScaNN recalls `target_recall` of the exact top-k of `queries` [Q, d]
    over `candidates` [N, d]: from options' number, halved while the target is still reached, else doubled
    until it is. Where every leaf falls short (the quantised scores lose the order of too many candidates: a
    weakly trained million-item table recalled 0.886 at every leaf), the same again with twice the candidates
    re-ranked exactly, up to MAX_REORDERING_FACTOR times options' (then: every leaf, the most re-ranked). One
    index, searched at each setting; `tried` lists (leaves, re-ranked, recall) in the order measured."""
    exact = exact_top_k(candidates, queries, k)
    first = options["num_reordering_candidates"]
    doublings = range(MAX_REORDERING_FACTOR.bit_length())  # 1x, 2x, 4x, 8x
    reorderings = sorted({min(first * 2 ** step, len(candidates)) for step in doublings})
    index = searcher(candidates, k, {**options, "num_reordering_candidates": reorderings[-1]})
    query_tensor = tf.constant(queries, tf.float32)
    tried: list[tuple[int, int, float]] = []

    def reached(leaves: int, reordering: int) -> float:
        found = index.search_batched(query_tensor, final_num_neighbors=k, pre_reorder_num_neighbors=reordering,
                                     leaves_to_search=leaves).indices
        tried.append((leaves, reordering, recall(found.numpy(), exact)))
        return tried[-1][2]

    total = options["num_leaves"]
    for reordering in reorderings:
        leaves = options["num_leaves_to_search"]
        at = reached(leaves, reordering)
        if at >= target_recall:
            while leaves > 1 and (fewer := reached(leaves // 2, reordering)) >= target_recall:
                leaves, at = leaves // 2, fewer
        else:
            while at < target_recall and leaves < total:
                leaves = min(total, 2 * leaves)
                at = reached(leaves, reordering)
        if at >= target_recall:
            break
    return Tuned({**options, "num_leaves_to_search": leaves, "num_reordering_candidates": reordering}, at,
                 len(queries), tuple(tried))


def served(build: Callable[[dict[str, Any]], Any], candidates: np.ndarray, queries: np.ndarray, k: int,
           target_recall: float, tuned: Tuned, first_identifier: int = 0) -> tuple[Any, Tuned]:
    """The index to serve and its own recall: `build(options)` (a tfrs ScaNN layer over `candidates` [N, d]
    with identifiers first_identifier + row, retrieving k) with tuned's options, rebuilt with twice the leaves
    searched while its recall@k of the exact top-k of `queries` [Q, d] is below `target_recall` (at most
    every leaf)."""
    exact = exact_top_k(candidates, queries, k) + first_identifier
    options = tuned.options
    while True:
        index = build(options)
        _, found = index(tf.constant(queries, tf.float32))
        at = recall(found.numpy(), exact)
        leaves = options["num_leaves_to_search"]
        if at >= target_recall or leaves >= options["num_leaves"]:
            return index, Tuned(options, at, len(queries), tuned.tried)
        logger.info(f"ScaNN: the served index recalls {at:.3f} at {leaves} leaves searched (the tuning's tree "
                    f"{tuned.recall:.3f}); building it again with {2 * leaves}")
        options = {**options, "num_leaves_to_search": min(options["num_leaves"], 2 * leaves)}
        del index, found  # freed before the next build: two indexes of a large catalogue at once raise the peak


def held_out_queries(model: RemiModel, data_dir: str, vocabulary: list[str], limit: int = HELD_OUT_QUERIES,
                     seed: int = 0) -> np.ndarray:
    """[Q, d] the interests of up to `limit` / K valid users of the model's data directory (the queries the
    served model will see); item vectors of the catalogue where those are not at hand (the data directory is
    gone, or the model reads user features)."""
    num_interests = model.config.num_interests
    if model.user_features is None:
        try:
            _, histories, _ = input_lib.load_evaluation_split(data_dir, "valid", vocabulary, model.config.max_history)
        except (FileNotFoundError, ValueError) as error:
            logger.info(f"ScaNN tuning on item vectors: the valid split is not at hand ({error})")
        else:
            interests = model.interests(tf.constant(histories[:max(1, limit // num_interests)]))[0]
            return interests.numpy().reshape(-1, interests.shape[-1])
    candidates = model.corpus.embeddings().numpy()
    rows = np.random.default_rng(seed).choice(len(candidates), min(limit, len(candidates)), replace=False)
    return candidates[rows]
