"""`remi prepare -> train -> evaluate` end to end on MovieLens-100K (RecBole atomic files)."""

import json
import os

import numpy as np
import pytest

from remi import cli
from remi_tf import model_directory
from tests.configs import REMI_SETTINGS


def test_prepare_train_evaluate_on_ml100k(datasets_dir, tmp_path, capsys):
    data, model, plots = (str(tmp_path / name) for name in ("data", "model", "plots"))
    inter = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    with open(inter) as stream:  # categories planted on the item ids (item id mod 5) for the diversity merge
        item_ids = sorted({line.split("\t")[1] for line in list(stream)[1:]})
    (tmp_path / "items.csv").write_text("item_id,genre\n" + "".join(f"{i},g{int(i) % 5}\n" for i in item_ids))
    assert cli.main(["prepare", "--input", inter, "--output", data, "--item-features", str(tmp_path / "items.csv")]) == 0
    manifest = json.load(open(os.path.join(data, "manifest.json")))
    assert manifest["input_events"] == 100_000
    # The planted categories are noise to the model: the item tower leaves them out (this test is about the merge).
    assert cli.main(["train", "--data", data, "--model-dir", model, "--quiet", "--set", *REMI_SETTINGS,
                     "max_steps=400", "--set", "eval_every=200", "--set", "max_history=50", "--set", "use_item_features=false"]) == 0
    assert cli.main(["evaluate", "--model-dir", model, "--split", "test", "--plots", plots]) == 0
    report = json.load(open(os.path.join(model, "eval-test.json")))
    assert report["num_users"] == manifest["splits"]["test"]["users"]
    # Retrieving 50 of the ~1,350 items at random would recall about 50 / 1,350 = 0.037 of the targets.
    assert report["recall@50"] > 3 * 50 / manifest["num_items"]
    assert len(report["routing_entropy"]) == 4
    assert sorted(os.listdir(plots)) == ["routing.png", "training_curves.png"]
    # --users N: a seeded sample, said in the report; a sample of every user is the whole split.
    sampled, everyone = str(tmp_path / "sampled.json"), str(tmp_path / "everyone.json")
    assert cli.main(["evaluate", "--model-dir", model, "--split", "test", "--users", "100", "--output", sampled]) == 0
    assert "a sample of 100 of" in capsys.readouterr().out
    sampled = json.load(open(sampled))
    assert sampled["num_users"] == 100 and sampled["sampled_users"]["of"] == report["num_users"]
    assert cli.main(["evaluate", "--model-dir", model, "--split", "test", "--output", everyone,
                     "--users", str(report["num_users"])]) == 0
    assert json.load(open(everyone))["recall@50"] == report["recall@50"]
    # The greedy category-aware merge trades some score order for more categories in the list.
    diverse = str(tmp_path / "diverse.json")
    assert cli.main(["evaluate", "--model-dir", model, "--split", "test", "--output", diverse,
                     "--set", "diversity_coef=1.0"]) == 0
    diverse = json.load(open(diverse))
    assert diverse["diversity_coef"] == 1.0 and diverse["num_users"] == report["num_users"]
    # Five categories in 50 items: at most 1 - 5 * C(10, 2) / C(50, 2) = 0.8163 of the pairs differ.
    assert report["category_diversity@50"] < diverse["category_diversity@50"] and \
        diverse["category_diversity@50"] > 0.81, (diverse, report)
    assert len(diverse["interest_share"]) == 4 and 0.0 <= diverse["interest_overlap"] <= 1.0
    # The exported model merges the same way with `export --set diversity_coef=C` (the one spelling of the key).
    import tensorflow as tf

    vocabulary = [line.split("\t")[0] for line in open(os.path.join(data, "items.tsv"))]
    histories = tf.constant([vocabulary[start:start + 10] for start in range(0, 200, 10)])

    def served_diversity(name, *options):
        assert cli.main(["export", "--model-dir", model, "--output", str(tmp_path / "export"), "--name", name,
                         "--index", "brute-force", *options]) == 0
        served = tf.saved_model.load(str(tmp_path / "export" / name / "1")).signatures["serving_default"]
        lists = served(history=histories)["item_ids"].numpy().astype(str)
        genres = np.array([[int(item) % 5 for item in row] for row in lists])
        pairs = genres.shape[1] * (genres.shape[1] - 1)
        return np.mean([(row[:, None] != row[None, :]).sum() / pairs for row in genres])

    plain, diverse_served = served_diversity("plain"), served_diversity("diverse", "--set", "diversity_coef=1.0")
    assert plain < diverse_served and diverse_served > 0.81, (plain, diverse_served)


