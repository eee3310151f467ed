"""The scale benchmark's log generator (benchmarks/scale_logs.py): its sizes, its planted structure, and a model
trained on it that learns the structure (Recall@50 far above the popularity list's)."""

import csv
import gzip
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import scale_logs  # noqa: E402


def read_events(directory):
    with gzip.open(os.path.join(directory, scale_logs.EVENTS_FILE), "rt") as stream:
        return list(csv.DictReader(stream))


def test_the_log_has_its_size_and_planted_structure_and_the_same_seed_writes_the_same_bytes(tmp_path):
    shape = scale_logs.LogShape(num_items=3_000, num_events=40_000, seed=1, cluster_size=300)
    written = scale_logs.write_log(shape, str(tmp_path / "a"), progress=False)
    scale_logs.write_log(shape, str(tmp_path / "b"), progress=False)
    for name in (scale_logs.EVENTS_FILE, scale_logs.CLUSTERS_FILE, scale_logs.USERS_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    events = read_events(tmp_path / "a")
    assert len(events) == 40_000 == written["events"] and written["num_clusters"] == 10
    cluster = dict(csv.reader(open(tmp_path / "a" / scale_logs.CLUSTERS_FILE)))
    follows = {row["user_id"]: int(row["clusters"]) for row in csv.DictReader(open(tmp_path / "a" / "users.csv"))}
    assert len(cluster) == 3_001 and len({c for item, c in cluster.items() if item != "item_id"}) == 10
    by_user = {}
    for event in events:
        by_user.setdefault(event["user_id"], []).append((int(event["timestamp"]), event["item_id"]))
    assert sum(map(len, by_user.values())) == 40_000 and min(map(len, by_user.values())) >= 5
    for user, user_events in by_user.items():  # each user reads from at most the clusters it follows
        assert len({cluster[item] for _, item in user_events}) <= follows[user]
        times = sorted(t for t, _ in user_events)
        assert len(set(times)) == len(times)  # strictly increasing within a user
    assert sorted(set(follows.values())) == [1, 2, 3, 4]
    counts = np.bincount([int(item[1:]) for _, item in sum(by_user.values(), [])], minlength=3_000)
    assert np.sort(counts)[-30:].sum() > 3 * 30 * counts.mean()  # a popularity skew


@pytest.mark.parametrize("field,value,option", [("num_items", 0, "--items"), ("num_events", -5, "--events"),
                                                ("cluster_size", 0, "--cluster-size"), ("stay", 1.0, "--stay")])
def test_a_size_that_is_not_positive_is_refused_with_the_option_named(field, value, option):
    arguments = {"num_items": 100, "num_events": 1_000, field: value}
    with pytest.raises(ValueError, match=option):
        scale_logs.LogShape(**arguments)


def test_a_model_trained_on_the_log_learns_its_clusters(tmp_path):
    from remi import cli
    from remi_tf import metrics

    scale_logs.write_log(scale_logs.LogShape(num_items=2_000, num_events=60_000, seed=2, cluster_size=100),
                         str(tmp_path / "logs"), progress=False)
    data, model = str(tmp_path / "data"), str(tmp_path / "model")
    assert cli.main(["prepare", "--input", str(tmp_path / "logs" / scale_logs.EVENTS_FILE), "--output", data]) == 0
    assert cli.main(["train", "--data", data, "--model-dir", model, "--quiet", "--set", "max_steps=600",
                     "eval_every=600", "embedding_dim=32"]) == 0
    assert cli.main(["evaluate", "--model-dir", model, "--split", "test"]) == 0
    report = json.load(open(os.path.join(model, "eval-test.json")))
    from remi_tf import input as input_lib

    vocabulary = input_lib.read_vocabulary(data)
    _, histories, targets = input_lib.load_evaluation_split(data, "test", vocabulary, 20)
    popular = np.tile(np.arange(50) + 2, (len(targets), 1))  # items.tsv is most frequent first: index 2..51
    popularity = metrics.ranking_metrics(popular, targets, (50,))["recall@50"]
    assert report["recall@50"] > 3 * popularity, (report["recall@50"], popularity)
