"""convert -> prepare -> train -> export -> serve -> lookup, every step through the `remi` command line as a
user runs it (serve as its own process on free 127.0.0.1 ports, stopped by its pid)."""

import json
import os
import signal
import subprocess
import sys

import numpy as np

from remi import cli
from remi_tf import local_cluster
from tests import synthetic
from tests.configs import REMI_SETTINGS

STARTUP_TIMEOUT_S = 120


def test_the_commands_end_to_end(tmp_path, capsys):
    sequences, _ = synthetic.clustered_sequences(num_users=600, num_clusters=10, items_per_cluster=10,
                                                 clusters_per_user=1, length=20, seed=4)
    rows = [f"user{user},item{item},{time}" for user, items in enumerate(sequences) for time, item in enumerate(items)]
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    paths = {name: str(tmp_path / name) for name in ("events", "data", "model", "export")}
    assert cli.main(["convert", "--input", str(tmp_path / "log.csv"), "--output", paths["events"],
                     "--num-shards", "2"]) == 0
    assert cli.main(["prepare", "--input", paths["events"], "--output", paths["data"]]) == 0
    assert cli.main(["train", "--data", paths["data"], "--model-dir", paths["model"], "--quiet", "--set",
                     "embedding_dim=16", "max_steps=300", "eval_every=300", *REMI_SETTINGS, "num_interests=2"]) == 0
    assert cli.main(["evaluate", "--model-dir", paths["model"], "--split", "test"]) == 0
    assert cli.main(["export", "--model-dir", paths["model"], "--output", paths["export"], "--index", "both",
                     "--k", "10"]) == 0
    assert sorted(os.listdir(paths["export"])) == ["models.config", "models.scann.config", "remi", "remi-exact",
                                                   "remi-query", "remi.export.json"]

    port, grpc_port = local_cluster.free_ports(2)
    server = subprocess.Popen([sys.executable, "-m", "remi", "serve", "--export-dir", paths["export"],
                               "--port", str(port), "--grpc-port", str(grpc_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        capsys.readouterr()
        history = "item2 item3 item4 item5"  # one planted cluster (cluster 0: item2..item11)
        assert cli.main(["lookup", "--server", f"http://127.0.0.1:{port}", "--history", history, "--k", "5",
                         "--json", "--wait", str(STARTUP_TIMEOUT_S)]) == 0
        rest = json.loads(capsys.readouterr().out)
        assert cli.main(["lookup", "--server", f"127.0.0.1:{grpc_port}", "--grpc", "--model", "remi-exact",
                         "--history", history, "--k", "5", "--json"]) == 0
        grpc = json.loads(capsys.readouterr().out)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert len(rest["item_ids"]) == len(grpc["item_ids"]) == 5
    assert set(rest) == set(grpc) and len(rest["interest_item_ids"]) == len(grpc["interest_item_ids"])
    # REST asked the ScaNN model, gRPC the exact one: the approximate index finds the exact results here
    assert sorted(rest["item_ids"]) == sorted(grpc["item_ids"]), (rest["item_ids"], grpc["item_ids"])
    # the model learned the planted cluster: its other items come first, the history's are excluded
    cluster_items = {f"item{i}" for i in range(2, 12)} - set(history.split())
    assert np.mean([item in cluster_items for item in grpc["item_ids"]]) >= 0.8, grpc["item_ids"]
    assert not set(grpc["item_ids"]) & set(history.split())
    assert set(rest["item_ids"]) & cluster_items  # ScaNN (approximate) agrees on the cluster


def test_lookup_shows_item_names_from_a_recbole_item_file(tmp_path):
    from remi_tf.export import client as client_lib

    path = tmp_path / "ml-100k.item"
    path.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\n1\tToy Story\t1995\n"
                    "2\tGoldenEye\t1995\n")
    names = client_lib.read_item_names(str(path))
    assert names == {"1": "Toy Story", "2": "GoldenEye"}
    candidates = client_lib.Candidates(["2", "3", "4"], [0.5, 0.25, 0.125], [1, -1, 1],
                                       [["1", "4"], ["2", "4"]], [[0.3, 0.1], [0.5, 0.125]])
    table = client_lib.format_candidates(["1"], candidates, names)
    assert table.splitlines() == [
        "history: 1 (Toy Story)",
        "interest #0: no item in the merged list (its best: 1 (Toy Story))",
        "interest #1: 2 of 3",
        f"  {1:>4}  {'2 (GoldenEye)':<48} {0.5:>9.4f}",
        f"  {3:>4}  {'4':<48} {0.125:>9.4f}",
        "popular items (no known history item): 1 of 3",
        f"  {2:>4}  {'3':<48} {0.25:>9.4f}"]
    assert client_lib.candidate_rows(candidates, names)[0] == {"rank": 1, "item_id": "2", "name": "GoldenEye",
                                                               "score": 0.5, "interest": 1}


def test_lookup_of_unknown_items_shows_the_popular_items_alone():
    """A history without a known item: the served rows are all popularity candidates (interest -1); the K
    interests read nothing, so their lists are not shown, one line says why the popular items come."""
    from remi_tf.export import client as client_lib

    candidates = client_lib.Candidates(["1", "2"], [0.0, 0.0], [-1, -1], [["7", "8"], ["9", "7"]],
                                       [[0.1, 0.05], [0.2, 0.1]])
    assert client_lib.format_candidates(["x9", "x10"], candidates, {"1": "Toy Story"}).splitlines() == [
        "history: x9, x10",
        "no item of the history is known to the model: the most popular items instead",
        "popular items: 2",
        f"  {1:>4}  {'1 (Toy Story)':<48} {0.0:>9.4f}",
        f"  {2:>4}  {'2':<48} {0.0:>9.4f}"]
