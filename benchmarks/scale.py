"""Every stage of remi-tf as a user runs it (the `remi` CLI), timed and its peak memory read, at growing sizes.

    python benchmarks/scale.py --items 10000 100000 1000000 [--events-per-item 12.5] [--steps 1000] [--work runs/scale]
        [--stages prepare train evaluate] [--prepare-options=--min-item-interactions=1]
    python benchmarks/scale.py --plot-only [--work runs/scale]

For each catalogue size: a log from benchmarks/scale_logs.py (regenerated from its seed when missing), then
`remi prepare` (the default runner), `remi train --set max_steps=S eval_every=S` (the default validation
sample; --steps 0: the defaults, whose validations' share of the run is recorded), `remi evaluate --split test --users U` (users/s: the whole split's time follows), `remi export` with
`--index brute-force` and with `--index scann` (each alone), and `remi serve` of each export (start-up until its
"serving" line; batch-1 and batch-64 REST lookup p50 on one kept-alive connection). Each command runs in its own
process; its wall time and peak RSS (wait4's ru_maxrss: the process and the children it waited for) are recorded.

Results: <work>/results.json (one entry per size and stage, replaced when run again), a Markdown table per size
on stdout, and <work>/scale.png: each stage's wall time against the catalogue size, log-log, with the fitted
exponent (the log's events grow with the items, so an exponent of 1 is linear in either).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import scale_logs  # noqa: E402
from cli_runs import ENV, REPO  # noqa: E402

RESULTS_FILE, PLOT_FILE = "results.json", "scale.png"
LOOKUPS = 50  # timed lookups per batch size, after two warm-up calls
SERVE_TIMEOUT_S = 1_800.0
STAGES = ("prepare", "train", "evaluate")  # evaluate: then export and serve


def run_stage(args: list[str], timeout_s: float = 4 * 3_600) -> dict[str, Any]:
    """Runs `remi ARGS` in a fresh process: {"wall_s", "peak_rss_gib", "output"} (raises with the output's tail
    when it fails or runs past `timeout_s`)."""
    log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"scale-stage-{os.getpid()}.log")
    with open(log_path, "w+") as log:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "remi", *args], stdout=log, stderr=subprocess.STDOUT,
                                   env=ENV, cwd=REPO)
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                os.wait4(process.pid, 0)
                raise TimeoutError(f"remi {' '.join(args)} ran past {timeout_s:.0f} s")
            time.sleep(0.2)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    os.remove(log_path)
    if process.returncode:
        raise RuntimeError(f"remi {' '.join(args)} failed ({process.returncode}):\n{output[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_gib": round(usage.ru_maxrss / 2 ** 20, 3), "output": output}


def directory_gib(path: str) -> float:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names) / 2 ** 30


def serve_and_look_up(export_dir: str, model: str, vocabulary: list[str], seed: int) -> dict[str, Any]:
    """`remi serve` of `export_dir`: seconds until it prints its "serving" line, peak RSS after the lookups, and
    REST batch-1 / batch-64 p50 ms of `model` over random 20-item histories."""
    from cli_runs import remi_serve, resident_gib, serving_lines
    from lookup_latency import measure, rest_caller

    rng = np.random.default_rng(seed)

    def batches(size: int) -> list[list[list[str]]]:
        return [[[vocabulary[i] for i in rng.integers(0, len(vocabulary), 20)] for _ in range(size)]
                for _ in range(LOOKUPS)]

    start = time.perf_counter()
    with remi_serve(export_dir, program=None, stdout=subprocess.PIPE) as (server, port, _):
        serving_lines(server, 1, SERVE_TIMEOUT_S)
        started = time.perf_counter() - start
        call = rest_caller(port, model)
        batch_1, _, _ = measure(call, batches(1))
        batch_64, _, per_s = measure(call, batches(64))
        resident = resident_gib(server.pid)
    return {"start_s": round(started, 2), "batch1_p50_ms": round(batch_1, 2), "batch64_p50_ms": round(batch_64, 2),
            "batch64_histories_per_s": round(per_s, 1), "rss_gib": None if resident is None else round(resident, 3)}


def run_size(items: int, args: argparse.Namespace, stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The stages of args.stages at one catalogue size, into `stages` ({stage: measurements}, kept for the
    others)."""
    root = os.path.join(args.work, str(items))
    logs, data, model = (os.path.join(root, name) for name in ("logs", "data", "model"))
    shape = scale_logs.LogShape(items, int(round(items * args.events_per_item)), seed=args.seed)
    parameters_path = os.path.join(logs, scale_logs.PARAMETERS_FILE)
    if not os.path.exists(parameters_path) or json.load(open(parameters_path))["events"] != shape.num_events:
        start = time.perf_counter()
        scale_logs.write_log(shape, logs, progress=False)
        stages["generate"] = {"wall_s": round(time.perf_counter() - start, 2)}
    events = os.path.join(logs, scale_logs.EVENTS_FILE)
    if "prepare" in args.stages:
        stages["prepare"] = run_stage(["prepare", "--input", events, "--output", data, "--overwrite",
                                       *args.prepare_options])
        manifest = json.load(open(os.path.join(data, "manifest.json")))
        stages["prepare"].update(events=manifest["input_events"], items=manifest["num_items"],
                                 users={split: counts["users"] for split, counts in manifest["splits"].items()},
                                 disk_gib=round(directory_gib(data), 3))
    if "train" in args.stages:
        shutil.rmtree(model, ignore_errors=True)
        steps = [f"max_steps={args.steps}", f"eval_every={args.steps}"] if args.steps else []  # 0: the defaults
        stages["train"] = run_stage(["train", "--data", data, "--model-dir", model, "--quiet", "--set", *steps,
                                     f"seed={args.seed}"])
        evaluations = json.load(open(os.path.join(model, "validation.json")))["evaluations"]
        validation_s = sum(evaluation["validation_s"] for evaluation in evaluations)
        speeds = [evaluation["train_steps_per_s"] for evaluation in evaluations]
        stages["train"].update(steps=evaluations[-1]["step"], valid_recall50=round(evaluations[-1]["val_recall@50"], 4),
                               train_steps_per_s=round(statistics.median(speeds), 1),
                               validation_share=round(validation_s / stages["train"]["wall_s"], 3))
        stages["validation"] = {"wall_s": evaluations[-1]["validation_s"], "validations": len(evaluations),
                                "users": _validation_users(stages["train"]["output"])}
    if "evaluate" not in args.stages:
        return _without_output(stages)
    stages["evaluate"] = run_stage(["evaluate", "--model-dir", model, "--split", "test", "--users",
                                    str(args.eval_users)])
    report = json.load(open(os.path.join(model, "eval-test.json")))
    stages["evaluate"].update(users=report["num_users"], of=report.get("sampled_users", {}).get("of"),
                              recall50=round(report["recall@50"], 4))
    vocabulary = [line.split("\t")[0] for line in open(os.path.join(data, "items.tsv"), encoding="utf-8")]
    for index in ("brute-force", "scann"):
        export = os.path.join(root, f"export-{index}")
        shutil.rmtree(export, ignore_errors=True)
        stage = f"export {index}"
        stages[stage] = run_stage(["export", "--model-dir", model, "--output", export, "--index", index])
        stages[stage]["disk_gib"] = round(directory_gib(export), 3)
        tuning = _scann_tuning(export)
        if tuning:
            stages[stage]["scann_recall"] = tuning
        stages[f"serve {index}"] = serve_and_look_up(export, "remi", vocabulary, args.seed)
    return _without_output(stages)


