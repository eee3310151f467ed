"""A killed training run resumes from its last backup instead of starting over."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.configs import remi_config
from remi_tf import config as config_lib
from remi_tf import evaluate as evaluate_lib
from remi_tf import model_directory, models, train
from remi_tf.input import evaluation_examples, sequence_dataset
from tests import synthetic


class Kill(tf.keras.callbacks.Callback):
    """Raises at the first batch end past `at_step` optimizer steps (steps_per_execution steps at a time)."""

    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) >= self.at_step:
            raise KeyboardInterrupt("killed")


class StartProbe(tf.keras.callbacks.Callback):
    """Records the optimizer step when training begins (after BackupAndRestore restored it)."""

    def on_train_begin(self, logs=None):
        self.start_step = int(self.model.optimizer.iterations)


def test_resume_after_kill(tmp_path, monkeypatch):
    sequences, _ = synthetic.clustered_sequences(300, 6, 10, 2, 20, seed=1)
    config = remi_config(embedding_dim=8, batch_size=32, max_steps=200, eval_every=100,
                                   checkpoint_every=50, steps_per_execution=10, patience=0)
    histories, targets = evaluation_examples(sequences[250:], config.max_history)
    model_dir = str(tmp_path / "model")

    def run(extra_callbacks=()):
        model = models.RemiModel(config, 60)
        original_fit = model.fit
        monkeypatch.setattr(model, "fit", lambda *a, **k: original_fit(
            *a, **{**k, "callbacks": k["callbacks"] + list(extra_callbacks)}))
        dataset = sequence_dataset(sequences[:250], config.batch_size, config.max_history, seed=0)
        train.train(model, config, dataset, histories, targets, model_dir, verbose=0)
        return model

    with pytest.raises(KeyboardInterrupt):
        run([Kill(at_step=170)])
    with open(os.path.join(model_dir, "validation.json")) as stream:
        assert [e["step"] for e in json.load(stream)["evaluations"]] == [100]
    probe = StartProbe()
    resumed = run([probe])
    # The backup at step 150 (not 0) was restored, and training ran to max_steps exactly: no step of the
    # backed-up execution is repeated (stock Keras resumed at its first step: 9 steps twice, 209 in all).
    assert probe.start_step == 150
    assert int(resumed.optimizer.iterations) == 200
    with open(os.path.join(model_dir, "validation.json")) as stream:
        assert [e["step"] for e in json.load(stream)["evaluations"]] == [100, 200]
    assert config_lib.load(os.path.join(model_dir, "config.yaml")) == config


def test_a_kill_between_a_backup_and_its_evaluation_evaluates_on_resume(tmp_path, monkeypatch):
    """The evaluation at step 100 backs up before it records itself in validation.json: killed between the two,
    the resumed run evaluates the restored weights at step 100 first, and history.csv keeps the training loss
    of that epoch that was written before the kill (the real-kill test found the evaluation missing: it resumed
    at the next epoch)."""
    sequences, _ = synthetic.clustered_sequences(300, 6, 10, 2, 20, seed=1)
    config = remi_config(embedding_dim=8, batch_size=32, max_steps=200, eval_every=100,
                                   checkpoint_every=1000, steps_per_execution=10, patience=0)
    histories, targets = evaluation_examples(sequences[250:], config.max_history)
    model_dir = str(tmp_path / "model")

    def run():
        model = models.RemiModel(config, 60)
        dataset = sequence_dataset(sequences[:250], config.batch_size, config.max_history, seed=0)
        return train.train(model, config, dataset, histories, targets, model_dir, verbose=0), model

    with monkeypatch.context() as patches:
        def killed(*args):
            raise KeyboardInterrupt("killed")
        patches.setattr(model_directory, "write_validation", killed)
        with pytest.raises(KeyboardInterrupt):
            run()
    assert not os.path.exists(os.path.join(model_dir, "validation.json"))
    assert [int(os.path.basename(p).split("-")[1]) for p in model_directory.backups(
        os.path.join(model_dir, "backup", "chief"))] == [1]  # the evaluation's backup, no checkpoint_every one
    restored = models.RemiModel(config, 60)
    tf.train.Checkpoint(model=restored).read(model_directory.latest_backup(model_dir)).expect_partial()
    expected = evaluate_lib.evaluate(restored, histories, targets)["recall@50"]
    loss_before = model_directory.read_history(model_dir)[0]["loss"]
    state, _ = run()
    assert [e["step"] for e in state["evaluations"]] == [100, 200]
    assert state["evaluations"][0]["val_recall@50"] == pytest.approx(expected, abs=1e-9)
    history = model_directory.read_history(model_dir)
    assert list(history) == [0, 1] and history[0]["loss"] == loss_before and float(loss_before) > 0
    assert float(history[0]["val_recall@50"]) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("changes", [{}, {"routing": "comirec_dr", "interest_scoring": "max"}])
def test_best_checkpoint_holds_the_weights_without_optimizer_slots(tmp_path, changes):
    """Every trained weight (a capsule routing's maps too) is restored."""
    sequences, _ = synthetic.clustered_sequences(200, 6, 10, 2, 20, seed=2)
    config = remi_config(embedding_dim=8, batch_size=32, max_steps=40, eval_every=40, steps_per_execution=10,
                                   patience=0, **changes)
    histories, targets = evaluation_examples(sequences[150:], config.max_history)
    model = models.RemiModel(config, 60)
    dataset = sequence_dataset(sequences[:150], config.batch_size, config.max_history, seed=0)
    train.train(model, config, dataset, histories, targets, str(tmp_path), verbose=0)
    saved = tf.train.load_checkpoint(model_directory.best_checkpoint_prefix(str(tmp_path))).get_variable_to_shape_map()
    assert not [name for name in saved if "optimizer" in name]
    restored = models.RemiModel(config, 60)
    model_directory.restore_best(restored, str(tmp_path))
    assert len(model.trainable_weights) == len(restored.trainable_weights)
    for trained, loaded in zip(model.trainable_weights, restored.trainable_weights, strict=True):
        np.testing.assert_array_equal(trained.numpy(), loaded.numpy(), err_msg=trained.name)


def test_a_finished_run_is_not_trained_again_and_a_broken_backup_is_named(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="remi_tf")
    sequences, _ = synthetic.clustered_sequences(200, 6, 10, 2, 20, seed=3)
    config = remi_config(embedding_dim=8, batch_size=32, max_steps=40, eval_every=20, checkpoint_every=20,
                                   steps_per_execution=10, patience=0)
    histories, targets = evaluation_examples(sequences[150:], config.max_history)
    model_dir = str(tmp_path / "model")

    def run(config):
        model = models.RemiModel(config, 60)
        dataset = sequence_dataset(sequences[:150], config.batch_size, config.max_history, seed=0)
        train.train(model, config, dataset, histories, targets, model_dir, verbose=0)
        return int(model.optimizer.iterations)

    assert run(config) == 40
    files = {name: open(os.path.join(model_dir, name), "rb").read() for name in ("validation.json", "history.csv")}
    assert run(config) == 0  # the same command again: nothing trained, nothing appended
    assert "training already finished at step 40" in caplog.text
    assert files == {name: open(os.path.join(model_dir, name), "rb").read() for name in files}

    def truncate(prefix):
        data_file = prefix + ".data-00000-of-00001"
        with open(data_file, "r+b") as stream:
            stream.truncate(os.path.getsize(data_file) // 2)

    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "backup", "chief"))
    truncate(latest)  # the latest backup (step 40) is broken: training on falls back to the previous (step 20)
    with open(latest + ".index", "r+b") as stream:  # its index too: unreadable before any tensor is
        stream.truncate(os.path.getsize(latest + ".index") // 2)
    assert run(config.replace(max_steps=60)) == 60
    assert "the latest backup cannot be read" in caplog.text
    with open(os.path.join(model_dir, "validation.json")) as stream:
        assert [e["step"] for e in json.load(stream)["evaluations"]] == [20, 40, 60]

    kept = model_directory.backups(os.path.join(model_dir, "backup", "chief"))
    assert len(kept) == 2  # the latest (step 60) and the one before it (step 40)
    for prefix in kept:
        truncate(prefix)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "backup", "chief"))
    with pytest.raises(RuntimeError, match=f"{latest}: the backup of the interrupted run cannot be read .*nor a "
                                           "previous one; move "):
        run(config.replace(max_steps=80))  # asked to train on: neither backup can be restored


