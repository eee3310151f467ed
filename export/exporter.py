"""`remi export`: a trained model directory -> SavedModels in TF Serving's layout.

Models written under `<output>/` (one version each):
  <name>         end-to-end retrieval: ScaNN when the index is "scann" or "both", else exact
  <name>-exact   exact brute-force retrieval, when the index is "both" (stock TF Serving loads it)
  <name>-query   the query tower: history -> K interest embeddings
plus `<output>/models.config` listing the models stock TF Serving loads (all but the ScaNN one),
`<output>/models.scann.config` listing every model (what `remi serve`, which has ScaNN's ops, follows; written
when there is a ScaNN model) and `<output>/<name>.export.json`, the set `remi serve` serves at one version
(TF Serving itself loads each model's versions on their own). The index "auto" (the default) is "brute-force"
below AUTO_SCANN_MIN_ITEMS items; from there the ScaNN index is built and tuned, both searches are timed on a
batch of held-out queries, and it is "both" where ScaNN is the faster and "brute-force" where it is not (a model
whose interests need most leaves searched for the target recall: BENCHMARKS.md 7.8); the measurement is written
to the served model's `assets.extra/index_choice.json`.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf import atomic, feature_tables, model_directory
from remi_tf import config as config_lib
from remi_tf.export import saved_model, scann_tuning, serving_layout
from remi_tf.item_index import FIRST_ITEM_INDEX

logger = logging.getLogger(__name__)

INDEXES = ("auto", "scann", "brute-force", "both")
# From this many items ScaNN at recall >= 0.95 is faster than exact brute force at batch 1 and at batch 64 on a
# 2-CPU x86_64 machine; below it brute force is faster at batch 64 (benchmarks/scann_vs_exact.py, BENCHMARKS.md 6.2).
AUTO_SCANN_MIN_ITEMS = 25_000
DEFAULT_TARGET_RECALL = 0.95
TUNING_FILE = os.path.join("assets.extra", "scann_tuning.json")
INDEX_CHOICE_FILE = os.path.join("assets.extra", "index_choice.json")
TIMED_HISTORIES = 64  # --index auto times both searches on the queries of this many histories (one full batch)
TIMED_CALLS = 7  # of each search, alternating, after a warm-up call: the median is compared


def scann_options(num_items: int) -> dict:
    """ScaNN tree settings scaled to the corpus: ~sqrt(N) leaves, a tenth of them searched but at least
    40 (small corpora need a larger share), exact re-ranking of 1,000 candidates. Measured recall@50
    against exact: 0.96 on amazon-cds (171 leaves, 40 searched), 0.978 on 1 M clustered items (1,000
    leaves, 100 searched) at 39x the users/s of brute force (BENCHMARKS.md)."""
    num_leaves = max(2, int(math.sqrt(num_items)))
    return {"num_leaves": num_leaves, "num_leaves_to_search": min(num_leaves, max(num_leaves // 10, 40)),
            "num_reordering_candidates": 1000}


def scann_index(trained: model_directory.TrainedModel, k: int, target_recall: float, queries: np.ndarray | None
                ) -> tuple[tfrs.layers.factorized_top_k.TopK, scann_tuning.Tuned]:
    """The ScaNN item index to serve (saved_model.item_index) with scann_options for the model's catalogue, its
    leaves searched tuned for `target_recall` (0, or `queries` None: as they are) of the per-interest lists the
    retrieval model asks for on the held-out `queries` [Q, d], and the recall that index reached on them
    (export/scann_tuning.py)."""
    options = scann_options(len(trained.vocabulary))
    if not target_recall or queries is None:
        return saved_model.item_index(trained.model, "scann", k, options), scann_tuning.Tuned(options, float("nan"), 0)
    candidates = trained.model.corpus.embeddings().numpy()
    depth = saved_model.per_interest_depth(k, trained.config.max_history, len(trained.vocabulary))
    tuned = scann_tuning.tune(candidates, queries, depth, target_recall, options)
    index, tuned = scann_tuning.served(lambda chosen: saved_model.item_index(trained.model, "scann", k, chosen),
                                       candidates, queries, depth, target_recall, tuned, FIRST_ITEM_INDEX)
    logger.info(f"ScaNN: {tuned.options['num_leaves_to_search']} of {tuned.options['num_leaves']} leaves searched, "
                f"{tuned.options['num_reordering_candidates']} candidates re-ranked: "
                f"recall@{depth} {tuned.recall:.3f} of exact on {tuned.num_queries} held-out queries "
                f"(target {target_recall})")
    return index, tuned


def search_milliseconds(searches: Mapping[str, tfrs.layers.factorized_top_k.TopK], queries: np.ndarray,
                        calls: int = TIMED_CALLS) -> dict[str, float]:
    """Median milliseconds of one call of each item index on `queries` [Q, d] (the K x B interest vectors of
    a batch of B histories): a warm-up call each, then `calls` calls each, alternating, so that a change in
    the machine's load falls on every search alike."""
    batch = tf.constant(queries, tf.float32)
    seconds: dict[str, list[float]] = {name: [] for name in searches}
    for search in searches.values():
        search(batch)
    for _ in range(calls):
        for name, search in searches.items():
            start = time.perf_counter()
            scores, _ = search(batch)
            scores.numpy()
            seconds[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in seconds.items()}


