"""Two exports of one model, A and B (say, before and after a change to the SavedModels), called alternately in
one run: does B answer as A does, and how fast is each at batch 1 and 64.

    git stash; remi export --model-dir M --output runs/ab/A --k 50; git stash pop
    remi export --model-dir M --output runs/ab/B --k 50
    python benchmarks/export_ab.py --model-dir M runs/ab/A runs/ab/B [--calls 300] [--name remi]

For each model of both exports (`<name>` and `<name>-exact` where present): whether every output of
`serving_default` is equal on the first 512 valid histories (a ScaNN model is rebuilt by each export, so
its answers may differ where the trees do), then the p50 of --calls calls per export at batch 1 and 64,
the exports' calls interleaved so that a slower phase of the machine affects both alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import remi_tf  # noqa: E402,F401  (first: sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np  # noqa: E402
import scann  # noqa: E402,F401  (the ScaNN ops of the exported model)
import tensorflow as tf  # noqa: E402

from remi_tf import input as input_lib  # noqa: E402
from remi_tf import model_directory  # noqa: E402
from remi_tf.export import serving_layout  # noqa: E402
from remi_tf.item_index import FIRST_ITEM_INDEX  # noqa: E402


def latest_version(export_dir: str, name: str) -> str:
    directory = os.path.join(export_dir, name)
    return os.path.join(directory, str(max(serving_layout.versions(directory))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs=2, metavar="EXPORT_DIR", help="A and B")
    parser.add_argument("--model-dir", required=True, help="the exported model (for its valid histories)")
    parser.add_argument("--name", default="remi")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    trained = model_directory.load_trained(args.model_dir)
    vocabulary = trained.vocabulary
    _, histories, _ = input_lib.load_evaluation_split(trained.data_dir, "valid", vocabulary,
                                                      trained.config.max_history)

    def as_strings(rows: np.ndarray) -> tf.Tensor:
        return tf.constant([[vocabulary[i - FIRST_ITEM_INDEX] if i >= FIRST_ITEM_INDEX else "" for i in row]
                            for row in rows])

    names = [name for name in (args.name, f"{args.name}-exact")
             if all(os.path.isdir(os.path.join(export, name)) for export in args.exports)]
    signatures = {(side, name): tf.saved_model.load(latest_version(export, name)).signatures["serving_default"]
                  for side, export in zip("AB", args.exports) for name in names}
    print(f"# {platform.node()}, {os.cpu_count()} CPUs; A {args.exports[0]}, B {args.exports[1]}; "
          f"p50 of {args.calls} calls, interleaved")
    some = as_strings(histories[:512])
    for name in names:
        answers = [signatures[(side, name)](history=some) for side in "AB"]
        differing = [key for key in answers[0] if not np.array_equal(answers[0][key].numpy(), answers[1][key].numpy())]
        print(f"{name}: B answers as A" if not differing else f"{name}: B differs from A in {', '.join(differing)}")
    print("| batch | model | A p50 ms | B p50 ms | B / A |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for batch in (1, 64):
        chosen = as_strings(histories[rng.choice(len(histories), batch, replace=False)])
        times: dict[tuple[str, str], list[float]] = {key: [] for key in signatures}
        for signature in signatures.values():
            for _ in range(20):
                signature(history=chosen)
        for _ in range(args.calls):
            for key, signature in signatures.items():
                start = time.perf_counter()
                signature(history=chosen)
                times[key].append(time.perf_counter() - start)
        for name in names:
            a, b = (1000 * statistics.median(times[(side, name)]) for side in "AB")
            print(f"| {batch} | {name} | {a:.3f} | {b:.3f} | {b / a:.3f}x |")


if __name__ == "__main__":
    main()
