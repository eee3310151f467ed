"""Where a served lookup's time goes, against the bare limit (issue 26, item 1).

    python benchmarks/lookup_limit.py --export-dir EXPORT --model-dir MODEL [--calls 300] [--name remi]

EXPORT: a `remi export --index both` (or an --index auto export that kept ScaNN), so that `<name>` is ScaNN
and `<name>-exact` is beside it.

One run, the model's own item vectors and the same K x (k + L) retrievals as the export, at batch 1 and 64,
p50 over --calls calls after a warm-up, each part a tf.function called as a server calls it:
- the bare limit: tf.matmul + tf.math.top_k (exact), and TFRS's ScaNN layer built with the export's options
  (its assets.extra/scann_tuning.json, else remi export's fixed scann_options), on the K interests of the batch as one [B*K, d] query; numpy/BLAS (matmul
  + argpartition) for comparison;
- the parts of the signature: the query tower alone (the `<name>-query` SavedModel's signature), the history
  exclusion and the merge alone (on the retrieval's [B, K, k + L] results);
- the exported signatures (`<name>` ScaNN, `<name>-exact`), called with string histories.
The table gives each figure and its ratio to the bare limit (the faster bare search), and the signature's
overhead over query tower + bare search.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import remi_tf  # noqa: E402,F401  (first: sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np  # noqa: E402
import scann  # noqa: E402,F401  (the ScaNN ops of the exported model)
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

from remi_tf import input as input_lib  # noqa: E402
from remi_tf import merging, model_directory  # noqa: E402
from remi_tf.export import exporter, serving_layout  # noqa: E402
from remi_tf.item_index import FIRST_ITEM_INDEX  # noqa: E402


def p50_ms(call: Callable[[], object], calls: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--name", default="remi")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    trained = model_directory.load_trained(args.model_dir)
    model, config, vocabulary = trained.model, trained.config, trained.vocabulary
    table = model.corpus.embeddings()  # [N, d]
    _, histories, _ = input_lib.load_evaluation_split(trained.data_dir, "valid", vocabulary, config.max_history)
    if not serving_layout.versions(os.path.join(args.export_dir, f"{args.name}-exact")):
        sys.exit(f"lookup_limit: {args.export_dir} has no {args.name}-exact model; export with both indexes: "
                 f"remi export --index both (--index auto serves exact alone where ScaNN is not the faster)")
    version = max(serving_layout.versions(os.path.join(args.export_dir, args.name)))
    loaded = {name: tf.saved_model.load(os.path.join(args.export_dir, name, str(version))).signatures["serving_default"]
              for name in (args.name, f"{args.name}-exact", f"{args.name}-query")}
    k = int(loaded[f"{args.name}-exact"].structured_outputs["item_ids"].shape[-1] or 50)
    per_interest = min(k + config.max_history, int(table.shape[0]))
    tuning = os.path.join(args.export_dir, args.name, str(version), exporter.TUNING_FILE)
    options = json.load(open(tuning))["options"] if os.path.exists(tuning) else exporter.scann_options(len(vocabulary))
    scann_layer = tfrs.layers.factorized_top_k.ScaNN(k=per_interest, **options)  # the exported model's options
    scann_layer.index(table)
    table_numpy = table.numpy()

    @tf.function(reduce_retracing=True)
    def scann_search(queries: tf.Tensor) -> tf.Tensor:
        return scann_layer(queries)

    @tf.function(reduce_retracing=True)
    def brute_force(queries: tf.Tensor) -> tf.Tensor:
        return tf.math.top_k(tf.matmul(queries, table, transpose_b=True), k=per_interest)

    @tf.function(reduce_retracing=True)
    def exclude_and_merge(scores: tf.Tensor, found: tf.Tensor, indices: tf.Tensor, exclude: bool) -> tf.Tensor:
        if exclude:
            seen = tf.reduce_any(tf.equal(found[:, :, :, tf.newaxis], indices[:, tf.newaxis, tf.newaxis, :]), -1)
            return tf.where(seen, tf.constant(-float("inf"), scores.dtype), scores)
        weights = tf.fill(tf.shape(scores)[:2], 1.0 / config.num_interests)
        return merging.merge_interests(scores, found, weights, k, "score", 1.0, None, 0.0)[1]

    rows = []
    rng = np.random.default_rng(0)
    for batch in (1, 64):
        chosen = histories[rng.choice(len(histories), batch, replace=False)]
        strings = tf.constant([[vocabulary[i - FIRST_ITEM_INDEX] if i >= FIRST_ITEM_INDEX else "" for i in row]
                               for row in chosen])
        interests = loaded[f"{args.name}-query"](history=strings)["interests"]  # [B, K, d]
        queries = tf.reshape(interests, [-1, interests.shape[-1]])
        top = brute_force(queries)
        scores = tf.reshape(top.values, [batch, config.num_interests, -1])
        found = tf.reshape(tf.cast(top.indices, tf.int64) + FIRST_ITEM_INDEX, [batch, config.num_interests, -1])
        indices = tf.constant(chosen)
        queries_numpy = queries.numpy()

        def numpy_search() -> np.ndarray:
            scores_numpy = queries_numpy @ table_numpy.T
            return np.argpartition(-scores_numpy, per_interest, axis=1)[:, :per_interest]

        figures = {
            "bare brute force (matmul + top_k)": p50_ms(lambda: brute_force(queries), args.calls),
            "bare ScaNN (the export's options)": p50_ms(lambda: scann_search(queries), args.calls),
            "numpy/BLAS (matmul + argpartition)": p50_ms(numpy_search, args.calls),
            "query tower alone (<name>-query)": p50_ms(lambda: loaded[f"{args.name}-query"](history=strings),
                                                       args.calls),
            "history exclusion alone": p50_ms(lambda: exclude_and_merge(scores, found, indices, True), args.calls),
            "merge alone (score)": p50_ms(lambda: exclude_and_merge(scores, found, indices, False), args.calls),
            "signature, ScaNN (<name>)": p50_ms(lambda: loaded[args.name](history=strings), args.calls),
            "signature, exact (<name>-exact)": p50_ms(lambda: loaded[f"{args.name}-exact"](history=strings),
                                                      args.calls),
        }
        limit = min(figures["bare brute force (matmul + top_k)"], figures["bare ScaNN (the export's options)"])
        for part, value in figures.items():
            rows.append((batch, part, value, value / limit))
        overhead = figures["signature, ScaNN (<name>)"] - figures["query tower alone (<name>-query)"] - \
            figures["bare ScaNN (the export's options)"]
        rows.append((batch, "signature overhead over query + bare ScaNN", overhead, overhead / limit))
    print(f"# {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"{len(vocabulary):,} items, d {table.shape[1]}, K {config.num_interests}, k {k}, "
          f"{per_interest} per interest; p50 of {args.calls} calls")
    print("| batch | part | p50 ms | x the bare limit |")
    print("|---|---|---|---|")
    for batch, part, value, ratio in rows:
        print(f"| {batch} | {part} | {value:.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
