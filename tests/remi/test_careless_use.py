"""Careless use of the command line (issue 25): a finished model directory is left byte for byte as it was,
max_steps is trained exactly, non-finite and out-of-range values and mismatched data are refused before
anything is written."""

import json
import os

import pytest

from remi import cli
from tests import synthetic


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("careless")
    synthetic.prepared_clusters(root, num_users=300, num_clusters=10, items_per_cluster=10, clusters_per_user=2,
                                length=20, seed=3)
    # eval_every 1,000 > max_steps 60: exactly 60 steps, one evaluation at the end
    assert cli.main(["train", "--data", str(root / "data"), "--model-dir", str(root / "model"), "--quiet",
                     "--set", "max_steps=60", "embedding_dim=8", "steps_per_execution=20"]) == 0
    return root


def directory_bytes(path):
    return {os.path.relpath(os.path.join(folder, name), path): open(os.path.join(folder, name), "rb").read()
            for folder, _, names in os.walk(path) for name in names}


def test_max_steps_below_eval_every_trains_exactly_max_steps(small_run):
    validation = json.load(open(small_run / "model" / "validation.json"))
    assert [e["step"] for e in validation["evaluations"]] == [60] and validation["best_step"] == 60


def test_a_shorter_last_epoch_ends_at_max_steps(small_run, tmp_path):
    model_dir = tmp_path / "model"
    assert cli.main(["train", "--data", str(small_run / "data"), "--model-dir", str(model_dir), "--quiet",
                     "--set", "max_steps=50", "eval_every=20", "embedding_dim=8", "steps_per_execution=10"]) == 0
    assert [e["step"] for e in json.load(open(model_dir / "validation.json"))["evaluations"]] == [20, 40, 50]
    assert sum(1 for _ in open(model_dir / "history.csv")) == 1 + 3  # one row per evaluation


def test_a_finished_model_directory_is_left_as_it_was(small_run, tmp_path):
    other = synthetic.prepared_clusters(tmp_path, "other", "v", num_users=200, num_clusters=5, items_per_cluster=10,
                                        clusters_per_user=2, length=20, seed=4)
    before = directory_bytes(small_run / "model")
    assert cli.main(["train", "--data", other, "--model-dir", str(small_run / "model"), "--quiet",
                     "--set", "max_steps=60", "embedding_dim=16"]) == 0
    assert directory_bytes(small_run / "model") == before


@pytest.mark.parametrize("setting,expected", [
    ("learning_rate=nan", "'learning_rate' must be a finite number"),
    ("temperature=.inf", "'temperature' must be a finite number"),
    ("interest_temperature=0", "'interest_temperature' must be > 0"),
    ("interest_scoring=best", "'interest_scoring' must be one of ('hard', 'max', 'logsumexp')"),
])
def test_bad_training_values_are_refused_before_writing(small_run, tmp_path, capsys, setting, expected):
    model_dir = tmp_path / "model"
    assert cli.main(["train", "--data", str(small_run / "data"), "--model-dir", str(model_dir), "--set", setting]) == 2
    assert expected in capsys.readouterr().err
    assert not model_dir.exists()


def test_exported_directories_are_readable_by_other_users(small_run, tmp_path):
    """Directories 0755 and files 0644 under umask 022, so that a TF Serving process of another user reads them."""
    previous = os.umask(0o022)
    try:
        assert cli.main(["export", "--model-dir", str(small_run / "model"), "--output", str(tmp_path / "e"),
                         "--index", "brute-force", "--k", "5"]) == 0
    finally:
        os.umask(previous)
    for folder, _, names in os.walk(tmp_path / "e"):
        assert os.stat(folder).st_mode & 0o777 == 0o755, folder
        for name in names:
            assert os.stat(os.path.join(folder, name)).st_mode & 0o777 == 0o644, os.path.join(folder, name)


def test_export_version_and_evaluation_data_are_checked(small_run, tmp_path, capsys):
    assert cli.main(["export", "--model-dir", str(small_run / "model"), "--output", str(tmp_path / "e"),
                     "--version", "0"]) == 2
    assert "--version must be >= 1" in capsys.readouterr().err and not (tmp_path / "e").exists()
    other = synthetic.prepared_clusters(tmp_path, "other", "w", num_users=200, num_clusters=5, items_per_cluster=10,
                                        clusters_per_user=2, length=20, seed=5)
    assert cli.main(["evaluate", "--model-dir", str(small_run / "model"), "--data", other,
                     "--output", str(tmp_path / "r.json")]) == 2
    assert "lists other items than the model's vocabulary" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_diverged_run_fails_instead_of_finishing(small_run, tmp_path, capsys):
    """A learning rate of 1e30 sends the loss to NaN or infinity in the first steps: the run stops there with
    an error naming the fix, and no evaluation of the diverged weights is recorded as the best."""
    model_dir = tmp_path / "model"
    assert cli.main(["train", "--data", str(small_run / "data"), "--model-dir", str(model_dir), "--quiet",
                     "--set", "max_steps=60", "eval_every=20", "embedding_dim=8", "steps_per_execution=10",
                     "learning_rate=1e30"]) == 2
    assert "training diverged" in capsys.readouterr().err
    state = json.load(open(model_dir / "validation.json")) if (model_dir / "validation.json").exists() else None
    assert state is None or all(e["step"] < 60 for e in state["evaluations"])
