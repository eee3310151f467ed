"""How the K per-interest lists cover the test targets, against one interest (issue 10: why K 4 loses to K 1
on ml-1m).

    python benchmarks/interest_lists.py --model-dir runs/k-seeds-cds/K4-s0 runs/k-seeds-cds/K1-s0
    python benchmarks/interest_lists.py --ensemble runs/k1-cds/K1-s0 runs/k1-cds/K1-s1 runs/k1-cds/K1-s2 runs/k1-cds/K1-s3

For each trained model directory, on the test split (each interest retrieves its own top 50 over the
whole catalogue):
- Recall@50 of the merged list (the evaluation's), of each interest's list alone (the mean over
  interests), and of the one interest per user whose list finds most targets (an oracle: the best a
  merge that kept one whole list could do);
- recall of the union of the K lists (up to K x 50 items; its mean size is reported), and Recall@--deep
  (default 200 = 4 x 50) of the merged list: whether the lists hold the targets that the merge drops, and
  whether one interest's deeper list holds as many;
- Recall@50 of a round-robin merge (the K lists interleaved rank by rank, duplicates skipped): a merge
  that ignores how scores compare across interests;
- the share of the merged top 50 among the catalogue's most frequent 10% of items (items.tsv order), and
  of the targets: how popularity-heavy the lists are against what users watch.
With --ensemble, independently trained models (K 1 each, one data directory) count as one model whose K lists
are theirs, merged by score: the same columns for lists that were never trained together.
Prints a markdown table and writes it to --output when given.
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

import numpy as np

TOP_N = 50
HEAD_FRACTION = 0.1


def padded(lists: Sequence[Sequence[int]]) -> np.ndarray:
    """Per-user lists of any length as one [users, longest] array, -1 padding (ranking_metrics' layout)."""
    table = np.full((len(lists), max(1, max(len(items) for items in lists))), -1, dtype=np.int64)
    for row, items in enumerate(lists):
        table[row, :len(items)] = list(items)
    return table


def recall(lists: Sequence[Sequence[int]] | np.ndarray, targets: Sequence[np.ndarray]) -> float:
    """Recall over each user's whole list (any length), the evaluation's metric (remi_tf.metrics)."""
    from remi_tf import metrics

    table = padded(lists)
    return metrics.ranking_metrics(table, targets, (table.shape[1],))[f"recall@{table.shape[1]}"]


def user_recall(items: np.ndarray, user_targets: np.ndarray) -> float:
    """One user's recall of one list, as ranking_metrics counts it: the share of their distinct targets in it
    (the per-user values the oracle column needs; ranking_metrics returns means only)."""
    wanted = set(user_targets.tolist())
    return len(wanted & set(items.tolist())) / max(len(wanted), 1)


def round_robin(lists: np.ndarray, top_n: int) -> list[list[int]]:
    """Per user, the K lists [users, K, N] interleaved rank by rank (interest 0 first), duplicates and -1
    skipped, cut at top_n."""
    merged = []
    for user_lists in lists:
        picked: dict[int, None] = {}  # insertion-ordered set
        for item in user_lists.T.ravel():
            if item >= 0 and len(picked) < top_n:
                picked.setdefault(int(item))
        merged.append(list(picked))
    return merged


def coverage(model_dir: str, split: str, deep: int) -> dict[str, float]:
    """The table's row for the model in `model_dir` (see the module docstring)."""
    import remi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
    from remi_tf import evaluate, model_directory
    from remi_tf import input as input_lib

    trained = model_directory.load_trained(model_dir)
    user_ids, histories, targets = input_lib.load_evaluation_split(trained.data_dir, split, trained.vocabulary,
                                                                   trained.config.max_history)
    profiles = evaluate.user_profiles(trained.model, trained.data_dir, user_ids)
    found = evaluate.retrieve(trained.model, histories, max(deep, TOP_N), trained.config.eval_batch_size,
                              user_features=profiles, exclude_history=False)
    return lists_row(found.interest_item_ids[:, :, :TOP_N], found.item_ids, targets, len(trained.vocabulary), deep)


def ensemble_coverage(model_dirs: Sequence[str], split: str, deep: int) -> dict[str, float]:
    """The row for independently trained models on one data directory, each model's merged list taken as one
    "interest" and the lists merged by score: what K lists that were never trained together give (the oracle's
    selection effect: the best of K lists per user is above any one list even when the lists are alike)."""
    import remi_tf  # noqa: F401
    import tensorflow as tf

    from remi_tf import evaluate, merging, model_directory
    from remi_tf import input as input_lib

    lists, scores, targets, vocabulary_size = [], [], None, 0
    for model_dir in model_dirs:
        trained = model_directory.load_trained(model_dir)
        user_ids, histories, targets = input_lib.load_evaluation_split(trained.data_dir, split, trained.vocabulary,
                                                                       trained.config.max_history)
        found = evaluate.retrieve(trained.model, histories, max(deep, TOP_N), trained.config.eval_batch_size,
                                  user_features=evaluate.user_profiles(trained.model, trained.data_dir, user_ids),
                                  exclude_history=False)
        lists.append(found.item_ids)
        scores.append(found.scores)
        vocabulary_size = len(trained.vocabulary)
    stacked = np.stack(lists, axis=1)  # [users, models, depth]
    _, merged, _ = merging.merge_interest_results(tf.constant(np.stack(scores, axis=1)), tf.constant(stacked),
                                                  max(deep, TOP_N))
    merged = np.where(merged.numpy() == 0, -1, merged.numpy())  # empty slots: the metrics' padding
    return lists_row(stacked[:, :, :TOP_N], merged, targets, vocabulary_size, deep)


def lists_row(lists: np.ndarray, merged: np.ndarray, targets: Sequence[np.ndarray], vocabulary_size: int,
              deep: int) -> dict[str, float]:
    """The table's columns from K lists [users, K, 50] and the merged list [users, >= deep] (item indices)."""
    from remi_tf.item_index import FIRST_ITEM_INDEX

    num_interests = lists.shape[1]
    per_interest = np.array([[user_recall(lists[row, k], user_targets) for k in range(num_interests)]
                             for row, user_targets in enumerate(targets)])  # [users, K]
    unions = [sorted(set(lists[row].ravel().tolist()) - {-1}) for row in range(len(targets))]
    first_tail = FIRST_ITEM_INDEX + int(HEAD_FRACTION * vocabulary_size)  # items.tsv: most frequent first
    top = merged[:, :TOP_N]
    return {"K": num_interests, "merged@50": recall(top, targets),
            "one_interest@50": float(per_interest.mean()), "best_interest@50": float(per_interest.max(axis=1).mean()),
            "union": recall(unions, targets), "union_size": float(np.mean([len(union) for union in unions])),
            "merged_deep": recall(merged[:, :deep], targets),
            "round_robin@50": recall(round_robin(lists, TOP_N), targets),
            "head_share_of_lists": float(((top >= FIRST_ITEM_INDEX) & (top < first_tail)).mean()),
            "head_share_of_targets": float(np.mean(np.concatenate(targets) < first_tail))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", nargs="*", default=[])
    parser.add_argument("--ensemble", nargs="+", action="append", default=[], metavar="MODEL_DIR",
                        help="independently trained models of one data directory, read as one model whose K lists "
                             "are their lists (repeatable: one row each)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--deep", type=int, default=4 * TOP_N, help="the merged list's second cut-off")
    parser.add_argument("--output", help="markdown file for the table")
    args = parser.parse_args()
    from remi_tf import atomic

    lines = ["| model | K | merged R@50 | one interest's list R@50 (mean) | best interest per user R@50 | "
             f"union of the K lists: recall (size) | merged R@{args.deep} | round-robin merge R@50 | "
             "top-10% items' share: merged top 50 / targets |", "|---|---|---|---|---|---|---|---|---|"]
    if not args.model_dir and not args.ensemble:
        parser.error("give --model-dir or --ensemble")
    rows = [(model_dir, lambda d=model_dir: coverage(d, args.split, args.deep)) for model_dir in args.model_dir]
    rows += [(" + ".join(dirs), lambda d=dirs: ensemble_coverage(d, args.split, args.deep)) for dirs in args.ensemble]
    for model_dir, compute in rows:
        row = compute()
        name = "/".join(os.path.normpath(model_dir).split(os.sep)[-2:])  # run folder / model folder
        lines.append(f"| {name} | {row['K']} | {row['merged@50']:.4f} | "
                     f"{row['one_interest@50']:.4f} | {row['best_interest@50']:.4f} | {row['union']:.4f} "
                     f"({row['union_size']:.0f}) | {row['merged_deep']:.4f} | {row['round_robin@50']:.4f} | "
                     f"{row['head_share_of_lists']:.2f} / {row['head_share_of_targets']:.2f} |")
        print(lines[-1], flush=True)
    if args.output:
        atomic.write_text(args.output, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
