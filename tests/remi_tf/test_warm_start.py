"""Warm start: on the same vocabulary the warm-started model scores exactly like its parent; on a vocabulary
with added and removed items every carried row is the parent's row of the same id; the streaming logQ
state comes along; bad parents are refused before anything is written."""

import json
import os
import re

import numpy as np
import pytest

from remi import cli
from remi_tf import config as config_lib
from remi_tf import input as input_lib
from remi_tf import item_index, model_directory, models, warm_start
from tests.pipelines.test_local import write_log
from tests.configs import REMI_SETTINGS

SETTINGS = [*REMI_SETTINGS, "embedding_dim=8", "num_interests=2", "max_history=5", "batch_size=32", "max_steps=20", "eval_every=10",
            "logq_correction=streaming", "logq_buckets=4096", "warm_start_shrink=1.0"]


def prepared(tmp_path, name: str, items: range, seed: int) -> str:
    rng = np.random.default_rng(seed)
    rows = [(f"u{user}", f"i{rng.choice(items)}", t) for user in range(150) for t in range(12)]
    write_log(tmp_path / f"{name}.csv", rows)
    assert cli.main(["prepare", "--input", str(tmp_path / f"{name}.csv"), "--output", str(tmp_path / name)]) == 0
    return str(tmp_path / name)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    data = prepared(root, "old", range(0, 60), seed=0)
    assert cli.main(["train", "--data", data, "--model-dir", str(root / "parent"), "--quiet",
                     "--set", *SETTINGS]) == 0
    return root, str(root / "parent")


def fresh_model(data: str, *overrides: str) -> tuple[models.RemiModel, list[str]]:
    vocabulary = input_lib.read_vocabulary(data)
    config = config_lib.load(overrides=[*SETTINGS, *overrides])
    return models.RemiModel(config, len(vocabulary), vocabulary=vocabulary), vocabulary


def test_same_vocabulary_scores_exactly_like_the_parent(parent):
    root, parent_dir = parent
    trained = model_directory.load_trained(parent_dir)
    model, vocabulary = fresh_model(str(root / "old"))
    carried = warm_start.warm_start(model, vocabulary, parent_dir)
    assert carried == warm_start.CarriedOver(len(vocabulary), 0, 0, True)
    histories = np.random.default_rng(1).integers(0, len(vocabulary) + 2, size=(16, 5))
    interests, routing = model.query_tower(histories)
    parent_interests, parent_routing = trained.model.query_tower(histories)
    np.testing.assert_array_equal(interests.numpy(), parent_interests.numpy())
    np.testing.assert_array_equal(routing.numpy(), parent_routing.numpy())
    np.testing.assert_array_equal(model.corpus.embeddings().numpy(), trained.model.corpus.embeddings().numpy())
    for weight, parent_weight in zip(model.frequency_estimator.weights, trained.model.frequency_estimator.weights):
        np.testing.assert_array_equal(weight.numpy(), parent_weight.numpy())
    assert trained.model.frequency_estimator.step.numpy() > 0  # the parent's state is not the initial one


def test_a_sasrec_parent_carries_its_encoder(tmp_path):
    """With encoder "sasrec" the encoder's blocks come along with the table: the same scores as the parent."""
    sasrec = ["encoder=sasrec", "routing=last_position", "num_interests=1", "training_positions=every",
              "encoder_blocks=1"]
    data = prepared(tmp_path, "old", range(0, 60), seed=0)
    assert cli.main(["train", "--data", data, "--model-dir", str(tmp_path / "parent"), "--quiet",
                     "--set", *SETTINGS, *sasrec]) == 0
    trained = model_directory.load_trained(str(tmp_path / "parent"))
    model, vocabulary = fresh_model(data, *sasrec)
    warm_start.warm_start(model, vocabulary, str(tmp_path / "parent"))
    histories = np.random.default_rng(1).integers(0, len(vocabulary) + 2, size=(16, 5))
    np.testing.assert_array_equal(model.interests(histories)[0].numpy(), trained.model.interests(histories)[0].numpy())
    with pytest.raises(ValueError, match="encoder 'sasrec' \\(this run: 'embeddings'\\)"):
        warm_start.check_parent(str(tmp_path / "parent"), config_lib.load(overrides=SETTINGS))