def _without_output(stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for stage in stages.values():
        stage.pop("output", None)
    return stages


def _validation_users(train_output: str) -> int | None:
    """The users of the last validation, from `remi train`'s "validation of N users" line."""
    for line in reversed(train_output.splitlines()):
        if "validation of " in line:
            return int(line.split("validation of ")[1].split()[0].replace(",", ""))
    return None


def _scann_tuning(export: str) -> float | None:
    """The recall@k against exact search that the ScaNN export's tuning reached (scann_tuning.json)."""
    for root, _, names in os.walk(export):
        if "scann_tuning.json" in names:
            tuning = json.load(open(os.path.join(root, "scann_tuning.json")))
            return tuning.get("recall")
    return None


def markdown(items: int, stages: dict[str, dict[str, Any]]) -> str:
    lines = [f"| stage ({items:,} items) | wall s | peak RSS GiB | what else |", "|---|---|---|---|"]
    for name, stage in stages.items():
        extra = ", ".join(f"{key} {value}" for key, value in stage.items() if key not in ("wall_s", "peak_rss_gib"))
        lines.append(f"| {name} | {stage.get('wall_s', '')} | {stage.get('peak_rss_gib', '')} | {extra} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict[str, Any]]], path: str) -> dict[str, float]:
    """Wall time (and lookup p50) of each stage against the catalogue size, log-log; returns the fitted
    exponents (stages measured at two sizes or more)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results, key=int)
    series: dict[str, list[tuple[int, float]]] = {}
    for size in sizes:
        for stage, values in results[size].items():
            for key in ("wall_s", "start_s", "batch1_p50_ms"):
                if values.get(key):
                    series.setdefault(f"{stage} {key}", []).append((int(size), float(values[key])))
    exponents = {}
    figure, axis = plt.subplots(figsize=(9, 6))
    for name, points in series.items():
        x, y = np.array(points).T
        label = name
        if len(points) >= 2:
            exponents[name] = float(np.polyfit(np.log(x), np.log(y), 1)[0])
            label += f" (slope {exponents[name]:.2f})"
        axis.plot(x, y, marker="o", label=label)
    axis.set(xscale="log", yscale="log", xlabel="catalogue items (events = 12.5 x items)",
             ylabel="seconds (lookups: ms)", title="remi-tf stage costs against the catalogue size")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return exponents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--events-per-item", type=float, default=12.5)
    parser.add_argument("--steps", type=int, default=1_000,
                        help="training steps, one validation at the end (0: the defaults, a validation every 1,000)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES,
                        help="what to run (each later stage needs the earlier ones' output on disk)")
    parser.add_argument("--prepare-options", nargs="+", default=[], metavar="OPTION",
                        help="more `remi prepare` options, e.g. --min-item-interactions 1 (write them with =)")
    parser.add_argument("--eval-users", type=int, default=2_000, help="remi evaluate --users")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=os.path.join(REPO, "runs", "scale"))
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from results.json")
    args = parser.parse_args()
    if args.steps < 0:
        parser.error(f"--steps must be >= 0, got {args.steps}")
    for name in ("events_per_item", "eval_users"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if any(items <= 0 for items in args.items):
        parser.error(f"--items must be > 0, got {args.items}")
    os.makedirs(args.work, exist_ok=True)
    results_path = os.path.join(args.work, RESULTS_FILE)
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; python {platform.python_version()}")
    if not args.plot_only:
        for items in args.items:
            results[str(items)] = run_size(items, args, results.get(str(items), {}))
            with open(results_path + ".partial", "w") as stream:
                json.dump(results, stream, indent=2)
            os.replace(results_path + ".partial", results_path)
            print(markdown(items, results[str(items)]), flush=True)
    exponents = plot(results, os.path.join(args.work, PLOT_FILE))
    print("fitted exponents (cost ~ items^slope): " + ", ".join(
        f"{name} {slope:.2f}" for name, slope in sorted(exponents.items())))
    if len(results) > 1:
        print("median exponent:", round(statistics.median(exponents.values()), 2))


if __name__ == "__main__":
    main()
