"""`remi serve`: a one-machine server with TF Serving's REST predict API and gRPC PredictionService.

Serves the newest version of every model under an export directory (`<dir>/<name>/<version>/`) and
picks up new versions without a restart (polling). REST:
  POST /v1/models/<name>[/versions/<v>]:predict   row ("instances") or columnar ("inputs") format
  GET  /v1/models/<name>[/versions/<v>]           model version status
  GET  /v1/models/<name>[/versions/<v>]/metadata  signature defs (TF Serving's model metadata)
gRPC: tensorflow.serving.PredictionService/Predict and GetModelMetadata, ModelService/GetModelStatus.
Bad requests get TF Serving-style errors ({"error": ...} with HTTP 400/404/405/411/413; gRPC
INVALID_ARGUMENT or NOT_FOUND) in bounded time and memory (body size, values per request, declared
tensor shapes, JSON nesting, a socket timeout for stalled bodies), and the server keeps serving. Every REST
reply leaves its kept-alive connection usable (the declared body read or dropped) or says `Connection: close`
and closes it (a body it will not read: export/rest.py). A version that fails to load is reported (status END
with its error) and skipped; polling goes on.
Concurrent predictions run in batches when a Batcher is given (`remi serve` does: export/batching.py).
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from remi_tf.export.batching import Batcher
from remi_tf.export.grpc_services import ModelService, PredictionService
from remi_tf.export.registry import ModelRegistry
from remi_tf.export.rest import REQUEST_TIMEOUT_S, HTTPServer, make_rest_handler

logger = logging.getLogger(__name__)


class Server:
    """REST and gRPC servers over one registry, plus a thread that polls for new versions."""

    def __init__(self, export_dir: str, host: str = "127.0.0.1", port: int = 8501, grpc_port: int = 8500,
                 poll_seconds: float = 2.0, max_batch_size: int = 1024,
                 request_timeout_s: float = REQUEST_TIMEOUT_S, batcher: Batcher | None = None,
                 grpc_threads: int = 64, reuse_port: bool = False) -> None:
        """reuse_port: bind both ports with SO_REUSEPORT, so that several server processes share them (the
        kernel spreads connections over them: `remi serve --workers N`); without it a port in use is an error."""
        self.batcher = batcher
        # Both ports are bound before any model loads, so that a port in use fails at once; the handlers follow.
        self.http = HTTPServer((host, port), BaseHTTPRequestHandler, bind_and_activate=False)
        self.http.allow_reuse_port = reuse_port
        try:
            self.http.server_bind()
            self.http.server_activate()
        except OSError as error:
            self.http.server_close()
            raise OSError(f"REST port {host}:{port}: {error.strerror or error}; choose another with --port") from None
        # A thread per request in flight: requests waiting for their batch hold one. gRPC sets SO_REUSEPORT by
        # default on Linux, which would let a second server share a port in use without an error.
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=grpc_threads),
                                options=[("grpc.so_reuseport", int(reuse_port))])
        try:
            self.grpc_port = self.grpc.add_insecure_port(f"{host}:{grpc_port}")
        except RuntimeError:  # grpc's "Failed to bind"
            self.http.server_close()
            raise OSError(f"gRPC port {host}:{grpc_port}: cannot bind (in use?); choose another with --grpc-port") \
                from None
        try:
            self.registry = ModelRegistry(export_dir, max_batch_size, batcher)
        except BaseException:
            self.http.server_close()
            self.grpc.stop(grace=None)
            raise
        self.http.RequestHandlerClass = make_rest_handler(self.registry, request_timeout_s)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.registry), self.grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.registry), self.grpc)
        self.port = self.http.server_address[1]
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.registry.refresh()  # logs each load, unload and failure
            except Exception as error:  # noqa: BLE001 (e.g. the export directory briefly unreadable)
                logger.warning(f"polling {self.registry.export_dir} failed, retrying: {error}")

    def start(self) -> Server:
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
        if self.batcher is not None:
            self.batcher.stop()
