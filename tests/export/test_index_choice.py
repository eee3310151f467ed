"""`remi export --index auto` (the default): exact search below the crossover catalogue size recorded in
BENCHMARKS.md 6.2 (exporter.AUTO_SCANN_MIN_ITEMS), the ScaNN model with the exact one beside it from there."""

import json
import os

import pytest

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


@pytest.mark.parametrize("crossover, models, stock", [
    (10**9, ["remi", "remi-query"], ["remi", "remi-query"]),  # below the crossover: <name> is exact
    (1, ["remi", "remi-exact", "remi-query"], ["remi-query", "remi-exact"])])  # from it: ScaNN <name> + exact
def test_the_default_export_follows_the_choice(trained_model_dir, tmp_path, monkeypatch, crossover, models, stock):
    monkeypatch.setattr(exporter, "AUTO_SCANN_MIN_ITEMS", crossover)
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
