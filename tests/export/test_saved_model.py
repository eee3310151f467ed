"""Exported SavedModels: reload in a fresh process, signatures, ScaNN vs exact, history handling."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tests.configs import remi_config
from remi_tf import model_directory
from remi_tf.export import exporter, saved_model, serving_layout
from remi_tf.item_index import FIRST_ITEM_INDEX
from tests.numpy_reference import merge_interest_topk
from tests.configs import REMI_SETTINGS


def numpy_retrieval(trained_model_dir, vocabulary, histories, k, exclude_history=True):
    """Independent reference: interests from the in-memory model, exact scores, numpy merge."""
    model = model_directory.load_trained(trained_model_dir).model
    index = {item: i + FIRST_ITEM_INDEX for i, item in enumerate(vocabulary)}
    rows = np.zeros((len(histories), model.config.max_history), np.int64)
    for r, history in enumerate(histories):
        known = [index[i] for i in history if i in index][-model.config.max_history:]
        rows[r, :len(known)] = known
    interests = model.query_tower(tf.constant(rows))[0].numpy()  # [B, K, d]
    scores = interests @ model.corpus.embeddings().numpy().T  # [B, K, N]
    ids = np.broadcast_to(np.arange(scores.shape[-1]) + FIRST_ITEM_INDEX, scores.shape)
    if exclude_history:
        in_own_history = (ids[:, :, :, None] == rows[:, None, None, :]).any(axis=-1)  # per user, not batch-wide
        scores = np.where(in_own_history, -np.inf, scores)
    merged, merged_scores = merge_interest_topk(ids, scores, k)
    return [[vocabulary[i - FIRST_ITEM_INDEX] for i in row] for row in merged], merged_scores


HISTORIES = [["item2", "item3", "item4", "item60", "item61"], ["item500", "unknown-id", "item501"]]


def test_reload_in_a_fresh_process_matches_the_in_memory_model(export_dir, trained_model_dir, vocabulary):
    script = (
        "import json, sys; import remi_tf, tensorflow as tf\n"
        f"m = tf.saved_model.load({os.path.join(export_dir, 'remi-exact', '1')!r})\n"
        f"out = m.signatures['serving_default'](history=tf.ragged.constant({HISTORIES!r}).to_tensor(''))\n"
        "print(json.dumps({'ids': out['item_ids'].numpy().astype(str).tolist(),"
        " 'scores': out['scores'].numpy().tolist()}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    served = json.loads(result.stdout.strip().splitlines()[-1])
    expected_ids, expected_scores = numpy_retrieval(trained_model_dir, vocabulary, HISTORIES, k=20)
    assert_same_ranking(served["ids"], served["scores"], expected_ids, expected_scores, rtol=1e-4)
    assert not set(served["ids"][0]) & set(HISTORIES[0])


def assert_same_ranking(ids, scores, expected_ids, expected_scores, rtol):
    """The same ranked lists up to the order of near-ties: scores agree rank by rank, every item agrees on its
    own score, and an item in only one list scores within rtol of the last one (a tie at the cut)."""
    np.testing.assert_allclose(scores, expected_scores, rtol=rtol)
    for row_ids, row_scores, row_expected_ids, row_expected_scores in zip(ids, scores, expected_ids, expected_scores):
        served, expected = dict(zip(row_ids, row_scores)), dict(zip(row_expected_ids, row_expected_scores))
        for item in served.keys() & expected.keys():
            assert served[item] == pytest.approx(expected[item], rel=rtol), item
        for item, score in [*((i, served[i]) for i in served.keys() - expected.keys()),
                            *((i, expected[i]) for i in expected.keys() - served.keys())]:
            assert score == pytest.approx(row_expected_scores[-1], rel=rtol), item


def test_saved_model_cli_lists_the_signatures(export_dir):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", os.path.join(export_dir, "remi-exact", "1"), "--all"],
                           capture_output=True, text=True, check=True).stdout
    assert "signature_def['serving_default']" in shown and "signature_def['include_history']" in shown
    assert "inputs['history'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1, -1)" in shown
    for output, dtype, shape in [("item_ids", "DT_STRING", "(-1, 20)"), ("scores", "DT_FLOAT", "(-1, 20)"),
                                 ("interest", "DT_INT32", "(-1, 20)"),
                                 ("interest_item_ids", "DT_STRING", "(-1, 4, 20)"),
                                 ("interest_scores", "DT_FLOAT", "(-1, 4, 20)")]:
        assert f"outputs['{output}'] tensor_info:\n        dtype: {dtype}\n        shape: {shape}" in shown
    query = subprocess.run([cli, "show", "--dir", os.path.join(export_dir, "remi-query", "1"), "--all"],
                           capture_output=True, text=True, check=True).stdout
    assert "outputs['interests'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 4, 16)" in query


@pytest.mark.slow  # trains on ml-100k; the synthetic 30 k-item test below checks the settings in `make test`
def test_scann_recall_against_exact_on_real_embeddings(datasets_dir, tmp_path):
    # Real embeddings (the synthetic clusters make items of a cluster near-ties, where ids can't agree).
    from remi import cli

    inter = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    assert cli.main(["prepare", "--input", inter, "--output", str(tmp_path / "data")]) == 0
    assert cli.main(["train", "--data", str(tmp_path / "data"), "--model-dir", str(tmp_path / "model"), "--quiet",
                     "--set", *REMI_SETTINGS, "max_steps=500", "eval_every=500", "max_history=50"]) == 0
    exporter.export(str(tmp_path / "model"), str(tmp_path / "export"), index="both", k=50)
    vocabulary = model_directory.load_trained(str(tmp_path / "model")).vocabulary
    rng = np.random.default_rng(0)
    batch = tf.constant([[vocabulary[i] for i in rng.choice(len(vocabulary), 20, replace=False)] for _ in range(64)])
    scann = tf.saved_model.load(str(tmp_path / "export" / "remi" / "1")).signatures["serving_default"](history=batch)
    exact = tf.saved_model.load(str(tmp_path / "export" / "remi-exact" / "1")).signatures["serving_default"](
        history=batch)
    overlaps = [len(set(a) & set(b)) / len(b) for a, b in zip(scann["item_ids"].numpy(), exact["item_ids"].numpy())]
    assert np.mean(overlaps) >= 0.95


def test_unknown_ids_are_ignored_and_empty_histories_get_popular_items(export_dir, vocabulary):
    serve = tf.saved_model.load(os.path.join(export_dir, "remi-exact", "1")).signatures["serving_default"]
    plain = serve(history=tf.constant([["item2", "item3", "", ""]]))
    noisy = serve(history=tf.constant([["x-unknown", "item2", "y-unknown", "item3"]]))
    np.testing.assert_array_equal(plain["item_ids"].numpy(), noisy["item_ids"].numpy())
    empty = serve(history=tf.constant([["x-unknown", ""]]))
    assert empty["item_ids"].numpy().astype(str).tolist() == [vocabulary[:20]]
    assert empty["interest"].numpy().tolist() == [[-1] * 20]


def test_warmup_records_parse_as_prediction_logs(export_dir):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(export_dir, "remi-exact", "1", serving_layout.WARMUP_FILE)
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert len(logs) == 2
    assert logs[0].predict_log.request.model_spec.name == "remi-exact"
    assert tf.make_ndarray(logs[1].predict_log.request.inputs["history"]).shape[0] == 2
    # models.config: what stock TF Serving loads (not the ScaNN model); models.scann.config: every model
    stock = serving_layout.configured_models(export_dir, serving_layout.MODELS_CONFIG)
    assert sorted(stock) == ["remi-exact", "remi-query"]
    every = open(os.path.join(export_dir, serving_layout.SCANN_MODELS_CONFIG)).read()
    for name in ("remi", "remi-exact", "remi-query"):
        assert f'name: "{name}"\n    base_path: "/models/{name}"' in every


def test_interrupted_export_leaves_no_visible_version(trained_model_dir, tmp_path, monkeypatch):
    def fail(module, path):
        os.makedirs(os.path.join(path, "variables"))
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(exporter.saved_model, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        exporter.export(trained_model_dir, str(tmp_path), index="brute-force", k=5)
    assert os.listdir(tmp_path / "remi") == []


def test_scann_settings_keep_recall_on_a_corpus_where_few_leaves_are_searched():
    """exporter.scann_options on 30,000 clustered items: 173 leaves of which 40 are searched (ml-100k's
    corpus is small enough that every leaf is searched, which cannot catch bad settings)."""
    rng = np.random.default_rng(0)
    num_items, dim = 30_000, 32
    centres = rng.normal(size=(300, dim)).astype(np.float32)
    items = centres[rng.integers(0, 300, num_items)] + 0.5 * rng.normal(size=(num_items, dim)).astype(np.float32)
    queries = centres[rng.integers(0, 300, 200)] + 0.5 * rng.normal(size=(200, dim)).astype(np.float32)
    options = exporter.scann_options(num_items)
    assert options["num_leaves_to_search"] < options["num_leaves"] // 4
    index = tfrs.layers.factorized_top_k.ScaNN(k=50, **options)
    index.index(tf.constant(items))
    _, approximate = index(tf.constant(queries))
    exact = np.argsort(-(queries @ items.T), axis=1)[:, :50]
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(approximate.numpy(), exact)])
    assert recall >= 0.95, recall


@pytest.mark.parametrize("routing", ["comirec_dr", "mind"])
def test_capsule_routed_models_export_their_interests(routing, tmp_path):
    """The query SavedModel of a capsule-routed model (MIND's fixed random routing logits included)
    gives the in-memory model's interests."""
    from remi import cli
    from tests import synthetic

    sequences, _ = synthetic.clustered_sequences(num_users=300, num_clusters=10, items_per_cluster=10,
                                                 clusters_per_user=2, length=12, seed=1)
    synthetic.write_log(tmp_path / "log.csv", sequences)
    assert cli.main(["prepare", "--input", str(tmp_path / "log.csv"), "--output", str(tmp_path / "data")]) == 0
    model_dir = str(tmp_path / "model")
    assert cli.main(["train", "--data", str(tmp_path / "data"), "--model-dir", model_dir, "--quiet", "--set",
                     *REMI_SETTINGS, f"routing={routing}", "max_steps=50", "eval_every=50", "embedding_dim=8",
                     "max_history=6"]) == 0
    exporter.export(model_dir, str(tmp_path / "export"), name="remi", index="brute-force", k=5)
    trained = model_directory.load_trained(model_dir)
    histories = [["item2", "item3", "item4"], ["item50", "unknown-id", "item51", "item52"]]
    index = {item: i + FIRST_ITEM_INDEX for i, item in enumerate(trained.vocabulary)}
    rows = np.zeros((len(histories), 6), np.int64)
    for r, history in enumerate(histories):
        known = [index[i] for i in history if i in index]
        rows[r, :len(known)] = known
    expected = trained.model.query_tower(tf.constant(rows))[0].numpy()
    served = tf.saved_model.load(str(tmp_path / "export" / "remi-query" / "1")).signatures["serving_default"](
        history=tf.ragged.constant(histories).to_tensor(""))["interests"].numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)


