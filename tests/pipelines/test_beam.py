"""The Beam pipeline writes the records a plain-Python reference expects and equals the in-process path
record by record; splits are deterministic."""

import csv
import hashlib
import os
from collections import Counter, defaultdict

import numpy as np
import tensorflow as tf

from remi_tf import data_directory, models
from remi_tf import input as input_lib
from tests import numpy_reference
from remi_tf.pipelines import beam, local
from tests.pipelines.test_dirty_input import write_events
from tests.pipelines.test_local import planted_log, read_split, write_log


def test_beam_output_equals_the_in_process_output(tmp_path, datasets_dir):
    inter = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    beam_manifest = beam.prepare([inter], str(tmp_path / "beam"), num_shards=3,
                                 pipeline_args=["--runner=DirectRunner", "--direct_num_workers=1"])
    local_manifest = local.prepare([inter], str(tmp_path / "local"), num_shards=3, progress=False)
    names = sorted(os.listdir(tmp_path / "local"))
    assert names == sorted(os.listdir(tmp_path / "beam"))
    for name in names:
        if name != "manifest.json":
            assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "beam" / name).read_bytes(), name
    for key in ("input_events", "num_items", "splits", "cleaning"):
        assert beam_manifest[key] == local_manifest[key], key
    # items.tsv's q (equal bytes for both runners, checked above) is the in-memory random-cut q.
    data_dir = str(tmp_path / "beam")
    vocabulary = input_lib.read_vocabulary(data_dir)
    _, train = input_lib.load_sequences(data_dir, "train", vocabulary)
    written = input_lib.read_target_probability(data_dir)
    np.testing.assert_allclose(written, numpy_reference.target_probability(train, len(vocabulary), min_cut=4), rtol=1e-12)
    assert abs(written.sum() - 1.0) < 1e-12


def reference_sequences(rows: list[tuple[str, str, int]]) -> dict[str, list[tuple[int, str]]]:
    """The protocol in plain Python: per user, sort by (time, file order), drop repeats of (time, item),
    keep items with >= 5 events, then users with >= 5 kept events."""
    by_user = defaultdict(list)
    for line, (user, item, timestamp) in enumerate(rows):
        by_user[user].append((timestamp, line, item))
    ordered = {}
    for user, events in by_user.items():
        seen, ordered[user] = set(), []
        for timestamp, _, item in sorted(events):
            if (timestamp, item) not in seen:
                seen.add((timestamp, item))
                ordered[user].append((timestamp, item))
    counts = Counter(item for events in ordered.values() for _, item in events)
    kept = {user: [e for e in events if counts[e[1]] >= 5] for user, events in ordered.items()}
    return {user: events for user, events in kept.items() if len(events) >= 5}


def reference_split(user: str, seed: int) -> str:
    fraction = int.from_bytes(hashlib.blake2b(f"{seed}\x00{user}".encode(), digest_size=8).digest(), "big") / 2 ** 64
    return "train" if fraction < 0.8 else "valid" if fraction < 0.9 else "test"


def test_beam_records_equal_a_plain_python_reference_on_a_real_sample(tmp_path, datasets_dir, monkeypatch):
    monkeypatch.setattr(beam, "FLUSH_EVENTS", 7_000)  # the file's events go on in 15 pieces
    inter = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    with open(inter, encoding="utf-8") as stream:
        rows = [(row[0], row[1], int(float(row[3]))) for row in list(csv.reader(stream, delimiter="\t"))[1:]]
    expected = reference_sequences(rows)
    beam.prepare([inter], str(tmp_path / "beam"), seed=5, num_shards=2, num_buckets=5, progress=False,
                            pipeline_args=["--runner=DirectRunner"])
    written = {}
    for split in data_directory.SPLITS:
        records = read_split(tmp_path / "beam", split)
        for user, items, timestamps in records:
            assert reference_split(user, 5) == split
            written[user] = list(zip(timestamps, items))
    assert written == expected
    vocabulary = Counter(item for events in expected.values() for _, item in events)
    lines = [line.split("\t") for line in (tmp_path / "beam" / "items.tsv").read_text().splitlines()]
    assert [(item, int(count)) for item, count, _ in lines] == sorted(vocabulary.items(), key=lambda p: (-p[1], p[0]))
    # q: a training user with n items makes each of x_4..x_{n-1} the target with probability 1 / (n - 4).
    train_users = [events for user, events in expected.items() if reference_split(user, 5) == "train" and len(events) > 4]
    q = Counter()
    for events in train_users:
        for _, item in events[4:]:
            q[item] += 1 / (len(events) - 4) / len(train_users)
    for item, _, written_q in lines:
        assert abs(float(written_q) - q[item]) < 1e-12, item


def test_beam_reads_and_writes_another_file_system(tmp_path, datasets_dir):
    root = f"ram://{tmp_path.name}"
    tf.io.gfile.makedirs(f"{root}/logs")
    tf.io.gfile.copy(os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter"), f"{root}/logs/ml-100k.inter")
    beam.prepare([f"{root}/logs/*.inter"], f"{root}/data", num_shards=2, progress=False,
                 pipeline_args=["--runner=DirectRunner"])
    local.prepare([f"{root}/logs/ml-100k.inter"], str(tmp_path / "local"), num_shards=2, progress=False)
    names = sorted(os.listdir(tmp_path / "local"))
    assert sorted(tf.io.gfile.listdir(f"{root}/data")) == names
    for name in names:
        if name != "manifest.json":
            assert tf.io.gfile.GFile(f"{root}/data/{name}", "rb").read() == (tmp_path / "local" / name).read_bytes()


def test_beam_counts_bad_records_and_publishes_nothing_when_over_the_limit(tmp_path):
    rows = planted_log()
    write_log(tmp_path / "log.csv", rows + [("u1", "i1", "-1")])
    try:
        beam.prepare([str(tmp_path / "log.csv")], str(tmp_path / "out"), pipeline_args=["--runner=DirectRunner"])
        raise AssertionError("expected a ValueError")
    except ValueError as error:
        assert "field 'timestamp': negative" in str(error)
    assert not os.path.exists(tmp_path / "out")
    manifest = beam.prepare([str(tmp_path / "log.csv")], str(tmp_path / "out"), max_bad_records=1,
                            pipeline_args=["--runner=DirectRunner"])
    assert manifest["cleaning"]["bad_records"] == 1


def test_split_is_the_same_across_runs_and_shard_counts(tmp_path):
    rows = planted_log(num_users=120)
    write_events(tmp_path / "events.tfrecord", rows)
    assignments = []
    for run, shards in enumerate((1, 4, 4)):
        out = tmp_path / f"out{run}"
        local.prepare([str(tmp_path / "events.tfrecord")], str(out), num_shards=shards, progress=False)
        assignments.append({split: sorted(user for user, _, _ in read_split(out, split)) for split in data_directory.SPLITS})
    assert assignments[0] == assignments[1] == assignments[2]
    assert sum(len(users) for users in assignments[0].values()) == 120
