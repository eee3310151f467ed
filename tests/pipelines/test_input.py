"""The tf.data input: the random cut's range, the evaluation cut, and InputContext sharding."""

import numpy as np
import tensorflow as tf

from pipelines import input as input_lib
from pipelines import local
from tests.pipelines.test_local import write_log


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
    batches = iter(input_lib.sequence_dataset(sequences, batch_size=4, max_history=3, seed=1))
    for _ in range(3):  # three passes of two batches
        targets = np.concatenate([next(batches)["target"].numpy() for _ in range(2)])
        assert sorted(targets) == list(range(10, 18))


def test_evaluation_cut():
    histories, targets = input_lib.evaluation_examples([np.arange(2, 12), np.arange(2, 32)], max_history=4)
    # n = 10: k = 8, history x4..x7 = 6..9; n = 30: k = 24, history x20..x23 = 22..25.
    np.testing.assert_array_equal(histories, [[6, 7, 8, 9], [22, 23, 24, 25]])
    np.testing.assert_array_equal(targets[0], [10, 11])
    np.testing.assert_array_equal(targets[1], np.arange(26, 32))


def test_input_context_shards_files_and_splits_the_batch(tmp_path):
    # Each user repeats an item of its own, so a target tells which user (and shard) it came from.
    write_log(tmp_path / "log.csv", [(f"u{u}", f"own{u}", t) for u in range(200) for t in range(6)])
    local.prepare([str(tmp_path / "log.csv")], str(tmp_path / "data"), num_shards=2, progress=False)
    data_dir = str(tmp_path / "data")
    vocabulary = input_lib.read_vocabulary(data_dir)
    shards = input_lib.split_files(data_dir, "train")
    shard_targets = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        dataset = input_lib.training_dataset(data_dir, vocabulary, batch_size=32, max_history=5, seed=0,
                                             input_context=context)
        batch = next(iter(dataset))
        assert batch["history"].shape == (16, 5)  # the per-replica batch
        own = {int(items[0]) for _, items in input_lib.read_indexed_sequences([shards[pipeline_id]], vocabulary)}
        assert set(batch["target"].numpy().tolist()) <= own
        shard_targets.append(own)
    assert not shard_targets[0] & shard_targets[1]
    _, all_train = input_lib.load_sequences(data_dir, "train", vocabulary)
    assert len(shard_targets[0]) + len(shard_targets[1]) == len(all_train)
