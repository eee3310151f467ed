"""Evaluation metrics of the REMI/ComiRec protocol and routing diagnostics (numpy, per user)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOP_NS = (20, 50)  # the paper's list lengths: Recall/NDCG/HitRate@20 and @50


def ranking_metrics(retrieved: np.ndarray, targets: Sequence[np.ndarray], top_ns: Sequence[int] = TOP_NS
                    ) -> dict[str, float]:
    """Recall@N, NDCG@N and HitRate@N averaged over users.

    Recall = |top-N ∩ targets| / |targets| (targets as a set); HitRate = 1 if any hit; NDCG = DCG over
    the retrieved list in score order (rank r counts 1 / log2(r + 2)) divided by the ideal DCG of the
    same number of hits.

    Args:
      retrieved: [users, >= max(top_ns)] ids in score order (-1 pads).
      targets: per user, the held-out ids.

    Returns:
      {"recall@N": ..., "ndcg@N": ..., "hitrate@N": ...} for each N.
    """
    if len(targets) != len(retrieved):
        raise ValueError(f"{len(retrieved)} retrieved lists for {len(targets)} users")
    if retrieved.shape[1] < max(top_ns):
        raise ValueError(f"retrieved lists have {retrieved.shape[1]} columns, need {max(top_ns)}")
    discounts = 1.0 / np.log2(np.arange(retrieved.shape[1]) + 2.0)
    report: dict[str, float] = {}
    for top_n in top_ns:
        recall = ndcg = hitrate = 0.0
        for user_retrieved, user_targets in zip(retrieved[:, :top_n], targets, strict=True):
            target_set = set(int(item) for item in user_targets)
            hits = np.array([int(item) in target_set for item in user_retrieved])
            num_hits = int(hits.sum())
            recall += num_hits / max(len(target_set), 1)
            if num_hits:
                hitrate += 1.0
                ndcg += float(discounts[:top_n][hits].sum() / discounts[:num_hits].sum())
        num_users = max(len(targets), 1)
        report[f"recall@{top_n}"] = recall / num_users
        report[f"ndcg@{top_n}"] = ndcg / num_users
        report[f"hitrate@{top_n}"] = hitrate / num_users
    return report


def routing_diagnostics(routing: np.ndarray, mask: np.ndarray) -> dict[str, list[float]]:
    """Per-interest collapse diagnostics over valid positions.

    Args:
      routing: [users, K, L] routing weights (each interest's row is normalised over its valid positions).
      mask: [users, L] bool, True for real history items.

    Returns:
      {"routing_entropy": [K] mean entropy (nats) of each interest's weights; near 0 means the interest
       attends to a single item (collapse), log(n) means uniform over n items,
       "routing_max_weight": [K] mean largest weight}.
    """
    valid = mask[:, np.newaxis, :].astype(bool)
    weights = np.where(valid, routing, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # capsule couplings sum to 1 over interests, not positions
        weights = np.nan_to_num(weights / weights.sum(axis=-1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(weights > 0, -weights * np.log(weights), 0.0)
    has_history = mask.any(axis=1)
    entropy = terms.sum(axis=-1)[has_history]  # [users, K]
    largest = weights.max(axis=-1)[has_history]
    return {"routing_entropy": entropy.mean(axis=0).tolist(), "routing_max_weight": largest.mean(axis=0).tolist()}


def interest_pair_overlap(interest_item_ids: np.ndarray) -> list[list[float]]:
    """How much each pair of the K per-interest retrievals repeats itself: [K, K] the Jaccard index
    |A n B| / |A u B| of interests i's and j's lists, averaged over the users (1 on the diagonal; 0: disjoint
    lists, each interest earns its slots; 1: the same items). Names the pairs that `interest_overlap`
    averages into one number.

    Args:
      interest_item_ids: [users, K, N] each interest's retrieved item indices (-1: no result).
    """
    num_users, num_interests, _ = interest_item_ids.shape
    totals = np.zeros([num_interests, num_interests])
    for lists in interest_item_ids:
        sets = [set(row[row >= 0].tolist()) for row in lists]
        for i in range(num_interests):
            for j in range(i + 1, num_interests):
                totals[i, j] += len(sets[i] & sets[j]) / max(len(sets[i] | sets[j]), 1)
    pairs = totals / max(num_users, 1)
    return (pairs + pairs.T + np.eye(num_interests)).tolist()


def interest_overlap(interest_item_ids: np.ndarray) -> float:
    """The mean over the K (K - 1) / 2 pairs of `interest_pair_overlap` (0: disjoint lists; 1: K copies of
    one list). K = 1 gives 0.

    Args:
      interest_item_ids: [users, K, N] each interest's retrieved item indices (-1: no result).
    """
    return mean_pair_overlap(interest_pair_overlap(interest_item_ids))


def mean_pair_overlap(pair_overlap: Sequence[Sequence[float]]) -> float:
    """The mean of a [K, K] `interest_pair_overlap` above its diagonal (0 for K = 1)."""
    pairs = np.asarray(pair_overlap, np.float64)
    above = pairs[np.triu_indices(len(pairs), k=1)]
    return float(above.mean()) if above.size else 0.0


def interest_share(interest: np.ndarray, num_interests: int) -> list[float]:
    """Each interest's share of the merged lists' slots: [K] fractions of all filled slots (interest >= 0)
    over all users, summing to 1 (0s when nothing was retrieved).

    Args:
      interest: [users, N] which interest retrieved each merged item (-1: an empty slot).
    """
    counts = np.bincount(interest[interest >= 0].ravel(), minlength=num_interests).astype(np.float64)
    return (counts / max(counts.sum(), 1.0)).tolist()


def interest_list_coverage(interest_item_ids: np.ndarray, targets: Sequence[np.ndarray],
                           top_ns: Sequence[int] = TOP_NS) -> dict[str, float]:
    """What the K per-interest lists hold, whatever the merge: per N, "oracle_recall@N" (each user's best
    single-interest top N: an upper bound of a choice of one interest, chosen knowing the targets),
    "union_recall@N" (the K top-N lists together) and "union_size@N" (their distinct items), averaged over
    users; recall counts the targets as a set, as `ranking_metrics`.

    Args:
      interest_item_ids: [users, K, >= max(top_ns)] each interest's list, best first (-1: no result).
      targets: per user, the held-out ids.
    """
    report: dict[str, float] = {}
    num_users = max(len(targets), 1)
    for top_n in top_ns:
        oracle = union = size = 0.0
        for lists, user_targets in zip(interest_item_ids[:, :, :top_n], targets, strict=True):
            wanted = set(int(item) for item in user_targets)
            sets = [set(row[row >= 0].tolist()) for row in lists]
            together = set().union(*sets)
            oracle += max(len(wanted & found) for found in sets) / max(len(wanted), 1)
            union += len(wanted & together) / max(len(wanted), 1)
            size += len(together)
        report[f"oracle_recall@{top_n}"] = oracle / num_users
        report[f"union_recall@{top_n}"] = union / num_users
        report[f"union_size@{top_n}"] = size / num_users
    return report
