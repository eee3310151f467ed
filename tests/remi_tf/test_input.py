"""The tf.data input: the random cut's range, the evaluation cut, InputContext sharding, and the streaming
path's distribution against the analytic q."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.configs import remi_config
from remi_tf import data_directory, models
from remi_tf import input as input_lib
from tests import numpy_reference
from remi_tf.pipelines import local
from tests import synthetic
from tests.pipelines.test_local import write_log

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_random_cut_range_history_and_target():
    sequences = [np.arange(100, 100 + n) for n in (5, 6, 12, 30)]
    ragged = tf.ragged.constant(sequences, dtype=tf.int64)
    seen_cuts = {n: set() for n in (5, 6, 12, 30)}
    for _ in range(300):
        batch = input_lib.random_cut(ragged, max_history=8)
        for sequence, history, target in zip(sequences, batch["history"].numpy(), batch["target"].numpy()):
            cut = int(target - 100)
            assert 4 <= cut < len(sequence)
            seen_cuts[len(sequence)].add(cut)
            expected = sequence[max(cut - 8, 0):cut]
            np.testing.assert_array_equal(history[:len(expected)], expected)
            assert np.all(history[len(expected):] == 0)
    assert seen_cuts[5] == {4} and seen_cuts[6] == {4, 5} and seen_cuts[12] == set(range(4, 12))


def test_every_user_once_per_pass():
    sequences = [np.full(6, 10 + u) for u in range(8)]
    dataset = input_lib.sequence_dataset(sequences, batch_size=4, max_history=3, seed=1)
    assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY  # no per-step "any batch left?" all-reduce
    batches = iter(dataset)
    for _ in range(3):  # three passes of two batches
        targets = np.concatenate([next(batches)["target"].numpy() for _ in range(2)])
        assert sorted(targets) == list(range(10, 18))


def test_a_share_of_each_batch_targets_recent_events():
    """Users 0..39 with 10 items each (item 100 u + position); even users have recent events from position
    6 on, odd users none. With recent_fraction 0.5 of a batch of 8, rows 4..7 target positions >= 6 of even
    users (each seen once per pass of that stream); rows 0..3 are the usual cuts over every user."""
    sequences = [100 * u + np.arange(10) + 2 for u in range(40)]
    recent_starts = np.array([6 if u % 2 == 0 else 10 for u in range(40)])
    dataset = input_lib.sequence_dataset(sequences, batch_size=8, max_history=5, seed=3, recent_starts=recent_starts,
                                         recent_fraction=0.5)
    batches = list(dataset.take(50))
    positions = {"usual": [], "recent": []}
    recent_users = []
    for batch in batches:
        targets = batch["target"].numpy() - 2
        assert batch["history"].shape == (8, 5)
        positions["usual"] += (targets[:4] % 100).tolist()
        positions["recent"] += (targets[4:] % 100).tolist()
        recent_users += (targets[4:] // 100).tolist()
    assert set(positions["recent"]) == {6, 7, 8, 9} and set(positions["usual"]) == set(range(4, 10))
    assert all(user % 2 == 0 for user in recent_users)
    assert sorted(recent_users[:20]) == list(range(0, 40, 2))  # a pass of the recent stream: every such user once


def test_evaluation_cut():
    histories, targets = input_lib.evaluation_examples([np.arange(2, 12), np.arange(2, 32)], max_history=4)
    # n = 10: k = 8, history x4..x7 = 6..9; n = 30: k = 24, history x20..x23 = 22..25.
    np.testing.assert_array_equal(histories, [[6, 7, 8, 9], [22, 23, 24, 25]])
    np.testing.assert_array_equal(targets[0], [10, 11])
    np.testing.assert_array_equal(targets[1], np.arange(26, 32))


@pytest.mark.parametrize("training_input", ["in_memory", "streaming"])
def test_input_context_shards_files_and_splits_the_batch(tmp_path, training_input):
    # Each user repeats an item of its own, so a target tells which user (and shard) it came from.
    write_log(tmp_path / "log.csv", [(f"u{u}", f"own{u}", t) for u in range(200) for t in range(6)])
    local.prepare([str(tmp_path / "log.csv")], str(tmp_path / "data"), num_shards=2, progress=False)
    data_dir = str(tmp_path / "data")
    inputs = input_lib.training_inputs(data_dir, remi_config(batch_size=32, max_history=5,
                                                            training_input=training_input))
    assert inputs.streaming == (training_input == "streaming")
    shards = data_directory.split_files(data_dir, "train")
    shard_targets = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        batch = next(iter(inputs.dataset_fn(context)))
        assert batch["history"].shape == (16, 5)  # the per-replica batch
        own = {int(record.items[0]) for record in input_lib.read_indexed_sequences([shards[pipeline_id]], inputs.vocabulary)}
        assert set(batch["target"].numpy().tolist()) <= own
        shard_targets.append(own)
    assert not shard_targets[0] & shard_targets[1]
    _, all_train = input_lib.load_sequences(data_dir, "train", inputs.vocabulary)
    assert len(shard_targets[0]) + len(shard_targets[1]) == len(all_train)


@pytest.mark.parametrize("training_input", ["in_memory", "streaming"])
def test_batches_carry_the_profile_of_each_example_user(tmp_path, training_input):
    from remi_tf.pipelines import feature_csvs

    write_log(tmp_path / "log.csv", [(f"u{u}", f"own{u}", t) for u in range(120) for t in range(6)])
    local.prepare([str(tmp_path / "log.csv")], str(tmp_path / "data"), num_shards=2, progress=False)
    data_dir = str(tmp_path / "data")
    (tmp_path / "users.csv").write_text("user_id,segment,age\n" + "".join(
        f"u{u},s{u}|x,{u % 7}\n" for u in range(120) if u % 10))  # u0, u10, ...: no row
    user_ids = input_lib.read_user_ids(data_dir)
    assert user_ids == sorted(f"u{u}" for u in range(120))
    feature_csvs.write_feature_table(feature_csvs.read_feature_csv(str(tmp_path / "users.csv"), "user_id"),
                                      data_dir, user_ids)
    inputs = input_lib.training_inputs(data_dir, remi_config(batch_size=32, max_history=5,
                                                            training_input=training_input))
    user_of_target = {index + 2: int(item.removeprefix("own")) for index, item in enumerate(inputs.vocabulary)}
    expected = {u: ([f"s{u}|x", str(u % 7)] if u % 10 else ["", ""]) for u in range(120)}
    for batch in inputs.dataset_fn(None).take(5):
        profiles = batch["user_features"].numpy().astype(str).tolist()
        assert profiles == [expected[user_of_target[int(t)]] for t in batch["target"].numpy()]
    valid_users, _, _ = input_lib.load_evaluation_split(data_dir, "valid", inputs.vocabulary, 5)
    assert inputs.valid_user_features.tolist() == [expected[int(user[1:])] for user in valid_users]


def write_sequence_shards(directory, sequences, vocabulary, num_shards):
    """Sequence shards of users u0.. with the given item-index sequences (index i + 2 is vocabulary[i]),
    and items.tsv."""

    (directory / "items.tsv").write_text("".join(f"{item}\t1\n" for item in vocabulary))
    records = [[] for _ in range(num_shards)]
    for user, items in enumerate(sequences):
        record = data_directory.encode_sequence(f"u{user}".encode(), [vocabulary[i - 2].encode() for i in items],
                                        list(range(len(items))))
        records[user % num_shards].append(record)
    paths = []
    for shard, shard_records in enumerate(records):
        paths.append(str(directory / data_directory.shard_name("train", shard, num_shards)))
        with tf.io.TFRecordWriter(paths[-1]) as writer:
            for record in shard_records:
                writer.write(record)
    return paths


def test_streaming_visits_every_user_once_per_pass(tmp_path):
    vocabulary = [f"i{i}" for i in range(60)]
    sequences = [np.arange(2 + u, 2 + u + 6) % 60 + 2 for u in range(0, 60, 6)] + [np.array([2, 3, 4])]
    files = write_sequence_shards(tmp_path, sequences, vocabulary, num_shards=3)
    # 10 users with a cut (the last is too short); user u's target x_4 or x_5 tells the user apart.
    user_of_item = {int(item): u for u, items in enumerate(sequences[:10]) for item in items[4:]}
    dataset = input_lib.streaming_dataset(files, str(tmp_path / "items.tsv"), batch_size=5, max_history=3, seed=2,
                                          shuffle_buffer=4)
    assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY
    batches = iter(dataset)
    for _ in range(4):  # four passes of two batches
        users = [user_of_item[int(t)] for _ in range(2) for t in next(batches)["target"].numpy()]
        assert sorted(users) == list(range(10))


def test_streaming_targets_follow_the_random_cut_distribution(tmp_path):
    """Per-target frequencies over many passes against the analytic q (the in-memory sampler's)."""
    rng = np.random.default_rng(0)
    vocabulary = [f"i{i}" for i in range(30)]
    sequences = [rng.integers(2, 32, size=rng.integers(5, 16)) for _ in range(120)]
    files = write_sequence_shards(tmp_path, sequences, vocabulary, num_shards=2)
    q = numpy_reference.target_probability(sequences, len(vocabulary), min_cut=4)
    dataset = input_lib.streaming_dataset(files, str(tmp_path / "items.tsv"), batch_size=40, max_history=4, seed=0,
                                          shuffle_buffer=50)
    passes = 300
    targets = np.concatenate([b["target"].numpy() for b in dataset.take(passes * 120 // 40)])
    observed = np.bincount(targets, minlength=len(q))[2:]
    expected = q[2:] * len(targets)
    chi_square = float(np.sum((observed - expected) ** 2 / expected))
    # 29 degrees of freedom: the 0.999 quantile is 58.3. A sampler that cut uniformly over all positions
    # (not from x_4) fails it by far.
    assert chi_square < 58.3, chi_square
    wrong = numpy_reference.target_probability(sequences, len(vocabulary), min_cut=0)[2:] * len(targets)
    assert float(np.sum((observed - wrong) ** 2 / wrong)) > 200


def test_user_sample_is_seeded_and_everything_when_asked_for_all_or_more():
    first, again, other = (input_lib.user_sample(1_000, 50, seed) for seed in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert len(set(first)) == 50 and set(first) != set(other) and list(first) == sorted(first)
    for size in (0, 1_000, 5_000):
        np.testing.assert_array_equal(input_lib.user_sample(1_000, size, 0), np.arange(1_000))


def test_the_score_budget_shrinks_the_validation_sample_on_large_catalogues():
    size = input_lib.validation_sample_size
    assert size(remi_config(valid_users=2_000, valid_score_budget=200_000_000), 30_000) == 2_000
    assert size(remi_config(valid_users=2_000, valid_score_budget=200_000_000), 1_000_000) == 200
    assert size(remi_config(valid_users=2_000, valid_score_budget=1_000), 1_000_000) == input_lib.MIN_VALID_USERS
    assert size(remi_config(valid_users=2_000, valid_score_budget=0), 10_000_000) == 2_000
    assert size(remi_config(valid_users=0), 10_000_000) == 0  # 0: the whole split, whatever the budget


def test_training_validates_on_a_fixed_sample_of_the_valid_split(tmp_path, caplog):
    write_log(tmp_path / "log.csv", [(f"u{u}", f"i{(u + t) % 50}", t) for u in range(600) for t in range(8)])
    local.prepare([str(tmp_path / "log.csv")], str(tmp_path / "data"), progress=False)
    data_dir = str(tmp_path / "data")
    config = remi_config(batch_size=32, max_history=5, valid_users=10)
    inputs = input_lib.training_inputs(data_dir, config)
    users, histories, targets = input_lib.load_evaluation_split(data_dir, "valid", inputs.vocabulary, 5)
    chosen = input_lib.user_sample(len(users), 10, config.seed)
    np.testing.assert_array_equal(inputs.valid_histories, histories[chosen])
    assert [list(t) for t in inputs.valid_targets] == [list(targets[i]) for i in chosen]
    np.testing.assert_array_equal(input_lib.training_inputs(data_dir, config).valid_histories, inputs.valid_histories)
    whole = input_lib.training_inputs(data_dir, config.replace(valid_users=0))
    np.testing.assert_array_equal(whole.valid_histories, histories)
    with caplog.at_level("INFO", logger="remi_tf.input"):
        more = input_lib.training_inputs(data_dir, config.replace(valid_users=10_000))
    np.testing.assert_array_equal(more.valid_histories, histories)
    assert sum("validating on all of them" in record.message for record in caplog.records) == 1


def test_reading_the_splits_to_their_end_logs_no_out_of_range(tmp_path):
    """tf.data ends an iterator with an OUT_OF_RANGE error, which TensorFlow logs in eager mode ("Local
    rendezvous is aborting with status: OUT_OF_RANGE", as the README's Python example printed): the readers
    stop at an end marker before it, and still read every record."""
    data = synthetic.prepared_clusters(tmp_path, num_users=120, num_clusters=6, items_per_cluster=10,
                                       clusters_per_user=2, length=10, seed=3)
    probe = ("import sys; from remi_tf import input as input_lib\n"
             "vocabulary = input_lib.read_vocabulary(sys.argv[1])\n"
             "users, _ = input_lib.load_sequences(sys.argv[1], 'train', vocabulary)\n"
             "evaluated, _, _ = input_lib.load_evaluation_split(sys.argv[1], 'test', vocabulary, 20)\n"
             "print(len(users), len(evaluated), len(input_lib.read_user_ids(sys.argv[1])))")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "PYTHONPATH": REPOSITORY}  # TensorFlow's INFO lines
    done = subprocess.run([sys.executable, "-c", probe, data], capture_output=True, text=True, timeout=120,
                          env=environment)
    assert done.returncode == 0, done.stderr
    splits = json.load(open(os.path.join(data, "manifest.json")))["splits"]
    assert done.stdout.split() == [str(splits["train"]["users"]), str(splits["test"]["users"]), "120"]
    assert "cpu_feature_guard" in done.stderr or "cuda" in done.stderr.lower()  # INFO lines do show
    assert "rendezvous" not in done.stderr and "OUT_OF_RANGE" not in done.stderr, done.stderr
