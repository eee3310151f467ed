"""The number-of-negatives study that motivates IHN (REMI paper, issue 10): test Recall@50 of ComiRec-SA
(no IHN, no RR) and REMI (IHN + RR) trained with a sampled softmax over N uniform negatives, for several
N, against in-batch negatives with logQ correction; a table and a plot.

    python benchmarks/negatives.py --data runs/bench/cds --config configs/amazon-cds.yaml \
        --output runs/negatives-cds --negatives 64 256 1280 5120 --set max_steps=2500 eval_every=500 \
        [--seeds 3] [--resume]

Every run is `remi train` + `remi evaluate` through benchmarks/ablation.py's run_variant; reports go to
<output>/<model>-<negatives>/ (<output>/<model>-<negatives>-s<seed>/ with --seeds N > 1). Writes
<output>/table.md (per model and number of negatives: mean +- standard deviation over the seeds),
<output>/results.json (every run) and the plot (--plot, default benchmarks/results/negatives.png; error
bars: the standard deviation). --resume reuses finished runs of equal overrides (ablation.py's).
"""

from __future__ import annotations

import argparse
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ablation import mean_spread, run_variant, seeds_to_run, spread  # noqa: E402
from remi_tf.atomic import write_json, write_text  # noqa: E402

MODELS = {"ComiRec-SA": ["beta=0", "routing_lambda=0"], "REMI": ["beta=10", "routing_lambda=100"],
          "RR only (remi-tf default)": ["beta=0", "routing_lambda=100"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--negatives", type=int, nargs="+", default=[64, 256, 1280, 5120])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every run (key=value)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per cell, seeds 0 .. N-1")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs of equal overrides")
    parser.add_argument("--plot", default="benchmarks/results/negatives.png")
    args = parser.parse_args()
    results = []
    for model in args.models:
        runs = [("in-batch", ["negatives=in_batch"])] + [
            (str(n), ["negatives=sampled", f"num_sampled_negatives={n}"]) for n in args.negatives]
        for negatives, mode in runs:
            for seed in seeds_to_run(args.seeds):
                result = run_variant(f"{model.split()[0]}-{negatives}", [*MODELS[model], *mode, *args.set], args, seed)
                results.append({"model": model, "negatives": negatives, **result})
                print(f"{model}, {negatives} negatives{'' if seed is None else f', seed {seed}'}: test R@50 "
                      f"{result['test']['recall@50']:.4f} ({result['train_seconds']:.0f} s)", flush=True)
    write_json(os.path.join(args.output, "results.json"), results)
    columns = ["in-batch"] + [str(n) for n in args.negatives]
    lines = ["| model | in-batch + logQ | " + " | ".join(f"{n:,}" for n in args.negatives) + " | train s (in-batch, "
             f"{args.negatives[-1]:,}) |", "|---|" + "---|" * (len(columns) + 1)]
    for model in args.models:
        cells = [mean_spread(recalls(results, model, negatives)) for negatives in columns]
        seconds = [statistics.mean(r["train_seconds"] for r in results if r["model"] == model and r["negatives"] == n)
                   for n in (columns[0], columns[-1])]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {seconds[0]:.0f}, {seconds[1]:.0f} |")
    write_text(os.path.join(args.output, "table.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(results, args.models, args.negatives, args.plot)


def recalls(results: list[dict], model: str, negatives: str) -> list[float]:
    """Test Recall@50 of every seed of one cell."""
    return [r["test"]["recall@50"] for r in results if r["model"] == model and r["negatives"] == negatives]


def plot(results: list[dict], models: list[str], negatives: list[int], path: str) -> None:
    """Test Recall@50 (mean over seeds, the standard deviation as error bars) against the number of sampled
    negatives (log scale), one line per model, and each model's in-batch + logQ mean as a dashed line of the
    same colour."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for model, colour in zip(models, ("tab:blue", "tab:orange", "tab:green")):
        cells = [recalls(results, model, str(n)) for n in negatives]
        axes.errorbar(negatives, [statistics.mean(c) for c in cells], yerr=[spread(c) for c in cells], marker="o",
                      color=colour, capsize=3, label=f"{model}, sampled softmax")
        axes.axhline(statistics.mean(recalls(results, model, "in-batch")), color=colour, linestyle="--",
                     label=f"{model}, in-batch + logQ")
    axes.set_xscale("log")
    axes.set_xlabel("uniform negatives per batch")
    axes.set_ylabel("test Recall@50")
    axes.legend(fontsize=8)
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp.png"
    figure.savefig(temporary)
    os.replace(temporary, path)
    plt.close(figure)


if __name__ == "__main__":
    main()
