"""Issue 40 item 5: each command makes the checks that need no data before its first expensive step. Each
test makes a command refuse, with the expensive steps replaced by ones that fail the test when reached:
opening a log (or estimating its size), reading a feature CSV, building a trained model, loading a served
one, reading the training data."""

import json
import os
import socket

import pytest

from remi import cli
from remi_tf import config as config_lib
from remi_tf import input as input_lib
from remi_tf import model_directory
from remi_tf.export import registry
from remi_tf.pipelines import feature_csvs, readers, text_logs


@pytest.fixture
def reached(monkeypatch):
    """The expensive steps reached (each also fails its command, so a late refusal cannot pass)."""
    steps = []
    for owner, name in ((text_logs, "_open_text"), (readers, "estimate_events"), (feature_csvs, "read_feature_csv"),
                        (model_directory, "load_trained"), (registry.ModelRegistry, "refresh"),
                        (input_lib, "training_inputs")):
        def expensive(*args, step=f"{owner.__name__}.{name}", **kwargs):
            steps.append(step)
            raise AssertionError(f"{step} reached before the refusal")
        monkeypatch.setattr(owner, name, expensive)
    return steps


def trained_looking(model_dir):
    """The files of a model directory that the checks read (the weights are never reached)."""
    os.makedirs(model_dir)
    config_lib.save(config_lib.RemiConfig(), os.path.join(model_dir, "config.yaml"))
    open(os.path.join(model_dir, "items.tsv"), "w").write("".join(f"item{i}\t1\n" for i in range(60)))
    json.dump({"data_dir": os.path.dirname(model_dir)}, open(os.path.join(model_dir, "run.json"), "w"))
    return model_dir


TIME_SPLIT = ["--split", "time", "--valid-from", "2", "--test-from", "3"]


@pytest.mark.parametrize("options", [[], ["--runner", "DirectRunner"], TIME_SPLIT, [*TIME_SPLIT, "--runner",
                                     "DirectRunner"], ["--item-features", "ITEMS"]],
                         ids=["in-process", "beam", "time-split", "time-split-beam", "item-features"])
def test_prepare_into_an_existing_output_is_refused_before_any_input_is_read(tmp_path, capsys, reached, options):
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,i,1\n")
    (tmp_path / "items.csv").write_text("item_id,genre\ni,g\n")
    (tmp_path / "out").mkdir()
    options = [str(tmp_path / "items.csv") if option == "ITEMS" else option for option in options]
    assert cli.main(["prepare", "--input", str(tmp_path / "log.csv"), "--output", str(tmp_path / "out"),
                     *options]) == 2
    assert "out already exists; remove it or pass --overwrite" in capsys.readouterr().err and reached == []


def test_convert_into_an_existing_output_is_refused_before_the_log_is_read(tmp_path, capsys, reached):
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,i,1\n")
    (tmp_path / "out").mkdir()
    assert cli.main(["convert", "--input", str(tmp_path / "log.csv"), "--output", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err and reached == []


def test_train_refuses_a_misspelt_key_before_the_data_is_read(tmp_path, capsys, reached):
    assert cli.main(["train", "--data", str(tmp_path), "--model-dir", str(tmp_path / "model"), "--set",
                     "max_step=10"]) == 2
    assert "did you mean max_steps?" in capsys.readouterr().err and reached == []


def test_evaluate_refuses_a_bad_setting_before_the_model_is_loaded(tmp_path, capsys, reached):
    model_dir = trained_looking(str(tmp_path / "model"))
    assert cli.main(["evaluate", "--model-dir", model_dir, "--set", "eval_batch_size=0"]) == 2
    assert "'eval_batch_size' must be >= 1, got 0" in capsys.readouterr().err and reached == []


def test_evaluate_names_the_closest_evaluation_key_before_the_model_is_loaded(tmp_path, capsys, reached):
    model_dir = trained_looking(str(tmp_path / "model"))
    assert cli.main(["evaluate", "--model-dir", model_dir, "--set", "diversity_coeff=0.1"]) == 2
    assert "--set diversity_coeff (did you mean diversity_coef?): not an evaluation-time key" in capsys.readouterr().err
    assert reached == []


def test_export_to_a_taken_version_is_refused_before_the_model_is_loaded(tmp_path, capsys, reached):
    model_dir = trained_looking(str(tmp_path / "model"))
    os.makedirs(tmp_path / "export" / "remi" / "1")
    assert cli.main(["export", "--model-dir", model_dir, "--output", str(tmp_path / "export"), "--version", "1",
                     "--index", "brute-force"]) == 2
    assert "remi/1 already exist(s); choose another --version" in capsys.readouterr().err and reached == []


@pytest.mark.parametrize("busy_option", ["--port", "--grpc-port"])
def test_serve_on_a_port_in_use_is_refused_before_any_model_loads(tmp_path, capsys, reached, busy_option):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = {"--port": "0", "--grpc-port": "0", busy_option: str(busy.getsockname()[1])}
        assert cli.main(["serve", "--export-dir", str(tmp_path), *[part for item in ports.items()
                                                                    for part in item]]) == 1
    assert f"choose another with {busy_option}" in capsys.readouterr().err and reached == []
