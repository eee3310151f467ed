"""Side features from the event log's CSVs to the served models: prepare -> train -> evaluate -> export ->
serve, the SavedModel taking raw profile values (unknown ones in the OOV bucket) and giving the trained
model's interests and candidates."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from remi import cli
from remi_tf import feature_tables, model_directory
from remi_tf.export import client as client_lib
from remi_tf.export import exporter
from remi_tf.export.server import Server
from remi_tf.item_index import FIRST_ITEM_INDEX
from tests import synthetic
from tests.configs import REMI_SETTINGS


@pytest.fixture(scope="module")
def featured(tmp_path_factory):
    """A model trained through the CLI on a log with item categories and user segments, and its export."""
    root = tmp_path_factory.mktemp("featured")
    sequences, user_clusters = synthetic.clustered_sequences(num_users=300, num_clusters=10, items_per_cluster=10,
                                                             clusters_per_user=2, length=12, seed=2)
    synthetic.write_log(root / "log.csv", sequences)
    # item2 has no row (OOV bucket); u0 has no row; u1 has two segments.
    (root / "items.csv").write_text("item_id,brand,category\n" + "".join(
        f"item{i},b{i % 3},c{(i - FIRST_ITEM_INDEX) // 10}\n" for i in range(3, 102)) + "gone,b0,c0\n")
    segments = {f"u{u}": "|".join(f"s{c}" for c in clusters) for u, clusters in enumerate(user_clusters)}
    (root / "users.csv").write_text("user_id,segment,age\n" + "".join(
        f"{user},{segment if user != 'u1' else 's1|s2'},{30 + int(user[1:]) % 3}\n"
        for user, segment in segments.items() if user != "u0"))
    assert cli.main(["prepare", "--input", str(root / "log.csv"), "--output", str(root / "data"),
                     "--item-features", f"{root / 'items.csv'}:category", "--user-features", str(root / "users.csv")]) == 0
    model_dir = str(root / "model")
    assert cli.main(["train", "--data", str(root / "data"), "--model-dir", model_dir, "--quiet", "--set",
                     *REMI_SETTINGS, "max_steps=100", "eval_every=50", "embedding_dim=8", "max_history=6",
                     "num_interests=2"]) == 0
    exporter.export(model_dir, str(root / "export"), name="remi", index="brute-force", k=5)
    return root


def test_prepare_writes_the_user_table_and_training_keeps_the_vocabularies(featured):
    lines = (featured / "data" / feature_tables.USER_FEATURES_FILE).read_text().splitlines()
    assert lines[0] == "user_id\tsegment\tage"
    assert [line.split("\t")[0] for line in lines[1:]] == sorted(f"u{u}" for u in range(1, 300))  # u0: no row
    assert lines[1:3] == ["u1\ts1|s2\t31", "u10\t" + lines[2].split("\t")[1] + "\t31"]
    manifest = json.loads((featured / "data" / "manifest.json").read_text())
    assert manifest["user_features"]["users_with_features"] == 299
    assert manifest["user_features"]["users_without_features"] == 1
    vocabularies = json.loads((featured / "model" / model_directory.USER_VOCABULARIES_FILE).read_text())
    assert sorted(vocabularies) == ["age", "segment"] and sorted(vocabularies["age"]) == ["30", "31", "32"]
    assert sorted(vocabularies["segment"]) == sorted(f"s{c}" for c in range(10))
    assert (featured / "model" / feature_tables.ITEM_FEATURES_FILE).read_text() == \
        (featured / "data" / feature_tables.ITEM_FEATURES_FILE).read_text()


def test_the_saved_models_take_raw_profile_values(featured):
    trained = model_directory.load_trained(str(featured / "model"))
    assert trained.model.item_features is not None and trained.model.user_features.columns == ["segment", "age"]
    histories = [["item3", "item4", "item5"], ["item50", "unknown-id", "item51"], ["item2"]]
    segment, age = ["s0", "s4|s5", "never-seen"], ["30", "", "99"]
    index = {item: i + FIRST_ITEM_INDEX for i, item in enumerate(trained.vocabulary)}
    rows = np.zeros((3, 6), np.int64)
    for r, history in enumerate(histories):
        known = [index[i] for i in history if i in index]
        rows[r, :len(known)] = known
    profiles = np.array([segment, age]).T
    expected, _ = trained.model.interests(tf.constant(rows), tf.constant(profiles))
    padded = tf.ragged.constant(histories).to_tensor("")
    query = tf.saved_model.load(str(featured / "export" / "remi-query" / "1")).signatures["serving_default"]
    assert sorted(query.structured_input_signature[1]) == ["age", "history", "segment"]
    served = query(history=padded, segment=tf.constant(segment), age=tf.constant(age))["interests"].numpy()
    np.testing.assert_allclose(served, expected.numpy(), rtol=1e-5, atol=1e-6)
    # The profile matters: another segment gives other interests.
    other = query(history=padded, segment=tf.constant(["s9"] * 3), age=tf.constant(age))["interests"].numpy()
    assert np.abs(other - served).max() > 1e-3

    # Candidates: the item tower's vectors (item features included) scored by the interests, history excluded.
    scores = np.einsum("bkd,nd->bkn", expected.numpy(), trained.model.corpus.embeddings().numpy()).max(axis=1)
    for r in range(3):
        scores[r, rows[r][rows[r] > 0] - FIRST_ITEM_INDEX] = -np.inf
    best = [[trained.vocabulary[i] for i in np.argsort(-row)[:5]] for row in scores]
    server = Server(str(featured / "export"), port=0, grpc_port=0, poll_seconds=3600).start()
    try:
        for use_grpc, address in ((False, f"http://127.0.0.1:{server.port}"), (True, f"127.0.0.1:{server.grpc_port}")):
            client = client_lib.RemiClient(address, model="remi", use_grpc=use_grpc)
            found = client.lookup(histories, user_features={"segment": segment, "age": age})
            assert [candidates.item_ids for candidates in found] == best
            with pytest.raises(client_lib.LookupFailed, match="age"):
                client.lookup(histories, user_features={"segment": segment})
        status, body = rest_predict(server.port, {"inputs": {"history": [["item3"], ["item4"]], "segment": ["s0"],
                                                              "age": ["30", "31"]}})
        assert status == 400 and "same batch size" in body["error"], body
    finally:
        server.stop()


def rest_predict(port, payload):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/remi:predict",
                                     data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_evaluation_reads_the_profiles_of_the_evaluated_users(featured, capsys):
    """The report is the evaluation with each test user's own profile (read from users.csv here, not through
    the data directory's table), and differs from the one with the profiles left out (every user in the OOV
    bucket) or handed to the wrong users."""
    from remi_tf import evaluate as evaluate_lib
    from remi_tf import input as input_lib

    assert cli.main(["evaluate", "--model-dir", str(featured / "model"), "--split", "test"]) == 0
    report = json.loads((featured / "model" / "eval-test.json").read_text())
    trained = model_directory.load_trained(str(featured / "model"))
    user_ids, histories, targets = input_lib.load_evaluation_split(str(featured / "data"), "test", trained.vocabulary,
                                                                   trained.config.max_history)
    rows = {line.split(",")[0]: line.split(",")[1:] for line in (featured / "users.csv").read_text().splitlines()[1:]}
    columns = trained.model.user_features.columns
    header = (featured / "users.csv").read_text().splitlines()[0].split(",")[1:]
    profiles = np.array([[rows.get(user, [""] * len(header))[header.index(column)] for column in columns]
                         for user in user_ids], dtype=object)

    def recall(user_features):
        return evaluate_lib.evaluate(trained.model, histories, targets, user_features=user_features)["recall@50"]

    assert report["num_users"] == len(user_ids)
    assert report["recall@50"] == pytest.approx(recall(profiles), abs=1e-12)
    assert report["recall@50"] != pytest.approx(recall(np.full_like(profiles, "")), abs=1e-6)
    assert report["recall@50"] != pytest.approx(recall(np.roll(profiles, 1, axis=0)), abs=1e-6)
