"""Training speed and batch-1 lookup latency of several query towers, side by side in one run (issue 39).

    python benchmarks/encoder_costs.py --data runs/data/amazon-cds --config configs/amazon-cds.yaml \
        --design "comirec-sa-k4=" --design "sasrec=encoder=sasrec,routing=last_position,num_interests=1,..." \
        [--model-dir comirec-sa-k4=DIR --model-dir sasrec=DIR] [--steps 400] [--lookups 300]

Training: each design's model (the preset --config plus its overrides) trains --warmup-steps, then --steps are
timed through Keras fit, as `remi train` builds it (benchmarks/train_throughput.py); reported as examples/s
(sequences) and targets/s (positions trained: one per sequence, or every real position with
training_positions "every"). The designs alternate in --rounds rounds so that a slow spell of the machine does not
fall on one design. Lookup: each --model-dir (a trained model of that design) is exported (exact index) into a
temporary directory, and its `serving_default` signature is called in process with one history of 20 of the
data set's items at a time: p50 and p99 ms over --lookups calls.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import remi_tf  # noqa: E402,F401
from remi_tf import config as config_lib  # noqa: E402
from remi_tf import data_directory, models  # noqa: E402
from remi_tf import input as input_lib  # noqa: E402
from remi_tf import train as train_lib  # noqa: E402
from remi_tf.export import exporter  # noqa: E402
from remi_tf.item_index import FIRST_ITEM_INDEX  # noqa: E402


def trained_positions(config: config_lib.RemiConfig, batch: dict[str, tf.Tensor]) -> int:
    """The targets one batch trains: one per sequence, or every real position with training_positions "every"."""
    if config.training_positions == "last":
        return int(batch["target"].shape[0])
    return int(tf.reduce_sum(tf.cast(batch["history"] >= FIRST_ITEM_INDEX, tf.int32)))


def training_speed(args: argparse.Namespace, overrides: list[str]) -> tuple[float, float]:
    """(examples/s, targets/s) of one design."""
    config = config_lib.load(args.config, overrides)
    inputs = input_lib.training_inputs(args.data, config)
    model = models.RemiModel(config, len(inputs.vocabulary), inputs.target_probability)
    dataset = inputs.dataset_fn(None)
    targets_per_batch = statistics.mean(trained_positions(config, batch) for batch in dataset.take(50))
    train_lib.compile_model(model, config)
    model.fit(dataset, epochs=1, steps_per_epoch=args.warmup_steps, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0)
    steps_per_s = args.steps / (time.perf_counter() - start)
    return steps_per_s * config.batch_size, steps_per_s * targets_per_batch


def lookup_latency(model_dir: str, items: list[str], lookups: int) -> tuple[float, float]:
    """(p50 ms, p99 ms) of batch-1 calls of the exact model's serving_default, exported from `model_dir`."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as output:
        exporter.export(model_dir, output, name="bench", index="brute-force", k=50)
        signature = tf.saved_model.load(os.path.join(output, "bench", "1")).signatures["serving_default"]
        histories = [tf.constant([list(rng.choice(items, 20))]) for _ in range(lookups + 10)]
        for history in histories[:10]:
            signature(history=history)
        seconds = []
        for history in histories[10:]:
            start = time.perf_counter()
            signature(history=history)
            seconds.append(time.perf_counter() - start)
    return 1e3 * float(np.percentile(seconds, 50)), 1e3 * float(np.percentile(seconds, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--design", action="append", required=True, help="name=key=value,key=value")
    parser.add_argument("--model-dir", action="append", default=[], help="name=DIR: a trained model of the design")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()
    designs = {name: [item for item in overrides.split(",") if item]
               for name, _, overrides in (spec.partition("=") for spec in args.design)}
    model_dirs = dict(spec.split("=", 1) for spec in args.model_dir)
    speeds: dict[str, list[tuple[float, float]]] = {name: [] for name in designs}
    for _ in range(args.rounds):
        for name, overrides in designs.items():
            speeds[name].append(training_speed(args, overrides))
            print(f"{name}: {speeds[name][-1][0]:.0f} examples/s, {speeds[name][-1][1]:.0f} targets/s", flush=True)
    items = data_directory.read_item_ids(data_directory.items_path(args.data))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}; data {args.data}")
    print("| design | examples/s (each round) | targets/s | batch-1 lookup p50 / p99 ms (exact) |")
    print("|---|---|---|---|")
    for name in designs:
        latency = "-"
        if name in model_dirs:
            p50, p99 = lookup_latency(model_dirs[name], items, args.lookups)
            latency = f"{p50:.2f} / {p99:.2f}"
        print(f"| {name} | {' / '.join(f'{e:.0f}' for e, _ in speeds[name])} | "
              f"{' / '.join(f'{t:.0f}' for _, t in speeds[name])} | {latency} |", flush=True)


if __name__ == "__main__":
    main()
