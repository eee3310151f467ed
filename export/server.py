"""`remi serve`: a one-machine server with TF Serving's REST predict API and gRPC PredictionService.

Serves the newest version of every model under an export directory (`<dir>/<name>/<version>/`) and
picks up new versions without a restart (polling). REST:
  POST /v1/models/<name>[/versions/<v>]:predict   row ("instances") or columnar ("inputs") format
  GET  /v1/models/<name>[/versions/<v>]           model version status
gRPC: tensorflow.serving.PredictionService/Predict and ModelService/GetModelStatus.
Bad requests get TF Serving-style errors ({"error": ...} with HTTP 400/404; gRPC INVALID_ARGUMENT or
NOT_FOUND) and the server keeps serving.
"""

from __future__ import annotations

import json
import os
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
import scann  # noqa: F401  (registers the ScaNN TF ops, so that ScaNN retrieval models load)
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from export import serving_layout

DEFAULT_SIGNATURE = "serving_default"


class ServingError(Exception):
    """A request error: `code` is "INVALID_ARGUMENT" or "NOT_FOUND"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ModelRegistry:
    """The newest version of each model under `export_dir`, reloaded when a newer one appears."""

    def __init__(self, export_dir: str, max_batch_size: int = 1024) -> None:
        self.export_dir = export_dir
        self.max_batch_size = max_batch_size
        self._models: dict[str, tuple[int, Any]] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> list[str]:
        """Loads any newer version; returns the `name/version`s loaded now."""
        loaded = []
        for name in sorted(os.listdir(self.export_dir)):
            available = serving_layout.versions(os.path.join(self.export_dir, name))
            if not available or (name in self._models and self._models[name][0] >= available[-1]):
                continue
            module = tf.saved_model.load(os.path.join(self.export_dir, name, str(available[-1])))
            with self._lock:
                self._models[name] = (available[-1], module)
            loaded.append(f"{name}/{available[-1]}")
        return loaded

    def served(self) -> dict[str, int]:
        """Model name -> the version being served."""
        with self._lock:
            return {name: version for name, (version, _) in self._models.items()}

    def status(self, name: str, version: int | None = None) -> list[dict]:
        served = self._served(name, version)
        return [{"version": str(served[0]), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]

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
            if value.shape[0] > self.max_batch_size:
                raise ServingError("INVALID_ARGUMENT", f"batch of {value.shape[0]} exceeds the maximum batch "
                                                       f"size {self.max_batch_size}")
            feeds[key] = tf.constant(value.astype(object) if spec.dtype == tf.string else value, spec.dtype)
        outputs = function(**feeds)
        return served_version, {key: tensor.numpy() for key, tensor in outputs.items()}


def _json_value(array: np.ndarray) -> Any:
    if array.dtype.kind in "SO":
        return np.vectorize(lambda x: x.decode("utf-8") if isinstance(x, bytes) else x, otypes=[object])(
            array).tolist() if array.size else array.tolist()
    return array.tolist()


def _pad_rows(rows: list) -> np.ndarray:
    """A batch of variable-length string lists, padded with "" (TF Serving requires equal lengths)."""
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ServingError("INVALID_ARGUMENT", "expected a list of lists for input 'history'")
    width = max([len(row) for row in rows] + [1])
    return np.array([row + [""] * (width - len(row)) for row in rows], dtype=object if rows and all(
        isinstance(x, str) for row in rows for x in row) else None)


def parse_rest_request(body: bytes) -> tuple[str, dict[str, np.ndarray], bool]:
    """TF Serving's REST predict body -> (signature_name, inputs, row_format)."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {error}") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key (exactly one is required)")
    signature_name = request.get("signature_name", DEFAULT_SIGNATURE)
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise ServingError("INVALID_ARGUMENT", "'instances' must be a non-empty list")
        if all(isinstance(instance, dict) for instance in instances):
            names = {key for instance in instances for key in instance}
            return signature_name, {name: _pad_rows([instance.get(name) for instance in instances])
                                    for name in names}, True
        return signature_name, {"history": _pad_rows(instances)}, True
    inputs = request["inputs"]
    if isinstance(inputs, dict):
        return signature_name, {name: _pad_rows(value) for name, value in inputs.items()}, False
    return signature_name, {"history": _pad_rows(inputs)}, False


def format_rest_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    values = {key: _json_value(value) for key, value in outputs.items()}
    if not row_format:
        return {"outputs": values}
    batch = len(next(iter(values.values())))
    return {"predictions": [{key: value[i] for key, value in values.items()} for i in range(batch)]}


_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(:predict)?$")


def make_rest_handler(registry: ModelRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self, predict: bool) -> None:
            match = _PATH.match(self.path)
            try:
                if not match or bool(match.group(3)) != predict:
                    raise ServingError("NOT_FOUND", f"Malformed request: {self.command} {self.path}")
                name, version = match.group(1), int(match.group(2)) if match.group(2) else None
                if not predict:
                    self._reply(200, {"model_version_status": registry.status(name, version)})
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                signature_name, inputs, row_format = parse_rest_request(body)
                _, outputs = registry.predict(name, version, signature_name, inputs)
                self._reply(200, format_rest_response(outputs, row_format))
            except ServingError as error:
                self._reply(404 if error.code == "NOT_FOUND" else 400, {"error": str(error)})
            except (tf.errors.OpError, ValueError, TypeError) as error:
                self._reply(400, {"error": getattr(error, "message", str(error))})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._route(predict=False)

        def do_POST(self) -> None:  # noqa: N802
            self._route(predict=True)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per error only
            if args and str(args[1]).startswith(("4", "5")):
                super().log_message(format, *args)

    return Handler


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
                ) -> predict_pb2.PredictResponse:  # noqa: N802 (the proto's naming)
        version = request.model_spec.version.value if request.model_spec.HasField("version") else None
        try:
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            served_version, outputs = self.registry.predict(request.model_spec.name, version,
                                                            request.model_spec.signature_name, inputs)
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))
        except (tf.errors.OpError, ValueError, TypeError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, getattr(error, "message", str(error)))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = served_version
        response.model_spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
                       ) -> get_model_status_pb2.GetModelStatusResponse:  # noqa: N802
        version = request.model_spec.version.value if request.model_spec.HasField("version") else None
        try:
            status = self.registry.status(request.model_spec.name, version)
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in status:
            response.model_version_status.add(version=int(entry["version"]),
                                              state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        return response


class Server:
    """REST and gRPC servers over one registry, plus a thread that polls for new versions."""

    def __init__(self, export_dir: str, host: str = "127.0.0.1", port: int = 8501, grpc_port: int = 8500,
                 poll_seconds: float = 2.0, max_batch_size: int = 1024) -> None:
        self.registry = ModelRegistry(export_dir, max_batch_size)
        self.http = ThreadingHTTPServer((host, port), make_rest_handler(self.registry))
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.registry), self.grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.registry), self.grpc)
        self.grpc_port = self.grpc.add_insecure_port(f"{host}:{grpc_port}")
        self.port = self.http.server_address[1]
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            for loaded in self.registry.refresh():
                print(f"loaded {loaded}", flush=True)

    def start(self) -> "Server":
        self.grpc.start()
        self._threads = [threading.Thread(target=self.http.serve_forever, daemon=True),
                         threading.Thread(target=self._poll, daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.http.shutdown()
        self.http.server_close()
        self.grpc.stop(grace=None)
