"""TF Serving's on-disk layout: `<export_dir>/<model_name>/<version>/`, warmup requests, models.config.

A version directory appears atomically: it is written under a hidden temporary name in the same
model directory and renamed when complete, so a polling server never loads half a model (TF Serving
ignores names that are not numbers).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from remi_tf import atomic

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def versions(model_base_dir: str) -> list[int]:
    """The published versions of one model, ascending."""
    if not os.path.isdir(model_base_dir):
        return []
    return sorted(int(name) for name in os.listdir(model_base_dir) if name.isdigit())


def publish_version(model_base_dir: str, version: int, write: Callable[[str], None]) -> str:
    """Runs `write(tmp_dir)` and renames tmp_dir to `<model_base_dir>/<version>` when it succeeds (the
    temporary name starts with a dot, which TF Serving ignores)."""
    final = os.path.join(model_base_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists; choose another --version")
    return atomic.publish_directory(write, final)


def write_warmup_requests(saved_model_dir: str, model_name: str, histories: Sequence[Sequence[str]],
                          signature_name: str = "serving_default") -> None:
    """`assets.extra/tf_serving_warmup_requests`: one PredictionLog per history batch size 1 and all."""
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    width = max(len(h) for h in histories)
    padded = [list(h) + [""] * (width - len(h)) for h in histories]
    with tf.io.TFRecordWriter(path) as writer:
        for batch in (padded[:1], padded):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_models_config(export_dir: str, model_names: Sequence[str], base_path: str) -> str:
    """models.config for `tensorflow_model_server --model_config_file`, with base paths under `base_path`
    (where the export directory is mounted for the server, e.g. /models in the docker image)."""
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{base_path.rstrip("/")}/{name}"\n'
        f'    model_platform: "tensorflow"\n  }}\n' for name in model_names)
    path = os.path.join(export_dir, "models.config")
    atomic.write_text(path, "model_config_list {\n" + entries + "}\n")
    return path