@pytest.mark.parametrize("users", ["0", "-3"])
def test_evaluate_refuses_a_sample_of_no_users_naming_the_option(tmp_path, capsys, users):
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["evaluate", "--model-dir", str(tmp_path), "--users", users])
    assert exit_status.value.code == 2 and "argument --users: expected an integer >= 1" in capsys.readouterr().err


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path), "--model-dir", str(tmp_path / "m"),
                     "--set", "num_interests=zero"]) == 2
    assert "num_interests" in capsys.readouterr().err


def test_auto_runner_is_in_process_but_for_beam_options_and_large_time_splits(tmp_path, monkeypatch):
    from remi_tf.pipelines import local

    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n" + "u,i,1\n" * 100)
    assert cli.choose_runner("auto", [str(log)], []) == "in-process"
    assert cli.choose_runner("auto", [str(log)], [], time_split=True) == "in-process"
    assert cli.choose_runner("auto", [str(log)], ["--direct_num_workers=2"]) == "DirectRunner"  # Beam options
    monkeypatch.setattr(local, "IN_MEMORY_MAX_EVENTS", 99)  # the estimate reads 100 events
    assert cli.choose_runner("auto", [str(log)], []) == "in-process"  # the user split spills to disk instead
    assert cli.choose_runner("auto", [str(log)], [], time_split=True) == "DirectRunner"
    assert cli.choose_runner("FlinkRunner", [str(log)], []) == "FlinkRunner"
    assert cli.choose_runner("in-process", [str(log)], []) == "in-process"


def test_prepare_with_beams_local_runner_writes_what_the_in_process_path_writes(datasets_dir, tmp_path):
    inter = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    for runner in ("in-process", "DirectRunner"):
        assert cli.main(["prepare", "--input", inter, "--output", str(tmp_path / runner), "--runner", runner,
                         "--num-shards", "2", "--user-buckets", "3"]) == 0
    for name in sorted(os.listdir(tmp_path / "in-process")):
        if name != "manifest.json":
            assert (tmp_path / "in-process" / name).read_bytes() == (tmp_path / "DirectRunner" / name).read_bytes()


def test_train_reads_a_data_directory_on_another_file_system(datasets_dir, tmp_path):
    import tensorflow as tf

    data, model = f"ram://{tmp_path.name}/data", str(tmp_path / "model")  # ram:// stands in for gs://, hdfs://
    inter = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    with open(inter) as stream:  # categories planted on the item ids (item id mod 5) for the diversity merge
        item_ids = sorted({line.split("\t")[1] for line in list(stream)[1:]})
    (tmp_path / "items.csv").write_text("item_id,genre\n" + "".join(f"{i},g{int(i) % 5}\n" for i in item_ids))
    assert cli.main(["prepare", "--input", inter, "--output", data, "--item-features", str(tmp_path / "items.csv")]) == 0
    assert cli.main(["train", "--data", data, "--model-dir", model, "--quiet", "--set", "max_steps=10",
                     "--set", "eval_every=10"]) == 0
    assert json.load(open(os.path.join(model, "run.json")))["data_dir"] == data
    assert open(os.path.join(model, "items.tsv"), "rb").read() == tf.io.gfile.GFile(f"{data}/items.tsv", "rb").read()
    manifest = json.loads(tf.io.gfile.GFile(f"{data}/manifest.json").read())
    (evaluation,) = json.load(open(os.path.join(model, "validation.json")))["evaluations"]
    assert evaluation["step"] == 10  # trained on the remote shards
    assert cli.main(["evaluate", "--model-dir", model, "--split", "valid"]) == 0  # reads the remote data again
    report = json.load(open(os.path.join(model, "eval-valid.json")))
    assert report["num_users"] == manifest["splits"]["valid"]["users"]  # every remote valid user
    assert report["recall@50"] == pytest.approx(evaluation["val_recall@50"], abs=1e-9)
    assert open(os.path.join(model, "item_features.tsv")).read() == \
        tf.io.gfile.GFile(f"{data}/item_features.tsv").read()  # the remote item features were read


