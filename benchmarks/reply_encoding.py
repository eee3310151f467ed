"""What encoding one lookup's reply costs the server, per protocol: the server's encoders against the plain
library calls they replace, in one run (issue 26: the per-request Python work of `remi serve`).

    python benchmarks/reply_encoding.py [--batch 1] [--k 50] [--interests 4] [--calls 3000]

The outputs of a retrieval model's `serving_default` for --batch rows (item ids as bytes, scores, interests,
each interest's ids and scores), p50 of --calls encodings after a warm-up, the encoders alternating:
- REST: export.rest.json_body(format_rest_response(...)) (orjson) against the encoding before session 19
  (strings decoded by np.vectorize, every output's tolist(), json.dumps);
- gRPC: export.grpc_services.tensor_proto for every output against the one before session 19 (strings added
  in one call, numbers by tf.make_tensor_proto).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import remi_tf  # noqa: E402,F401  (first: sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402

from remi_tf.export.grpc_services import tensor_proto  # noqa: E402
from remi_tf.export.rest import format_rest_response, json_body  # noqa: E402


def lookup_outputs(batch: int, k: int, interests: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)

    def ids(*shape: int) -> np.ndarray:
        return np.array([f"B{value:09d}".encode() for value in rng.integers(0, 10 ** 9, int(np.prod(shape)))],
                        dtype=object).reshape(shape)

    return {"item_ids": ids(batch, k), "scores": rng.normal(size=(batch, k)).astype(np.float32),
            "interest": rng.integers(0, interests, (batch, k)).astype(np.int32),
            "interest_item_ids": ids(batch, interests, k),
            "interest_scores": rng.normal(size=(batch, interests, k)).astype(np.float32)}


def previous_json(outputs: dict[str, np.ndarray]) -> bytes:
    decode = np.vectorize(lambda value: value.decode("utf-8"), otypes=[object])
    values = {key: decode(array).tolist() if array.dtype.kind == "O" else array.tolist()
              for key, array in outputs.items()}
    return json.dumps({"outputs": values}).encode("utf-8")


def previous_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    if array.dtype.kind != "O":
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=tf.TensorShape(array.shape).as_proto())
    proto.string_val.extend(array.ravel().tolist())
    return proto


def alternating_p50s(encoders: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for encode in encoders.values():
        for _ in range(100):
            encode()
    for _ in range(calls):
        for name, encode in encoders.items():
            start = time.perf_counter()
            encode()
            times[name].append(time.perf_counter() - start)
    return {name: 1e6 * statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--interests", type=int, default=4)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    outputs = lookup_outputs(args.batch, args.k, args.interests)
    p50 = alternating_p50s({
        "REST: before (np.vectorize, tolist, json.dumps)": lambda: previous_json(outputs),
        "REST: json_body (orjson)": lambda: json_body(format_rest_response(outputs, False)),
        "gRPC: before (make_tensor_proto for numbers)": lambda: [previous_proto(array) for array in outputs.values()],
        "gRPC: tensor_proto": lambda: [tensor_proto(array) for array in outputs.values()],
    }, args.calls)
    print(f"# {os.cpu_count()} CPUs; batch {args.batch}, k {args.k}, K {args.interests}; p50 of {args.calls}, "
          "alternating")
    print("| encoder | p50 us |")
    print("|---|---|")
    for name, value in p50.items():
        print(f"| {name} | {value:.1f} |")


if __name__ == "__main__":
    main()
