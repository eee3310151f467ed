"""`remi serve`: a one-machine server with TF Serving's REST predict API and gRPC PredictionService.

Serves the newest version of every model under an export directory (`<dir>/<name>/<version>/`) and
picks up new versions without a restart (polling). REST:
  POST /v1/models/<name>[/versions/<v>]:predict   row ("instances") or columnar ("inputs") format
  GET  /v1/models/<name>[/versions/<v>]           model version status
  GET  /v1/models/<name>[/versions/<v>]/metadata  signature defs (TF Serving's model metadata)
gRPC: tensorflow.serving.PredictionService/Predict and GetModelMetadata, ModelService/GetModelStatus.
Bad requests get TF Serving-style errors ({"error": ...} with HTTP 400/404/405/411/413; gRPC
INVALID_ARGUMENT or NOT_FOUND) in bounded time and memory (body size, values per request, declared
tensor shapes, JSON nesting, a socket timeout for stalled bodies), and the server keeps serving. A
version that fails to load is reported (status END with its error) and skipped; polling goes on.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.parse
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
import scann  # noqa: F401  (registers the ScaNN TF ops, so that ScaNN retrieval models load)
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from export import serving_layout

DEFAULT_SIGNATURE = "serving_default"
ERROR_CODES = {"OK": 0, "UNKNOWN": 2}  # tensorflow.error.Code values of a model version's status
MAX_BODY_BYTES = 64 << 20  # a REST request body larger than this is refused before it is read
MAX_REQUEST_VALUES = 1 << 24  # items in one request's history tensor (REST rows x columns, gRPC shape)
REQUEST_TIMEOUT_S = 30.0  # a REST connection that sends nothing for this long is closed


class RequestRejected(Exception):
    """A REST request refused at the HTTP level (`status`: 400, 411, 413), before it reaches a model."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServingError(Exception):
    """A request error: `code` is "INVALID_ARGUMENT" or "NOT_FOUND"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ModelRegistry:
    """The newest loadable version of each model under `export_dir`, reloaded when a newer one appears.

    The models of one `remi export` (an export set) are served at versions all of them have, so that a
    killed export never mixes versions. A version that fails to load is reported (in its status, state
    END with the error, and in the log) and skipped: the newest good version is served, and later
    versions are still tried.
    """

    def __init__(self, export_dir: str, max_batch_size: int = 1024) -> None:
        self.export_dir = export_dir
        self.max_batch_size = max_batch_size
        self._models: dict[str, tuple[int, Any]] = {}
        self.failures: dict[tuple[str, int], str] = {}  # (name, version) -> why it did not load
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> list[str]:
        """Loads the newest loadable version of each model newer than the one served; returns the
        `name/version`s loaded now."""
        loaded = []
        for name, available in serving_layout.complete_versions(self.export_dir).items():
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
                    print(f"{name}/{version} failed to load and is skipped: {self.failures[(name, version)]}",
                          flush=True)
                    continue
                with self._lock:
                    self._models[name] = (version, module)
                loaded.append(f"{name}/{version}")
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
            feeds[key] = tf.constant(value.astype(object) if spec.dtype == tf.string else value, spec.dtype)
        outputs = function(**feeds)
        return served_version, {key: tensor.numpy() for key, tensor in outputs.items()}


def _json_value(array: np.ndarray) -> Any:
    if array.dtype.kind in "SO":
        return np.vectorize(lambda x: x.decode("utf-8") if isinstance(x, bytes) else x, otypes=[object])(
            array).tolist() if array.size else array.tolist()
    return array.tolist()


def _pad_rows(rows: Any, name: str) -> np.ndarray:
    """A non-empty batch of lists of item-id strings, padded with "" to equal lengths -> [batch, width]."""
    if not isinstance(rows, list) or not rows or not all(isinstance(row, list) for row in rows):
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' expects a non-empty list of lists of item-id "
                                               f"strings, e.g. [[\"id1\", \"id2\"]], got {json.dumps(rows)[:80]}")
    width = max([len(row) for row in rows] + [1])
    if len(rows) * width > MAX_REQUEST_VALUES:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' has {len(rows)} x {width} values, more than "
                                               f"{MAX_REQUEST_VALUES}")
    for index, row in enumerate(rows):
        for value in row:
            if not isinstance(value, str):
                raise ServingError("INVALID_ARGUMENT", f"input '{name}' expects strings, got {json.dumps(value)} "
                                                       f"({type(value).__name__}) in row {index}")
    return np.array([row + [""] * (width - len(row)) for row in rows], dtype=object)


def parse_rest_request(body: bytes) -> tuple[str, dict[str, np.ndarray], bool]:
    """TF Serving's REST predict body -> (signature_name, inputs, row_format)."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {error}") from None
    except RecursionError:
        raise ServingError("INVALID_ARGUMENT", "JSON Parse error: nested too deeply") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key (exactly one is required)")
    signature_name = request.get("signature_name", DEFAULT_SIGNATURE)
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise ServingError("INVALID_ARGUMENT", "'instances' must be a non-empty list")
        if all(isinstance(instance, dict) for instance in instances):
            names = {key for instance in instances for key in instance}
            return signature_name, {name: _pad_rows([instance.get(name) for instance in instances], name)
                                    for name in names}, True
        return signature_name, {"history": _pad_rows(instances, "history")}, True
    inputs = request["inputs"]
    if isinstance(inputs, dict):
        return signature_name, {name: _pad_rows(value, name) for name, value in inputs.items()}, False
    return signature_name, {"history": _pad_rows(inputs, "history")}, False