@pytest.mark.parametrize("arguments, expected", [
    (["trian", "--data", "d"], "invalid choice: 'trian' (did you mean train?)"),
    (["prepare", "--input", "x", "--output", "y", "--format", "tvs"], "invalid choice: 'tvs' (did you mean tsv?)"),
    (["export", "--model-dir", "m", "--output", "o", "--index", "brute_force"],
     "invalid choice: 'brute_force' (did you mean brute-force?)"),
    (["train", "--data", "d", "--model-dir", "m", "--strategy", "multiworker"],
     "invalid choice: 'multiworker' (did you mean multi-worker?)"),
    (["train", "--data", "d", "--model-dir", "m", "--quite"], "unrecognized arguments: --quite (did you mean --quiet?)"),
])
def test_a_misspelt_choice_names_the_closest(capsys, arguments, expected):
    """Issue 40 item 6: a choice option's value (and the command's name) that is close to a choice names it."""
    with pytest.raises(SystemExit) as exit_status:
        cli.main(arguments)
    error = capsys.readouterr().err
    assert exit_status.value.code == 2 and expected in error, error


@pytest.mark.parametrize("options, named", [
    (["--sedd", "5"], "--sedd (did you mean --seed?)"),  # not ours, not Beam's: Beam would only warn and drop it
    (["--overwrit"], "--overwrit (did you mean --overwrite?)"),  # no prefix matching: it must not mean --overwrite
    (["--runner", "DirectRunner", "--direct_num_workers=1", "--sedd", "5"], "--sedd (did you mean --seed?)"),
])
def test_prepare_rejects_unknown_options_by_name(tmp_path, capsys, options, named):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n" + "u,i,1\n" * 10)
    assert cli.main(["prepare", "--input", str(log), "--output", str(tmp_path / "out"), *options]) == 2
    error = capsys.readouterr().err
    assert named in error and "unknown option" in error, error
    assert not (tmp_path / "out").exists()


def test_the_same_command_trains_the_same_model_and_another_seed_another(tmp_path):
    from tests.remi_tf.test_warm_start import prepared

    data = prepared(tmp_path, "log", range(0, 60), seed=0)

    def final_weights(name: str, seed: int):
        model_dir = str(tmp_path / name)
        assert cli.main(["train", "--data", data, "--model-dir", model_dir, "--quiet", "--set", "embedding_dim=8",
                         "max_steps=20", "eval_every=20", "batch_size=16", "steps_per_execution=5",
                         f"seed={seed}"]) == 0
        return model_directory.load_trained(model_dir).model.get_weights(), open(os.path.join(model_dir, "history.csv")).read()

    first, again, other = final_weights("a", 1), final_weights("b", 1), final_weights("c", 2)
    assert first[1] == again[1] and first[1] != other[1]  # the logged losses and validation metrics
    for mine, same, different in zip(first[0], again[0], other[0]):
        np.testing.assert_array_equal(mine, same)
    assert any(not np.array_equal(mine, different) for mine, different in zip(first[0], other[0]))


@pytest.mark.parametrize("server", ["http://127.0.0.1:8500", "https://localhost:8500"])
def test_lookup_over_grpc_refuses_a_url_and_says_what_to_pass(server, capsys):
    assert cli.main(["lookup", "--grpc", "--server", server, "--history", "item2"]) == 2
    error = capsys.readouterr().err
    assert f"--grpc takes HOST:PORT (TF Serving's gRPC port, 8500 by default), not the URL {server!r}" in error, error
    assert "drop --grpc" in error


@pytest.mark.parametrize("use_grpc", [False, True])
def test_lookup_of_a_refused_connection_says_how_to_start_the_server(use_grpc, capsys):
    from remi_tf import local_cluster

    (port,) = local_cluster.free_ports(1)  # nothing listens there
    server = f"127.0.0.1:{port}" if use_grpc else f"http://127.0.0.1:{port}"
    assert cli.main(["lookup", "--server", server, "--history", "item2"] + (["--grpc"] if use_grpc else [])) == 1
    error = capsys.readouterr().err
    assert f"no server answers at {server}" in error, error
    assert "start one with `remi serve --export-dir EXPORT_DIR`" in error and "--wait SECONDS" in error, error
