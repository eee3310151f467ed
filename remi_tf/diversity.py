"""Diversity of a retrieved list: ComiRec's category diversity (the category-aware merge that raises it is
remi_tf.merging.diverse_merge)."""

from __future__ import annotations

import numpy as np


def category_diversity(item_ids: np.ndarray, categories: np.ndarray) -> float:
    """ComiRec's diversity of retrieved lists: the share of a list's item pairs whose categories differ,
    averaged over the lists with at least two items.

    Args:
      item_ids: [users, N] item indices (< 0: no result, skipped).
      categories: [rows] category of each item index.
    """
    shares = []
    for row in item_ids:
        found = categories[row[row >= 0]]
        n = len(found)
        if n >= 2:
            same_pairs = (np.sum(found[:, None] == found[None, :]) - n) / 2
            shares.append(1.0 - same_pairs / (n * (n - 1) / 2))
    return float(np.mean(shares)) if shares else 0.0
