"""ScaNN vs exact brute force for single-user K-interest lookups on a large synthetic corpus.

    python benchmarks/scann_vs_exact.py [--items 1000000 [20000 ...]] [--dim 64] [--interests 4] [--k 50]
        [--target-recall 0.95]

The corpus has cluster structure like real item embeddings (items around 2,000 centres with varied
norms), not isotropic noise. Each lookup is one user: K interest vectors near a few centres. Both
indexes are tfrs.layers.factorized_top_k layers (the ones `remi export` uses), timed in the same run;
recall@k is ScaNN's top-k against the exact top-k. With --target-recall (the export's default, 0.95) ScaNN's
leaves searched are tuned as `remi export` tunes them (export/scann_tuning.py), on held-out queries of other
users; 0: the export's fixed options. Several --items sizes run one after the other in one process, with one
table row each (the crossover `remi export --index auto` uses: export/exporter.py AUTO_SCANN_MIN_ITEMS).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import remi_tf  # noqa: E402,F401  (first: sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

from remi_tf.export import exporter, scann_tuning  # noqa: E402


def clustered_corpus(num_items: int, dim: int, num_centres: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(num_centres, dim)).astype(np.float32)
    assignment = rng.integers(0, num_centres, size=num_items)
    items = centres[assignment] + 0.5 * rng.normal(size=(num_items, dim)).astype(np.float32)
    return items * rng.lognormal(0.0, 0.3, size=(num_items, 1)).astype(np.float32)


def user_queries(num_users: int, interests: int, centres: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray:
    picked = centres[rng.integers(0, len(centres), size=(num_users, interests))]
    return (picked + 0.5 * rng.normal(size=picked.shape)).astype(np.float32)  # [users, K, d]


def time_lookups(index: tf.keras.layers.Layer, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    """queries [calls, batch x K, d] -> ([calls, batch x K, k] ids, seconds per call)."""
    call = tf.function(lambda q: index(q, k=k))
    call(tf.constant(queries[0]))  # trace
    results, seconds = [], []
    for batch in queries:
        start = time.perf_counter()
        _, ids = call(tf.constant(batch))
        ids = ids.numpy()
        seconds.append(time.perf_counter() - start)
        results.append(ids)
    return np.stack(results), seconds


def compare(num_items: int, args: argparse.Namespace) -> dict[str, float]:
    """One catalogue size: exact and ScaNN p50 / p99 ms per user, users/s, recall@k, the options used."""
    rng = np.random.default_rng(0)
    corpus = clustered_corpus(num_items, args.dim, 2000, rng)
    centres = corpus[rng.integers(0, num_items, size=2000)]  # users' interests sit near real items
    queries = user_queries(args.users, args.interests, centres, rng)  # [users, K, d]
    calls = args.users // args.batch
    queries = queries[:calls * args.batch].reshape(calls, args.batch * args.interests, args.dim)
    held_out = user_queries(scann_tuning.HELD_OUT_QUERIES // args.interests, args.interests, centres, rng)
    identifiers = tf.range(num_items, dtype=tf.int64)

    exact = tfrs.layers.factorized_top_k.BruteForce(k=args.k)
    exact.index(tf.constant(corpus), identifiers)
    options = exporter.scann_options(num_items)  # the settings `remi export` starts from
    if args.target_recall:
        options = scann_tuning.tune(corpus, held_out.reshape(-1, args.dim), args.k, args.target_recall,
                                    options).options
    start = time.perf_counter()
    scann = tfrs.layers.factorized_top_k.ScaNN(k=args.k, **options)
    scann.index(tf.constant(corpus), identifiers)
    build_seconds = time.perf_counter() - start

    exact_ids, exact_seconds = time_lookups(exact, queries, args.k)
    scann_ids, scann_seconds = time_lookups(scann, queries, args.k)
    recall = np.mean([len(set(a) & set(b)) / args.k
                      for a, b in zip(scann_ids.reshape(-1, args.k), exact_ids.reshape(-1, args.k), strict=True)])
    return {"items": num_items, "leaves": options["num_leaves"], "searched": options["num_leaves_to_search"],
            "build_s": build_seconds, "exact_p50": 1e3 * np.percentile(exact_seconds, 50),
            "exact_p99": 1e3 * np.percentile(exact_seconds, 99), "scann_p50": 1e3 * np.percentile(scann_seconds, 50),
            "scann_p99": 1e3 * np.percentile(scann_seconds, 99),
            "speedup": sum(exact_seconds) / sum(scann_seconds), "recall": recall,
            "exact_qps": calls * args.batch / sum(exact_seconds), "scann_qps": calls * args.batch / sum(scann_seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--interests", type=int, default=4)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1, help="users per call (the p50/p99 are per call)")
    parser.add_argument("--target-recall", type=float, default=exporter.DEFAULT_TARGET_RECALL,
                        help="tune ScaNN's leaves searched for this recall on held-out queries (0: fixed options)")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}")
    print(f"d {args.dim}, 2,000 clusters; {args.users} users x K {args.interests} queries, k {args.k}, {args.batch} "
          "user(s) per call; ScaNN "
          + (f"tuned for recall {args.target_recall}" if args.target_recall else "with the fixed options"))
    print("| items | leaves (searched) | ScaNN build s | exact p50 ms | exact p99 ms | ScaNN p50 ms | ScaNN p99 ms "
          "| exact users/s | ScaNN users/s | speed-up | ScaNN recall@k vs exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for num_items in args.items:
        row = compare(num_items, args)
        print(f"| {row['items']:,} | {row['leaves']} ({row['searched']}) | {row['build_s']:.1f} | "
              f"{row['exact_p50']:.2f} | {row['exact_p99']:.2f} | {row['scann_p50']:.2f} | {row['scann_p99']:.2f} | "
              f"{row['exact_qps']:.1f} | {row['scann_qps']:.1f} | {row['speedup']:.1f}x | {row['recall']:.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
