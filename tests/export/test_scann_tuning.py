"""ScaNN's leaves searched chosen for a target recall (export/scann_tuning.py), on a planted clustered
catalogue where the export's fixed options fall short, checked against an exact search done here."""

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf.export import exporter, scann_tuning


def clustered(num_items, dim, num_centres, rng):
    centres = rng.normal(size=(num_centres, dim))
    items = centres[rng.integers(num_centres, size=num_items)] + 0.3 * rng.normal(size=(num_items, dim))
    return (items * rng.uniform(0.5, 1.5, size=(num_items, 1))).astype(np.float32)


def scann_layer(candidates, k, options):
    return tfrs.layers.factorized_top_k.ScaNN(k=k, **options).index(tf.constant(candidates))


def index_recall(index, candidates, queries, k):
    _, found = index(tf.constant(queries))
    exact = np.argsort(-(queries @ candidates.T), axis=1)[:, :k]  # a full sort, not the module's argpartition
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(found.numpy(), exact, strict=True)])


def scann_recall(candidates, queries, k, options):
    return index_recall(scann_layer(candidates, k, options), candidates, queries, k)


def served(candidates, queries, k, target, tuned):
    """scann_tuning.served over tfrs ScaNN layers, its index's recall measured here."""
    index, verified = scann_tuning.served(lambda options: scann_layer(candidates, k, options), candidates, queries,
                                          k, target, tuned)
    assert verified.recall == index_recall(index, candidates, queries, k)  # the served index's own recall
    return verified


def test_tuning_searches_the_fewest_leaves_that_reach_the_target_recall():
    rng = np.random.default_rng(0)
    candidates = clustered(20_000, 32, 2_000, rng)
    queries = candidates[rng.choice(len(candidates), 200, replace=False)] + 0.1 * rng.normal(size=(200, 32))
    queries = queries.astype(np.float32)
    fixed = exporter.scann_options(len(candidates))
    tuned = scann_tuning.tune(candidates, queries, 50, 0.95, fixed)
    leaves = tuned.options["num_leaves_to_search"]
    assert tuned.options["num_leaves"] == fixed["num_leaves"] and leaves > fixed["num_leaves_to_search"]
    assert tuned.recall >= 0.95 and tuned.num_queries == 200
    # the fixed options fall short here; doubled until reached (every number measured on the tuning's own tree)
    assert [number for number, _, _ in tuned.tried] == [fixed["num_leaves_to_search"] * 2 ** i
                                                        for i in range(len(tuned.tried) - 1)] + [leaves]
    assert all(at < 0.95 for _, _, at in tuned.tried[:-1])
    assert tuned.tried[-1] == (leaves, fixed["num_reordering_candidates"], tuned.recall)  # reached without more
    verified = served(candidates, queries, 50, 0.95, tuned)  # a rebuild, as the export's: its own k-means
    assert verified.recall >= 0.95 and verified.options["num_leaves_to_search"] >= leaves


def test_recall_against_a_hand_worked_example():
    found = np.array([[1, 2, 3], [4, 5, 6]])
    exact = np.array([[3, 2, 9], [7, 8, 9]])
    assert scann_tuning.recall(found, exact) == (2 / 3 + 0) / 2


def test_tuning_searches_fewer_leaves_where_the_fixed_options_exceed_the_target():
    rng = np.random.default_rng(1)
    candidates = clustered(20_000, 32, 200, rng)  # few, wide clusters: the fixed 40 leaves are more than enough
    queries = candidates[rng.choice(len(candidates), 200, replace=False)] + 0.1 * rng.normal(size=(200, 32))
    queries = queries.astype(np.float32)
    fixed = exporter.scann_options(len(candidates))
    tuned = scann_tuning.tune(candidates, queries, 50, 0.9, fixed)
    leaves = tuned.options["num_leaves_to_search"]
    assert leaves < fixed["num_leaves_to_search"] and tuned.recall >= 0.9
    verified = served(candidates, queries, 50, 0.9, tuned)  # a rebuild, as the export's
    assert verified.recall >= 0.9 and verified.options["num_leaves_to_search"] >= leaves
    # halved from the fixed number while reached: the last number measured (half the chosen) fell short
    numbers = [number for number, _, _ in tuned.tried]
    assert numbers[0] == fixed["num_leaves_to_search"] and all(b == a // 2 for a, b in zip(numbers, numbers[1:]))
    assert {reordering for _, reordering, _ in tuned.tried} == {fixed["num_reordering_candidates"]}
    assert all(at >= 0.9 for number, _, at in tuned.tried if number >= leaves)
    if leaves > 1:
        assert numbers[-1] == leaves // 2 and tuned.tried[-1][1] < 0.9


def test_a_served_index_short_of_the_target_is_rebuilt_with_twice_the_leaves_searched():
    rng = np.random.default_rng(2)
    candidates = clustered(20_000, 32, 200, rng)
    queries = candidates[rng.choice(len(candidates), 200, replace=False)] + 0.1 * rng.normal(size=(200, 32))
    queries = queries.astype(np.float32)
    one_leaf = {**exporter.scann_options(len(candidates)), "num_leaves_to_search": 1}
    assert scann_recall(candidates, queries, 50, one_leaf) < 0.97  # one leaf of 141 falls short of 0.97
    verified = served(candidates, queries, 50, 0.97, scann_tuning.Tuned(one_leaf, 1.0, 200))
    assert verified.recall >= 0.97 and verified.options["num_leaves_to_search"] in (2, 4, 8, 16, 32, 64, 128, 141)
    every_leaf = served(candidates, queries, 50, 1.01, scann_tuning.Tuned(one_leaf, 1.0, 200))  # unreachable
    assert every_leaf.options["num_leaves_to_search"] == one_leaf["num_leaves"]


def test_exact_top_k_a_few_queries_at_a_time_is_the_numpy_top_k(monkeypatch):
    rng = np.random.default_rng(0)
    candidates, queries = rng.normal(size=(500, 8)).astype(np.float32), rng.normal(size=(37, 8)).astype(np.float32)
    expected = np.argsort(-(queries @ candidates.T), axis=1)[:, :10]
    monkeypatch.setattr(scann_tuning, "EXACT_SCORE_BYTES", 4 * 500 * 3)  # 3 queries at a time: 13 steps
    found = scann_tuning.exact_top_k(candidates, queries, 10)
    assert [set(row) for row in found] == [set(row) for row in expected]


def test_where_every_leaf_falls_short_the_tuning_re_ranks_more_candidates():
    rng = np.random.default_rng(3)
    candidates = rng.normal(size=(20_000, 32)).astype(np.float32)  # no clusters: quantised scores mislead
    queries = rng.normal(size=(200, 32)).astype(np.float32)
    few = {**exporter.scann_options(len(candidates)), "num_reordering_candidates": 60}
    tuned = scann_tuning.tune(candidates, queries, 50, 0.97, few)
    reorderings = [reordering for _, reordering, _ in tuned.tried]
    at_every_leaf = [at for leaves, reordering, at in tuned.tried if leaves == few["num_leaves"] and reordering == 60]
    assert at_every_leaf and at_every_leaf[0] < 0.97  # 60 re-ranked of 50 wanted: every leaf falls short
    assert reorderings == sorted(reorderings) and reorderings[-1] > 60 and tuned.recall >= 0.97
    assert tuned.options["num_reordering_candidates"] == reorderings[-1] <= 8 * 60
    assert scann_recall(candidates, queries, 50, tuned.options) >= 0.95  # a rebuild (its own k-means) too
