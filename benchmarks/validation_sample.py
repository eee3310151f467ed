"""How far a validation sample's Recall@50 lies from the whole valid split's, on trained models.

    python benchmarks/validation_sample.py --model-dir DIR [DIR ...] [--sizes 200 500 1000 2000] [--seeds 0 1 2]

For each model (a `remi train` directory): its valid split retrieved whole once (the library's evaluate.retrieve),
each user's Recall@50, then for every sample size and seed the sample that training would validate on
(input.user_sample with that seed) and its mean against the whole split's. Prints one row per model and size:
the split's users, the sample's, and the difference per seed.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import remi_tf  # noqa: E402,F401
from remi_tf import evaluate, metrics, model_directory  # noqa: E402
from remi_tf import input as input_lib  # noqa: E402


def per_user_recall(model_dir: str) -> np.ndarray:
    """[valid users] Recall@50 of each valid user of the model's data directory."""
    trained = model_directory.load_trained(model_dir)
    _, histories, targets = input_lib.load_evaluation_split(trained.data_dir, "valid", trained.vocabulary,
                                                            trained.config.max_history)
    found = evaluate.retrieve(trained.model, histories, 50, trained.config.eval_batch_size,
                              exclude_history=False).item_ids
    return np.array([metrics.ranking_metrics(found[i:i + 1], targets[i:i + 1], (50,))["recall@50"]
                     for i in range(len(targets))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", nargs="+", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 500, 1_000, 2_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print("| model | valid users | sample | whole split R@50 | sample - whole, per seed |\n|---|---|---|---|---|")
    for model_dir in args.model_dir:
        recall = per_user_recall(model_dir)
        for size in args.sizes:
            differences = [recall[input_lib.user_sample(len(recall), size, seed)].mean() - recall.mean()
                           for seed in args.seeds]
            print(f"| {model_dir} | {len(recall):,} | {min(size, len(recall)):,} | {recall.mean():.4f} | "
                  + ", ".join(f"{d:+.4f}" for d in differences) + " |", flush=True)


if __name__ == "__main__":
    main()
