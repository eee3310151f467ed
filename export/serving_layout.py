"""TF Serving's on-disk layout: `<export_dir>/<model_name>/<version>/`, warmup requests, the model configs.

A version directory appears atomically: it is written under a hidden temporary name in the same
model directory and renamed when complete, so a polling server never loads half a model (TF Serving
ignores names that are not numbers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from remi_tf import atomic, model_directory

# What stock TF Serving loads (no custom ops: the exact and query models), and every model (for remi serve and
# a TF Serving build with ScaNN's ops)
MODELS_CONFIG = "models.config"
SCANN_MODELS_CONFIG = "models.scann.config"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def versions(model_base_dir: str) -> list[int]:
    """The published versions of one model, ascending."""
    if not os.path.isdir(model_base_dir):
        return []
    return sorted(int(name) for name in os.listdir(model_base_dir) if name.isdigit())


def publish_version(model_base_dir: str, version: int, write: Callable[[str], None]) -> str:
    """Runs `write(tmp_dir)` and renames tmp_dir to `<model_base_dir>/<version>` when it succeeds (the
    temporary name starts with a dot, which TF Serving ignores); temporaries of killed exports are swept."""
    final = os.path.join(model_base_dir, str(version))
    atomic.sweep_stale(model_base_dir)  # what killed exports of any version left behind
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists; choose another --version")
    return atomic.publish_directory(write, final)


EXPORT_SET_SUFFIX = ".export.json"  # <export_dir>/<name>.export.json: the served names of one export


def write_export_set(export_dir: str, name: str, model_names: Sequence[str]) -> None:
    """Records that `model_names` are published together (before any of their versions appears)."""
    atomic.write_json(os.path.join(export_dir, name + EXPORT_SET_SUFFIX), {"models": list(model_names)})


def export_sets(export_dir: str) -> list[list[str]]:
    """The groups of model names that `remi export` publishes together."""
    return [atomic.read_json(os.path.join(export_dir, entry))["models"] for entry in sorted(os.listdir(export_dir))
            if entry.endswith(EXPORT_SET_SUFFIX)]


def complete_versions(export_dir: str) -> dict[str, list[int]]:
    """Model name -> its versions that may be served, ascending: for models of an export set, the versions
    every model of the set has (a set half-published by a killed export is not served); others, all."""
    complete = {name: versions(os.path.join(export_dir, name)) for name in sorted(os.listdir(export_dir))
                if os.path.isdir(os.path.join(export_dir, name))}
    for group in export_sets(export_dir):
        shared = set.intersection(*(set(complete.get(name, [])) for name in group))
        for name in group:
            if name in complete:
                complete[name] = sorted(shared)
    return complete


def served_config_path(export_dir: str) -> str:
    """The model config `remi serve` follows: models.scann.config where the export has one (remi serve has
    ScaNN's ops), else models.config."""
    scann = os.path.join(export_dir, SCANN_MODELS_CONFIG)
    return scann if os.path.exists(scann) else os.path.join(export_dir, MODELS_CONFIG)


def configured_models(export_dir: str, config_file: str | None = None) -> list[str] | None:
    """The model names that `<export_dir>/<config_file>` lists (default: the config remi serve follows), or
    None without one."""
    path = os.path.join(export_dir, config_file) if config_file else served_config_path(export_dir)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as stream:
        return re.findall(r'^\s*name:\s*"([^"]+)"', stream.read(), flags=re.MULTILINE)


def check_export_dir(export_dir: str) -> None:
    """Stops `remi serve` on a directory that cannot hold exports: a missing one, or a model directory (what
    `remi train` wrote: config.yaml and best/) given instead of `remi export`'s output."""
    if not os.path.isdir(export_dir):
        raise FileNotFoundError(f"--export-dir {export_dir}: no such directory; expected the --output of "
                                "`remi export`")
    if model_directory.is_model_directory(export_dir):
        raise ValueError(f"--export-dir {export_dir} is a model directory (`remi train`'s --model-dir), not an "
                         f"export: run `remi export --model-dir {export_dir} --output EXPORT_DIR`, then serve "
                         "EXPORT_DIR")


def write_warmup_requests(saved_model_dir: str, model_name: str, histories: Sequence[Sequence[str]],
                          signature_name: str = "serving_default", feature_columns: Sequence[str] = ()) -> None:
    """`assets.extra/tf_serving_warmup_requests`: one PredictionLog per history batch size 1 and all
    (user feature columns, when the model takes them, with "": the OOV bucket)."""
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    width = max(len(h) for h in histories)
    padded = [list(h) + [""] * (width - len(h)) for h in histories]
    with tf.io.TFRecordWriter(path) as writer:
        for batch in (padded[:1], padded):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            for column in feature_columns:
                request.inputs[column].CopyFrom(tf.make_tensor_proto([""] * len(batch), dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_models_config(export_dir: str, model_names: Sequence[str], base_path: str,
                        config_file: str = MODELS_CONFIG) -> str:
    """A model config for `tensorflow_model_server --model_config_file`, with base paths under `base_path`
    (where the export directory is mounted for the server, e.g. /models in the docker image)."""
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{base_path.rstrip("/")}/{name}"\n'
        f'    model_platform: "tensorflow"\n  }}\n' for name in model_names)
    path = os.path.join(export_dir, config_file)
    atomic.write_text(path, "model_config_list {\n" + entries + "}\n")
    return path
