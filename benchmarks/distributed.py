"""Training across processes on one machine: quality and overhead of multi-worker training with
cross-replica negatives, the input paths, and a 10 M-item table under parameter servers.

  python benchmarks/distributed.py quality --data runs/bench/cds --config configs/amazon-cds.yaml \
      --runs "one:256" "workers=2:256" --steps 5000 --seeds 0 1 2
  python benchmarks/distributed.py quality --data runs/bench/cds --config configs/amazon-cds.yaml \
      --runs "workers=2:128" "workers=2:256" "workers=2:512" --examples 1280000
  python benchmarks/distributed.py throughput --data runs/bench/cds --config configs/amazon-cds.yaml
  python benchmarks/distributed.py scale --items 10000000 --epoch-steps 100

Every run is `remi train` (and `remi evaluate --split test`) in fresh processes, as a user runs them;
`workers=N` adds `--local-cluster workers=N`. Results are printed as Markdown table rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import threading
import time

import numpy as np
from cli_runs import remi, resident_gib


def train_args(data: str, model_dir: str, config: str | None, cluster: str, settings: list[str]) -> list[str]:
    args = ["train", "--data", data, "--model-dir", model_dir, "--quiet", "--set", *settings]
    if config:
        args += ["--config", config]
    if cluster != "one":
        args += ["--local-cluster", cluster]
    return args


def quality(args: argparse.Namespace) -> None:
    print("| run | global batch | steps | seed | best step | valid R@50 | test R@50 | test HR@50 | test R@20 | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results: dict[str, list[float]] = {}
    for run in args.runs:
        cluster, batch = run.split(":")
        steps = args.steps or int(args.examples) // int(batch)
        for seed in args.seeds:
            model_dir = os.path.join(args.output, f"{cluster}-b{batch}-s{seed}".replace("=", ""))
            settings = [f"batch_size={batch}", f"max_steps={steps}", f"eval_every={max(steps // 10, 1)}",
                        f"seed={seed}", "patience=0"]
            seconds = remi(*train_args(args.data, model_dir, args.config, cluster, settings))
            remi("evaluate", "--model-dir", model_dir, "--split", "test")
            test = json.load(open(os.path.join(model_dir, "eval-test.json")))
            valid = json.load(open(os.path.join(model_dir, "validation.json")))
            results.setdefault(run, []).append(test["recall@50"])
            print(f"| {cluster} | {batch} | {steps} | {seed} | {valid['best_step']} | {valid['best']:.4f} | "
                  f"{test['recall@50']:.4f} | {test['hitrate@50']:.4f} | {test['recall@20']:.4f} | {seconds:.0f} |",
                  flush=True)
    print("\n| run | test R@50 mean | spread (min - max) |\n|---|---|---|")
    for run, values in results.items():
        print(f"| {run} | {statistics.mean(values):.4f} | {min(values):.4f} - {max(values):.4f} |")


def training_rate(model_dir: str) -> float:
    """Median training steps/s over the epochs after the first (validation.json; evaluation excluded)."""
    evaluations = json.load(open(os.path.join(model_dir, "validation.json")))["evaluations"]
    return statistics.median(e["train_steps_per_s"] for e in evaluations[1:])


def throughput(args: argparse.Namespace) -> None:
    """Examples/s of training (the epochs after the first, evaluation excluded), alternating the runs."""
    rates: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for index, run in enumerate(args.runs):
            cluster, batch, training_input = run.split(":")
            model_dir = os.path.join(args.output, f"throughput-{repeat}-{index}")
            shutil.rmtree(model_dir, ignore_errors=True)  # a finished run in the way would not train again
            settings = [f"batch_size={batch}", f"max_steps={4 * args.epoch_steps}", f"eval_every={args.epoch_steps}",
                        "patience=0", f"training_input={training_input}"]
            remi(*train_args(args.data, model_dir, args.config, cluster, settings))
            rates.setdefault(run, []).append(training_rate(model_dir) * int(batch))
            print(f"repeat {repeat}: {run}: {rates[run][-1]:,.0f} examples/s", flush=True)
    baseline = statistics.median(rates[args.runs[0]])
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cpus\n")
    print("| run (cluster:global batch:input) | examples/s median | range | vs first |\n|---|---|---|---|")
    for run, values in rates.items():
        print(f"| {run} | {statistics.median(values):,.0f} | {min(values):,.0f} - {max(values):,.0f} | "
              f"{statistics.median(values) / baseline:.2f}x |")


def synthetic_catalogue(directory: str, num_items: int, num_users: int, length: int, seed: int = 0) -> None:
    """A prepared data directory with a `num_items` vocabulary (written directly, as `remi prepare` would)
    and `num_users` users of random items; q uniform over the items that occur."""
    import tensorflow as tf

    from remi_tf import data_directory

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(os.path.join(directory, "items.tsv"), "w") as stream:
        for start in range(0, num_items, 1_000_000):
            stop = min(start + 1_000_000, num_items)
            stream.write("".join(f"item{i}\t5\t{1.0 / num_items!r}\n" for i in range(start, stop)))
    for split, users in (("train", num_users), ("valid", 16), ("test", 16)):
        with tf.io.TFRecordWriter(os.path.join(directory, data_directory.shard_name(split, 0, 1))) as writer:
            for user in range(users):
                items = rng.integers(0, num_items, size=length)
                writer.write(data_directory.encode_sequence(f"{split}{user}".encode(), [f"item{i}".encode() for i in items],
                                                    list(range(length))))
    with open(os.path.join(directory, "manifest.json"), "w") as stream:
        json.dump({"num_items": num_items, "synthetic": True}, stream)


def remi_train_tasks() -> dict[str, int]:
    """pid of every running `remi train` process, by its TF_CONFIG task ("ps:0", "worker:1", ...)."""
    tasks = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                if b"-m\x00remi\x00train" not in stream.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as stream:
                tf_config = next((v[len(b"TF_CONFIG="):] for v in stream.read().split(b"\x00")
                                  if v.startswith(b"TF_CONFIG=")), None)
        except OSError:
            continue
        if tf_config is not None:
            task = json.loads(tf_config)["task"]
            tasks[f"{task['type']}:{task['index']}"] = int(pid)
    return tasks


def available_gib() -> float:
    with open("/proc/meminfo") as stream:
        return next(int(line.split()[1]) for line in stream if line.startswith("MemAvailable")) / 2 ** 20


class TaskMemoryMonitor(threading.Thread):
    """Records each cluster task's resident memory every `period_s` (a CSV timeline and the peaks), and
    stops every `remi train` process (SIGKILL by pid) when the machine's available memory falls below
    `guard_gib`, before the kernel's OOM killer picks a process of its own."""

    def __init__(self, timeline_csv: str, guard_gib: float = 1.5, period_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.timeline_csv, self.guard_gib, self.period_s = timeline_csv, guard_gib, period_s
        self.peaks: dict[str, float] = {}
        self.guard_tripped_at: float | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        with open(self.timeline_csv, "w") as timeline:
            timeline.write("elapsed_s,task,rss_gib,available_gib\n")
            while not self.stopped.wait(self.period_s):
                elapsed, available, tasks = time.monotonic() - start, available_gib(), remi_train_tasks()
                for task, pid in sorted(tasks.items()):
                    rss = resident_gib(pid)
                    if rss is not None:
                        self.peaks[task] = max(self.peaks.get(task, 0.0), rss)
                        timeline.write(f"{elapsed:.0f},{task},{rss:.3f},{available:.3f}\n")
                timeline.flush()
                if available < self.guard_gib and tasks and self.guard_tripped_at is None:
                    self.guard_tripped_at = elapsed
                    for pid in tasks.values():
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def scale(args: argparse.Namespace) -> None:
    data = os.path.join(args.output, f"catalogue-{args.items}")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        synthetic_catalogue(data, args.items, num_users=20_000, length=30)
    model_dir = os.path.join(args.output, f"scale-{args.items}")
    shutil.rmtree(model_dir, ignore_errors=True)
    monitor = TaskMemoryMonitor(os.path.join(args.output, f"scale-{args.items}-memory.csv"))
    monitor.start()
    settings = ["batch_size=256", f"max_steps={3 * args.epoch_steps}", f"eval_every={args.epoch_steps}",
                "steps_per_execution=25", "patience=0", "eval_batch_size=4", "embedding_dim=64"]
    try:
        remi(*train_args(data, model_dir, None, f"workers=2,ps={args.ps}", settings))
    finally:
        monitor.stop()
        print("| task | peak RSS GiB |\n|---|---|")
        for task, gib in sorted(monitor.peaks.items()):
            print(f"| {task} | {gib:.2f} |")
        if monitor.guard_tripped_at is not None:
            print(f"memory guard: stopped the cluster at {monitor.guard_tripped_at:.0f} s (timeline: "
                  f"{monitor.timeline_csv})")
    run = json.load(open(os.path.join(model_dir, "run.json")))
    print(f"items {args.items:,} x 64; table shards: {run['item_table_shards']}")
    print(f"steps/s (2 workers, batch 256 per worker step): {training_rate(model_dir):.2f}")
    table_gib = (args.items + 2) * 64 * 4 / 2 ** 30
    print(f"table {table_gib:.2f} GiB; with LazyAdam's 2 slots {3 * table_gib:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("quality", "throughput"):
        command = commands.add_parser(name)
        command.add_argument("--data", required=True)
        command.add_argument("--config")
        command.add_argument("--output", default="runs/bench-distributed")
    commands.choices["quality"].add_argument("--runs", nargs="+", required=True, help="CLUSTER:GLOBAL_BATCH, "
                                             "CLUSTER = one | workers=N")
    commands.choices["quality"].add_argument("--steps", type=int, help="steps per run")
    commands.choices["quality"].add_argument("--examples", type=float, help="or: examples per run (steps = / batch)")
    commands.choices["quality"].add_argument("--seeds", type=int, nargs="+", default=[0])
    commands.choices["throughput"].add_argument("--runs", nargs="+", default=[
        "one:256:in_memory", "workers=2:256:in_memory", "one:256:streaming"], help="CLUSTER:GLOBAL_BATCH:INPUT")
    commands.choices["throughput"].add_argument("--epoch-steps", type=int, default=1000,
                                                help="steps between evaluations; 4 epochs a run")
    commands.choices["throughput"].add_argument("--repeats", type=int, default=3)
    scale_command = commands.add_parser("scale")
    scale_command.add_argument("--items", type=int, default=10_000_000)
    scale_command.add_argument("--ps", type=int, default=2)
    scale_command.add_argument("--epoch-steps", type=int, default=100, help="steps between evaluations; 3 a run")
    scale_command.add_argument("--output", default="runs/bench-distributed")
    args = parser.parse_args()
    {"quality": quality, "throughput": throughput, "scale": scale}[args.command](args)


if __name__ == "__main__":
    main()
