"""The server's memory and answers after a run of bad requests (issue 11: RSS back within 10% of its start).

    python benchmarks/bad_input_memory.py --export-dir DIR --model-dir DIR [--rounds 20]

Starts `remi serve` on free 127.0.0.1 ports (stopped by pid at the end), warms it with good REST and gRPC
lookups, reads its resident memory, then sends `--rounds` rounds of every bad request class the issue
lists (deep JSON nesting, bodies shorter than declared held open, no Content-Length, chunked bodies,
bad methods and request lines, gRPC tensors declaring huge or inconsistent shapes, an empty batch,
non-string ids), each with a bounded wait, and reads the memory again after good lookups. Prints each class's status and slowest
answer, and the RSS before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from cli_runs import remi_serve, resident_gib  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

import remi_tf  # noqa: E402,F401
from remi_tf.export.client import RemiClient  # noqa: E402
from remi_tf.data_directory import read_item_ids  # noqa: E402

WAIT_S = 10.0
PREDICT = "/v1/models/{model}:predict"


def raw_http(port: int, request: bytes) -> str:
    """Sends raw bytes; returns the reply's status line (or what went wrong), within WAIT_S."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as connection:
        connection.sendall(request)
        try:
            reply = connection.recv(4096)
        except TimeoutError:
            return "no answer"
    return reply.split(b"\r\n", 1)[0].decode("latin-1") or "closed"


def rest_requests(model: str) -> dict[str, bytes]:
    path = PREDICT.format(model=model).encode()
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
    nested = b"[" * 100_000
    return {
        "deep JSON nesting": head + b"Content-Length: %d\r\n\r\n" % len(nested) + nested,
        "no Content-Length": head + b"\r\n",
        "chunked body": head + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Content-Length over the limit": head + b"Content-Length: 999999999\r\n\r\n",
        "DELETE": b"DELETE /v1/models/" + model.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "garbage request line": b"GARBAGE\r\n\r\n",
        "non-string ids": head + b"Content-Length: 26\r\n\r\n{\"inputs\": [[\"a\", 2, 3]]}\n",
    }


def grpc_tensors() -> dict[str, tensor_pb2.TensorProto]:
    def declared(shape: list[int], values: list[bytes]) -> tensor_pb2.TensorProto:
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=values,
                                      tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims))
    return {"shape [100000, 100000]": declared([100000, 100000], [b"x"]),
            "shape [1024, 40000] with one value": declared([1024, 40000], [b"x"]),
            "shape [0, 3]": declared([0, 3], []),
            "float ids": tf.make_tensor_proto([[1.0, 2.0]])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--model-dir", required=True, help="for the vocabulary (items.tsv)")
    parser.add_argument("--model", default="remi")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    vocabulary = read_item_ids(os.path.join(args.model_dir, "items.tsv"))
    good = [vocabulary[:20]]
    with remi_serve(args.export_dir) as (server, port, grpc_port):
        rest = RemiClient(f"http://127.0.0.1:{port}", model=args.model)
        grpc_client = RemiClient(f"127.0.0.1:{grpc_port}", model=args.model, use_grpc=True)
        rest.lookup_when_up(good, wait_seconds=180)
        for _ in range(50):
            rest.lookup(good)
            grpc_client.lookup(good)
        before = resident_gib(server.pid) * 1024
        slowest: dict[str, tuple[float, str]] = {}
        held = []  # connections that send less body than they declare and stay open (until closed below)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        for _ in range(args.rounds):
            stalled = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
            stalled.sendall(b"POST " + PREDICT.format(model=args.model).encode() + b" HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 500\r\n\r\n{\"inputs\": ")
            held.append(stalled)
            for name, request in rest_requests(args.model).items():
                start = time.perf_counter()
                answer = raw_http(port, request)
                slowest[f"REST {name}"] = max(slowest.get(f"REST {name}", (0.0, "")), (time.perf_counter() - start,
                                                                                        answer))
            for name, tensor in grpc_tensors().items():
                request = predict_pb2.PredictRequest()
                request.model_spec.name = args.model
                request.inputs["history"].CopyFrom(tensor)
                start = time.perf_counter()
                try:
                    stub.Predict(request, timeout=WAIT_S)
                    answer = "OK"
                except grpc.RpcError as error:
                    answer = error.code().name
                slowest[f"gRPC {name}"] = max(slowest.get(f"gRPC {name}", (0.0, "")), (time.perf_counter() - start,
                                                                                        answer))
        start = time.perf_counter()
        rest.lookup(good)  # answered while the stalled connections are still open
        slowest["good REST lookup with stalled connections open"] = (time.perf_counter() - start, "200")
        for connection in held:
            connection.close()
        for _ in range(50):
            rest.lookup(good)
            grpc_client.lookup(good)
        after = resident_gib(server.pid) * 1024
    print("| bad request | answer | slowest of the rounds, ms |\n|---|---|---|")
    for name, (seconds, answer) in slowest.items():
        print(f"| {name} | {answer} | {1e3 * seconds:.1f} |")
    print(json.dumps({"rounds": args.rounds, "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
                      "ratio": round(after / before, 3)}))


if __name__ == "__main__":
    main()
