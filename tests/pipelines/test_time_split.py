"""The time split (`remi prepare --split time`) on a hand-made log: which events land in which split,
inclusive boundaries, cold users and unknown items counted, both runners byte for byte, bad boundaries."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from remi import cli
from remi_tf import data_directory, item_index, models
from remi_tf import input as input_lib
from tests import numpy_reference
from remi_tf.pipelines import beam, local, time_split
from tests.pipelines.test_local import write_log

T1, T2 = 100, 200
BOUNDARIES = time_split.TimeBoundaries(T1, T2)
FULL = ["a", "b", "c", "d", "e", "f"]


def hand_made_log() -> list[tuple[str, str, int]]:
    """Items a..f have >= 5 events before T1, `rare` 4 (filtered), `new` only after T1 (unknown)."""
    rows = [("u1", item, 10 * (i + 1)) for i, item in enumerate("abcde")]  # 5 before T1: a training user
    rows += [("u1", "f", T1), ("u1", "new", 150), ("u1", "a", T2), ("u1", "b", 250)]  # boundaries inclusive
    for user in ("u2", "u3", "u4", "u5", "u6"):
        rows += [(user, item, 11 + i) for i, item in enumerate(FULL)]
    rows += [(user, "rare", 90) for user in ("u3", "u4", "u5")] + [("u3", "new", 160)]
    rows += [("u7", "rare", 10), ("u7", "a", 20), ("u7", "b", 120)]  # 1 known event before T1: not trained
    rows += [("u8", "c", 150), ("u8", "d", 210)]  # cold in valid, history [c] in test
    rows += [("u9", "e", 300)]  # cold in test
    return rows


def read_records(directory, split):
    records = {}
    for name in sorted(f for f in os.listdir(directory) if f.startswith(split + "-")):
        for raw in tf.data.TFRecordDataset(os.path.join(directory, name)):
            parsed = tf.io.parse_single_example(raw, data_directory.SEQUENCE_FEATURES)
            records[parsed["user_id"].numpy().decode()] = (
                [x.decode() for x in parsed["item_ids"].numpy()], parsed["timestamps"].numpy().tolist(),
                int(parsed["history_length"]))
    return records


@pytest.fixture
def log_path(tmp_path):
    write_log(tmp_path / "log.csv", hand_made_log())
    return str(tmp_path / "log.csv")


def test_time_split_puts_each_event_where_the_protocol_says(tmp_path, log_path):
    manifest = local.prepare([log_path], str(tmp_path / "out"), num_shards=2, progress=False,
                             boundaries=BOUNDARIES)
    out = str(tmp_path / "out")
    train = read_records(out, "train")
    assert train == {"u1": (list("abcde"), [10, 20, 30, 40, 50], -1),
                     **{u: (FULL, list(range(11, 17)), -1) for u in ("u2", "u3", "u4", "u5", "u6")}}
    assert read_records(out, "valid") == {
        "u1": (FULL, [10, 20, 30, 40, 50, T1], 5),  # `new` (unknown) dropped; f at exactly T1 is a target
        "u7": (["a", "b"], [20, 120], 1)}  # rare dropped from the history; u3's window has only `new`
    assert read_records(out, "test") == {
        "u1": (FULL + ["a", "b"], [10, 20, 30, 40, 50, T1, T2, 250], 6),  # a at exactly T2 is a test target
        "u8": (["c", "d"], [150, 210], 1)}
    assert manifest["split"] == "time" and (manifest["valid_from"], manifest["test_from"]) == (T1, T2)
    assert manifest["splits"] == {
        "train": {"users": 6, "events": 35},
        "valid": {"users": 2, "events": 8, "targets": 2, "cold_users": 1, "window_events": 5,
                  "window_events_unknown_items": 2},
        "test": {"users": 2, "events": 10, "targets": 3, "cold_users": 1, "window_events": 4,
                 "window_events_unknown_items": 0}}
    assert manifest["num_items"] == 6 and manifest["cleaning"]["users_below_min_count"] == 3
    # the vocabulary is the training events' items, counted on those events; q over the training sequences
    vocabulary = input_lib.read_vocabulary(out)
    assert sorted(vocabulary) == FULL
    _, sequences = input_lib.load_sequences(out, "train", vocabulary)
    np.testing.assert_allclose(input_lib.read_target_probability(out),
                               numpy_reference.target_probability(sequences, len(vocabulary), min_cut=4), rtol=1e-12)
    # evaluation cuts at the boundary, not at floor(0.8 n)
    users, histories, targets = input_lib.load_evaluation_split(out, "test", vocabulary, max_history=3)
    index = {item: i + item_index.FIRST_ITEM_INDEX for i, item in enumerate(vocabulary)}
    by_user = {user: (history.tolist(), target.tolist()) for user, history, target in zip(users, histories, targets)}
    assert by_user == {"u1": ([index["d"], index["e"], index["f"]], [index["a"], index["b"]]),
                       "u8": ([index["c"], 0, 0], [index["d"]])}


def test_both_runners_write_the_same_time_split(tmp_path, log_path):
    local_manifest = local.prepare([log_path], str(tmp_path / "local"), num_shards=2, progress=False,
                                   boundaries=BOUNDARIES)
    beam_manifest = beam.prepare([log_path], str(tmp_path / "beam"), num_shards=2, num_buckets=3, progress=False,
                                 pipeline_args=["--runner=DirectRunner", "--direct_num_workers=1"],
                                 boundaries=BOUNDARIES)
    names = sorted(os.listdir(tmp_path / "local"))
    assert names == sorted(os.listdir(tmp_path / "beam"))
    for name in names:
        if name != "manifest.json":
            assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "beam" / name).read_bytes(), name
    for key in ("split", "valid_from", "test_from", "num_items", "splits", "cleaning"):
        assert beam_manifest[key] == local_manifest[key], key


def test_boundaries_parse_from_seconds_and_iso_dates():
    assert time_split.parse_time("1372636800", "--valid-from") == 1372636800
    assert time_split.parse_time("2013-07-01", "--valid-from") == 1372636800  # UTC midnight
    assert time_split.parse_time("2013-07-01T02:00:00+02:00", "--valid-from") == 1372636800
    with pytest.raises(ValueError, match="--test-from 'July'"):
        time_split.parse_time("July", "--test-from")


@pytest.mark.parametrize("valid_from, test_from, message", [
    ("200", "100", "must come after --valid-from"),
    ("100", "100", "must come after --valid-from"),
    ("5", "200", "--valid-from 5 .*no event is before it"),
    ("100", "1000", "--test-from 1000 .*the test window has no events"),
])
def test_bad_boundaries_stop_before_anything_is_written(tmp_path, log_path, capsys, valid_from, test_from,
                                                        message):
    output = tmp_path / "out"
    args = ["prepare", "--input", log_path, "--output", str(output), "--runner", "in-process", "--split", "time",
            "--valid-from", valid_from, "--test-from", test_from]
    assert cli.main(args) == 2
    assert re.search("remi prepare: error: .*" + message, capsys.readouterr().err)
    assert not output.exists() and os.listdir(tmp_path) == ["log.csv"]
