"""What `remi serve` itself can carry on this machine: the server with its model call replaced, against the real one.

The replaced model call answers with a copy of a stored answer; the load is benchmarks/lookup_latency.py's.

    python benchmarks/serving_ceiling.py --export-dir DIR --model-dir DIR [--clients 16] [--seconds 20]

Both servers are `remi serve` subprocesses on free 127.0.0.1 ports (stopped by pid), with the default
batching. In the "model call replaced" one, each signature runs the SavedModel once, on the first request
it gets, and from then on answers every request with that answer's first row repeated for each history:
request parsing, validation, batching, tensor conversion and the response are the real server's, the
query tower and the ScaNN search cost nothing. Its histories/s bound what any model can be served at
through this Python server here: the load targets of issue 11 can only be met where this bound is above
them. One client at batch 1 (p50/p99) and `--clients` client threads at batch 1, gRPC and REST.

`serve` (internal): runs `remi serve` ARGS with the model call replaced.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scann  # noqa: E402,F401  (ScaNN ops for the ScaNN model)
import tensorflow as tf  # noqa: E402
from cli_runs import remi_serve  # noqa: E402
from lookup_latency import concurrent_load, grpc_caller, load_arguments, measure, rest_caller  # noqa: E402

import remi_tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from remi import cli  # noqa: E402
from remi_tf.export.client import RemiClient  # noqa: E402
from remi_tf.data_directory import read_item_ids  # noqa: E402


class StoredAnswerSignature:
    """Stands in for a SavedModel signature: runs it once, then repeats that answer's first row per row."""

    def __init__(self, signature: Any) -> None:
        self.signature = signature
        self.structured_input_signature = signature.structured_input_signature
        self.answer: dict[str, Any] | None = None

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        if self.answer is None:
            first_rows = {key: value[:1] for key, value in inputs.items()}
            self.answer = {key: tensor.numpy() for key, tensor in self.signature(**first_rows).items()}
        rows = int(next(iter(inputs.values())).shape[0])
        return {key: tf.constant(np.repeat(value, rows, axis=0)) for key, value in self.answer.items()}


class StoredAnswerModule:
    """A loaded SavedModel whose signatures answer with StoredAnswerSignature."""

    def __init__(self, module: Any) -> None:
        self.module = module  # keeps the real model (and its memory) alive, as remi serve does
        self.signatures = {name: StoredAnswerSignature(signature) for name, signature in module.signatures.items()}


def serve_with_stored_answers(argv: list[str]) -> int:
    """`remi serve ARGV` in this process, every loaded model wrapped in StoredAnswerModule."""
    from remi_tf.export import server_processes

    load = tf.saved_model.load
    tf.saved_model.load = lambda path, *args, **kwargs: StoredAnswerModule(load(path, *args, **kwargs))
    server_processes.REMI_COMMAND = (sys.executable, os.path.abspath(__file__))  # --workers N: these too
    return cli.main(["serve", *argv])


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve_with_stored_answers(sys.argv[2:]))
    args = load_arguments(__doc__).parse_args()

    vocabulary = read_item_ids(os.path.join(args.model_dir, "items.tsv"))
    rng = np.random.default_rng(0)
    work = [[[vocabulary[i] for i in rng.choice(len(vocabulary), 20, replace=False)]] for _ in range(args.requests)]
    rows = []
    for label, program in (("remi serve", None), ("remi serve, model call replaced", (os.path.abspath(__file__),
                                                                                      "serve"))):
        with remi_serve(args.export_dir, program=program) as (_, port, grpc_port):
            RemiClient(f"127.0.0.1:{grpc_port}", model=args.name, use_grpc=True).lookup_when_up(
                work[0][0], wait_seconds=180)
            for protocol, make_caller, server_port in (("gRPC", grpc_caller, grpc_port), ("REST", rest_caller, port)):
                rows.append((label, protocol, 1, *measure(make_caller(server_port, args.name), work), {}))
                rows.append((label, protocol, args.clients, *concurrent_load(
                    lambda: make_caller(server_port, args.name), work, args.clients, args.seconds)))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; tensorflow {tf.__version__}; "
          f"{len(vocabulary):,} items; batch 1")
    print("| server | protocol | clients | p50 ms | p99 ms | histories/s | errors |")
    print("|---|---|---|---|---|---|---|")
    for label, protocol, clients, p50, p99, rate, errors in rows:
        print(f"| {label} | {protocol} | {clients} | {p50:.2f} | {p99:.2f} | {rate:,.0f} | {sum(errors.values())} |")


if __name__ == "__main__":
    main()
