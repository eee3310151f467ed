"""`remi prepare -> train -> evaluate` end to end on MovieLens-100K (RecBole atomic files)."""

import json
import os

from remi_tf import cli


def test_prepare_train_evaluate_on_ml100k(datasets_dir, tmp_path):
    data, model, plots = (str(tmp_path / name) for name in ("data", "model", "plots"))
    inter = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    assert cli.main(["prepare", "--input", inter, "--output", data]) == 0
    manifest = json.load(open(os.path.join(data, "manifest.json")))
    assert manifest["input_events"] == 100_000
    assert cli.main(["train", "--data", data, "--model-dir", model, "--quiet", "--set", "max_steps=400",
                     "--set", "eval_every=200", "--set", "max_history=50"]) == 0
    assert cli.main(["evaluate", "--model-dir", model, "--split", "test", "--plots", plots]) == 0
    report = json.load(open(os.path.join(model, "eval-test.json")))
    assert report["num_users"] == manifest["splits"]["test"]["users"]
    # Retrieving 50 of the ~1,350 items at random would recall about 50 / 1,350 = 0.037 of the targets.
    assert report["recall@50"] > 3 * 50 / manifest["num_items"]
    assert report["hitrate@50"] >= report["hitrate@20"] and report["recall@50"] >= report["recall@20"]
    assert len(report["routing_entropy"]) == 4
    assert sorted(os.listdir(plots)) == ["routing.png", "training_curves.png"]


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path), "--model-dir", str(tmp_path / "m"),
                     "--set", "num_interests=zero"]) == 2
    assert "num_interests" in capsys.readouterr().err
