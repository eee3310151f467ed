"""`remi serve` under load from C load generators: wrk (REST) and h2load (gRPC), against the in-process model.

    benchmarks/serving_load.sh --export-dir DIR [--name remi] [--seconds 10] [--connections 1 4 16 64]

(the .sh checks that wrk and h2load are installed: Debian packages wrk and nghttp2-client.) One run:
1. in process, the SavedModel's `serving_default` at batch 1 (p50 of --calls calls) and batch 64 (histories/s);
2. `remi serve` on free 127.0.0.1 ports (default batching), with each of --workers processes (default 1 and 2),
   then the same servers with their model call replaced by a stored answer (benchmarks/serving_ceiling.py: request parsing, batching, tensor conversion and the response
   are the real server's; the model costs nothing): the server's own ceiling;
3. for each server, protocol and --connections: batch-1 requests (one history of 20 items, the same each time)
   for --seconds: `wrk -t1 -cC --latency` POSTing TF Serving's REST predict body, and `h2load -t1 -cC -m1`
   POSTing a length-prefixed serialized PredictRequest (content-type application/grpc) to
   /tensorflow.serving.PredictionService/Predict, its per-request log giving p50/p99. One generator thread:
   the server has the other core.
req/s, p50/p99 and errors (wrk: non-2xx and socket errors; h2load: failed and errored requests, and the
gRPC status of a check request with the same bytes afterwards, since h2load sees only HTTP statuses).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import remi_tf  # noqa: E402,F401  (first: sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np  # noqa: E402
import scann  # noqa: E402,F401  (ScaNN ops for the ScaNN model)
import tensorflow as tf  # noqa: E402
from cli_runs import remi_serve, serving_lines  # noqa: E402

from remi_tf.export import serving_layout  # noqa: E402
from remi_tf.export.client import RemiClient, predict_request  # noqa: E402

GENERATORS = {"wrk": "wrk", "h2load": "nghttp2-client"}  # program -> Debian package
RUN_TIMEOUT_S = 120  # on top of --seconds, for one load generator run
CEILING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serving_ceiling.py")


def rest_body(history: list[str]) -> bytes:
    return json.dumps({"instances": [{"history": history}]}).encode()


def grpc_body(name: str, history: list[str]) -> bytes:
    """gRPC's wire form of a PredictRequest: a 0 byte (not compressed), the length (4 bytes, big-endian), the
    message."""
    message = predict_request(name, "serving_default", {"history": [history]}).SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def milliseconds(text: str) -> float:
    """wrk's '1.23ms', '456.00us', '1.02s' -> ms."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(url: str, body: bytes, connections: int, seconds: int, workdir: str) -> dict[str, float]:
    script = os.path.join(workdir, "post.lua")
    with open(script, "w") as stream:
        stream.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                     f"wrk.body = [==[{body.decode()}]==]\n")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, timeout=seconds + RUN_TIMEOUT_S, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int(next(iter(re.findall(r"Non-2xx or 3xx responses: (\d+)", out)), 0))
    return {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": milliseconds(percentiles["50"]), "p99": milliseconds(percentiles["99"]), "errors": errors}


def run_h2load(url: str, body: bytes, connections: int, seconds: int, workdir: str) -> dict[str, float]:
    data, log = os.path.join(workdir, "predict.bin"), os.path.join(workdir, "h2load.log")
    with open(data, "wb") as stream:
        stream.write(body)
    if os.path.exists(log):
        os.remove(log)
    out = subprocess.run(["h2load", "-t1", f"-c{connections}", "-m1", f"-D{seconds}", "--warm-up-time=1",
                          "-d", data, "-H", "content-type: application/grpc", "-H", "te: trailers",
                          "--log-file", log, url],
                         capture_output=True, text=True, timeout=seconds + RUN_TIMEOUT_S, check=True).stdout
    # the log: start time (us since the epoch), HTTP status, microseconds to the end of the response
    rows = [line.split("\t") for line in open(log) if line.strip()]
    latencies = np.array([float(row[2]) / 1e3 for row in rows])
    counts = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                       out)
    return {"rate": float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out).group(1)),
            "p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "errors": int(counts.group(2)) + int(counts.group(3)) + sum(row[1] != "200" for row in rows)}


