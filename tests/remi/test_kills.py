"""Real kills (issue 25): `remi train`, `remi prepare --overwrite` and `remi export` run as subprocesses, are
sent SIGKILL while they work, and are run again; what is on disk after each kill and after the rerun is
checked (test_resume.py and test_atomic.py simulate the kill inside the process)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from remi_tf.export import serving_layout
from tests import synthetic
from tests.configs import REMI_SETTINGS

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_S = 240  # the longest any wait below may take


def start_remi(*arguments):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPOSITORY}
    return subprocess.Popen([sys.executable, "-m", "remi", *map(str, arguments)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=environment, cwd=REPOSITORY, start_new_session=True)


def kill(process):
    """SIGKILL to the process and its children (its own session), then reaped."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def run_remi(*arguments):
    process = start_remi(*arguments)
    try:
        _, stderr = process.communicate(timeout=WAIT_S)
    finally:
        kill(process)
    assert process.returncode == 0, stderr.decode()[-3000:]


def wait_for(condition, process, what):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert process.poll() is None, f"the process ended before {what}: {process.stderr.read().decode()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    return synthetic.prepared_clusters(root, num_users=300, num_clusters=6, items_per_cluster=10, clusters_per_user=2,
                                       length=20, seed=5)


TRAINING = ["--quiet", "--set", *REMI_SETTINGS, "max_steps=240", "eval_every=60", "checkpoint_every=60",
            "steps_per_execution=10", "embedding_dim=8", "patience=0"]


def test_a_killed_training_run_resumes_and_records_each_step_once(data, tmp_path):
    model_dir = tmp_path / "model"
    process = start_remi("train", "--data", data, "--model-dir", model_dir, *TRAINING)
    try:  # killed after its first backup (step 60 or later), before the end
        wait_for(lambda: (model_dir / "backup" / "chief" / "checkpoint").exists(), process, "first backup")
    finally:
        kill(process)
    evaluated = json.load(open(model_dir / "validation.json"))["evaluations"] \
        if (model_dir / "validation.json").exists() else []
    assert [e["step"] for e in evaluated] in ([], [60], [60, 120], [60, 120, 180])
    run_remi("train", "--data", data, "--model-dir", model_dir, *TRAINING)
    state = json.load(open(model_dir / "validation.json"))
    assert [e["step"] for e in state["evaluations"]] == [60, 120, 180, 240]
    epochs = [int(row.split(",")[0]) for row in open(model_dir / "history.csv").read().splitlines()[1:]]
    assert len(epochs) == len(set(epochs)) and set(epochs) >= {1, 2, 3}  # each epoch once (the killed one's may lack)
    steps = [e["step"] for e in state["evaluations"]]
    assert state["best_step"] in steps and (model_dir / "best" / "ckpt.index").exists()


def test_a_killed_overwrite_leaves_the_old_or_the_new_data_whole(tmp_path):
    """Killed at several moments of `remi prepare --overwrite`, the output directory is always one complete
    data set (its manifest's counts match its own shards); the rerun replaces it and sweeps what the kills
    left aside."""
    sequences, _ = synthetic.clustered_sequences(num_users=6000, num_clusters=20, items_per_cluster=20,
                                                 clusters_per_user=2, length=30, seed=6)
    synthetic.write_log(tmp_path / "old.csv", sequences[:300])
    synthetic.write_log(tmp_path / "new.csv", sequences)
    output = tmp_path / "out"
    run_remi("prepare", "--input", tmp_path / "old.csv", "--output", output)
    old_events = json.load(open(output / "manifest.json"))["input_events"]
    new_events = sum(len(sequence) for sequence in sequences)
    for delay in (1.0, 2.5, 4.0, 6.0):
        process = start_remi("prepare", "--input", tmp_path / "new.csv", "--output", output, "--overwrite")
        try:
            time.sleep(delay)
        finally:
            kill(process)
        manifest = json.load(open(output / "manifest.json"))
        assert manifest["input_events"] in (old_events, new_events), delay
        written = {name: os.path.getsize(output / name) for name in os.listdir(output)}
        assert set(written) >= {"items.tsv", "manifest.json", "train-00000-of-00001.tfrecord"}, (delay, written)
        assert sum(1 for _ in open(output / "items.tsv")) == manifest["num_items"], delay
    run_remi("prepare", "--input", tmp_path / "new.csv", "--output", output, "--overwrite")
    assert json.load(open(output / "manifest.json"))["input_events"] == new_events
    assert [name for name in os.listdir(tmp_path) if name.startswith(".out.")] == []


def test_a_killed_export_is_never_served_and_the_next_export_publishes_whole(data, tmp_path):
    model_dir = tmp_path / "model"
    run_remi("train", "--data", data, "--model-dir", model_dir, "--quiet", "--set", "max_steps=20", "eval_every=20",
             "embedding_dim=8")
    export_dir = tmp_path / "export"
    run_remi("export", "--model-dir", model_dir, "--output", export_dir, "--index", "brute-force", "--k", "5")
    for delay in (0.5, 3.0, 6.0):
        process = start_remi("export", "--model-dir", model_dir, "--output", export_dir, "--index", "brute-force",
                             "--k", "5")
        try:
            time.sleep(delay)
        finally:
            kill(process)
        served = serving_layout.complete_versions(str(export_dir))
        assert served["remi"] == served["remi-query"], (delay, served)  # an export set is served whole or not at all
        for version in served["remi"]:
            assert (export_dir / "remi" / str(version) / "saved_model.pb").exists(), (delay, version)
    run_remi("export", "--model-dir", model_dir, "--output", export_dir, "--index", "brute-force", "--k", "5")
    served = serving_layout.complete_versions(str(export_dir))
    assert served["remi"] == served["remi-query"] and len(served["remi"]) >= 2
    newest = np.max(served["remi"])
    assert (export_dir / "remi" / str(newest) / "saved_model.pb").exists()
    leftovers = [os.path.join(folder, name) for folder, names, files in os.walk(export_dir)
                 for name in names + files if ".tmp-" in name]
    assert leftovers == []  # the killed exports' temporaries were swept


