"""Lookup latency of the retrieval SavedModel per merge of the K lists (issue 24: batch 1 no worse than 1.2x
today's merge by score), in process, all merges in one run.

    python benchmarks/merge_latency.py --model-dir runs/interests-cds/K4-max-served-s0 [--calls 300]

Exports the model once per merge (`score`, `quota`, `weighted`; a model without interest weights: `score`
only) with the exact and the ScaNN index into a temporary directory, loads each SavedModel, and times
`serving_default` on 20-item random histories: p50 and p99 at batch 1, p50 at batch 64. Calls alternate
between the merges, so that a slower phase of the machine affects all alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scann  # noqa: E402,F401  (ScaNN ops for the ScaNN model)
import tensorflow as tf  # noqa: E402

import remi_tf  # noqa: E402,F401
from remi_tf import model_directory  # noqa: E402
from remi_tf.export import exporter  # noqa: E402

HISTORY_LENGTH = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per merge and index at batch 1")
    parser.add_argument("--k", type=int, default=50)
    args = parser.parse_args()
    trained = model_directory.load_trained(args.model_dir)
    merges = ["score", "quota", "weighted"] if trained.model.query_tower.interest_weights is not None else ["score"]
    rng = np.random.default_rng(0)
    vocabulary = np.array(trained.vocabulary)
    single = [tf.constant(vocabulary[rng.integers(0, len(vocabulary), size=(1, HISTORY_LENGTH))]) for _ in range(64)]
    batch = tf.constant(vocabulary[rng.integers(0, len(vocabulary), size=(64, HISTORY_LENGTH))])
    with tempfile.TemporaryDirectory() as root:
        signatures = {}
        for merge in merges:
            exporter.export(args.model_dir, os.path.join(root, merge), index="both", k=args.k,
                            settings={"merge": merge})
            for served, index in (("remi", "scann"), ("remi-exact", "brute-force")):
                signatures[(merge, index)] = tf.saved_model.load(
                    os.path.join(root, merge, served, "1")).signatures["serving_default"]
        times: dict[tuple[str, str, int], list[float]] = {}
        for function in signatures.values():  # warm up
            for _ in range(5):
                function(history=single[0])
                function(history=batch)
        for call in range(args.calls):
            for key, function in signatures.items():
                start = time.perf_counter()
                function(history=single[call % len(single)])
                times.setdefault((*key, 1), []).append(time.perf_counter() - start)
                if call % 10 == 0:
                    start = time.perf_counter()
                    function(history=batch)
                    times.setdefault((*key, 64), []).append(time.perf_counter() - start)
    print(f"{args.model_dir}: K {trained.config.num_interests}, {len(vocabulary):,} items, k {args.k}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| merge | index | batch 1 p50 (ms) | batch 1 p99 (ms) | vs score | batch 64 p50 (ms) | vs score |")
    print("|---|---|---|---|---|---|---|")
    for merge, index in signatures:
        one, many = np.array(times[(merge, index, 1)]) * 1e3, np.array(times[(merge, index, 64)]) * 1e3
        base_one = np.median(times[("score", index, 1)]) * 1e3
        base_many = np.median(times[("score", index, 64)]) * 1e3
        print(f"| {merge} | {index} | {np.median(one):.2f} | {np.percentile(one, 99):.2f} | "
              f"{np.median(one) / base_one:.2f}x | {np.median(many):.1f} | {np.median(many) / base_many:.2f}x |")


if __name__ == "__main__":
    main()
