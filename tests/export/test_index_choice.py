"""`remi export --index auto` (the default): exact search below the crossover catalogue size recorded in
BENCHMARKS.md 6.2 (exporter.AUTO_SCANN_MIN_ITEMS); from there the ScaNN model with the exact one beside it where
the tuned ScaNN search is the faster on held-out queries, else exact."""

import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from remi_tf.export import exporter, serving_layout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_auto_picks_by_the_recorded_crossover():
    crossover = exporter.AUTO_SCANN_MIN_ITEMS
    assert exporter.choose_index(1) == "brute-force"
    assert exporter.choose_index(crossover - 1) == "brute-force"
    assert exporter.choose_index(crossover) == "both"
    assert exporter.choose_index(1_000_000) == "both"
    # the figure users read is the one the code uses
    written = f"{crossover:,}"
    for path in ("BENCHMARKS.md", os.path.join("docs", "serving.md")):
        assert f"below {written} items" in open(os.path.join(ROOT, path), encoding="utf-8").read(), path


@pytest.mark.parametrize("crossover, timed, models, stock", [
    (10**9, None, ["remi", "remi-query"], ["remi", "remi-query"]),  # below the crossover: <name> is exact, untimed
    (1, {"scann": 1.0, "brute-force": 2.0}, ["remi", "remi-exact", "remi-query"], ["remi-query", "remi-exact"]),
    (1, {"scann": 2.0, "brute-force": 1.0}, ["remi", "remi-query"], ["remi", "remi-query"])])  # ScaNN slower: exact
def test_the_default_export_follows_the_choice(trained_model_dir, tmp_path, monkeypatch, crossover, timed, models,
                                               stock):
    monkeypatch.setattr(exporter, "AUTO_SCANN_MIN_ITEMS", crossover)
    measured = []

    def search_milliseconds(searches, queries):
        measured.append((sorted(searches), queries.shape))
        return timed

    monkeypatch.setattr(exporter, "search_milliseconds", search_milliseconds)
    out = str(tmp_path / "e")
    published = exporter.export(trained_model_dir, out, k=5)  # index left at its default
    assert sorted(published) == models
    assert serving_layout.configured_models(out, serving_layout.MODELS_CONFIG) == stock
    scann = "remi-exact" in models
    assert os.path.exists(os.path.join(out, serving_layout.SCANN_MODELS_CONFIG)) == scann
    tuning = os.path.join(published["remi"], exporter.TUNING_FILE)
    assert os.path.exists(tuning) == scann  # only a ScaNN model is tuned
    if scann:
        assert json.load(open(tuning))["recall"] >= 0.95
    choice_file = os.path.join(published["remi"], exporter.INDEX_CHOICE_FILE)
    assert os.path.exists(choice_file) == (timed is not None)
    if timed is not None:
        choice = json.load(open(choice_file))
        assert choice["milliseconds"] == timed and choice["index"] == ("both" if scann else "brute-force")
        assert choice["scann_recall"] >= 0.95
        # both searches timed on the interest vectors of one full batch of held-out histories (or all there are)
        (names, shape), = measured
        assert names == ["brute-force", "scann"] and shape[0] <= exporter.TIMED_HISTORIES * 4 and shape[1] > 0
        assert not os.path.exists(os.path.join(out, "remi-exact")) or scann


def test_the_searches_are_timed_alternately_after_a_warm_up_and_compared_by_median():
    calls = []

    class Search:
        def __init__(self, name, delay):
            self.name, self.delay = name, delay

        def __call__(self, queries):
            calls.append(self.name)
            time.sleep(self.delay)
            return tf.zeros([queries.shape[0], 3]), tf.zeros([queries.shape[0], 3], tf.int64)

    milliseconds = exporter.search_milliseconds({"scann": Search("scann", 0.02), "brute-force": Search("exact", 0.002)},
                                                np.zeros([8, 4], np.float32), calls=3)
    assert calls == ["scann", "exact"] * 4  # a warm-up call each, then alternating
    assert milliseconds["scann"] >= 20 and 2 <= milliseconds["brute-force"] < 20
    assert exporter.measured_choice(milliseconds) == "brute-force"
    assert exporter.measured_choice({"scann": 1.0, "brute-force": 1.5}) == "both"
    assert exporter.measured_choice({"scann": 1.5, "brute-force": 1.5}) == "brute-force"  # a tie: the stock-loadable one


def test_a_measured_choice_serves_what_its_recorded_timings_say(trained_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "AUTO_SCANN_MIN_ITEMS", 1)  # the small catalogue is timed as a large one would be
    published = exporter.export(trained_model_dir, str(tmp_path / "e"), k=5)
    choice = json.load(open(os.path.join(published["remi"], exporter.INDEX_CHOICE_FILE)))
    assert all(value > 0 for value in choice["milliseconds"].values())
    assert choice["index"] == exporter.measured_choice(choice["milliseconds"])
    assert ("remi-exact" in published) == (choice["index"] == "both")