@pytest.mark.parametrize("shrink", [1.0, 0.3])
def test_changed_vocabulary_carries_rows_by_item_id(parent, tmp_path, shrink):
    root, parent_dir = parent
    trained = model_directory.load_trained(parent_dir)
    data = prepared(tmp_path, "new", range(15, 75), seed=1)  # i0..i14 left, i60..i74 are new
    model, vocabulary = fresh_model(data, f"warm_start_shrink={shrink}")
    carried = warm_start.warm_start(model, vocabulary, parent_dir)
    parent_table = trained.model.item_embedding.embeddings.numpy()
    table = model.item_embedding.embeddings.numpy()
    parent_row = {item: row for row, item in enumerate(trained.vocabulary, start=item_index.FIRST_ITEM_INDEX)}
    shared = [item for item in vocabulary if item in parent_row]
    assert sorted(shared) == sorted(f"i{i}" for i in range(15, 60))
    assert carried == warm_start.CarriedOver(45, 15, 15, True)
    for row, item in enumerate(vocabulary, start=item_index.FIRST_ITEM_INDEX):
        if item in parent_row:
            np.testing.assert_allclose(table[row], shrink * parent_table[parent_row[item]], rtol=1e-6, err_msg=item)
        else:  # a new item: a fresh row, none of the parent's
            assert not np.isclose(shrink * parent_table, table[row]).all(axis=1).any(), item
    # new rows are drawn at the carried rows' scale (then shrunk with them)
    new_rows = [row for row, item in enumerate(vocabulary, start=item_index.FIRST_ITEM_INDEX) if item not in parent_row]
    carried_rms = np.sqrt(np.mean(parent_table[item_index.FIRST_ITEM_INDEX:] ** 2))
    assert 0.6 < np.sqrt(np.mean(table[new_rows] ** 2)) / (shrink * carried_rms) < 1.4


def test_cli_records_the_parent_and_refuses_bad_parents(parent, tmp_path, capsys):
    root, parent_dir = parent
    model_dir = str(tmp_path / "child")
    assert cli.main(["train", "--data", str(root / "old"), "--model-dir", model_dir, "--quiet",
                     "--warm-start", parent_dir, "--set", *SETTINGS]) == 0
    run = json.load(open(os.path.join(model_dir, "run.json")))
    assert run["warm_start_from"] == os.path.abspath(parent_dir)
    assert run["warm_start"] == {"kept_items": 60, "new_items": 0, "dropped_items": 0, "frequency_state": True}

    not_a_model = str(tmp_path / "child" / "logs")
    for parent_arg, settings, message in ((not_a_model, SETTINGS, "not a remi model directory"),
                                          (parent_dir, [*SETTINGS, "embedding_dim=16"], "embedding_dim 8 .*16"),
                                          (parent_dir, [*SETTINGS, "num_interests=3"], "num_interests 2 .*3"),
                                          (parent_dir, [*SETTINGS, "warm_start_recent_fraction=0.5"],
                                           "needs a parent trained on a time split")):
        target = tmp_path / "refused"
        assert cli.main(["train", "--data", str(root / "old"), "--model-dir", str(target), "--quiet",
                         "--warm-start", parent_arg, "--set", *settings]) == 2
        assert re.search(message, capsys.readouterr().err)
        assert not target.exists()


def test_feature_embeddings_are_carried_by_value():
    from remi_tf.layers.feature_embeddings import UserFeatureEmbedding

    parent = UserFeatureEmbedding({"genre": ["a", "b", "c"], "decade": ["1990"]}, dim=4)
    child = UserFeatureEmbedding({"genre": ["c", "d", "a"], "age": ["30"]}, dim=4)
    fresh = {column: table.numpy() for column, table in child.embedding.tables.items()}
    warm_start.carry_feature_tables(child, parent)
    genre, parent_genre = child.embedding.tables["genre"].numpy(), parent.embedding.tables["genre"].numpy()
    np.testing.assert_array_equal(genre[[0, 1, 3]], parent_genre[[0, 3, 1]])  # OOV, c, a
    np.testing.assert_array_equal(genre[2], fresh["genre"][2])  # d: new, its fresh row
    np.testing.assert_array_equal(child.embedding.tables["age"].numpy(), fresh["age"])  # not in the parent


@pytest.mark.parametrize("parent_unit, child_unit, expected", [
    ("input", "input", 1714557600), ("input", "ms", 1714557600000), ("us", "ms", 1714557600124),
])
def test_the_parents_cutoff_is_read_in_the_new_datas_time_unit(tmp_path, parent_unit, child_unit, expected):
    """The parent's valid_from (its data's unit) in the unit of the new data's timestamps, which the recent
    targets are compared with: a boundary between ticks moves to the next tick (t < boundary keeps its meaning)."""
    from remi_tf import data_directory

    valid_from = {"input": 1714557600, "us": 1714557600123456}[parent_unit]
    for name, manifest in (("parent-data", {"split": "time", "valid_from": valid_from, "timestamp_unit": parent_unit}),
                           ("new-data", {"split": "time", "timestamp_unit": child_unit})):
        os.makedirs(tmp_path / name)
        data_directory.write_manifest(str(tmp_path / name), manifest)
    os.makedirs(tmp_path / "parent")
    model_directory.write_run(str(tmp_path / "parent"), {"data_dir": str(tmp_path / "parent-data")})
    assert warm_start.parent_cutoff(str(tmp_path / "parent"), str(tmp_path / "new-data")) == expected
