"""Side features on and off (issue 10): test Recall@50 overall, on tail items and for users with short
histories, per variant over seeds.

    python benchmarks/side_feature_ablation.py --data runs/bench/ml-1m-features --config configs/ml-1m.yaml \
        --output runs/side-features-ml-1m --seeds 0 1 2

The data directory is prepared with the features (`remi prepare ... --item-features ITEMS.csv[:COL]
--user-features USERS.csv[:COL]`); the variants switch them with `use_item_features` / `use_user_features`
(those the data has: ids only, +items, +users, +both). Each run is `remi train` in a fresh process, then
one in-process retrieval on the test split. Tail items: all but the most frequent 20% of the catalogue
(items.tsv order); a user's tail recall counts only their tail targets (users with one). Short histories:
users whose evaluation history has at most --short-history known items, and every user with the history
cut to its last --short-history items (data sets without short histories, e.g. ml-1m). Runs already in
<output>/results.json are kept (delete it to start over; --reevaluate recomputes their test metrics from
the kept model directories); prints and writes <output>/table.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np
from ablation import mean_spread
from cli_runs import remi

TOP_N = 50
HEAD_FRACTION = 0.2


def subset_recalls(model_dir: str, short_history: int) -> dict:
    """Test Recall@50 overall, on tail targets and for short-history users, of the model in `model_dir`."""
    import remi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
    from remi_tf import evaluate, model_directory
    from remi_tf import input as input_lib
    from remi_tf.item_index import FIRST_ITEM_INDEX

    trained = model_directory.load_trained(model_dir)
    user_ids, histories, targets = input_lib.load_evaluation_split(trained.data_dir, "test", trained.vocabulary,
                                                                   trained.config.max_history)
    profiles = evaluate.user_profiles(trained.model, trained.data_dir, user_ids)
    found = evaluate.retrieve(trained.model, histories, TOP_N, trained.config.eval_batch_size,
                              user_features=profiles, exclude_history=False).item_ids
    known = (histories >= FIRST_ITEM_INDEX).sum(axis=1)
    truncated = np.zeros_like(histories)
    for row, count in enumerate(known):
        kept = histories[row, max(count - short_history, 0):count]
        truncated[row, :len(kept)] = kept
    found_truncated = evaluate.retrieve(trained.model, truncated, TOP_N, trained.config.eval_batch_size,
                                        user_features=profiles, exclude_history=False).item_ids
    first_tail = FIRST_ITEM_INDEX + int(HEAD_FRACTION * len(trained.vocabulary))  # items.tsv: most frequent first
    overall, tail, short, cut_short = [], [], [], []
    for row, user_targets in enumerate(targets):
        if not len(user_targets):
            continue
        hits = np.isin(user_targets, found[row])
        overall.append(hits.mean())
        cut_short.append(np.isin(user_targets, found_truncated[row]).mean())
        if (user_targets >= first_tail).any():
            tail.append(hits[user_targets >= first_tail].mean())
        if known[row] <= short_history:
            short.append(hits.mean())
    return {"recall@50": float(np.mean(overall)), "tail_recall@50": float(np.mean(tail)),
            "short_history_recall@50": float(np.mean(short)) if short else float("nan"),
            "truncated_history_recall@50": float(np.mean(cut_short)),
            "users": len(overall), "tail_users": len(tail), "short_history_users": len(short)}


def model_directory(output: str, variant: str, seed: int) -> str:
    return os.path.join(output, f"{variant.strip('+ ').replace(' ', '-')}-s{seed}")


def variants(data_dir: str) -> dict[str, list[str]]:
    """The feature switches the data directory allows: ids only, each kind alone, both."""
    has_items = os.path.exists(os.path.join(data_dir, "item_features.tsv"))
    has_users = os.path.exists(os.path.join(data_dir, "user_features.tsv"))
    runs = {"ids only": ["use_item_features=false", "use_user_features=false"]}
    if has_items:
        runs["+ item features"] = ["use_item_features=true", "use_user_features=false"]
    if has_users:
        runs["+ user features"] = ["use_item_features=false", "use_user_features=true"]
    if has_items and has_users:
        runs["+ both"] = ["use_item_features=true", "use_user_features=true"]
    return runs


def summary(results: list[dict]) -> str:
    """Per variant: mean +- standard deviation over seeds of each recall ("-": no such users)."""
    metrics = ("recall@50", "tail_recall@50", "short_history_recall@50", "truncated_history_recall@50")
    lines = ["| variant | seeds | test R@50 | tail R@50 | short-history users' R@50 | R@50, histories cut short | "
             "train s |", "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == name]
        values = [[r["test"][metric] for r in runs] for metric in metrics]
        cells = ["-" if any(math.isnan(value) for value in column) else mean_spread(column) for column in values]
        seconds = statistics.mean(r["train_seconds"] for r in runs)
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    first = results[0]["test"]
    lines.append(f"\nusers: {first['users']:,}; with a tail target: {first['tail_users']:,}; short histories "
                 f"(<= {first['short_history']} items): {first['short_history_users']:,}; histories cut short: "
                 f"every user's last {first['short_history']} items")
    return "\n".join(lines)


def save_results(results: list[dict], path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as stream:
        json.dump(results, stream, indent=2)
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--short-history", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every run (key=value)")
    parser.add_argument("--reevaluate", action="store_true", help="recompute the kept runs' test metrics")
    parser.add_argument("--variants", nargs="*", help="only these variants (default: every one the data allows)")
    args = parser.parse_args()
    results_path = os.path.join(args.output, "results.json")
    results = []
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as stream:
            results = json.load(stream)
    if args.reevaluate:
        for result in results:
            result["test"] = {**subset_recalls(model_directory(args.output, result["variant"], result["seed"]),
                                               args.short_history), "short_history": args.short_history}
        save_results(results, results_path)
    done = {(r["variant"], r["seed"]) for r in results}
    for seed in args.seeds:
        for name, switches in variants(args.data).items():
            if (name, seed) in done or (args.variants and name not in args.variants):
                continue
            model_dir = model_directory(args.output, name, seed)
            sets = [item for override in [*switches, f"seed={seed}", *args.set] for item in ("--set", override)]
            start = time.perf_counter()
            remi("train", "--data", args.data, "--model-dir", model_dir, "--config", args.config, "--quiet", *sets)
            seconds = time.perf_counter() - start
            test = {**subset_recalls(model_dir, args.short_history), "short_history": args.short_history}
            results.append({"variant": name, "seed": seed, "train_seconds": seconds, "test": test})
            print(f"{name}, seed {seed}: test R@50 {test['recall@50']:.4f}, tail {test['tail_recall@50']:.4f}, "
                  f"histories cut short {test['truncated_history_recall@50']:.4f} ({seconds:.0f} s)", flush=True)
            save_results(results, results_path)
    table = summary(results)
    with open(os.path.join(args.output, "table.md"), "w", encoding="utf-8") as stream:
        stream.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
