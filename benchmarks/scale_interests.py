"""Do K interests pay where the structure is planted? K = 4 against K = 1 (and the paper's sampled negatives) on a
generated log, by how many clusters the test users follow.

    python benchmarks/scale_interests.py --items 300000 [--events-per-item 12.5] [--seeds 0 1 2]
        [--variant NAME=key=value,key=value ...] [--work runs/scale-interests]

A log from benchmarks/scale_logs.py (users follow 1-4 clusters of ~2,000 items, sticky), `remi prepare`, then
`remi train` per variant and seed (the defaults plus the variant's --set; the default variants: K4 = the
defaults, K1 = num_interests=1), and the test split evaluated whole with the library: Recall@50 over every
test user and over the users who follow 1, 2, 3 and 4 clusters (the generator's users.csv). Prints each run and
the mean +- standard deviation over seeds per variant; writes <work>/<items>/interests.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scale_logs  # noqa: E402
from cli_runs import REPO, remi  # noqa: E402

DEFAULT_VARIANTS = {"K4": "", "K1": "num_interests=1"}


def recall_by_followed_clusters(model_dir: str, data_dir: str, follows: dict[str, int]) -> dict[str, float]:
    """Test Recall@50 of the model over every test user and per number of clusters followed."""
    from remi_tf import evaluate, metrics, model_directory
    from remi_tf import input as input_lib

    trained = model_directory.load_trained(model_dir)
    users, histories, targets = input_lib.load_evaluation_split(data_dir, "test", trained.vocabulary,
                                                                trained.config.max_history)
    found = evaluate.retrieve(trained.model, histories, 50, trained.config.eval_batch_size,
                              exclude_history=False).item_ids
    groups = np.array([follows[user] for user in users])
    result = {"all": metrics.ranking_metrics(found, targets, (50,))["recall@50"], "users": len(users)}
    for count in sorted(set(groups.tolist())):
        rows = np.flatnonzero(groups == count)
        result[f"follow {count}"] = metrics.ranking_metrics(found[rows], [targets[i] for i in rows], (50,))["recall@50"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--events-per-item", type=float, default=12.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=SETTINGS",
                        help="NAME=key=value,key=value (default: K4 and K1)")
    parser.add_argument("--work", default=os.path.join(REPO, "runs", "scale-interests"))
    args = parser.parse_args()
    if args.items <= 0 or args.events_per_item <= 0:
        parser.error("--items and --events-per-item must be > 0")
    variants = dict(DEFAULT_VARIANTS) if not args.variant else dict(v.split("=", 1) for v in args.variant)
    root = os.path.join(args.work, str(args.items))
    logs, data = os.path.join(root, "logs"), os.path.join(root, "data")
    if not os.path.exists(os.path.join(logs, scale_logs.PARAMETERS_FILE)):
        scale_logs.write_log(scale_logs.LogShape(args.items, int(args.items * args.events_per_item)), logs)
    if not os.path.exists(os.path.join(data, "manifest.json")):
        remi("prepare", "--input", os.path.join(logs, scale_logs.EVENTS_FILE), "--output", data)
    with open(os.path.join(logs, scale_logs.USERS_FILE)) as stream:
        follows = {row["user_id"]: int(row["clusters"]) for row in csv.DictReader(stream)}
    results_path = os.path.join(root, "interests.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for name, settings in variants.items():
        for seed in args.seeds:
            key = f"{name} seed {seed}"
            model_dir = os.path.join(root, f"{name}-seed{seed}")
            if key not in results:
                overrides = [f"seed={seed}"] + [s for s in settings.split(",") if s]
                seconds = remi("train", "--data", data, "--model-dir", model_dir, "--quiet", "--set", *overrides)
                results[key] = {**recall_by_followed_clusters(model_dir, data, follows), "train_s": round(seconds, 1)}
                with open(results_path + ".partial", "w") as stream:
                    json.dump(results, stream, indent=2)
                os.replace(results_path + ".partial", results_path)
            print(key, json.dumps(results[key]), flush=True)
    columns = [column for column in next(iter(results.values())) if column != "users" and column != "train_s"]
    print(f"| variant | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}")
    for name in variants:
        runs = [results[f"{name} seed {seed}"] for seed in args.seeds if f"{name} seed {seed}" in results]
        cells = [f"{statistics.mean(r[c] for r in runs):.4f} +- "
                 f"{statistics.pstdev([r[c] for r in runs]):.4f}" for c in columns]
        print(f"| {name} ({len(runs)} seeds) | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
