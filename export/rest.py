"""TF Serving's REST API over a ModelRegistry (http.server), with TF Serving's JSON errors for every bad
request, in bounded time and memory."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import orjson
import tensorflow as tf
from google.protobuf import json_format

from remi_tf.export.registry import DEFAULT_SIGNATURE, MAX_REQUEST_VALUES, ModelRegistry, ServingError

MAX_BODY_BYTES = 64 << 20  # a REST request body larger than this is refused before it is read
REQUEST_TIMEOUT_S = 30.0  # a REST connection that sends nothing for this long is closed
LINGER_S = 2.0  # a connection the server closes is read (and dropped) this long first, so its reply is not reset
DISCARD_CHUNK_BYTES = 1 << 16  # the body of a request answered without it is read and dropped in pieces this size


class RequestRejected(Exception):
    """A REST request refused at the HTTP level (`status`: 400, 411, 413), before it reaches a model."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json_value(array: np.ndarray) -> Any:
    """An output as JSON values: strings decoded to nested lists; numbers stay an array (`json_body` writes it)."""
    if array.dtype.kind in "SO":
        strings = [value.decode("utf-8") if isinstance(value, bytes) else value for value in array.ravel().tolist()]
        return np.array(strings, dtype=object).reshape(array.shape).tolist()
    return np.ascontiguousarray(array)


def json_body(payload: Any) -> bytes:
    """A reply as JSON bytes. orjson writes numpy arrays itself (a lookup's 250 ids and scores in under a third
    of json's time, BENCHMARKS.md 7.7); a payload with a non-finite number goes through json, which writes NaN
    and -Infinity as TF Serving does (orjson would write null)."""
    try:
        if not _has_non_finite(payload):
            return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # a type orjson does not write (numpy object arrays are decoded first): json's turn
        pass
    return json.dumps(payload, default=lambda value: value.tolist()).encode("utf-8")


def _has_non_finite(payload: Any) -> bool:
    """Whether a reply payload (dicts, lists, floats, numpy arrays) holds a NaN or an infinity."""
    if isinstance(payload, np.ndarray):
        return payload.dtype.kind == "f" and not bool(np.isfinite(payload).all())
    if isinstance(payload, float):
        return not np.isfinite(payload)
    if isinstance(payload, dict):
        return any(_has_non_finite(value) for value in payload.values())
    if isinstance(payload, list):
        return any(_has_non_finite(value) for value in payload) if payload and not isinstance(payload[0], str) \
            else False
    return False


def _pad_rows(rows: Any, name: str) -> np.ndarray:
    """A non-empty batch of lists of item-id strings, padded with "" to equal lengths -> [batch, width]; a
    batch of strings (a user feature column's values) -> [batch]."""
    if isinstance(rows, list) and rows and all(isinstance(row, str) for row in rows):
        if len(rows) > MAX_REQUEST_VALUES:
            raise ServingError("INVALID_ARGUMENT", f"input '{name}' has {len(rows)} values, more than "
                                                   f"{MAX_REQUEST_VALUES}")
        return np.array(rows, dtype=object)
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