class Killed(BaseException):
    """A simulated kill: nothing of the command runs after it (remi's error handling catches Exception only)."""


class KillAfterWrites:
    """Counts the writes `remi train` makes into its model directory (each file written whole, a checkpoint
    saved, a backup file moved aside, the vocabulary copied) and raises Killed right after the `kill_after`-th
    (None: counts only)."""

    def __init__(self, monkeypatch, kill_after=None):
        import tensorflow as tf

        from remi_tf import atomic

        self.kill_after, self.writes, self.inside = kill_after, [], False
        for owner, name in ((atomic, "write_text"), (tf.io.gfile, "copy"), (tf.io.gfile, "rename"),
                            (tf.train.CheckpointManager, "save"), (tf.train.Checkpoint, "write")):
            monkeypatch.setattr(owner, name, self.counted(getattr(owner, name), name))

    def counted(self, write, name):
        def counted_write(*args, **kwargs):
            if self.inside:  # a rename inside atomic.write_text is part of that one write
                return write(*args, **kwargs)
            self.inside = True
            try:
                result = write(*args, **kwargs)
            finally:
                self.inside = False
            self.writes.append(f"{name}({args[0] if isinstance(args[0], str) else args[1:2]})")
            if len(self.writes) == self.kill_after:
                raise Killed(self.writes[-1])
            return result
        return counted_write


def test_a_kill_after_any_write_of_a_training_run_is_resumed_by_the_same_command(tmp_path, monkeypatch):
    """Issue 40 item 4: killed between any two of its writes (here after each one in turn; the first
    evaluation, at step 10, comes before the first checkpoint_every backup), the same `remi train` command
    finishes the run with each evaluation in validation.json and each row of history.csv once. Before, a kill
    between the first evaluation and the first backup left a directory the command refused."""
    from remi import cli

    data = synthetic.prepared_clusters(tmp_path, num_users=120, num_clusters=6, items_per_cluster=10,
                                       clusters_per_user=2, length=12, seed=7)
    command = ["train", "--data", data, "--quiet", "--set", "max_steps=20", "eval_every=10", "checkpoint_every=1000",
               "steps_per_execution=10", "embedding_dim=8", "batch_size=16", "patience=0"]
    with monkeypatch.context() as patches:
        counter = KillAfterWrites(patches)
        assert cli.main([*command, "--model-dir", str(tmp_path / "whole")]) == 0
    assert len(counter.writes) >= 6, "\n".join(counter.writes)
    for kill_after in range(1, len(counter.writes)):
        model_dir = str(tmp_path / f"killed-{kill_after}")
        with monkeypatch.context() as patches:
            KillAfterWrites(patches, kill_after)
            with pytest.raises(Killed):
                cli.main([*command, "--model-dir", model_dir])
        assert cli.main([*command, "--model-dir", model_dir]) == 0, (kill_after, counter.writes[kill_after - 1])
        state = json.load(open(os.path.join(model_dir, "validation.json")))
        assert [e["step"] for e in state["evaluations"]] == [10, 20], kill_after
        rows = open(os.path.join(model_dir, "history.csv")).read().splitlines()
        assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"], (kill_after, rows)
        assert state["best_step"] in (10, 20) and os.path.exists(os.path.join(model_dir, "best", "ckpt.index"))


def test_prepare_sweeps_what_killed_prepares_left_beside_its_output_and_says_so(tmp_path, capsys):
    """Issue 40 item 4: a prepare killed while it spilled its buckets or built its output leaves `.out.spill-PID-*`
    / `.out.tmp-PID-*` beside the output; the next prepare of that output removes those of processes that are
    gone, naming each, and leaves a running prepare's (here this process's) alone."""
    from remi import cli

    gone = subprocess.Popen(["true"])
    gone.wait()
    leftovers = [f".out.spill-{gone.pid}-x1", f".out.tmp-{gone.pid}-x2"]
    running = f".out.spill-{os.getpid()}-x3"
    for name in [*leftovers, running]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "bucket-0.events").write_bytes(b"events")
    sequences, _ = synthetic.clustered_sequences(num_users=60, num_clusters=6, items_per_cluster=10,
                                                 clusters_per_user=2, length=12, seed=8)
    synthetic.write_log(tmp_path / "log.csv", sequences)
    assert cli.main(["prepare", "--input", str(tmp_path / "log.csv"), "--output", str(tmp_path / "out")]) == 0
    assert sorted(name for name in os.listdir(tmp_path) if name.startswith(".out.")) == [running]
    error = capsys.readouterr().err
    for name in leftovers:
        assert f"removed {tmp_path / name}: left by a killed run (process {gone.pid} is gone)" in error, error
