"""Careless use of the command line (issue 25): a finished model directory is left byte for byte as it was,
max_steps is trained exactly, non-finite and out-of-range values and mismatched data are refused before
anything is written."""

import json
import os
import shutil

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
    summaries = tensorboard_scalars(model_dir / "logs")  # TensorBoard at the global step, not the epoch index
    assert [step for step, _ in summaries["val_recall@50"]] == [20, 40, 50]
    assert [step for step, _ in summaries["train_loss"]] == [20, 40, 50]
    assert [value for _, value in summaries["learning_rate"]] == pytest.approx([3e-3] * 3)  # the default, constant
    assert [step for step, _ in summaries["routing"]] == [20, 40, 50]  # the routing heatmaps, a PNG each
    assert all(value[:8] == b"\x89PNG\r\n\x1a\n" for _, value in summaries["routing"])
    validation = json.load(open(model_dir / "validation.json"))["evaluations"]
    assert [value for _, value in summaries["val_recall@50"]] == pytest.approx([e["val_recall@50"] for e in validation])


def tensorboard_scalars(log_dir):
    """{tag: [(step, value)]} of every event file under log_dir (an image's value: its encoded bytes)."""
    import tensorflow as tf

    scalars = {}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                scalars.setdefault(value.tag, []).append(
                    (event.step, tensor.flat[2] if tensor.dtype == object else float(tensor)))  # image: [w, h, png]
    return scalars


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
    ("readout_power=-1", "'readout_power' must be >= 0"),
    ("interest_scoring=best", "'interest_scoring' must be one of 'hard', 'max'"),
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
    for version in ("0", "-1"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["export", "--model-dir", str(small_run / "model"), "--output", str(tmp_path / "e"),
                      "--version", version])
        assert exit_info.value.code == 2
        assert f"argument --version: expected an integer >= 1, got {version}" in capsys.readouterr().err
        assert not (tmp_path / "e").exists()
    other = synthetic.prepared_clusters(tmp_path, "other", "w", num_users=200, num_clusters=5, items_per_cluster=10,
                                        clusters_per_user=2, length=20, seed=5)
    assert cli.main(["evaluate", "--model-dir", str(small_run / "model"), "--data", other,
                     "--output", str(tmp_path / "r.json")]) == 2
    assert "lists other items than the model's vocabulary" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_evaluate_plots_name_the_history_items_and_refuse_names_without_plots(small_run, tmp_path, capsys,
                                                                               monkeypatch):
    import matplotlib.figure

    from remi_tf import input as input_lib

    model = str(small_run / "model")
    vocabulary = input_lib.read_vocabulary(model)
    (tmp_path / "names.csv").write_text("item_id,title\n" + "".join(f"{item},title {item}\n" for item in vocabulary))
    arguments = ["evaluate", "--model-dir", model, "--output", str(tmp_path / "r.json"), "--item-names",
                 str(tmp_path / "names.csv")]
    assert cli.main(arguments) == 2
    assert "--item-names names the history items of the routing heatmaps: give --plots DIR too" in \
        capsys.readouterr().err
    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, *args, **kwargs: (
        figures.append(figure), save(figure, *args, **kwargs))[1])
    assert cli.main([*arguments, "--plots", str(tmp_path / "plots")]) == 0
    _, histories, _ = input_lib.load_evaluation_split(str(small_run / "data"), "test", vocabulary, 20)
    first_user = figures[0].axes[0]  # routing.png's first panel: the split's first user
    assert [label.get_text() for label in first_user.get_xticklabels()] == [
        f"title {vocabulary[index - 2]}" for index in histories[0] if index >= 2]


def test_a_diverged_run_fails_instead_of_finishing(small_run, tmp_path, capsys):
    """A learning rate of 1e30 sends the loss to NaN or infinity in the first steps: the run stops there with
    an error naming the fix, and no evaluation of the diverged weights is recorded as the best."""
    model_dir = tmp_path / "model"
    assert cli.main(["train", "--data", str(small_run / "data"), "--model-dir", str(model_dir), "--quiet",
                     "--set", "max_steps=60", "eval_every=20", "embedding_dim=8", "steps_per_execution=10",
                     "learning_rate=1e30"]) == 1  # a failed run, not a usage error
    assert "training diverged" in capsys.readouterr().err
    state = json.load(open(model_dir / "validation.json")) if (model_dir / "validation.json").exists() else None
    assert state is None or all(e["step"] < 60 for e in state["evaluations"])


def test_a_warm_start_from_the_runs_own_directory_is_refused(small_run, tmp_path, capsys):
    """Its best/ would be overwritten by the child's evaluations (issue 25, item 5)."""
    model_dir = tmp_path / "model"
    shutil.copytree(small_run / "model", model_dir)
    before = directory_bytes(model_dir)
    assert cli.main(["train", "--data", str(small_run / "data"), "--model-dir", str(model_dir), "--quiet",
                     "--warm-start", str(model_dir), "--set", "max_steps=80", "embedding_dim=8",
                     "steps_per_execution=20"]) == 2
    assert f"--warm-start {model_dir} is this run's own --model-dir" in capsys.readouterr().err
    assert directory_bytes(model_dir) == before


def test_more_steps_on_a_run_without_a_backup_are_refused_with_the_way_to_continue(small_run, tmp_path, capsys):
    """small_run's backup (taken at its evaluation) deleted by hand: more steps would start again at step 0
    and append a second history (item 6), so the run is refused, naming --warm-start."""
    model_dir = tmp_path / "model"
    shutil.copytree(small_run / "model", model_dir)
    shutil.rmtree(model_dir / "backup")
    before = directory_bytes(model_dir)
    assert cli.main(["train", "--data", str(small_run / "data"), "--model-dir", str(model_dir), "--quiet", "--set",
                     "max_steps=80", "embedding_dim=8", "steps_per_execution=20"]) == 2
    assert (f"holds a run evaluated up to step 60 but no backup/ to continue it from, so it would start again at "
            f"step 0: train into a new --model-dir, with --warm-start {model_dir}") in capsys.readouterr().err
    assert directory_bytes(model_dir) == before


def test_more_steps_on_a_run_with_its_backup_continue_from_it(small_run, tmp_path):
    """With a backup at its last step, raising max_steps trains on from there: each evaluation and each
    history row once."""
    model_dir = tmp_path / "model"
    arguments = ["train", "--data", str(small_run / "data"), "--model-dir", str(model_dir), "--quiet", "--set",
                 "eval_every=20", "checkpoint_every=20", "embedding_dim=8", "steps_per_execution=10"]
    assert cli.main([*arguments, "max_steps=40"]) == 0
    assert (model_dir / "backup" / "chief" / "checkpoint").exists()
    assert cli.main([*arguments, "max_steps=60"]) == 0
    assert [e["step"] for e in json.load(open(model_dir / "validation.json"))["evaluations"]] == [20, 40, 60]
    epochs = [row.split(",")[0] for row in open(model_dir / "history.csv").read().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]