class RestHandler(BaseHTTPRequestHandler):
    """TF Serving's REST API over `registry` (set by make_rest_handler): :predict, model status and metadata."""

    registry: ModelRegistry
    timeout = REQUEST_TIMEOUT_S  # socket timeout: a client that stops sending is dropped, not waited for
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves a client's requests one after another
    # A reply's headers and body are buffered and leave in one write when the body fits the buffer
    # (http.server flushes after each request): one send per reply, not two (BENCHMARKS.md 7.8). A larger
    # body leaves in two writes, and with Nagle's algorithm it would wait for the client's delayed ACK of
    # the headers (40 ms per request on a kept-alive connection): hence no Nagle.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request lines, headers it cannot read, unsupported methods) in TF
        Serving's JSON, with a status line also for a request line it could not read (which it takes for
        HTTP/0.9). The rest of the stream cannot be trusted: the connection closes."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = self.protocol_version
        self._reply(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _reply(self, status: int, payload: dict) -> None:
        """A JSON reply; `Connection: close` when the connection closes after it (close_connection)."""
        body = json_body(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body_length(self, required: bool) -> int:
        """The declared body's size (0 without a Content-Length where none is `required`); a body whose end
        the server cannot find or will not read is refused (RequestRejected): the connection then closes."""
        if "Transfer-Encoding" in self.headers:
            raise RequestRejected(411, f"request bodies in a transfer coding ({self.headers['Transfer-Encoding']}"
                                       "; chunked) are not supported: send Content-Length")
        lengths = {value.strip() for value in self.headers.get_all("Content-Length", [])}
        if not lengths:
            if required:
                raise RequestRejected(411, "a POST needs a Content-Length header with the body's size")
            return 0
        if len(lengths) > 1 or not re.fullmatch(r"[0-9]+", next(iter(lengths))):  # not isdigit(): "²" is a digit
            raise RequestRejected(400, f"Content-Length {', '.join(sorted(lengths))}: expected one byte count")
        length = int(next(iter(lengths)))
        if length > MAX_BODY_BYTES:
            raise RequestRejected(413, f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
        return length

    def _read_body(self, required: bool = True, keep: bool = True) -> bytes:
        """The request's body (b"" for none); `keep=False` reads and drops it in pieces, so that the next
        request on the connection starts where it should."""
        length = self._body_length(required)
        chunks, received = [], 0
        while received < length:  # in pieces, so that a timeout still knows what arrived
            try:
                chunk = self.rfile.read1(min(length - received, length if keep else DISCARD_CHUNK_BYTES))
            except TimeoutError:
                break
            if not chunk:
                break
            if keep:
                chunks.append(chunk)
            received += len(chunk)
        if received < length:
            raise RequestRejected(400, f"request body ended after {received} of the {length} bytes of its "
                                       "Content-Length")
        return b"".join(chunks)

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue`: a body that would be refused is refused before the client sends it."""
        try:
            self._body_length(required=False)
        except RequestRejected as error:
            self._refuse(error)
            return False
        return super().handle_expect_100()

    def _refuse(self, error: RequestRejected) -> None:
        """An HTTP-level refusal: the body was not read, so the connection closes after the reply."""
        self.close_connection = True
        self._reply(error.status, {"error": str(error)})

    def _route(self, predict: bool) -> None:
        match = _PATH.match(urllib.parse.urlsplit(self.path).path)
        try:
            predicting = predict and match is not None and match.group(3) == ":predict"
            body = self._read_body(required=predicting, keep=predicting)  # others' bodies: read and dropped
            if not match or (match.group(3) == ":predict") != predict:
                raise ServingError("NOT_FOUND", f"Malformed request: {self.command} {self.path}")
            name, version = match.group(1), int(match.group(2)) if match.group(2) else None
            if match.group(3) == "/metadata":
                served_version, signatures = self.registry.signature_defs(name, version)
                spec = {"name": name, "signature_name": "", "version": str(served_version)}
                self._reply(200, {"model_spec": spec, "metadata": {"signature_def": json_format.MessageToDict(
                    signatures, preserving_proto_field_name=True)}})
                return
            if not predict:
                self._reply(200, {"model_version_status": self.registry.status(name, version)})
                return
            signature_name, inputs, row_format = parse_rest_request(body)
            _, outputs = self.registry.predict(name, version, signature_name, inputs)
            self._reply(200, format_rest_response(outputs, row_format))
        except RequestRejected as error:
            self._refuse(error)
        except ServingError as error:
            self._reply(404 if error.code == "NOT_FOUND" else 400, {"error": str(error)})
        except (tf.errors.OpError, ValueError, TypeError) as error:
            self._reply(400, {"error": getattr(error, "message", str(error))})

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._route(predict=False)

    def do_POST(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's method name)
        self._route(predict=True)

    def _not_allowed(self) -> None:
        try:
            self._read_body(required=False, keep=False)
        except RequestRejected as error:
            self._refuse(error)
            return
        self._reply(405, {"error": f"Method {self.command} not allowed: GET a model's status, POST :predict"})

    do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line for an error reply only (log_request's args: request line, status, size); an idle kept-alive
        connection's timeout (log_error, one argument) is how pooled connections end, not an error."""
        if len(args) > 1 and str(args[1]).startswith(("4", "5")):
            super().log_message(format, *args)


def make_rest_handler(registry: ModelRegistry, request_timeout_s: float = REQUEST_TIMEOUT_S
                      ) -> type[BaseHTTPRequestHandler]:
    """RestHandler serving `registry`, a client that stops sending dropped after `request_timeout_s`."""
    return type("Handler", (RestHandler,), {"registry": registry, "timeout": request_timeout_s})


class HTTPServer(ThreadingHTTPServer):
    """The REST front end's server: a thread per connection."""

    request_queue_size = 128  # the listen backlog (5 by default: connection resets under 16 clients)
    daemon_threads = True

    def shutdown_request(self, request: Any) -> None:
        """Closes a connection gracefully: the server's side first, then what the client still sends (a body
        that was refused unread) is read and dropped for up to LINGER_S, until the client closes. Closing a
        socket with unread data resets the connection, and a reset can destroy the reply before the client
        reads it."""
        try:
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            while (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                if not request.recv(DISCARD_CHUNK_BYTES):
                    break
        except OSError:  # the client is gone, or the linger time is up (TimeoutError)
            pass
        self.close_request(request)
