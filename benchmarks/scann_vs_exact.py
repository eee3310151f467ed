"""ScaNN vs exact brute force for single-user K-interest lookups on a large synthetic corpus.

    python benchmarks/scann_vs_exact.py [--items 1000000] [--dim 64] [--interests 4] [--k 50]

The corpus has cluster structure like real item embeddings (items around 2,000 centres with varied
norms), not isotropic noise. Each lookup is one user: K interest vectors near a few centres. Both
indexes are tfrs.layers.factorized_top_k layers (the ones `remi export` uses), timed in the same run;
recall@k is ScaNN's top-k against the exact top-k.
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

from remi_tf.export import exporter  # noqa: E402


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
    call = tf.function(lambda q: index(q, k=k))
    call(tf.constant(queries[0]))  # trace
    results, seconds = [], []
    for user in queries:
        start = time.perf_counter()
        _, ids = call(tf.constant(user))
        ids = ids.numpy()
        seconds.append(time.perf_counter() - start)
        results.append(ids)
    return np.stack(results), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--interests", type=int, default=4)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    corpus = clustered_corpus(args.items, args.dim, 2000, rng)
    centres = corpus[rng.integers(0, args.items, size=2000)]  # users' interests sit near real items
    queries = user_queries(args.users, args.interests, centres, rng)
    identifiers = tf.range(args.items, dtype=tf.int64)

    exact = tfrs.layers.factorized_top_k.BruteForce(k=args.k)
    exact.index(tf.constant(corpus), identifiers)
    options = exporter.scann_options(args.items)  # the settings `remi export` uses
    start = time.perf_counter()
    scann = tfrs.layers.factorized_top_k.ScaNN(k=args.k, **options)
    scann.index(tf.constant(corpus), identifiers)
    build_seconds = time.perf_counter() - start

    exact_ids, exact_seconds = time_lookups(exact, queries, args.k)
    scann_ids, scann_seconds = time_lookups(scann, queries, args.k)
    recall = np.mean([len(set(a) & set(b)) / args.k
                      for a, b in zip(scann_ids.reshape(-1, args.k), exact_ids.reshape(-1, args.k))])
    exact_qps, scann_qps = len(queries) / sum(exact_seconds), len(queries) / sum(scann_seconds)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}")
    print(f"corpus: {args.items:,} items, d {args.dim}, 2,000 clusters; {args.users} users x K {args.interests}"
          f" queries, k {args.k}")
    print(f"scann: {options['num_leaves']} leaves, {options['num_leaves_to_search']} searched, reorder "
          f"{options['num_reordering_candidates']}; built in {build_seconds:.1f} s")
    for name, seconds, qps in (("exact", exact_seconds, exact_qps), ("scann", scann_seconds, scann_qps)):
        print(f"{name}: p50 {1e3 * np.percentile(seconds, 50):.2f} ms, p99 {1e3 * np.percentile(seconds, 99):.2f} ms,"
              f" {qps:.1f} users/s")
    print(f"recall@{args.k} of scann vs exact: {recall:.4f}")
    print(f"speed-up (users/s): {scann_qps / exact_qps:.1f}x")


if __name__ == "__main__":
    main()
