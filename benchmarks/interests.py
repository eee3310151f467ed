"""Do the K interests pay? Train each variant (one interest; K interests scored hard or as served) and evaluate
the merge of the K lists by score on valid and test (issue 24).

    python benchmarks/interests.py --data runs/bench/ml-1m --config configs/ml-1m.yaml --output runs/interests-ml-1m \
        --variant "K1=num_interests=1" --variant "K4-hard=num_interests=4" \
        --variant "K4-max=num_interests=4,interest_scoring=max" --seeds 3 --resume

Each variant is `name=key=value,...` (config overrides on top of --config), trained by ablation.run_variant
(<output>/<name>[-s<seed>]/). Then, in this process, it is evaluated on valid and test: Recall/NDCG@20/50, the K
lists' pairwise overlap, each interest's share of the merged top 50 (its smallest), the oracle (each user's best
single list) and the union of the K lists, Recall@50 of users with short (< 10 items before the cut) and long
(>= 50) histories. Written to <model dir>/interests-<split>.json, the table to <output>/table.md and stdout: per
variant the mean (+- standard deviation over seeds) and the ratio of test Recall@50 to the --baseline variant's.
(The learned interest weights and their quota and weighted merges that sessions 12-19 measured with --merges were
retired in remi-tf 0.2.0: git tag retired-levers-last.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from ablation import add_run_arguments, run_dir, run_variant, seeds_to_run, spread

from remi_tf.atomic import write_json

SHORT_HISTORY, LONG_HISTORY = 10, 50
COLUMNS = ("recall@20", "ndcg@20", "recall@50", "ndcg@50", "interest_overlap", "min_share", "oracle_recall@50",
           "union_recall@50", "union_size@50", "recall@50_short", "recall@50_long")
MERGE = "score"  # the key of the reports in interests-<split>.json (other merges were retired)


def evaluate_merges(model_dir: str) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {"score": report}} for the trained model in `model_dir` (cached in interests-<split>.json)."""
    import numpy as np

    import remi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
    from remi_tf import data_directory, evaluate, metrics, model_directory
    from remi_tf import input as input_lib

    trained = model_directory.load_trained(model_dir)
    specs = [MERGE]
    results = {}
    for split in ("valid", "test"):
        path = os.path.join(model_dir, f"interests-{split}.json")
        cached = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
        missing = [spec for spec in specs if spec not in cached]
        if missing:
            user_ids, histories, targets = input_lib.load_evaluation_split(
                trained.data_dir, split, trained.vocabulary, trained.config.max_history)
            records = input_lib.read_indexed_sequences(data_directory.split_files(trained.data_dir, split),
                                                       trained.vocabulary)
            prefix = np.array([int(len(r.items) * input_lib.EVAL_CUT_FRACTION) if r.history_length < 0
                               else r.history_length for r in records])
            profiles = evaluate.user_profiles(trained.model, trained.data_dir, user_ids)
            for spec in missing:
                found = evaluate.retrieve(trained.model, histories, 50, trained.config.eval_batch_size,
                                          user_features=profiles, exclude_history=False)
                report = dict(metrics.ranking_metrics(found.item_ids, targets, (20, 50)))
                report.update(metrics.interest_list_coverage(found.interest_item_ids, targets, (50,)))
                report["interest_overlap"] = metrics.interest_overlap(found.interest_item_ids)
                shares = metrics.interest_share(found.interest, trained.config.num_interests)
                report["interest_share"], report["min_share"] = shares, min(shares)
                for name, users in (("short", prefix < SHORT_HISTORY), ("long", prefix >= LONG_HISTORY)):
                    chosen = np.flatnonzero(users)
                    report[f"recall@50_{name}"] = 0.0 if not len(chosen) else metrics.ranking_metrics(
                        found.item_ids[chosen], [targets[i] for i in chosen], (50,))["recall@50"]
                    report[f"users_{name}"] = int(len(chosen))
                cached[spec] = report
            write_json(path, cached)
        results[split] = {spec: cached[spec] for spec in specs}
    return results


def summary(rows: dict[tuple[str, str], list[dict]], baseline: str | None) -> str:
    """One line per (variant, merge): means (+- spread over seeds) of the test columns, valid R@50, ratio."""
    reference = None
    if baseline is not None and (baseline, "score") in rows:
        reference = statistics.mean(run["test"]["recall@50"] for run in rows[(baseline, "score")])
    header = ["variant", "merge", "seeds", "valid R@50", "ratio to " + (baseline or "-")]
    header += [f"test {c}" for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (variant, merge), runs in rows.items():
        test_recall = [run["test"]["recall@50"] for run in runs]
        ratio = f"{statistics.mean(test_recall) / reference:.3f}x" if reference else "-"
        cells = [variant, merge, str(len(runs)), f"{statistics.mean(run['valid']['recall@50'] for run in runs):.4f}",
                 ratio]
        for column in COLUMNS:
            values = [run["test"][column] for run in runs]
            digits = 1 if column == "union_size@50" else 4
            cells.append(f"{statistics.mean(values):.{digits}f}" + (f" +- {spread(values):.{digits}f}" if len(runs) > 1
                                                                     else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--baseline", default="K1", help="the variant the ratios compare with (its score merge)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the runs of --output that have finished (implies --resume)")
    args = parser.parse_args()
    args.resume = args.resume or args.report_only
    rows: dict[tuple[str, str], list[dict]] = {}
    for seed in seeds_to_run(args.seeds):  # every variant's first seed first: early results compare
        for spec in args.variant:
            name, _, overrides = spec.partition("=")
            model_dir = run_dir(args.output, name, seed)
            if args.report_only and not os.path.exists(os.path.join(model_dir, "ablation-run.json")):
                continue
            run = run_variant(name, [o for o in overrides.split(",") if o], args, seed)
            reports = evaluate_merges(model_dir)
            for merge in reports["test"]:
                rows.setdefault((name, merge), []).append({split: reports[split][merge] for split in reports})
                print(f"{name} seed {seed} {merge}: valid R@50 {reports['valid'][merge]['recall@50']:.4f}, test R@50 "
                      f"{reports['test'][merge]['recall@50']:.4f} ({run['train_seconds']:.0f} s training)", flush=True)
    markdown = summary(rows, args.baseline)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "table.md"), "w", encoding="utf-8") as stream:
        stream.write(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
