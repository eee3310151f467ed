"""The models `remi serve` serves: the newest loadable version of each model under an export directory,
their status and signature defs, and running a signature on checked inputs (the protocol-free core of
the REST and gRPC front ends)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np
import scann  # noqa: F401  (registers the ScaNN TF ops, so that ScaNN retrieval models load)
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from remi_tf.export import serving_layout
from remi_tf.export.batching import Batcher

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
MAX_REQUEST_VALUES = 1 << 24  # items in one request's history tensor (REST rows x columns, gRPC shape)


class ServingError(Exception):
    """A request error: `code` is "INVALID_ARGUMENT" or "NOT_FOUND"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ModelRegistry:
    """The newest loadable version of each model under `export_dir`, reloaded when a newer one appears;
    with a model config there (serving_layout.served_config_path: models.scann.config, else models.config),
    only the models it lists (one removed from it is unloaded, logged).

    The models of one `remi export` (an export set) are served at versions all of them have, so that a
    killed export never mixes versions. A version that fails to load is reported (in its status, state
    END with the error, and in the log) and skipped: the newest good version is served, and later
    versions are still tried. With a `batcher`, concurrent predictions run in batches (export/batching.py);
    `max_batch_size` bounds one request's rows either way.
    """

    def __init__(self, export_dir: str, max_batch_size: int = 1024, batcher: Batcher | None = None) -> None:
        serving_layout.check_export_dir(export_dir)
        self.export_dir = export_dir
        self.max_batch_size = max_batch_size
        self.batcher = batcher
        self._models: dict[str, tuple[int, Any]] = {}
        self.failures: dict[tuple[str, int], str] = {}  # (name, version) -> why it did not load
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> list[str]:
        """Loads the newest loadable version of each model newer than the one served; returns the
        `name/version`s loaded now."""
        loaded = []
        available_versions = serving_layout.complete_versions(self.export_dir)
        configured = serving_layout.configured_models(self.export_dir)
        if configured is not None:  # the model config says what is served, as for TF Serving
            available_versions = {name: found for name, found in available_versions.items() if name in configured}
            for name in sorted(set(self.served()) - set(configured)):
                with self._lock:
                    version, _ = self._models.pop(name)
                logger.info(f"unloaded {name}/{version}: no longer in "
                            f"{serving_layout.served_config_path(self.export_dir)}")
        for name, available in available_versions.items():
            served = self._models.get(name, (0, None))[0]
            for version in reversed(available):
                if version <= served:
                    break
                if (name, version) in self.failures:
                    continue
                try:
                    module = tf.saved_model.load(os.path.join(self.export_dir, name, str(version)))
                except Exception as error:  # noqa: BLE001 (any load failure: report it and try older ones)
                    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    self.failures[(name, version)] = f"{type(error).__name__}: {reason}"
                    logger.warning(f"{name}/{version} failed to load and is skipped: {self.failures[(name, version)]}")
                    continue
                with self._lock:
                    self._models[name] = (version, module)
                loaded.append(f"{name}/{version}")
                logger.info(f"loaded {name}/{version}" + (f" (unloaded {name}/{served})" if served else ""))
                break
        return loaded

    def served(self) -> dict[str, int]:
        """Model name -> the version being served."""
        with self._lock:
            return {name: version for name, (version, _) in self._models.items()}

    def status(self, name: str, version: int | None = None) -> list[dict]:
        """TF Serving's model_version_status: the served version AVAILABLE, failed versions END with
        their error (a version asked for by number: that one only)."""
        failed = [{"version": str(v), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": message}}
                  for (model, v), message in sorted(self.failures.items(), reverse=True)
                  if model == name and version in (None, v)]
        if version is not None and failed:
            return failed
        if failed and name not in self._models:
            return failed
        served = self._served(name, version)
        return [{"version": str(served[0]), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
                *failed]

    def signature_defs(self, name: str, version: int | None = None
                       ) -> tuple[int, get_model_metadata_pb2.SignatureDefMap]:
        """(served version, its SignatureDefMap): TF Serving's model metadata, read from saved_model.pb."""
        served_version, _ = self._served(name, version)
        saved_model = saved_model_pb2.SavedModel()
        with tf.io.gfile.GFile(os.path.join(self.export_dir, name, str(served_version), "saved_model.pb"), "rb") as f:
            saved_model.ParseFromString(f.read())
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in saved_model.meta_graphs[0].signature_def.items():
            signatures.signature_def[key].CopyFrom(signature)
        return served_version, signatures

    def _served(self, name: str, version: int | None) -> tuple[int, Any]:
        with self._lock:
            served = self._models.get(name)
        if served is None:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
        if version is not None and version != served[0]:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
        return served

    def predict(self, name: str, version: int | None, signature_name: str, inputs: dict[str, np.ndarray]
                ) -> tuple[int, dict[str, np.ndarray]]:
        """Runs one signature; returns (version, outputs)."""
        served_version, module = self._served(name, version)
        signature_name = signature_name or DEFAULT_SIGNATURE
        if signature_name not in module.signatures:
            raise ServingError("INVALID_ARGUMENT", f"Serving signature name: \"{signature_name}\" not found in "
                                                   f"signature def; available: {sorted(module.signatures)}")
        function = module.signatures[signature_name]
        expected = function.structured_input_signature[1]
        if set(inputs) != set(expected):
            raise ServingError("INVALID_ARGUMENT", f"expected inputs {sorted(expected)}, got {sorted(inputs)}")
        feeds = {}
        for key, spec in expected.items():
            value = inputs[key]
            if spec.dtype == tf.string and value.dtype.kind not in "USO":
                raise ServingError("INVALID_ARGUMENT", f"input '{key}' expects strings, got {value.dtype}")
            if value.ndim != len(spec.shape):
                raise ServingError("INVALID_ARGUMENT", f"input '{key}' expects rank {len(spec.shape)} "
                                                       f"{spec.shape}, got shape {list(value.shape)}")
            if value.shape[0] == 0:
                raise ServingError("INVALID_ARGUMENT", f"input '{key}' is an empty batch (shape "
                                                       f"{list(value.shape)}): send at least one history")
            if value.shape[0] > self.max_batch_size:
                raise ServingError("INVALID_ARGUMENT", f"batch of {value.shape[0]} exceeds the maximum batch "
                                                       f"size {self.max_batch_size}")
            feeds[key] = value.astype(object) if spec.dtype == tf.string else value
        batch_sizes = {key: int(value.shape[0]) for key, value in feeds.items()}
        if len(set(batch_sizes.values())) > 1:
            raise ServingError("INVALID_ARGUMENT", f"inputs of one request must have the same batch size, got "
                                                   f"{batch_sizes}")

        def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = function(**{key: tf.constant(value, expected[key].dtype) for key, value in batch.items()})
            return {key: tensor.numpy() for key, tensor in outputs.items()}

        if self.batcher is None:
            return served_version, run(feeds)
        return served_version, self.batcher.run((name, served_version, signature_name), run, feeds)
