"""The popularity baseline: every test user gets the training split's most frequent items, scored with the
paper's protocol (the same targets and metrics as `remi evaluate`). It shows how much of a data set's Recall@N
a model must earn beyond popularity.

    python benchmarks/popularity.py --data runs/bench/ml-1m-features runs/bench/cds [--split test]

Prints one JSON line per data directory: {"data": ..., "split": ..., "recall@20": ..., ...}.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import remi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from remi_tf.input import load_evaluation_split, load_sequences, read_vocabulary
from remi_tf.metrics import ranking_metrics
from remi_tf.item_index import FIRST_ITEM_INDEX

TOP_NS = (20, 50)


def most_popular(data_dir: str, vocabulary: list[str], top_n: int) -> np.ndarray:
    """[top_n] item indices, most frequent in the training split's sequences first (ties: vocabulary order)."""
    _, sequences = load_sequences(data_dir, "train", vocabulary)
    counts = np.bincount(np.concatenate(sequences), minlength=len(vocabulary) + FIRST_ITEM_INDEX)
    counts[:FIRST_ITEM_INDEX] = -1  # padding and OOV are never recommended
    return np.argsort(-counts, kind="stable")[:top_n]


def popularity_metrics(data_dir: str, split: str) -> dict[str, float]:
    vocabulary = read_vocabulary(data_dir)
    _, _, targets = load_evaluation_split(data_dir, split, vocabulary, max_history=1)
    ranked = most_popular(data_dir, vocabulary, max(TOP_NS))
    return ranking_metrics(np.tile(ranked, (len(targets), 1)), targets, TOP_NS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="data directories written by `remi prepare`")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    args = parser.parse_args()
    for data_dir in args.data:
        print(json.dumps({"data": data_dir, "split": args.split, **popularity_metrics(data_dir, args.split)}))


if __name__ == "__main__":
    main()
