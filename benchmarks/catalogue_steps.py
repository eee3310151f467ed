"""Training steps/s as the catalogue grows, the model and batch fixed (issue 41, item 4).

    python benchmarks/catalogue_steps.py --items 30000 1000000 10000000 [--set key=value ...] [--config FILE]
        [--steps 300] [--warmup-steps 50] [--rounds 2]

For each catalogue size N one model (the defaults, or --config plus --set) is built in this process with N items
and trained through Keras fit, as `remi train` builds it (train.compile_model), on synthetic histories: 20,000
users of 5-45 items drawn from a power-law popularity over the N items (weight (rank + 1)^-0.8, ranks shuffled
over the ids), cut at random positions by input.sequence_dataset as in training; the logQ table is that
popularity. Only the catalogue differs between the models, so the step's cost as N grows is what the table, its
optimizer slots, the sampled negatives' lookups and the q gathers add. The sizes alternate in --rounds rounds (a
slow spell of the machine does not fall on one size); each timed pass is --steps steps after --warmup-steps.
Printed: steps/s per size and round, the median's ratio to the smallest size's, and what each size holds in
memory (item table, optimizer slots, the q table), from the variables' sizes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import remi_tf  # noqa: E402,F401
from remi_tf import config as config_lib  # noqa: E402
from remi_tf import input as input_lib  # noqa: E402
from remi_tf import models  # noqa: E402
from remi_tf import train as train_lib  # noqa: E402
from remi_tf.item_index import FIRST_ITEM_INDEX  # noqa: E402

NUM_USERS = 20_000
POPULARITY_EXPONENT = 0.8


def synthetic_histories(num_items: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(20,000 item-index sequences of 5-45 items, q [N + 2]) over a power-law popularity of N items."""
    rng = np.random.default_rng(seed)
    weights = (np.arange(num_items) + 1.0) ** -POPULARITY_EXPONENT
    popularity = (weights / weights.sum())[rng.permutation(num_items)]  # [N] by item index - 2
    lengths = rng.integers(5, 46, size=NUM_USERS)
    items = rng.choice(num_items, size=int(lengths.sum()), p=popularity) + FIRST_ITEM_INDEX
    sequences = np.split(items.astype(np.int64), np.cumsum(lengths)[:-1])
    return sequences, np.concatenate([np.zeros(FIRST_ITEM_INDEX), popularity])


def variable_mib(variables: list[tf.Variable], num_items: int) -> float:
    """MiB of the variables with a row per catalogue item (the item table and its optimizer slots)."""
    rows = num_items + FIRST_ITEM_INDEX
    return sum(v.shape.num_elements() * v.dtype.size for v in variables
               if v.shape.rank and v.shape[0] == rows) / 2**20


def build(num_items: int, config: config_lib.RemiConfig, warmup_steps: int
          ) -> tuple[tf.keras.Model, tf.data.Dataset, dict[str, float]]:
    """One model of N items, compiled and warmed up, with its endless training batches and its memory figures."""
    sequences, target_probability = synthetic_histories(num_items, config.seed)
    model = models.RemiModel(config, num_items, target_probability)
    dataset = input_lib.sequence_dataset(sequences, config.batch_size, config.max_history, seed=config.seed)
    train_lib.compile_model(model, config)
    model.fit(dataset, epochs=1, steps_per_epoch=warmup_steps, verbose=0)  # builds the weights and slots, warms up
    memory = {"table_mib": variable_mib(model.trainable_variables, num_items),
              "slots_mib": variable_mib(model.optimizer.variables(), num_items),
              "q_mib": target_probability.astype(np.float32).nbytes / 2**20}
    return model, dataset, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[30_000, 1_000_000])
    parser.add_argument("--config", help="a preset (default: the defaults)")
    parser.add_argument("--set", action="append", default=[], help="key=value, repeatable")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for option in ("steps", "warmup_steps", "rounds"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} must be > 0")
    if min(args.items) < 1_000:
        parser.error("--items: each catalogue must have >= 1,000 items")
    config = config_lib.load(args.config, args.set)
    built = {}
    for num_items in args.items:
        start = time.perf_counter()
        built[num_items] = build(num_items, config, args.warmup_steps)
        print(f"{num_items:,} items built and warmed up in {time.perf_counter() - start:.0f} s", flush=True)
    rates: dict[int, list[float]] = {num_items: [] for num_items in args.items}
    for round_index in range(args.rounds):
        for num_items, (model, dataset, _) in built.items():
            start = time.perf_counter()
            model.fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0)
            rates[num_items].append(args.steps / (time.perf_counter() - start))
            print(f"round {round_index + 1}: {num_items:,} items {rates[num_items][-1]:.1f} steps/s", flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}")
    print(f"config: encoder {config.encoder}, routing {config.routing}, K {config.num_interests}, d "
          f"{config.embedding_dim}, batch {config.batch_size}, negatives {config.negatives}, "
          f"training_positions {config.training_positions}")
    smallest = statistics.median(rates[min(args.items)])
    print("| items | steps/s (each round) | median vs the smallest | item table MiB | optimizer slots MiB | q MiB |")
    print("|---|---|---|---|---|---|")
    for num_items, (_, _, memory) in built.items():
        each = " / ".join(f"{rate:.1f}" for rate in rates[num_items])
        print(f"| {num_items:,} | {each} | {statistics.median(rates[num_items]) / smallest:.2f}x | "
              f"{memory['table_mib']:,.1f} | {memory['slots_mib']:,.1f} | {memory['q_mib']:,.1f} |")


if __name__ == "__main__":
    main()
