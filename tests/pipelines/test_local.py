"""`remi prepare` in process: output records, vocabulary, manifest, atomicity and bad input."""

import gzip
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import data_directory
from remi_tf import input as input_lib
from remi_tf.pipelines import local, readers, sequences


def write_log(path, rows, header="user_id,item_id,timestamp"):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as stream:
        stream.write(header + "\n")
        for row in rows:
            stream.write(",".join(str(v) for v in row) + "\n")


def planted_log(num_users=60, seed=0):
    """Users u0..: 8 events each over items i0..i9 (all frequent), plus one rare item for user u0."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        for t in rng.permutation(8):
            rows.append((f"u{u}", f"i{rng.integers(10)}", int(t)))
    rows.append(("u0", "rare", 100))
    rows.append(("short", "i1", 0))
    return rows


def read_split(directory, split):
    files = sorted(f for f in os.listdir(directory) if f.startswith(split + "-"))
    records = []
    for name in files:
        for raw in tf.data.TFRecordDataset(os.path.join(directory, name)):
            parsed = tf.io.parse_single_example(raw, data_directory.SEQUENCE_FEATURES)
            records.append((parsed["user_id"].numpy().decode(), [x.decode() for x in parsed["item_ids"].numpy()],
                            parsed["timestamps"].numpy().tolist()))
    return records


def test_prepare_writes_sorted_filtered_split_sequences(tmp_path):
    rows = planted_log()
    write_log(tmp_path / "log.csv.gz", rows)
    manifest = local.prepare([str(tmp_path / "log.csv.gz")], str(tmp_path / "out"), seed=3, num_shards=2,
                             progress=False)
    out = tmp_path / "out"
    all_users = {}
    for split in data_directory.SPLITS:
        records = read_split(out, split)
        assert manifest["splits"][split]["users"] == len(records)
        for user, items, timestamps in records:
            assert sequences.assign_split(user.encode(), 3) == split
            assert timestamps == sorted(timestamps)
            all_users[user] = items
    assert "short" not in all_users  # fewer than 5 events
    assert "rare" not in all_users["u0"]  # item seen fewer than 5 times
    expected = sorted((t, item) for u, item, t in rows if u == "u5")
    assert all_users["u5"] == [item for _, item in expected]
    assert len(all_users) == 60
    vocabulary = [line.split("\t") for line in (out / "items.tsv").read_text().splitlines()]
    counts = [int(c) for _, c, _ in vocabulary]
    assert counts == sorted(counts, reverse=True) and sum(counts) == 60 * 8
    assert abs(sum(float(q) for _, _, q in vocabulary) - 1.0) < 1e-12  # q: a distribution over the items
    assert json.loads((out / "manifest.json").read_text())["input_events"] == len(rows)


def test_existing_output_is_kept_and_failures_leave_nothing(tmp_path):
    write_log(tmp_path / "log.csv", planted_log())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        local.prepare([str(tmp_path / "log.csv")], str(tmp_path / "out"), progress=False)
    rows = planted_log() + [("u1", "i1", "yesterday")]
    write_log(tmp_path / "bad.csv", rows)
    bad_line = len(rows) + 1  # after the header
    with pytest.raises(ValueError, match=rf"bad.csv: line {bad_line}: field 'timestamp': not a number"):
        local.prepare([str(tmp_path / "bad.csv")], str(tmp_path / "out"), overwrite=True, progress=False)
    assert os.listdir(tmp_path / "out") == ["precious"]
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "log.csv", "out"]  # no temporary directory left


def test_logs_and_output_on_another_file_system(tmp_path):
    """URLs of TensorFlow file systems (gs://, hdfs://, ...; here the in-memory ram://) work as paths: the
    same files as a local run, and a failed run leaves nothing behind."""
    root = f"ram://{tmp_path.name}"
    write_log(tmp_path / "log.csv.gz", planted_log())
    tf.io.gfile.makedirs(f"{root}/logs")
    tf.io.gfile.copy(str(tmp_path / "log.csv.gz"), f"{root}/logs/log.csv.gz")
    manifest = local.prepare([f"{root}/logs/*.csv.gz"], f"{root}/data", num_shards=2, progress=False)
    local.prepare([f"{root}/logs/*.csv.gz"], f"{root}/spilled", num_shards=2, progress=False, max_events_in_memory=0,
                  bucket_events=100)  # user buckets spilled to the local temporary directory
    local.prepare([str(tmp_path / "log.csv.gz")], str(tmp_path / "data"), num_shards=2, progress=False)
    names = sorted(os.listdir(tmp_path / "data"))
    assert sorted(tf.io.gfile.listdir(f"{root}/data")) == names == sorted(tf.io.gfile.listdir(f"{root}/spilled"))
    for name in names:
        if name != "manifest.json":
            assert tf.io.gfile.GFile(f"{root}/data/{name}", "rb").read() == (tmp_path / "data" / name).read_bytes()
            assert tf.io.gfile.GFile(f"{root}/spilled/{name}", "rb").read() == (tmp_path / "data" / name).read_bytes()
    assert manifest["source"] == [f"{root}/logs/log.csv.gz"]
    assert input_lib.read_vocabulary(f"{root}/data") == input_lib.read_vocabulary(str(tmp_path / "data"))
    assert [path.rsplit("/", 1)[1] for path in data_directory.split_files(f"{root}/data", "train")] == \
        ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    write_log(tmp_path / "bad.csv", planted_log() + [("u1", "i1", "-5")])
    tf.io.gfile.copy(str(tmp_path / "bad.csv"), f"{root}/logs/bad.csv")
    with pytest.raises(ValueError, match="bad.csv: line"):
        local.prepare([f"{root}/logs/bad.csv"], f"{root}/bad", progress=False)
    assert sorted(tf.io.gfile.listdir(root)) == ["data", "logs", "spilled"]  # no bad/, no temporary directory


def events_of(path):
    return [event for batch in readers.read_event_batches(path) for event in batch]


def test_reader_errors_name_file_line_and_field(tmp_path):
    write_log(tmp_path / "missing.csv", [("u", "i", 1)], header="user,item_id,timestamp")
    with pytest.raises(ValueError, match=r"missing.csv: line 1: header .* lacks column\(s\) \['user_id'\]"):
        events_of(str(tmp_path / "missing.csv"))
    write_log(tmp_path / "empty_id.csv", [("u", "i", 1), ("", "i", 2)])
    with pytest.raises(ValueError, match=r"empty_id.csv: line 3: field 'user_id': missing or empty"):
        events_of(str(tmp_path / "empty_id.csv"))


def test_recbole_atomic_file(datasets_dir):
    path = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    events = events_of(path)
    assert len(events) == 100_000
    assert events[0][:3] == ("196", "242", 881250949)


def test_progress_lines_are_whole_lines_when_not_on_a_terminal(capsys, monkeypatch):
    """In a pipe: a whole line at most every PIPE_INTERVAL_S (a clock that moves 4 s per update here), and the
    final count once (issue 27: each progress line was printed twice)."""
    clock = iter(range(0, 1000, 4))
    monkeypatch.setattr(local.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(local.ProgressLine, "PIPE_INTERVAL_S", 10.0)
    progress = local.ProgressLine("events read", every=10)
    for _ in range(7):
        progress.update(10)
    progress.done()
    progress.done()  # the count did not change: nothing more
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert "\r" not in err
    assert [line.split(" (")[0] for line in err.splitlines()] == ["events read: 30", "events read: 60",
                                                                 "events read: 70"]


def test_prepare_reads_a_convert_output_as_a_directory_or_a_glob(tmp_path, caplog):
    write_log(tmp_path / "log.csv", planted_log())
    local.convert([str(tmp_path / "log.csv")], str(tmp_path / "events"), num_shards=2, progress=False)
    expected = local.prepare([str(tmp_path / "log.csv")], str(tmp_path / "direct"), progress=False)
    by_directory = local.prepare([str(tmp_path / "events")], str(tmp_path / "a"), progress=False)
    by_glob = local.prepare([str(tmp_path / "events" / "*")], str(tmp_path / "b"), progress=False)  # + manifest.json
    assert "skipping 1 file(s) that are not event data: manifest.json" in caplog.text
    for manifest in (by_directory, by_glob):
        assert manifest["input_events"] == expected["input_events"] and manifest["splits"] == expected["splits"]
    with pytest.raises(FileNotFoundError, match="without events-"):
        local.prepare([str(tmp_path / "direct")], str(tmp_path / "c"), progress=False)  # not a convert output


def spill_test_log(path, num_users=400, seed=3):
    """Users with ties in time, repeated (duplicate) events, rare items and short users, in two files."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{int(rng.zipf(1.5)) % 300}", int(t)) for u in range(num_users)
            for t in rng.integers(0, 6, size=int(rng.integers(3, 14)))]
    rows += rows[::17]  # logging retries: the same user, item and time again
    order = rng.permutation(len(rows))
    write_log(path / "a.csv.gz", [rows[i] for i in order[:len(rows) // 2]])
    write_log(path / "b.csv", [rows[i] for i in order[len(rows) // 2:]])
    return [str(path / "a.csv.gz"), str(path / "b.csv")]


@pytest.mark.parametrize("num_shards,compress", [(1, False), (3, True)])
def test_a_log_spilled_to_user_buckets_gives_the_in_memory_output_byte_for_byte(tmp_path, num_shards, compress):
    inputs = spill_test_log(tmp_path)
    estimate = readers.estimate_events(inputs)
    options = dict(num_shards=num_shards, compress=compress, progress=False, seed=4)
    in_memory = local.prepare(inputs, str(tmp_path / "memory"), **options)
    assert abs(estimate - in_memory["input_events"]) < 0.1 * in_memory["input_events"]
    spilled = local.prepare(inputs, str(tmp_path / "spilled"), max_events_in_memory=0, bucket_events=estimate // 7,
                            **options)  # 7 buckets
    assert in_memory["cleaning"]["duplicate_events_removed"] > 0 and in_memory["cleaning"]["users_below_min_count"] > 0
    assert {key: value for key, value in spilled.items() if key != "created"} == \
        {key: value for key, value in in_memory.items() if key != "created"}
    names = sorted(os.listdir(tmp_path / "memory"))
    assert names == sorted(os.listdir(tmp_path / "spilled"))
    for name in names:
        if name != "manifest.json":
            assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "spilled" / name).read_bytes(), name
    assert not [name for name in os.listdir(tmp_path) if ".spill-" in name]  # the spill directory is gone


def test_a_disk_that_fills_while_spilling_names_the_directory_and_writes_nothing(tmp_path, monkeypatch):
    import errno
    import pickle

    from remi_tf.pipelines import bucketed

    inputs = spill_test_log(tmp_path)
    real_dump, calls = pickle.dump, []

    def dump_until_full(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dump(*args, **kwargs)

    monkeypatch.setattr(bucketed.pickle, "dump", dump_until_full)
    with pytest.raises(OSError, match=r"the disk of .*\.out\.spill-\d+-\w+ filled while `remi prepare` spilled"):
        local.prepare(inputs, str(tmp_path / "out"), max_events_in_memory=0, bucket_events=100, progress=False)
    assert not [name for name in os.listdir(tmp_path) if "out" in name]  # no output, no spill directory