def format_rest_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    values = {key: _json_value(value) for key, value in outputs.items()}
    if not row_format:
        return {"outputs": values}
    batch = len(next(iter(values.values())))
    return {"predictions": [{key: value[i] for key, value in values.items()} for i in range(batch)]}


_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(:predict|/metadata)?$")


def make_rest_handler(registry: ModelRegistry, request_timeout_s: float = REQUEST_TIMEOUT_S
                      ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = request_timeout_s  # socket timeout: a client that stops sending is dropped, not waited for

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own errors (bad request lines, unsupported methods) in TF Serving's JSON, with
            a status line also for a request line it could not read (which it takes for HTTP/0.9)."""
            self.close_connection = True
            if self.request_version == "HTTP/0.9":
                self.request_version = self.protocol_version
            self._reply(code, {"error": message or self.responses.get(code, ("error",))[0]})

        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                raise RequestRejected(411, "chunked request bodies are not supported: send Content-Length")
            length = self.headers.get("Content-Length")
            if length is None or not length.strip().isdigit():
                raise RequestRejected(411, "a POST needs a Content-Length header with the body's size")
            if int(length) > MAX_BODY_BYTES:
                raise RequestRejected(413, f"request body of {int(length)} bytes exceeds {MAX_BODY_BYTES}")
            chunks, received = [], 0
            while received < int(length):  # in pieces, so that a timeout still knows what arrived
                try:
                    chunk = self.rfile.read1(int(length) - received)
                except TimeoutError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
            body = b"".join(chunks)
            if len(body) < int(length):
                raise RequestRejected(400, f"request body ended after {len(body)} of the {int(length)} bytes "
                                           "of its Content-Length")
            return body

        def _route(self, predict: bool) -> None:
            match = _PATH.match(urllib.parse.urlsplit(self.path).path)
            try:
                if not match or (match.group(3) == ":predict") != predict:
                    raise ServingError("NOT_FOUND", f"Malformed request: {self.command} {self.path}")
                name, version = match.group(1), int(match.group(2)) if match.group(2) else None
                if match.group(3) == "/metadata":
                    served_version, signatures = registry.signature_defs(name, version)
                    spec = {"name": name, "signature_name": "", "version": str(served_version)}
                    self._reply(200, {"model_spec": spec, "metadata": {"signature_def": json_format.MessageToDict(
                        signatures, preserving_proto_field_name=True)}})
                    return
                if not predict:
                    self._reply(200, {"model_version_status": registry.status(name, version)})
                    return
                signature_name, inputs, row_format = parse_rest_request(self._read_body())
                _, outputs = registry.predict(name, version, signature_name, inputs)
                self._reply(200, format_rest_response(outputs, row_format))
            except RequestRejected as error:
                self.close_connection = True
                self._reply(error.status, {"error": str(error)})
            except ServingError as error:
                self._reply(404 if error.code == "NOT_FOUND" else 400, {"error": str(error)})
            except (tf.errors.OpError, ValueError, TypeError) as error:
                self._reply(400, {"error": getattr(error, "message", str(error))})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._route(predict=False)

        def do_POST(self) -> None:  # noqa: N802
            self._route(predict=True)

        def _not_allowed(self) -> None:
            self.send_error(405, f"Method {self.command} not allowed: GET a model's status, POST :predict")

        do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _not_allowed

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per error only
            if args and str(args[1]).startswith(("4", "5")):
                super().log_message(format, *args)

    return Handler


def _checked_ndarray(name: str, proto: Any) -> np.ndarray:
    """A request TensorProto as an array, after checking its declared shape against what it holds: a
    38-byte proto can declare [100000, 100000] (TensorFlow would broadcast its one value to all)."""
    shape = [dim.size for dim in proto.tensor_shape.dim]
    count = int(np.prod(shape)) if shape else 1
    if any(size < 0 for size in shape) or count > MAX_REQUEST_VALUES:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' declares shape {shape}: at most "
                                               f"{MAX_REQUEST_VALUES} values")
    held = len(proto.string_val) if proto.dtype == tf.string.as_datatype_enum else None
    if held is not None and held != count:
        raise ServingError("INVALID_ARGUMENT", f"input '{name}' declares shape {shape} ({count} values) but "
                                               f"holds {held}")
    return tf.make_ndarray(proto)


def _requested_version(model_spec: Any) -> int | None:
    """The version a request's ModelSpec names (None: the newest); version labels are refused."""
    if model_spec.WhichOneof("version_choice") == "version_label":
        raise ServingError("INVALID_ARGUMENT", f"version_label {model_spec.version_label!r}: remi serve has no "
                                               "version labels (no models.config labels); ask for a version number")
    return model_spec.version.value if model_spec.HasField("version") else None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference answer as TF Serving does for a
    model whose signatures are all predict signatures."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def _not_predict(self, request: Any, context: grpc.ServicerContext, kind: str, expected_method: str) -> None:
        try:
            specs = [request.model_spec] if hasattr(request, "model_spec") else [t.model_spec for t in request.tasks]
            for spec in specs:
                _, signatures = self.registry.signature_defs(spec.name, _requested_version(spec))
                name = spec.signature_name or DEFAULT_SIGNATURE
                if name not in signatures.signature_def:
                    raise ServingError("INVALID_ARGUMENT", f"No signature was found with the name: {name}")
                method = signatures.signature_def[name].method_name
                raise ServingError("INVALID_ARGUMENT", f"Expected {kind} signature method_name to be "
                                                       f"{expected_method}. Was: {method}")
            raise ServingError("INVALID_ARGUMENT", "MultiInference request has no tasks")
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._not_predict(request, context, "classification", "tensorflow/serving/classify")

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._not_predict(request, context, "regression", "tensorflow/serving/regress")

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._not_predict(request, context, "classification", "tensorflow/serving/classify")

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
                ) -> predict_pb2.PredictResponse:  # noqa: N802 (the proto's naming)
        try:
            version = _requested_version(request.model_spec)
            inputs = {key: _checked_ndarray(key, proto) for key, proto in request.inputs.items()}
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

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
                         ) -> get_model_metadata_pb2.GetModelMetadataResponse:  # noqa: N802
        unsupported = [field for field in request.metadata_field if field != "signature_def"]
        if unsupported or not request.metadata_field:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field(s) {unsupported or '(none)'} not "
                                                            "supported; request \"signature_def\"")
        try:
            served_version, signatures = self.registry.signature_defs(request.model_spec.name,
                                                                      _requested_version(request.model_spec))
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = served_version
        response.metadata["signature_def"].Pack(signatures)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
                       ) -> get_model_status_pb2.GetModelStatusResponse:  # noqa: N802
        try:
            status = self.registry.status(request.model_spec.name, _requested_version(request.model_spec))
        except ServingError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in status:
            added = response.model_version_status.add(
                version=int(entry["version"]), state=get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"]))
            added.status.error_code = ERROR_CODES[entry["status"]["error_code"]]
            added.status.error_message = entry["status"]["error_message"]
        return response


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog (5 by default: connection resets under 16 clients)
    daemon_threads = True


class Server:
    """REST and gRPC servers over one registry, plus a thread that polls for new versions."""

    def __init__(self, export_dir: str, host: str = "127.0.0.1", port: int = 8501, grpc_port: int = 8500,
                 poll_seconds: float = 2.0, max_batch_size: int = 1024,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.registry = ModelRegistry(export_dir, max_batch_size)
        self.http = _HTTPServer((host, port), make_rest_handler(self.registry, request_timeout_s))
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
            try:
                for loaded in self.registry.refresh():
                    print(f"loaded {loaded}", flush=True)
            except Exception as error:  # noqa: BLE001 (e.g. the export directory briefly unreadable)
                print(f"polling {self.registry.export_dir} failed, retrying: {error}", flush=True)

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