def in_process(signature: Any, history: list[str], calls: int) -> dict[str, float]:
    """A retrieval signature's batch-1 and batch-64 p50 ms and histories/s."""
    figures = {}
    for batch in (1, 64):
        histories = tf.constant([history] * batch)
        for _ in range(10):
            signature(history=histories)
        seconds = []
        for _ in range(calls if batch == 1 else max(10, calls // 10)):
            start = time.perf_counter()
            signature(history=histories)["item_ids"].numpy()
            seconds.append(time.perf_counter() - start)
        figures[f"p50_{batch}"] = 1e3 * statistics.median(seconds)
        figures[f"rate_{batch}"] = batch / statistics.median(seconds)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--name", default="remi", help="the served model")
    parser.add_argument("--seconds", type=int, default=10, help="per load generator run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--calls", type=int, default=300, help="in-process batch-1 calls")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="remi serve --workers, each in turn")
    args = parser.parse_args()
    missing = [f"{program} (Debian package {package})" for program, package in GENERATORS.items()
               if shutil.which(program) is None]
    if missing:
        sys.exit(f"serving_load: not installed: {', '.join(missing)}; apt-get install {' '.join(GENERATORS.values())}")

    newest = max(serving_layout.versions(os.path.join(args.export_dir, args.name)))
    model = tf.saved_model.load(os.path.join(args.export_dir, args.name, str(newest)))
    vocabulary = [item.decode() for item in model.item_ids.numpy()[2:]]  # ["", "[UNK]", items...]
    history = [vocabulary[i] for i in np.random.default_rng(0).choice(len(vocabulary), 20, replace=False)]
    local = in_process(model.signatures["serving_default"], history, args.calls)
    del model  # the servers below get the cores
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}; model {args.name}, "
          f"{len(vocabulary):,} items; wrk and h2load with one thread, {args.seconds:g} s per run, batch-1 requests")
    print(f"in process: batch 1 p50 {local['p50_1']:.2f} ms ({local['rate_1']:,.0f} histories/s); batch 64 p50 "
          f"{local['p50_64']:.2f} ms ({local['rate_64']:,.0f} histories/s)", flush=True)
    print("| server | protocol | connections | req/s | x in-process batch 64 | p50 ms | +p50 over in process | "
          "p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        servers = [(f"{label}{'' if workers == 1 else f', {workers} processes'}", program, workers)
                   for label, program in (("remi serve", None), ("stored answer", (CEILING, "serve")))
                   for workers in args.workers]
        for label, program, workers in servers:
            with remi_serve(args.export_dir, "--workers", str(workers), program=program,
                            stdout=subprocess.PIPE) as (server, port, grpc_port):
                serving_lines(server, workers)  # every process has loaded the models and listens
                client = RemiClient(f"127.0.0.1:{grpc_port}", model=args.name, use_grpc=True)
                client.lookup_when_up(history, wait_seconds=180)
                runs = (("REST", run_wrk, f"http://127.0.0.1:{port}/v1/models/{args.name}:predict",
                         rest_body(history)),
                        ("gRPC", run_h2load, f"http://127.0.0.1:{grpc_port}/tensorflow.serving.PredictionService/"
                         "Predict", grpc_body(args.name, history)))
                for protocol, run, url, body in runs:
                    for connections in args.connections:
                        result = run(url, body, connections, args.seconds, workdir)
                        if protocol == "gRPC":
                            client.lookup(history)  # the same request answers (raises on a gRPC error status)
                        print(f"| {label} | {protocol} | {connections} | {result['rate']:,.0f} | "
                              f"{result['rate'] / local['rate_64']:.2f}x | {result['p50']:.2f} | "
                              f"{result['p50'] - local['p50_1']:+.2f} | {result['p99']:.2f} | {result['errors']} |",
                              flush=True)


if __name__ == "__main__":
    main()
