"""Training throughput of `remi train`'s step and input pipeline on prepared data.

    python benchmarks/train_throughput.py --data DIR [--batch-size 128] [--steps N] [--set key=value ...]

Runs a warm-up, then times `--steps` training steps through Keras fit (the same model, compile and
tf.data pipeline as `remi train`) and, in the same run, the input pipeline alone. The last line is
`examples/s: <training examples per second>`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

import remi_tf  # noqa: E402,F401
from remi_tf import config as config_lib  # noqa: E402
from remi_tf import input as input_lib  # noqa: E402
from remi_tf import models  # noqa: E402
from remi_tf import train as train_lib  # noqa: E402


def time_input(dataset: tf.data.Dataset, batches: int) -> float:
    """Seconds to pull `batches` batches from the pipeline."""
    iterator = iter(dataset)
    for _ in range(50):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    config = config_lib.load(args.config, args.set + [f"batch_size={args.batch_size}"])
    inputs = input_lib.training_inputs(args.data, config)
    model = models.RemiModel(config, len(inputs.vocabulary), inputs.target_probability)
    dataset = inputs.dataset_fn(None)
    train_lib.compile_model(model, config)
    model.fit(dataset, epochs=1, steps_per_epoch=args.warmup_steps, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0)
    train_seconds = time.perf_counter() - start

    input_seconds = time_input(dataset, args.steps)
    train_rate = args.steps * args.batch_size / train_seconds
    input_rate = args.steps * args.batch_size / input_seconds
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}")
    print(f"config: batch {args.batch_size}, K {config.num_interests}, d {config.embedding_dim}, "
          f"L {config.max_history}, items {len(inputs.vocabulary)}, negatives {config.negatives}, "
          f"steps_per_execution {config.steps_per_execution}, input {'streaming' if inputs.streaming else 'in memory'}")
    print(f"input pipeline examples/s: {input_rate:.0f} ({input_rate / train_rate:.1f}x training)")
    print(f"examples/s: {train_rate:.0f}")


if __name__ == "__main__":
    main()
