"""The daily (here: quarterly) retraining loop, and streaming logQ against count-based logQ.

  python benchmarks/continuous.py loop --seeds 0 1 2 [--warm-set warm_start_recent_fraction=0.5 --warm-name warm-recent]
  python benchmarks/continuous.py logq --data runs/bench/cds --config configs/amazon-cds.yaml --seeds 0 1 2

loop: amazon-grocery (real day timestamps). An initial model on every event before the first window's
start; then for each window W = [S, E) (quarters), the data prepared with `--split time --valid-from S
--test-from E` (train: events before S; valid: the window), and two models evaluated on the window:
(a) warm: `--warm-start` from the previous window's warm model for a third of the steps, and (b) scratch:
a fresh model for the full budget. Both train a fixed number of steps with one evaluation at the end
(eval_every = max_steps): the window is not used to pick a checkpoint. `--warm-set` adds settings to the warm
runs only, `--warm-name` names their chain (<output>/<name>-<window>-s<seed>; the scratch runs are shared).

logq: the same data and config trained with logq_correction counts and streaming, test metrics.

Every run is `remi prepare|train|evaluate` in fresh processes. Results are Markdown rows; the loop also
writes a plot of the series next to its runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics

from cli_runs import REPO, remi

DATASETS = os.environ.get("REMI_DATASETS", os.path.join(REPO, "..", "shared", "datasets"))
QUARTERS = ["2013-01-01", "2013-04-01", "2013-07-01", "2013-10-01", "2014-01-01", "2014-04-01", "2014-07-01"]


def train_and_evaluate(data: str, model_dir: str, config: str, steps: int, seed: int, split: str,
                       settings: list[str] = (), warm_start: str | None = None) -> tuple[dict, float]:
    """Trains `steps` steps with one evaluation at the end; returns (the split's report, train seconds)."""
    if not os.path.exists(os.path.join(model_dir, f"eval-{split}.json")):
        args = ["train", "--data", data, "--model-dir", model_dir, "--config", config, "--quiet", "--set",
                f"max_steps={steps}", f"eval_every={steps}", "patience=0", f"seed={seed}", *settings]
        seconds = remi(*args, *(["--warm-start", warm_start] if warm_start else []))
        json.dump({"train_seconds": seconds}, open(os.path.join(model_dir, "wall.json"), "w"))
        remi("evaluate", "--model-dir", model_dir, "--split", split)
    report = json.load(open(os.path.join(model_dir, f"eval-{split}.json")))
    return report, json.load(open(os.path.join(model_dir, "wall.json")))["train_seconds"]


def prepare_window(log: str, directory: str, start: str, end: str) -> dict:
    if not os.path.exists(os.path.join(directory, "manifest.json")):
        remi("prepare", "--input", log, "--output", directory, "--runner", "in-process", "--split", "time",
             "--valid-from", start, "--test-from", end)
    return json.load(open(os.path.join(directory, "manifest.json")))


def loop(args: argparse.Namespace) -> None:
    log = os.path.join(DATASETS, "amazon-grocery", "interactions.csv.gz")
    windows = list(zip(QUARTERS[:-1], QUARTERS[1:]))
    print("| window | seed | new-item share | valid users (cold) | run | steps | train s | R@50 | HR@50 | R@20 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    series: dict[tuple[str, str], list[float]] = {}
    for seed in args.seeds:
        previous = None
        for index, (start, end) in enumerate(windows):
            data = os.path.join(args.output, f"data-{start}")
            manifest = prepare_window(log, data, start, end)
            window = manifest["splits"]["valid"]
            share = window["window_events_unknown_items"] / max(window["window_events"], 1)
            runs = [("scratch", args.steps, None, [])]
            if previous is not None:
                runs.insert(0, ("warm", args.steps // args.warm_fraction, previous, args.warm_set))
            for name, steps, parent, settings in runs:
                model_dir = os.path.join(args.output, f"{args.warm_name if parent else name}-{start}-s{seed}")
                report, seconds = train_and_evaluate(data, model_dir, args.config, steps, seed, "valid", settings,
                                                     warm_start=parent)
                series.setdefault((name, start), []).append(report["recall@50"])
                print(f"| {start} | {seed} | {share:.3f} | {window['users']:,} ({window['cold_users']:,}) | {name} | "
                      f"{steps} | {seconds:.0f} | {report['recall@50']:.4f} | {report['hitrate@50']:.4f} | "
                      f"{report['recall@20']:.4f} |", flush=True)
            # the first window's scratch model is the initial model; later, the warm chain continues
            previous = os.path.join(args.output, f"{args.warm_name if index else 'scratch'}-{start}-s{seed}")
    print("\n| window | warm R@50 mean | scratch R@50 mean | warm / scratch |\n|---|---|---|---|")
    for start, _ in windows[1:]:
        warm, scratch = statistics.mean(series[("warm", start)]), statistics.mean(series[("scratch", start)])
        print(f"| {start} | {warm:.4f} | {scratch:.4f} | {warm / scratch:.3f} |")
    plot(series, [start for start, _ in windows[1:]], os.path.join(args.output, f"continuous-{args.warm_name}.png"))


def plot(series: dict[tuple[str, str], list[float]], starts: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    dates = [datetime.date.fromisoformat(start) for start in starts]
    for name in ("warm", "scratch"):
        means = [statistics.mean(series[(name, start)]) for start in starts]
        axis.plot(dates, means, marker="o", label=name)
    axis.set_xlabel("window start (quarter)")
    axis.set_ylabel("next-window Recall@50")
    axis.set_title("amazon-grocery: warm start vs retraining from scratch")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    print(f"\nplot: {path}")


def logq(args: argparse.Namespace) -> None:
    print("| logq_correction | seed | best step | valid R@50 | test R@50 | test HR@50 | test R@20 |")
    print("|---|---|---|---|---|---|---|")
    results: dict[str, list[float]] = {}
    for seed in args.seeds:
        for correction in ("counts", "streaming"):
            model_dir = os.path.join(args.output, f"logq-{correction}-s{seed}")
            if not os.path.exists(os.path.join(model_dir, "eval-test.json")):
                remi("train", "--data", args.data, "--model-dir", model_dir, "--config", args.config, "--quiet",
                     "--set", f"logq_correction={correction}", f"seed={seed}", f"max_steps={args.steps}",
                     f"eval_every={args.steps // 10}", "patience=0", f"batch_size={args.batch_size}")
                remi("evaluate", "--model-dir", model_dir, "--split", "test")
            test = json.load(open(os.path.join(model_dir, "eval-test.json")))
            valid = json.load(open(os.path.join(model_dir, "validation.json")))
            results.setdefault(correction, []).append(test["recall@50"])
            print(f"| {correction} | {seed} | {valid['best_step']} | {valid['best']:.4f} | {test['recall@50']:.4f} | "
                  f"{test['hitrate@50']:.4f} | {test['recall@20']:.4f} |", flush=True)
    print("\n| logq_correction | test R@50 mean | spread (min - max) |\n|---|---|---|")
    for correction, values in results.items():
        print(f"| {correction} | {statistics.mean(values):.4f} | {min(values):.4f} - {max(values):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    loop_command = commands.add_parser("loop")
    loop_command.add_argument("--config", default=os.path.join(REPO, "configs", "amazon-grocery.yaml"))
    loop_command.add_argument("--steps", type=int, default=3000, help="the from-scratch budget per window")
    loop_command.add_argument("--warm-fraction", type=int, default=3, help="warm runs train steps / this")
    loop_command.add_argument("--seeds", type=int, nargs="+", default=[0])
    loop_command.add_argument("--warm-set", nargs="*", default=[], help="settings of the warm runs (key=value)")
    loop_command.add_argument("--warm-name", default="warm", help="the warm runs' directory prefix")
    loop_command.add_argument("--output", default="runs/bench-continuous")
    logq_command = commands.add_parser("logq")
    logq_command.add_argument("--data", required=True)
    logq_command.add_argument("--config", required=True)
    logq_command.add_argument("--steps", type=int, default=5000)
    logq_command.add_argument("--batch-size", type=int, default=256)
    logq_command.add_argument("--seeds", type=int, nargs="+", default=[0])
    logq_command.add_argument("--output", default="runs/bench-continuous")
    args = parser.parse_args()
    {"loop": loop, "logq": logq}[args.command](args)


if __name__ == "__main__":
    main()
