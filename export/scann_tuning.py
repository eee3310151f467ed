"""ScaNN's search options chosen for a target recall, measured at export time against exact search.

The export's tree (~sqrt(N) leaves, remi_tf.export.exporter.scann_options) keeps its size; the number of
leaves searched doubles from the default until ScaNN's top-k over held-out queries recalls `target_recall`
of the exact top-k (or every leaf is searched). BENCHMARKS.md 6.1: fixed options recall 0.80-0.86 on some
catalogues, 0.98 on others. The export builds its index again with the chosen options; ScaNN's k-means
sampling makes a rebuild's recall differ by a few thousandths (tests/export/test_scann_tuning.py).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf import input as input_lib
from remi_tf.models import RemiModel

logger = logging.getLogger(__name__)

HELD_OUT_QUERIES = 512


class Tuned(NamedTuple):
    """The chosen options, the recall@k they reached and over how many queries."""

    options: dict[str, Any]
    recall: float
    num_queries: int


def exact_top_k(candidates: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] the row indices of the k highest dot products of each query with `candidates` [N, d]."""
    scores = queries @ candidates.T
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found ∩ exact| / k ([Q, k] each)."""
    return float(np.mean([len(set(row) & set(truth)) / exact.shape[1] for row, truth in zip(found, exact,
                                                                                             strict=True)]))


def tune(candidates: np.ndarray, queries: np.ndarray, k: int, target_recall: float,
         options: dict[str, Any]) -> Tuned:
    """The fewest leaves searched (doubling from options') at which ScaNN recalls `target_recall` of the
    exact top-k of `queries` [Q, d] over `candidates` [N, d]; all leaves when none reaches it."""
    exact = exact_top_k(candidates, queries, k)
    leaves = options["num_leaves_to_search"]
    while True:
        trial = {**options, "num_leaves_to_search": leaves}
        index = tfrs.layers.factorized_top_k.ScaNN(k=k, **trial)
        index.index(tf.constant(candidates, tf.float32))
        _, found = index(tf.constant(queries, tf.float32))
        reached = recall(found.numpy(), exact)
        if reached >= target_recall or leaves >= options["num_leaves"]:
            return Tuned(trial, reached, len(queries))
        leaves = min(options["num_leaves"], 2 * leaves)


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
            interests = model.encode(tf.constant(histories[:max(1, limit // num_interests)]))[0]
            return interests.numpy().reshape(-1, interests.shape[-1])
    candidates = model.candidate_embeddings().numpy()
    rows = np.random.default_rng(seed).choice(len(candidates), min(limit, len(candidates)), replace=False)
    return candidates[rows]
