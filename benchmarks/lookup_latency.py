"""Lookup latency and throughput of an exported REMI model, in process and through `remi serve`.

    python benchmarks/lookup_latency.py --export-dir DIR --model-dir DIR [--requests 300]

For each retrieval model (<name> = ScaNN, <name>-exact) and batch size (1, 64): p50/p99 latency and
lookups/s calling the SavedModel signature in process, then through `remi serve` (started as a
subprocess on 127.0.0.1) over REST and gRPC with the remi client. Histories are 20 random items.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import remi_tf  # noqa: E402,F401
import numpy as np  # noqa: E402
import scann  # noqa: E402,F401  (ScaNN ops for the ScaNN model)
import tensorflow as tf  # noqa: E402

from export.client import RemiClient  # noqa: E402
from remi_tf.models import read_vocabulary  # noqa: E402


def measure(call, batches: list) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, histories/s) over `batches` after two warm-up calls."""
    call(batches[0])
    call(batches[1])
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        call(batch)
        seconds.append(time.perf_counter() - start)
    histories = sum(len(batch) for batch in batches)
    return 1e3 * np.percentile(seconds, 50), 1e3 * np.percentile(seconds, 99), histories / sum(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--model-dir", required=True, help="for the vocabulary (items.tsv)")
    parser.add_argument("--name", default="remi")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--port", type=int, default=18501)
    parser.add_argument("--grpc-port", type=int, default=18500)
    args = parser.parse_args()

    vocabulary = read_vocabulary(os.path.join(args.model_dir, "items.tsv"))
    rng = np.random.default_rng(0)

    def batches(size: int, count: int) -> list[list[list[str]]]:
        return [[[vocabulary[i] for i in rng.choice(len(vocabulary), 20, replace=False)] for _ in range(size)]
                for _ in range(count)]

    workload = {1: batches(1, args.requests), 64: batches(64, max(20, args.requests // 10))}
    rows = []
    for model in (args.name, f"{args.name}-exact"):
        versions = sorted(int(v) for v in os.listdir(os.path.join(args.export_dir, model)) if v.isdigit())
        signature = tf.saved_model.load(os.path.join(args.export_dir, model, str(versions[-1]))).signatures[
            "serving_default"]
        for size, work in workload.items():
            rows.append((model, "in-process", size, *measure(lambda b: signature(history=tf.constant(b)), work)))

    server = subprocess.Popen([sys.executable, "-m", "remi", "serve", "--export-dir", args.export_dir,
                               "--port", str(args.port), "--grpc-port", str(args.grpc_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for model in (args.name, f"{args.name}-exact"):
            rest = RemiClient(f"http://127.0.0.1:{args.port}", model=model)
            grpc_client = RemiClient(f"127.0.0.1:{args.grpc_port}", model=model, use_grpc=True)
            rest.lookup_when_up(workload[1][0], wait_seconds=180)
            for size, work in workload.items():
                rows.append((model, "remi serve REST", size, *measure(rest.lookup, work)))
                rows.append((model, "remi serve gRPC", size, *measure(grpc_client.lookup, work)))
    finally:
        server.terminate()
        server.wait()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}; "
          f"{len(vocabulary):,} items")
    print("| model | path | batch | p50 ms | p99 ms | histories/s |")
    print("|---|---|---|---|---|---|")
    for model, path, size, p50, p99, rate in rows:
        print(f"| {model} | {path} | {size} | {p50:.2f} | {p99:.2f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