def test_model_selection_keeps_the_best_step_and_stops_after_patience(tmp_path):
    sequences, _ = synthetic.clustered_sequences(200, 6, 10, 2, 20, seed=4)
    config = remi_config(embedding_dim=8, batch_size=32, max_steps=100, eval_every=10,
                                   steps_per_execution=5, patience=2)
    model = models.RemiModel(config, 60)
    train.compile_model(model, config)
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.1, 0.5])  # best at the 2nd evaluation, then 2 without improvement
    weights_at = {}

    def scripted_evaluation():
        weights_at[int(model.optimizer.iterations)] = [w.numpy() for w in model.trainable_weights]
        return {train.SELECTION_METRIC: next(scores)}

    selection = train.ValidationCallback(scripted_evaluation, str(tmp_path), patience=2, steps_per_epoch=10)
    dataset = sequence_dataset(sequences, config.batch_size, config.max_history, seed=0)
    model.fit(dataset, epochs=10, steps_per_epoch=10, callbacks=[selection], verbose=0)
    assert int(model.optimizer.iterations) == 40  # stopped early, not at max_steps
    with open(os.path.join(tmp_path, "validation.json")) as stream:
        state = json.load(stream)
    assert [e["step"] for e in state["evaluations"]] == [10, 20, 30, 40]
    assert (state["best"], state["best_step"], state["evaluations_without_improvement"]) == (0.3, 20, 2)
    restored = models.RemiModel(config, 60)
    model_directory.restore_best(restored, str(tmp_path))
    for best, loaded in zip(weights_at[20], restored.trainable_weights, strict=True):  # the weights of step 20, not 40
        np.testing.assert_array_equal(best, loaded.numpy())
    assert not np.array_equal(weights_at[20][0], weights_at[40][0])


