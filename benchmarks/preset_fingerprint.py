"""What each preset's short run computes, to check that a refactoring kept behaviour (issue 38).

    python benchmarks/preset_fingerprint.py --output runs/fingerprint/before.json [--steps 2000] [--presets ...]
    python benchmarks/preset_fingerprint.py --compare runs/fingerprint/before.json runs/fingerprint/after.json

Per preset (configs/<set>.yaml on its data set in $REMI_DATASETS, default ../shared/datasets): `remi prepare`
(kept under runs/fingerprint/data), `remi train --set max_steps=STEPS eval_every=STEPS/2 patience=0 seed=0` with
TensorFlow's deterministic ops, `remi evaluate --split test`, `remi export --index brute-force`, and the exported
model's answers for the first 64 test users. --compare reports every metric and answer that differs by more than
--tolerance (exit status 1 when any does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.cli_runs import ENV, remi  # noqa: E402

ENV["TF_DETERMINISTIC_OPS"] = "1"  # the same numbers from the same seed, run after run
DATASETS = os.environ.get("REMI_DATASETS", os.path.join(REPO, "..", "shared", "datasets"))
LOGS = {"ml-100k": "ml-100k-recbole/ml-100k.inter", "ml-1m": "ml-1m/interactions.csv.gz",
        "amazon-cds": "amazon-cds/interactions.csv.gz", "amazon-beauty": "amazon-beauty/interactions.csv.gz",
        "amazon-grocery": "amazon-grocery/interactions.csv.gz"}
ANSWERED_USERS = 64
ANSWERS_SCRIPT = """
import json, sys
import tensorflow as tf
from remi_tf import input as input_lib
from remi_tf.item_index import FIRST_ITEM_INDEX
export_dir, data_dir, users = sys.argv[1], sys.argv[2], int(sys.argv[3])
vocabulary = input_lib.read_vocabulary(data_dir)
_, histories, _ = input_lib.load_evaluation_split(data_dir, "test", vocabulary, 10 ** 6)
rows = [[vocabulary[i - FIRST_ITEM_INDEX] for i in row if i >= FIRST_ITEM_INDEX] for row in histories[:users]]
model = tf.saved_model.load(export_dir)
out = model.signatures["serving_default"](history=tf.ragged.constant(rows).to_tensor(""))
print(json.dumps({"ids": out["item_ids"].numpy().astype(str).tolist(), "scores": out["scores"].numpy().tolist()}))
"""


def fingerprint(preset: str, output_dir: str, steps: int) -> dict:
    """Validation history, test metrics and exported answers of one preset's short run."""
    data_dir = os.path.join(output_dir, "data", preset)
    if not os.path.isdir(data_dir):
        remi("prepare", "--input", os.path.join(DATASETS, LOGS[preset]), "--output", data_dir)
    model_dir, export_dir = os.path.join(output_dir, "models", preset), os.path.join(output_dir, "exports", preset)
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.rmtree(export_dir, ignore_errors=True)
    remi("train", "--data", data_dir, "--model-dir", model_dir, "--config", os.path.join(REPO, "configs",
         f"{preset}.yaml"), "--quiet", "--set", f"max_steps={steps}", f"eval_every={steps // 2}", "patience=0",
         "seed=0")
    remi("evaluate", "--model-dir", model_dir, "--split", "test")
    remi("export", "--model-dir", model_dir, "--output", export_dir, "--index", "brute-force", "--k", "50")
    with open(os.path.join(model_dir, "history.csv"), encoding="utf-8") as stream:
        validation = stream.read()
    with open(os.path.join(model_dir, "eval-test.json"), encoding="utf-8") as stream:
        test = {name: value for name, value in json.load(stream).items() if isinstance(value, float)}
    answers = subprocess.run([sys.executable, "-c", ANSWERS_SCRIPT, os.path.join(export_dir, "remi", "1"),
                              data_dir, str(ANSWERED_USERS)], capture_output=True, text=True, env=ENV, check=True)
    return {"validation_csv": validation, "test": test, "answers": json.loads(answers.stdout.splitlines()[-1])}


def differences(before: dict, after: dict, tolerance: float) -> list[str]:
    """Every preset, metric and answer that differs by more than `tolerance` (ids: at all)."""
    found = []
    for preset in sorted(before.keys() & after.keys()):
        old, new = before[preset], after[preset]
        for name in sorted(old["test"].keys() | new["test"].keys()):
            a, b = old["test"].get(name), new["test"].get(name)
            if a is None or b is None or abs(a - b) > tolerance:
                found.append(f"{preset}: test {name} {a} -> {b}")
        lines_a, lines_b = old["validation_csv"].splitlines(), new["validation_csv"].splitlines()
        if len(lines_a) != len(lines_b):
            found.append(f"{preset}: {len(lines_a)} -> {len(lines_b)} validation lines")
        for line_a, line_b in zip(lines_a, lines_b, strict=False):
            if line_a != line_b and _numbers_differ(line_a, line_b, tolerance):
                found.append(f"{preset}: validation {line_a!r} -> {line_b!r}")
        if old["answers"]["ids"] != new["answers"]["ids"]:
            found.append(f"{preset}: exported item ids differ")
            continue
        worst = max(abs(x - y) for row_a, row_b in zip(old["answers"]["scores"], new["answers"]["scores"], strict=True)
                    for x, y in zip(row_a, row_b, strict=True))
        if worst > tolerance:
            found.append(f"{preset}: exported scores differ by up to {worst:.3g}")
    return found


def _numbers_differ(line_a: str, line_b: str, tolerance: float) -> bool:
    cells_a, cells_b = line_a.split(","), line_b.split(",")
    if len(cells_a) != len(cells_b):
        return True
    for a, b in zip(cells_a, cells_b, strict=True):
        try:
            if abs(float(a) - float(b)) > tolerance:
                return True
        except ValueError:
            if a != b:
                return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="where the fingerprints are written (JSON)")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "runs", "fingerprint"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--presets", nargs="+", default=list(LOGS), choices=list(LOGS))
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args()
    if args.compare:
        loaded = []
        for path in args.compare:
            with open(path, encoding="utf-8") as stream:
                loaded.append(json.load(stream))
        found = differences(*loaded, args.tolerance)
        presets = sorted(loaded[0].keys() & loaded[1].keys())
        print("\n".join(found) if found else f"identical to {args.tolerance:g}: {presets}")
        return 1 if found else 0
    results = {}
    for preset in args.presets:
        results[preset] = fingerprint(preset, args.work_dir, args.steps)
        print(f"{preset}: test {results[preset]['test']}", flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
