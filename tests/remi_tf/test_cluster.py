"""`remi train` on clusters of processes on 127.0.0.1: parameter servers reach the one-process recall with
the item table split across the ps tasks; a multi-worker run survives a killed worker; bad clusters fail
fast and clearly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from remi_tf import local_cluster
from remi_tf.pipelines import local
from tests import synthetic
from tests.pipelines.test_local import write_log
from tests.configs import REMI_SETTINGS

RUN_TIMEOUT_S = 400
SETTINGS = [*REMI_SETTINGS, "embedding_dim=16", "max_history=20", "batch_size=64", "learning_rate=0.005", "patience=0",
            "eval_batch_size=256"]


@pytest.fixture(scope="module")
def planted_data(tmp_path_factory):
    """Users who consume items from 3 of 24 planted clusters of 10 items, as a prepared data directory."""
    root = tmp_path_factory.mktemp("planted")
    sequences, _ = synthetic.clustered_sequences(num_users=1500, num_clusters=24, items_per_cluster=10,
                                                 clusters_per_user=3, length=30, seed=0)
    write_log(root / "log.csv", [(f"u{user}", f"i{item}", t) for user, items in enumerate(sequences)
                                 for t, item in enumerate(items)])
    local.prepare([str(root / "log.csv")], str(root / "data"), num_shards=2, progress=False)
    return str(root / "data")


def remi(*args, timeout=RUN_TIMEOUT_S):
    """Runs the `remi` command line in a fresh process; returns (status, output)."""
    done = subprocess.run([sys.executable, "-m", "remi", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return done.returncode, done.stdout + done.stderr


def evaluate_test_split(model_dir):
    """Evaluates in this process (a cluster's model reloads on one device)."""
    from remi import cli

    assert cli.main(["evaluate", "--model-dir", model_dir, "--split", "test"]) == 0
    return json.load(open(os.path.join(model_dir, "eval-test.json")))


def test_parameter_servers_train_to_the_one_process_recall(planted_data, tmp_path):
    from remi import cli

    steps = ["max_steps=600", "eval_every=300", "steps_per_execution=25"]
    one, cluster = str(tmp_path / "one"), str(tmp_path / "cluster")
    assert cli.main(["train", "--data", planted_data, "--model-dir", one, "--quiet", "--set", *SETTINGS, *steps]) == 0
    # Without --quiet, as docs/distributed.md runs it (Keras allows no per-step progress bar under parameter servers).
    status, output = remi("train", "--data", planted_data, "--model-dir", cluster, "--set", *SETTINGS, *steps,
                          "--local-cluster", "workers=2,ps=2")
    assert status == 0, output
    assert "[chief:0] best valid recall@50" in output
    run = json.load(open(os.path.join(cluster, "run.json")))
    assert run["strategy"] == "parameter-server" and run["training_input"] == "streaming"
    shards = run["item_table_shards"]
    assert sorted(shard["device"].split("/device")[0] for shard in shards) == [
        "/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"]
    assert [shard["rows"] for shard in shards] == [121, 121]  # 240 items + padding + OOV, halved
    one_recall, cluster_recall = evaluate_test_split(one)["recall@20"], evaluate_test_split(cluster)["recall@20"]
    # A user's targets lie in 3 of 24 clusters (30 of 240 items): random retrieval recalls ~20 / 240 = 0.08.
    assert one_recall > 0.4
    assert cluster_recall > one_recall - 0.05, (cluster_recall, one_recall)


def backup_step(model_dir):
    """The step of the chief's newest backup (Keras BackupAndRestore), or 0."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "backup", "chief"))
    if latest is None:
        return 0
    return int(tf.train.load_checkpoint(latest).get_tensor("model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def test_multi_worker_run_resumes_after_a_worker_is_killed(planted_data, tmp_path):
    model_dir = str(tmp_path / "model")
    command = [sys.executable, "-m", "remi", "train", "--data", planted_data, "--model-dir", model_dir,
               "--quiet", "--set", *SETTINGS, "max_steps=600", "eval_every=300", "checkpoint_every=100",
               "steps_per_execution=20"]
    cluster = local_cluster.cluster_spec(local_cluster.ClusterShape(2, 0))
    with local_cluster.LocalCluster(cluster, command, output=open(os.devnull, "w")) as running:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while backup_step(model_dir) < 200 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in running.processes.values()), "a task ended early"
            time.sleep(0.5)
        killed_at = backup_step(model_dir)
        assert killed_at >= 200
        os.killpg(running.processes[("worker", 1)].pid, signal.SIGKILL)
        assert running.wait(120) != 0  # the cluster notices and stops
    assert not os.path.exists(os.path.join(model_dir, "eval-test.json"))
    log_path = tmp_path / "rerun.log"
    with open(log_path, "w") as log, local_cluster.LocalCluster(cluster, command, output=log) as rerun:
        assert rerun.wait(RUN_TIMEOUT_S) == 0
    rerun_log = log_path.read_text()
    resumed = [int(line.rsplit(" ", 1)[1]) for line in rerun_log.splitlines()
               if line.startswith("[worker:0] resumed from the backup at step")]
    assert resumed and resumed[0] >= killed_at, rerun_log[-3000:]  # at most checkpoint_every steps lost
    validation = json.load(open(os.path.join(model_dir, "validation.json")))
    assert [e["step"] for e in validation["evaluations"]] == [300, 600]
    assert validation["best"] == max(e["val_recall@50"] for e in validation["evaluations"])


def test_parameter_server_training_survives_a_restarted_worker(planted_data, tmp_path):
    model_dir = str(tmp_path / "model")
    command = [sys.executable, "-m", "remi", "train", "--data", planted_data, "--model-dir", model_dir,
               "--quiet", "--set", *SETTINGS, "max_steps=1200", "eval_every=300", "steps_per_execution=10"]
    validation_path = os.path.join(model_dir, "validation.json")
    cluster = local_cluster.cluster_spec(local_cluster.ClusterShape(2, 2))
    with local_cluster.LocalCluster(cluster, command, output=open(os.devnull, "w")) as running:
        chief = running.processes[("chief", 0)]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not os.path.exists(validation_path) and chief.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert os.path.exists(validation_path), "no first evaluation"
        worker = running.processes[("worker", 1)]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
        restarted = running.start_task(("worker", 1))
        assert running.wait(RUN_TIMEOUT_S) == 0
        assert restarted.poll() is None  # the new worker:1 served until the end
    assert [e["step"] for e in json.load(open(validation_path))["evaluations"]] == [300, 600, 900, 1200]


def test_a_cluster_task_that_never_comes_is_a_clear_error(planted_data, tmp_path):
    (absent,) = local_cluster.free_ports(1)
    cluster = {"worker": [f"127.0.0.1:{local_cluster.free_ports(1)[0]}", f"127.0.0.1:{absent}"]}
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    model_dir = str(tmp_path / "model")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "remi", "train", "--data", planted_data, "--model-dir",
                           model_dir, "--set", "cluster_timeout_s=8"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 1  # a failed run (exit code 2 is for usage errors)
    assert f"no answer from ['127.0.0.1:{absent}']" in done.stderr, done.stderr[-2000:]
    assert time.monotonic() - started < 60
    assert not os.path.exists(model_dir)


@pytest.mark.parametrize("tf_config, strategy, message", [
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', "auto", "index 1 is out of range"),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}',
     "parameter-server", "needs a TF_CONFIG cluster with 'chief', 'worker' and 'ps'"),
    ("[1, 2]", "auto", "TF_CONFIG must be a JSON object"),
])
def test_bad_tf_config_or_strategy_is_a_clear_error(planted_data, tmp_path, tf_config, strategy, message,
                                                    monkeypatch, capsys):
    from remi import cli

    model_dir = str(tmp_path / "model")
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert cli.main(["train", "--data", planted_data, "--model-dir", model_dir, "--strategy", strategy]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(model_dir)


TASK = "import time; from remi_tf import local_cluster; local_cluster.follow_parent(0.1); time.sleep(120)"
CLUSTER = ("import sys, time; from remi_tf import local_cluster; "
           "cluster = local_cluster.LocalCluster({'ps': ['127.0.0.1:1']}, [sys.executable, '-c', %r]); "
           "print(cluster.start_task(('ps', 0)).pid, flush=True); time.sleep(120)" % TASK)


def running(pid):
    """Whether process `pid` runs (a zombie that nobody reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_task_ends_when_the_process_that_started_its_cluster_is_killed():
    """A cluster's process killed before it could stop its tasks (SIGKILL; a SIGTERM skips pytest's finalizers):
    the tasks, in sessions of their own, end by themselves instead of serving forever."""
    parent = subprocess.Popen([sys.executable, "-c", CLUSTER], stdout=subprocess.PIPE, text=True)
    task = None
    try:
        task = int(parent.stdout.readline())
        time.sleep(1.0)
        assert running(task)  # it follows a live parent
        parent.kill()
        parent.wait(30)
        deadline = time.monotonic() + 20
        while running(task) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(task)
    finally:
        parent.kill()
        if task is not None and running(task):
            os.kill(task, signal.SIGKILL)
