"""REMI ablation on one prepared data set: train each variant, evaluate valid and test, print a table.

    python benchmarks/ablation.py --data DIR --config configs/amazon-cds.yaml --output runs/ablation-cds \
        --variant "REMI=beta=0.1,routing_lambda=100" --variant "baseline=beta=0,routing_lambda=0" ... [--seeds 3]

Each variant is `name=key=value,key=value` (config overrides on top of --config). Reports go to
<output>/<name>/eval-{valid,test}.json (<output>/<name>-s<seed>/ with --seeds N > 1); the table
(markdown) to <output>/table.md and stdout: one row per run and, with several seeds, each variant's
mean and standard deviation. The routing entropy is the test split's, averaged over the K interests.
Each finished run also leaves <model dir>/ablation-run.json; --resume reuses those of equal overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from cli_runs import remi
from remi_tf.atomic import write_json

METRICS = ("recall@20", "ndcg@20", "hitrate@20", "recall@50", "ndcg@50", "hitrate@50")


def run_variant(name: str, overrides: list[str], args: argparse.Namespace, seed: int | None = None) -> dict:
    """Trains and evaluates one run, or with --resume reads back the finished run of the same overrides."""
    model_dir = run_dir(args.output, name, seed)
    overrides = overrides + ([] if seed is None else [f"seed={seed}"])
    record = os.path.join(model_dir, "ablation-run.json")
    if args.resume and os.path.exists(record):
        with open(record, encoding="utf-8") as stream:
            finished = json.load(stream)
        if finished["overrides"] == overrides:
            return finished
    sets = [item for override in overrides for item in ("--set", override)]
    start = time.perf_counter()
    remi("train", "--data", args.data, "--model-dir", model_dir, "--config", args.config, "--quiet", *sets)
    seconds = time.perf_counter() - start
    reports = {}
    for split in ("valid", "test"):
        remi("evaluate", "--model-dir", model_dir, "--split", split)
        with open(os.path.join(model_dir, f"eval-{split}.json"), encoding="utf-8") as stream:
            reports[split] = json.load(stream)
    with open(os.path.join(model_dir, "validation.json"), encoding="utf-8") as stream:
        best_step = json.load(stream)["best_step"]
    result = {"name": name, "overrides": overrides, "train_seconds": seconds, "best_step": best_step, **reports}
    write_json(record, result)
    return result


def run_dir(output: str, name: str, seed: int | None) -> str:
    """A variant's model directory: <output>/<name>, or <output>/<name>-s<seed> with several seeds."""
    return os.path.join(output, name if seed is None else f"{name}-s{seed}")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `run_variant`'s runs: data, preset, output, variants, seeds, resume."""
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--variant", action="append", required=True, help="name=key=value,key=value")
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant, seeds 0 .. N-1")
    parser.add_argument("--resume", action="store_true",
                        help="reuse runs that finished before with the same overrides (their ablation-run.json)")


def routing_entropy(report: dict) -> float:
    return statistics.mean(report["routing_entropy"])


def table(results: list[dict]) -> str:
    header = ("| variant | overrides | best step | valid R@50 | " + " | ".join(f"test {m}" for m in METRICS)
              + " | routing entropy |")
    lines = [header, "|" + "---|" * (5 + len(METRICS))]
    for r in results:
        cells = [r["name"], ", ".join(r["overrides"]) or "(preset)", str(r["best_step"]),
                 f"{r['valid']['recall@50']:.4f}"] + [f"{r['test'][m]:.4f}" for m in METRICS]
        lines.append("| " + " | ".join(cells + [f"{routing_entropy(r['test']):.3f}"]) + " |")
    return "\n".join(lines)


def seeds_to_run(count: int) -> list[int | None]:
    """Seeds 0 .. count-1, or [None] for a single run (the preset's seed; its directory has no -s suffix)."""
    return list(range(count)) if count > 1 else [None]


def spread(values: list[float]) -> float:
    """The standard deviation of runs over seeds (0 for one run)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_spread(values: list[float]) -> str:
    """"mean +- standard deviation" of runs over seeds."""
    return f"{statistics.mean(values):.4f} +- {spread(values):.4f}"


def seed_summary(results: list[dict]) -> str:
    """Per variant over its seeds: mean +- standard deviation of the test metrics and routing entropy."""
    by_variant: dict[str, list[dict]] = {}
    for r in results:
        by_variant.setdefault(r["name"], []).append(r)
    lines = ["| variant | seeds | " + " | ".join(f"test {m}" for m in METRICS) + " | routing entropy |",
             "|" + "---|" * (3 + len(METRICS))]
    for name, runs in by_variant.items():
        columns = [[r["test"][m] for r in runs] for m in METRICS] + [[routing_entropy(r["test"]) for r in runs]]
        cells = [mean_spread(values) for values in columns]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    args = parser.parse_args()
    results = []
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        for seed in seeds_to_run(args.seeds):
            results.append(run_variant(name, [o for o in overrides.split(",") if o], args, seed))
            run = f"{name}{'' if seed is None else f' seed {seed}'}"
            print(f"{run}: valid R@50 {results[-1]['valid']['recall@50']:.4f}, "
                  f"test R@50 {results[-1]['test']['recall@50']:.4f}", flush=True)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "results.json"), "w", encoding="utf-8") as stream:
        json.dump(results, stream, indent=2)
    markdown = table(results) + ("\n\n" + seed_summary(results) if args.seeds > 1 else "")
    with open(os.path.join(args.output, "table.md"), "w", encoding="utf-8") as stream:
        stream.write(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
