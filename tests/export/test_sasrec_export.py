"""An exported SASRec model (encoder "sasrec"): the query SavedModel gives the in-process model's interests, alone
(routing "last_position", trained on every position) and under REMI's routing, and uses only core TensorFlow ops."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import model_directory
from remi_tf.export import exporter
from tests.export.small_models import HISTORIES, model_rows, train_on_clusters
from tests.export.test_stock_serving_ops import PROBE

SETTINGS = {"sasrec": ("encoder=sasrec", "routing=last_position", "num_interests=1", "training_positions=every",
                       "encoder_heads=2"),
            "remi-over-sasrec": ("encoder=sasrec", "encoder_blocks=1")}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_exported_sasrec_interests_equal_the_model_and_use_core_ops(name, tmp_path):
    model_dir = train_on_clusters(tmp_path, 0, *SETTINGS[name])
    output = str(tmp_path / "export")
    exporter.export(model_dir, output, name="remi", index="brute-force", k=5)
    trained = model_directory.load_trained(model_dir)
    rows = model_rows(trained.model, trained.vocabulary, HISTORIES + [["item2", "unknown-id", "item3"]])
    expected = trained.model.interests(tf.constant(rows))[0].numpy()
    served = tf.saved_model.load(os.path.join(output, "remi-query", "1")).signatures["serving_default"](
        history=tf.ragged.constant(HISTORIES + [["item2", "unknown-id", "item3"]]).to_tensor(""))["interests"].numpy()
    assert served.shape == expected.shape == (4, trained.model.config.num_interests, 8)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    paths = {model: os.path.join(output, model, "1", "saved_model.pb") for model in ("remi", "remi-query")}
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(paths)], capture_output=True, text=True,
                          timeout=120, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["unregistered"] == {"remi": [], "remi-query": []}
