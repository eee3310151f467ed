"""A small trained model (synthetic clustered data, through the CLI) and its export, shared by the tests."""

import os

import pytest

from remi import cli
from remi_tf.export import exporter
from remi_tf.data_directory import read_item_ids
from tests import synthetic
from tests.configs import REMI_SETTINGS


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    data = synthetic.prepared_clusters(root, user_prefix="user", num_users=2000, num_clusters=40, items_per_cluster=50,
                                       clusters_per_user=3, length=30, seed=0)
    assert cli.main(["train", "--data", data, "--model-dir", str(root / "model"), "--quiet",
                     "--set", *REMI_SETTINGS, "max_steps=400", "eval_every=200", "embedding_dim=16"]) == 0
    return str(root / "model")


@pytest.fixture(scope="session")
def export_dir(trained_model_dir, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("export"))
    exporter.export(trained_model_dir, output, name="remi", index="both", k=20)
    return output


@pytest.fixture(scope="session")
def vocabulary(trained_model_dir):
    return read_item_ids(os.path.join(trained_model_dir, "items.tsv"))
