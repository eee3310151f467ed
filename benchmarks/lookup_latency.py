"""Lookup latency and throughput of an exported REMI model: in process, and through `remi serve` with one
client and with many concurrent clients (server-side batching on and off).

    python benchmarks/lookup_latency.py --export-dir DIR --model-dir DIR [--clients 16] [--seconds 20]

In process: the SavedModel's `serving_default` called directly, batch 1 and 64, for the ScaNN model
(<name>) and the exact one (<name>-exact). Through `remi serve` (a subprocess on free 127.0.0.1 ports,
stopped by pid): TF Serving's gRPC Predict and REST predict with requests built before the clock starts
(what is timed is the server and the network, not the client's tensor conversion); REST keeps its
connection open (HTTP/1.1). One client at batch 1 and 64, then `--clients` threads at batch 1 for
`--seconds`: p50/p99 latency, histories/s, errors. Histories are 20 random items.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import threading
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import scann  # noqa: E402,F401  (ScaNN ops for the ScaNN model)
import tensorflow as tf  # noqa: E402
from cli_runs import remi_serve  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

import remi_tf  # noqa: E402,F401
from remi_tf.export import serving_layout  # noqa: E402
from remi_tf.export.client import RemiClient  # noqa: E402
from remi_tf.data_directory import read_item_ids  # noqa: E402

REQUEST_TIMEOUT_S = 10.0
Histories = list[list[str]]


def measure(call: Callable[[Histories], object], batches: list[Histories]) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, histories/s) over `batches` one after another, after two warm-up calls."""
    call(batches[0])
    call(batches[1])
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        call(batch)
        seconds.append(time.perf_counter() - start)
    histories = sum(len(batch) for batch in batches)
    return 1e3 * np.percentile(seconds, 50), 1e3 * np.percentile(seconds, 99), histories / sum(seconds)


def concurrent_load(make_caller: Callable[[], Callable[[Histories], object]], batches: list[Histories], clients: int,
                    seconds: float) -> tuple[float, float, float, dict[str, int]]:
    """`clients` threads, each with its own caller (connection), send batch-1 requests back to back for
    `seconds`: (p50 ms, p99 ms, histories/s, errors by type)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    callers = [make_caller() for _ in range(clients)]
    for caller in callers:
        caller(batches[0])  # connect and warm up
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        call, own = callers[index], []
        start.wait(timeout=60)
        n = index
        while time.perf_counter() < deadline[0]:
            begin = time.perf_counter()
            try:
                call(batches[n % len(batches)])
                own.append(time.perf_counter() - begin)
            except Exception as error:  # noqa: BLE001 (counted and reported)
                with lock:
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
            n += clients
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait(timeout=60)
    for thread in threads:
        thread.join(timeout=seconds + 2 * REQUEST_TIMEOUT_S)
    elapsed = time.perf_counter() - began
    return (1e3 * np.percentile(latencies, 50), 1e3 * np.percentile(latencies, 99), len(latencies) / elapsed, errors)


def grpc_caller(port: int, model: str) -> Callable[[Histories], object]:
    """A gRPC Predict call on its own channel; requests are built before they are timed."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    built: dict[int, predict_pb2.PredictRequest] = {}

    def call(histories: Histories) -> object:
        request = built.get(id(histories))
        if request is None:
            request = built[id(histories)] = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(histories, dtype=tf.string))
        return stub.Predict(request, timeout=REQUEST_TIMEOUT_S)

    return call


def rest_caller(port: int, model: str) -> Callable[[Histories], object]:
    """A REST predict call on its own kept-alive connection (reconnects after an error)."""
    connection = [http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)]
    bodies: dict[int, bytes] = {}

    def call(histories: Histories) -> object:
        body = bodies.setdefault(id(histories), json.dumps({"inputs": {"history": histories}}).encode())
        try:
            connection[0].request("POST", f"/v1/models/{model}:predict", body, {"Content-Type": "application/json"})
            response = connection[0].getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            connection[0].close()
            connection[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
        return payload

    return call


def load_arguments(doc: str) -> argparse.ArgumentParser:
    """The flags of the serving benchmarks: what is served, and the load."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--model-dir", required=True, help="for the vocabulary (items.tsv)")
    parser.add_argument("--name", default="remi")
    parser.add_argument("--requests", type=int, default=300, help="one-client requests per measurement")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="per concurrent-load measurement")
    return parser


def main() -> None:
    args = load_arguments(__doc__).parse_args()

    vocabulary = read_item_ids(os.path.join(args.model_dir, "items.tsv"))
    rng = np.random.default_rng(0)

    def batches(size: int, count: int) -> list[Histories]:
        return [[[vocabulary[i] for i in rng.choice(len(vocabulary), 20, replace=False)] for _ in range(size)]
                for _ in range(count)]

    workload = {1: batches(1, args.requests), 64: batches(64, max(20, args.requests // 10))}
    rows = []
    for model in (args.name, f"{args.name}-exact"):
        versions = serving_layout.versions(os.path.join(args.export_dir, model))
        if not versions:
            continue  # an --index auto export that serves exact alone has no <name>-exact
        signature = tf.saved_model.load(os.path.join(args.export_dir, model, str(versions[-1]))).signatures[
            "serving_default"]
        for size, work in workload.items():
            rows.append((model, "in-process", 1, size, *measure(lambda b: signature(history=tf.constant(b)), work), {}))

    for batching in (True, False):
        label = "remi serve" + ("" if batching else " --no-batching")
        with remi_serve(args.export_dir, *([] if batching else ["--no-batching"])) as (_, port, grpc_port):
            RemiClient(f"127.0.0.1:{grpc_port}", model=args.name, use_grpc=True).lookup_when_up(
                workload[1][0], wait_seconds=180)
            for protocol, make_caller in (("gRPC", grpc_caller), ("REST", rest_caller)):
                if batching:
                    for size, work in workload.items():
                        rows.append((args.name, f"{label} {protocol}", 1, size,
                                     *measure(make_caller(grpc_port if protocol == "gRPC" else port, args.name), work),
                                     {}))
                rows.append((args.name, f"{label} {protocol}", args.clients, 1, *concurrent_load(
                    lambda: make_caller(grpc_port if protocol == "gRPC" else port, args.name), workload[1],
                    args.clients, args.seconds)))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}; "
          f"{len(vocabulary):,} items")
    print("| model | path | clients | batch | p50 ms | p99 ms | histories/s | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for model, path, clients, size, p50, p99, rate, errors in rows:
        print(f"| {model} | {path} | {clients} | {size} | {p50:.2f} | {p99:.2f} | {rate:,.0f} | "
              f"{sum(errors.values())}{' ' + json.dumps(errors) if errors else ''} |")


if __name__ == "__main__":
    main()