def test_retrieval_module_merges_with_the_diversity_coefficient(tmp_path):
    """With diversity_coef > 0 the retrieval SavedModel's merged list is ComiRec's greedy merge (the
    transcription of its loop) of the per-interest lists, history excluded."""
    from remi_tf import models
    from tests.remi_tf.test_diversity import comirec_merge

    tf.keras.utils.set_random_seed(3)
    vocabulary = [f"i{n}" for n in range(60)]
    model = models.RemiModel(remi_config(embedding_dim=8, num_interests=3, max_history=4), len(vocabulary))
    categories = np.random.default_rng(0).integers(0, 4, size=len(vocabulary) + FIRST_ITEM_INDEX).astype(np.int32)
    histories = [["i1", "i7", "i30"], ["i5", "i9", "i11", "i40"]]
    k, coef = 8, 0.5
    module = saved_model.RetrievalModule(model, vocabulary, "brute-force", k, categories=categories,
                                         diversity_coef=coef)
    served = module.serve(tf.ragged.constant(histories).to_tensor(""))["item_ids"].numpy()
    indices = module.query.indices(tf.ragged.constant(histories).to_tensor(""))
    interests, _ = model.query_tower(indices)
    scores = np.einsum("bkd,nd->bkn", interests.numpy(), model.corpus.embeddings().numpy())
    for row, history in enumerate(indices.numpy()):
        top = np.argsort(-scores[row], axis=1)[:, :k + 4]  # per interest: k + max_history results
        top_scores = np.take_along_axis(scores[row], top, axis=1)
        ids = top + FIRST_ITEM_INDEX
        top_scores[np.isin(ids, history[history > 0])] = -np.inf  # the history's items are excluded
        expected = comirec_merge(ids, top_scores, categories, coef, k)
        assert [item.decode() for item in served[row]] == [vocabulary[i - FIRST_ITEM_INDEX] for i in expected]
    merged_by_score = saved_model.RetrievalModule(model, vocabulary, "brute-force", k)
    by_score = merged_by_score.serve(tf.ragged.constant(histories).to_tensor(""))["item_ids"].numpy()
    assert (by_score != served).any()  # the coefficient changed the lists
    saved_model.save(module, str(tmp_path / "diverse"))  # the categories and the merge travel in the SavedModel
    reloaded = tf.saved_model.load(str(tmp_path / "diverse")).signatures["serving_default"]
    np.testing.assert_array_equal(reloaded(history=tf.ragged.constant(histories).to_tensor(""))["item_ids"], served)


def test_serving_default_excludes_the_history_items_the_model_reads(export_dir, vocabulary):
    """A history longer than max_history (20): its last 20 known items never come back; what is excluded is
    exactly what the model reads (docs/serving.md and the signature's docstring say so)."""
    model = tf.saved_model.load(os.path.join(export_dir, "remi-exact", "1"))
    history = vocabulary[:30]  # the 30 most frequent items
    served = model.signatures["serving_default"](history=tf.constant([history]))
    returned = set(served["item_ids"].numpy().astype(str)[0])
    assert not returned & set(history[-20:])
    included = model.signatures["include_history"](history=tf.constant([history]))
    assert set(included["item_ids"].numpy().astype(str)[0]) & set(history[-20:])  # they would rank otherwise
