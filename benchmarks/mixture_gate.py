"""What the mixture's learned gate adds (interest_scoring "mixture", BENCHMARKS.md 10.16): test Recall@50 of
trained models with their gate maps P, Q as trained, re-initialised (Glorot, two seeds) and zeroed (the gate
is then a softmax of the interests' own scores).

    python benchmarks/mixture_gate.py --model-dir runs/mix-ml-1m/K4-mix-s0 runs/mix-ml-1m/K4-mix-s1
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

import remi_tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from remi_tf import evaluate, metrics, model_directory  # noqa: E402
from remi_tf import input as input_lib  # noqa: E402


def gate_rows(model_dir: str, split: str) -> list[float]:
    """Recall@50 on `split` with the gate maps as trained, re-initialised (seeds 0, 1) and zeroed."""
    trained = model_directory.load_trained(model_dir)
    gate = trained.model.interest_mixture
    if gate is None:
        raise SystemExit(f"{model_dir}: not trained with interest_scoring 'mixture'")
    _, histories, targets = input_lib.load_evaluation_split(trained.data_dir, split, trained.vocabulary,
                                                            trained.config.max_history)

    def recall() -> float:
        found = evaluate.retrieve(trained.model, histories, 50, trained.config.eval_batch_size,
                                  exclude_history=False)
        return metrics.ranking_metrics(found.item_ids, targets, (50,))["recall@50"]

    row = [recall()]
    for seed in (0, 1):
        initializer = tf.keras.initializers.GlorotUniform(seed=seed)
        for dense in (gate.interest_gate, gate.item_gate):
            dense.kernel.assign(initializer(dense.kernel.shape))
        row.append(recall())
    for dense in (gate.interest_gate, gate.item_gate):
        dense.kernel.assign(tf.zeros_like(dense.kernel))
    return [*row, recall()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", nargs="+", required=True, help="models trained with interest_scoring mixture")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    print("| model | trained gate | re-initialised (seed 0) | re-initialised (seed 1) | zeroed |")
    print("|---|---|---|---|---|")
    for model_dir in args.model_dir:
        print(f"| {model_dir} | " + " | ".join(f"{value:.4f}" for value in gate_rows(model_dir, args.split)) + " |",
              flush=True)


if __name__ == "__main__":
    main()