def measured_choice(milliseconds: Mapping[str, float]) -> str:
    """--index auto from the timed searches (search_milliseconds' "scann" and "brute-force"): "both" (ScaNN
    served, exact beside it) when ScaNN is the faster, else "brute-force"."""
    return "both" if milliseconds["scann"] < milliseconds["brute-force"] else "brute-force"


def timed_choice(trained: model_directory.TrainedModel, scann: tfrs.layers.factorized_top_k.TopK,
                 tuned: scann_tuning.Tuned, k: int, queries: np.ndarray) -> dict[str, Any]:
    """--index auto past AUTO_SCANN_MIN_ITEMS: the tuned ScaNN search and the exact one timed on a batch of
    held-out queries, and the index measured_choice takes (what index_choice.json records)."""
    timed = queries[:TIMED_HISTORIES * trained.config.num_interests]
    milliseconds = search_milliseconds(
        {"scann": scann, "brute-force": saved_model.item_index(trained.model, "brute-force", k)}, timed)
    choice = {"index": measured_choice(milliseconds), "milliseconds": milliseconds,
              "queries": len(timed), "scann_options": tuned.options, "scann_recall": tuned.recall}
    logger.info(f"--index auto: {choice['index']}: one search of {len(timed)} held-out queries takes "
                f"{milliseconds['scann']:.2f} ms with ScaNN ({tuned.options['num_leaves_to_search']} of "
                f"{tuned.options['num_leaves']} leaves), {milliseconds['brute-force']:.2f} ms exact")
    return choice


def choose_index(num_items: int) -> str:
    """--index auto: "brute-force" below AUTO_SCANN_MIN_ITEMS items, "both" (ScaNN, and exact beside it) from there."""
    index = "brute-force" if num_items < AUTO_SCANN_MIN_ITEMS else "both"
    logger.info(f"--index auto: {index} for {num_items:,} items (ScaNN from {AUTO_SCANN_MIN_ITEMS:,})")
    return index


def model_names(name: str, index: str) -> dict[str, str]:
    """Served name -> what it is, for the chosen index."""
    names = {name: "scann" if index in ("scann", "both") else "brute-force", f"{name}-query": "query"}
    if index == "both":
        names[f"{name}-exact"] = "brute-force"
    return names