def test_a_resumed_run_whose_restored_step_stops_it_records_no_evaluation_after_that_step(tmp_path):
    """Killed after the backup at step 20 but before its record: on resume the restored step is evaluated and,
    with no improvement and patience 1, stops the run; Keras still trains one execution before it reads that, and
    the epoch's end must not add an evaluation at step 30 (nor a history row, nor a second count)."""
    sequences, _ = synthetic.clustered_sequences(200, 6, 10, 2, 20, seed=5)
    config = remi_config(embedding_dim=8, batch_size=32, max_steps=40, eval_every=10,
                                   steps_per_execution=5, patience=1)
    first = train.ValidationCallback(lambda: {train.SELECTION_METRIC: 0.3}, str(tmp_path), patience=1,
                                     steps_per_epoch=10)
    model = models.RemiModel(config, 60)
    train.compile_model(model, config)
    dataset = sequence_dataset(sequences, config.batch_size, config.max_history, seed=0)
    model.fit(dataset, epochs=1, steps_per_epoch=10, callbacks=[first], verbose=0)  # step 10 evaluated
    model.optimizer.iterations.assign(20)  # as if the backup at step 20 was restored, its evaluation not recorded
    resumed = train.ValidationCallback(lambda: {train.SELECTION_METRIC: 0.1}, str(tmp_path), patience=1,
                                       steps_per_epoch=10)
    model.fit(dataset, initial_epoch=2, epochs=4, steps_per_epoch=10, callbacks=[resumed], verbose=0)
    with open(os.path.join(tmp_path, "validation.json")) as stream:
        state = json.load(stream)
    assert [e["step"] for e in state["evaluations"]] == [10, 20]
    assert (state["best_step"], state["evaluations_without_improvement"]) == (10, 1)
    rows = open(os.path.join(tmp_path, "history.csv")).read().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"], rows


def test_a_backup_of_0_1_0_holding_retired_objects_is_refused_naming_the_way_on(tmp_path):
    """A backup whose object graph holds what 0.2.0 retired (an interest-weight tracker) is not resumed: the error
    names the retired objects and the warm start from the same directory; a backup without them passes."""
    backup_dir = tmp_path / "model" / "backup"
    chief = backup_dir / model_directory.CHIEF_BACKUP
    tracker = tf.keras.metrics.Mean("interest_weight_tracker")
    old = tf.train.Checkpoint(model=tf.train.Checkpoint(interest_weight_tracker=tracker,
                                                        loss_tracker=tf.keras.metrics.Mean("loss")))
    tf.train.CheckpointManager(old, str(chief), max_to_keep=1).save()
    with pytest.raises(RuntimeError, match=r"written by remi-tf 0\.1\.0 \(it holds interest_weight_tracker.*"
                                           rf"--warm-start {tmp_path / 'model'}"):
        train.check_backup(str(backup_dir))
    current = tf.train.Checkpoint(model=tf.train.Checkpoint(loss_tracker=tf.keras.metrics.Mean("loss")))
    tf.train.CheckpointManager(current, str(tmp_path / "other" / "backup" / model_directory.CHIEF_BACKUP),
                               max_to_keep=1).save()
    train.check_backup(str(tmp_path / "other" / "backup"))
