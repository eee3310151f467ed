"""A model with learned interest weights, scored by logsumexp, exported with the quota and weighted merges:
the SavedModels' `interest_weights` and merged lists against the in-process model and the numpy merges; merges
that need weights refused for a model without them; a model directory from before these keys still loads."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import yaml

from remi import cli
from remi_tf import evaluate, merging, model_directory
from remi_tf.export import exporter
from remi_tf.models import FIRST_ITEM_INDEX
from tests import numpy_reference
from tests.export.small_models import HISTORIES, model_rows, train_on_clusters

K = 12


@pytest.fixture(scope="module")
def weighted_model_dir(tmp_path_factory):
    return train_on_clusters(tmp_path_factory.mktemp("weighted"), 1, "interest_scoring=logsumexp",
                             "interest_temperature=0.5", "interest_weights=served")


@pytest.mark.parametrize("merge", ["quota", "weighted"])
def test_exported_weights_and_merge_match_the_model(weighted_model_dir, tmp_path, merge):
    output = str(tmp_path / "export")
    assert cli.main(["export", "--model-dir", weighted_model_dir, "--output", output, "--index", "brute-force",
                     "--k", str(K), "--set", f"merge={merge}", "merge_lambda=1.0"]) == 0
    trained = model_directory.load_trained(weighted_model_dir)
    model, vocabulary = trained.model, trained.vocabulary
    rows = model_rows(model, vocabulary, HISTORIES)
    interests, _, weights = (x.numpy() for x in model.encode(tf.constant(rows)))
    histories = tf.ragged.constant(HISTORIES).to_tensor("")

    query = tf.saved_model.load(os.path.join(output, "remi-query", "1")).signatures["serving_default"]
    np.testing.assert_allclose(query(history=histories)["interest_weights"].numpy(), weights, atol=1e-6)
    served = tf.saved_model.load(os.path.join(output, "remi", "1")).signatures["include_history"](history=histories)
    np.testing.assert_allclose(served["interest_weights"].numpy(), weights, atol=1e-6)

    # numpy: each interest's exact top (k + L), re-scored by tau * logsumexp over the interests, then merged
    table = model.candidate_embeddings().numpy().astype(np.float64)
    per_interest = np.einsum("bkd,nd->bkn", interests, table)
    depth = K + model.config.max_history
    top = np.argsort(-per_interest, axis=-1, kind="stable")[:, :, :depth]  # [B, K, depth] rows of the table
    combined = 0.5 * np.log(np.exp(np.einsum("bjd,bknd->bknj", interests, table[top]) / 0.5).sum(axis=-1))
    ids = top + FIRST_ITEM_INDEX
    if merge == "quota":
        expected_ids, expected_scores, _ = numpy_reference.quota_merge(ids, combined, weights.astype(np.float64), K)
    else:
        expected_ids, expected_scores = numpy_reference.merge_interest_topk(
            ids, combined + np.log(weights)[:, :, None], K)
    position = {item: i + FIRST_ITEM_INDEX for i, item in enumerate(vocabulary)}
    got_ids = [[position[item.decode()] for item in row] for row in served["item_ids"].numpy()]
    np.testing.assert_array_equal(got_ids, expected_ids)
    np.testing.assert_allclose(served["scores"].numpy(), expected_scores, rtol=1e-4, atol=1e-5)


def test_evaluation_report_names_the_weights(weighted_model_dir):
    trained = model_directory.load_trained(weighted_model_dir)
    rows = model_rows(trained.model, trained.vocabulary, HISTORIES)
    report = evaluate.evaluate(trained.model, rows, [np.array([FIRST_ITEM_INDEX + 5])] * 3, top_ns=(5,), merge="quota")
    weights = trained.model.encode(tf.constant(rows))[2].numpy()
    expected = float(np.mean(-(weights * np.log(weights)).sum(axis=1)))
    assert report["interest_weight_entropy"] == pytest.approx(expected, rel=1e-5)
    found = evaluate.retrieve(trained.model, rows, 5, merge="quota", exclude_history=False)
    quotas = merging.slot_quotas(tf.constant(weights), 5).numpy()
    counts = np.stack([np.bincount(row[row >= 0], minlength=3) for row in found.interest])
    assert counts.sum() == 15  # every slot filled
    np.testing.assert_array_equal(counts, quotas)  # each interest holds its quota (no duplicates here)


def test_merges_by_weight_are_refused_without_weights(trained_model_dir, tmp_path, capsys):
    output = str(tmp_path / "export")
    report = str(tmp_path / "r.json")
    for command, expected in (
            (["export", "--model-dir", trained_model_dir, "--output", output, "--set", "merge=quota"],
             "interest_weights=distilled"),
            (["evaluate", "--model-dir", trained_model_dir, "--output", report, "--set", "merge=weighted"],
             "interest_weights=distilled"),
            (["evaluate", "--model-dir", trained_model_dir, "--output", report, "--set", "max_history=5"],
             "evaluation-time keys: merge"),
            (["evaluate", "--model-dir", trained_model_dir, "--output", report, "--set", "merge=best"],
             "must be one of ('score', 'quota', 'weighted')")):
        capsys.readouterr()
        assert cli.main(command) != 0
        assert expected in capsys.readouterr().err, command
    assert not os.path.exists(output) and not os.path.exists(report)


def test_a_model_directory_from_before_the_new_keys_loads_and_evaluates_alike(trained_model_dir, tmp_path):
    old = str(tmp_path / "old")
    shutil.copytree(trained_model_dir, old)
    config = yaml.safe_load(open(os.path.join(old, "config.yaml")))
    for key in ("interest_scoring", "interest_temperature", "interest_weights", "interest_weight_temperature",
                "interest_weight_lambda", "merge", "merge_lambda"):
        del config[key]
    with open(os.path.join(old, "config.yaml"), "w") as stream:
        yaml.safe_dump(config, stream)
    before, after = model_directory.load_trained(trained_model_dir), model_directory.load_trained(old)
    rows = model_rows(before.model, before.vocabulary, HISTORIES)
    a = evaluate.retrieve(before.model, rows, 10)
    b = evaluate.retrieve(after.model, rows, 10)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    exporter.export(old, str(tmp_path / "export"), index="brute-force", k=10)
    served = tf.saved_model.load(str(tmp_path / "export" / "remi" / "1")).signatures["serving_default"]
    assert "interest_weights" not in served.structured_outputs