def export(model_dir: str, output: str, name: str = "remi", version: int | None = None, index: str = "auto",
           k: int = 50, serving_base_path: str = "/models", warmup_histories: Sequence[Sequence[str]] | None = None,
           settings: Mapping[str, Any] | None = None, target_recall: float = DEFAULT_TARGET_RECALL) -> dict[str, str]:
    """Exports every model of `model_names(name, index)` as version `version` (default: next free).

    index: "auto" (choose_index: exact below AUTO_SCANN_MIN_ITEMS items; from there ScaNN with the exact model
    beside where the tuned ScaNN search is the faster on held-out queries, else exact: measured_choice),
    "scann", "brute-force" or "both" (ScaNN as <name>, exact as <name>-exact).
    target_recall > 0: the ScaNN model searches as many leaves as reach that recall of the exact per-interest
    lists on held-out queries (export/scann_tuning.py; written to `assets.extra/scann_tuning.json` of its
    version); 0: scann_options as they are. settings: evaluation-time config keys over the model's config
    (config.EVALUATION_KEYS; diversity_coef > 0: ComiRec's category-aware merge of the K lists, `merge_categories`).
    Returns served name -> the published version directory.
    """
    if index not in INDEXES:
        raise ValueError(f"--index must be one of {INDEXES}, got {index!r}")
    model_directory.check_trained(model_dir)  # every check before the model is built and loaded
    vocabulary = model_directory.read_vocabulary(model_dir)
    diversity_coef = config_lib.from_mapping(settings or {}, model_directory.read_config(model_dir),
                                             source="--set").diversity_coef
    if not 1 <= k <= len(vocabulary):
        raise ValueError(f"--k must be between 1 and the {len(vocabulary)} items of the vocabulary, got {k}")
    categories = merge_categories(model_directory.read_run(model_dir)["data_dir"], vocabulary, diversity_coef)
    auto = index == "auto"
    names = model_names(name, choose_index(len(vocabulary)) if auto else index)
    version = free_version(output, names, version)  # before the model is loaded and the (slow) index built
    trained = model_directory.load_trained(model_dir)
    scann, tuned, choice = None, None, None
    if "scann" in names.values():
        queries = scann_tuning.held_out_queries(trained.model, trained.data_dir, vocabulary) \
            if target_recall or auto else None  # for the tuning and the timing only
        scann, tuned = scann_index(trained, k, target_recall, queries)
        if auto and queries is not None:
            choice = timed_choice(trained, scann, tuned, k, queries)
            if choice["index"] == "brute-force":
                names, scann, tuned = model_names(name, "brute-force"), None, None
    os.makedirs(output, exist_ok=True)
    serving_layout.write_export_set(output, name, list(names))
    warmup = warmup_histories or [vocabulary[:3], vocabulary[3:8]]
    published = {}
    for served, kind in names.items():
        if kind == "query":
            module = saved_model.QueryModule(trained.model, vocabulary)
        else:
            module = saved_model.RetrievalModule(trained.model, vocabulary, scann if kind == "scann" else kind, k,
                                                 categories, diversity_coef)

        def write(directory: str, module=module, served=served, kind=kind) -> None:
            saved_model.save(module, directory)
            if kind == "scann" and tuned is not None and tuned.num_queries:
                atomic.write_json(os.path.join(directory, TUNING_FILE), tuned._asdict())
            if served == name and choice is not None:
                atomic.write_json(os.path.join(directory, INDEX_CHOICE_FILE), choice)
            serving_layout.write_warmup_requests(directory, served, warmup,
                                                 feature_columns=[c for c in module.input_specs() if c != "history"])

        published[served] = serving_layout.publish_version(os.path.join(output, served), version, write)
    write_model_configs(output, names, serving_base_path)
    return published


def merge_categories(data_dir: str, vocabulary: Sequence[str], diversity_coef: float) -> np.ndarray | None:
    """The item categories of the model's data directory for a diverse merge (diversity_coef > 0), else None."""
    if diversity_coef <= 0:
        return None
    categories = feature_tables.read_categories(data_dir, vocabulary, FIRST_ITEM_INDEX)
    if categories is None:
        raise ValueError(f"diversity_coef > 0 needs item categories, and {data_dir} has none: prepare it with "
                         "`remi prepare --item-features ITEMS.csv[:COLUMN]`")
    return categories


def free_version(output: str, names: Mapping[str, str], version: int | None) -> int:
    """`version` (default: one more than the newest of any of `names`), refused when one of them has it."""
    if version is None:
        version = 1 + max([0] + [v for served in names for v in serving_layout.versions(os.path.join(output, served))])
    taken = [os.path.join(output, served, str(version)) for served in names
             if os.path.exists(os.path.join(output, served, str(version)))]
    if taken:
        raise FileExistsError(f"{', '.join(taken)} already exist(s); choose another --version (default: the next)")
    return version


def write_model_configs(output: str, kinds: Mapping[str, str], base_path: str) -> None:
    """models.config (earlier exports' models, then this export's except its ScaNN models) and, where any
    model is ScaNN, models.scann.config (every model); `kinds`: this export's served name -> kind."""
    scann_path = os.path.join(output, serving_layout.SCANN_MODELS_CONFIG)
    every = serving_layout.configured_models(output, serving_layout.SCANN_MODELS_CONFIG) \
        or serving_layout.configured_models(output, serving_layout.MODELS_CONFIG) or []
    every += [name for name in kinds if name not in every]
    stock = [name for name in serving_layout.configured_models(output, serving_layout.MODELS_CONFIG) or []
             if kinds.get(name) != "scann"]
    stock += [name for name, kind in kinds.items() if kind != "scann" and name not in stock]
    if os.path.exists(scann_path) or "scann" in kinds.values():  # first: remi serve then follows it at once
        serving_layout.write_models_config(output, every, base_path, serving_layout.SCANN_MODELS_CONFIG)
    serving_layout.write_models_config(output, stock, base_path, serving_layout.MODELS_CONFIG)
