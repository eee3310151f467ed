"""tf.distribute training: TF_CONFIG checks, strategy choice, and cross-replica negatives that train exactly
the one-process objective at the global batch (loss and SGD-updated weights, i.e. gradients)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from remi_tf import distribute, local_cluster

STEP_MODULE = "tests.remi_tf.distributed_step"
PROCESS_TIMEOUT_S = 240


def cluster_env(cluster, task_type="worker", index=0):
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_read_cluster_parses_tf_config():
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"], "ps": ["127.0.0.1:4"]}
    parsed = distribute.read_cluster(cluster_env(cluster, "worker", 1))
    assert (parsed.task_type, parsed.task_index, parsed.num_workers, parsed.num_ps) == ("worker", 1, 3, 1)
    assert parsed.address == "127.0.0.1:3" and not parsed.is_chief()
    assert distribute.read_cluster(cluster_env(cluster, "chief", 0)).is_chief()
    assert distribute.read_cluster(cluster_env({"worker": ["h:1", "h:2"]}, "worker", 0)).is_chief()
    assert distribute.read_cluster({}) is None
    assert distribute.read_cluster({"TF_CONFIG": '{"cluster": {}}'}) is None


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 3}}', "index 3 is out of range"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "ps", "index": 0}}', "task type 'ps' is not a job"),
    ('{"cluster": {"workers": ["h:1"]}, "task": {"type": "workers", "index": 0}}', "job 'workers'"),
    ('{"cluster": {"worker": ["h"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["h:1"]}}', "'task' must be"),
])
def test_read_cluster_rejects_bad_tf_config(tf_config, message):
    with pytest.raises(ValueError, match="TF_CONFIG") as error:
        distribute.read_cluster({"TF_CONFIG": tf_config})
    assert message in str(error.value)


def test_resolve_strategy_from_cluster_and_mismatches():
    two_workers = distribute.read_cluster(cluster_env({"worker": ["h:1", "h:2"]}))
    with_ps = distribute.read_cluster(cluster_env({"chief": ["h:0"], "worker": ["h:1"], "ps": ["h:2"]}, "chief"))
    one_worker = distribute.read_cluster(cluster_env({"worker": ["h:1"]}))
    assert distribute.resolve_strategy("auto", None) == "one-device"
    assert distribute.resolve_strategy("auto", one_worker) == "one-device"
    assert distribute.resolve_strategy("auto", two_workers) == "multi-worker"
    assert distribute.resolve_strategy("auto", with_ps) == "parameter-server"
    assert distribute.resolve_strategy("mirrored", None) == "mirrored"
    with pytest.raises(ValueError, match="needs a TF_CONFIG cluster with 'chief', 'worker' and 'ps'"):
        distribute.resolve_strategy("parameter-server", two_workers)
    with pytest.raises(ValueError, match="does not use the 'ps' tasks"):
        distribute.resolve_strategy("multi-worker", with_ps)
    with pytest.raises(ValueError, match="has 2 workers"):
        distribute.resolve_strategy("one-device", two_workers)
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.resolve_strategy("horovod", None)


def test_item_table_partitioner_splits_only_the_item_table():
    partition = distribute.item_table_partitioner(num_rows=1002, num_shards=2)
    assert partition([1002, 64], "float32") == [2, 1]
    assert partition([64, 256], "float32") == [1, 1]
    assert partition([20, 64], "float32") == [1, 1]


def test_wait_for_tasks_names_the_missing_task():
    (port,) = local_cluster.free_ports(1)
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
        distribute.wait_for_tasks([f"127.0.0.1:{port}"], timeout_s=1.0, what="parameter servers")


def run_step(tmp_path, name, *args, env=None):
    output = str(tmp_path / f"{name}.npz")
    subprocess.run([sys.executable, "-m", STEP_MODULE, *args, "--output", output], check=True,
                   timeout=PROCESS_TIMEOUT_S, env=env)
    return np.load(output)


def run_two_worker_step(tmp_path, *args):
    output = str(tmp_path / "multi_worker.npz")
    command = [sys.executable, "-m", STEP_MODULE, "--strategy", "multi-worker", *args, "--output", output]
    with local_cluster.LocalCluster(local_cluster.cluster_spec(local_cluster.ClusterShape(2, 0)), command) as cluster:
        assert cluster.wait(PROCESS_TIMEOUT_S) == 0
    return np.load(output)


def assert_same_step(result, reference):
    assert set(result.files) == set(reference.files)
    np.testing.assert_allclose(result["loss"], reference["loss"], rtol=1e-5)
    np.testing.assert_allclose(result["retrieval_loss"], reference["retrieval_loss"], rtol=1e-5)
    for name in reference.files:
        if name.startswith(("w", "initial", "estimator")):  # the update is a smooth function of the summed gradient
            # float32 rounding of updates of the weights' own size, summed in another order: a small entry's error is
            # a few ulps of the matrix's largest values, not of its own
            scale = max(1.0, float(np.abs(reference[name]).max()))
            np.testing.assert_allclose(result[name], reference[name], rtol=1e-5, atol=1e-6 * scale, err_msg=name)


@pytest.mark.parametrize("beta, logq, optimizer", [(0.0, "counts", "sgd"), (2.0, "counts", "sgd"),
                                                   (2.0, "streaming", "sgd"), (2.0, "counts", "lazy_adam")])
def test_two_replicas_train_the_global_batch_objective(tmp_path, beta, logq, optimizer):
    """Two steps with 2 replicas (MirroredStrategy over 2 logical CPUs; a 2-process MultiWorkerMirrored
    cluster) equal one replica at the global batch of 16, whose targets repeat across the halves; the
    streaming logQ estimator counts the global batch's targets on every replica. With LazyAdam the
    replicas look rows up in their own copy of the table and slots: no step reads a whole table. The
    2-process cluster (the slow part) runs once, with IHN and the streaming estimator: the cross-replica
    sums it shares with MirroredStrategy are checked by the mirrored runs of every case."""
    args = ["--beta", str(beta), "--logq", logq, "--optimizer", optimizer]
    reference = run_step(tmp_path, "one", "--strategy", "one-device", *args)
    assert np.abs(reference["w0"] - reference["initial0"]).max() > 1e-3  # the step moved the item table
    if logq == "streaming":
        assert reference["estimator_step"] == 2 and reference["estimator_gap"].max() > 0
    mirrored = run_step(tmp_path, "mirrored", "--strategy", "mirrored", "--replicas", "2", *args)
    assert_same_step(mirrored, reference)
    if optimizer == "lazy_adam":  # (stock SGD decays its momentum slot as a whole table: dense reads)
        assert mirrored["table_reads"] == 0
    if logq == "streaming":
        assert_same_step(run_two_worker_step(tmp_path, *args), reference)


def test_two_replicas_train_the_global_batch_objective_with_side_features(tmp_path):
    """The same with item categories and user profiles in the towers (their tables' sparse gradients
    summed across the replicas), MirroredStrategy over 2 logical CPUs, LazyAdam."""
    args = ["--beta", "2.0", "--optimizer", "lazy_adam", "--side-features"]
    reference = run_step(tmp_path, "one", "--strategy", "one-device", *args)
    # item table, position embedding, 2 attention kernels; the category, segment and age tables
    assert sum(name.startswith("w") for name in reference.files) == 4 + 3
    assert_same_step(run_step(tmp_path, "mirrored", "--strategy", "mirrored", "--replicas", "2", *args), reference)


def test_two_replicas_train_sasrecs_every_position_objective(tmp_path):
    """SASRec's every-position objective over 2 replicas (MirroredStrategy over 2 logical CPUs) equals one replica at
    the global batch, whose rows hold different numbers of positions (some padded): each replica's loss is its
    share of the mean over all positions. No dropout and in-batch negatives only (uniform negatives are drawn per
    replica)."""
    args = ["--optimizer", "lazy_adam", "--sasrec"]
    reference = run_step(tmp_path, "one", "--strategy", "one-device", *args)
    assert np.abs(reference["w0"] - reference["initial0"]).max() > 1e-3
    assert_same_step(run_step(tmp_path, "mirrored", "--strategy", "mirrored", "--replicas", "2", *args), reference)


def test_local_cluster_shapes_and_the_command_each_task_runs():
    from remi import cli

    assert local_cluster.parse_shape("workers=2,ps=2") == (2, 2)
    assert local_cluster.parse_shape("workers=3") == (3, 0)
    for bad in ("workers=0", "worker=2", "workers=two", "ps=2"):
        with pytest.raises(ValueError, match="--local-cluster"):
            local_cluster.parse_shape(bad)
    spec = local_cluster.cluster_spec(local_cluster.ClusterShape(2, 1))
    assert {job: len(addresses) for job, addresses in spec.items()} == {"chief": 1, "worker": 2, "ps": 1}
    assert len({a for addresses in spec.values() for a in addresses}) == 4  # four distinct free ports
    assert local_cluster.tasks_of(spec)[0] == ("chief", 0)
    argv = ["train", "--data", "d", "--local-cluster", "workers=2", "--model-dir", "m", "--local-cluster=workers=3"]
    assert cli._without_option(argv, "--local-cluster") == ["train", "--data", "d", "--model-dir", "m"]
