"""The number-of-negatives study that motivates IHN (REMI paper, issue 10): test Recall@50 of ComiRec-SA
(no IHN, no RR) and REMI (IHN + RR) trained with a sampled softmax over N uniform negatives, for several
N, against in-batch negatives with logQ correction; a table and a plot.

    python benchmarks/negatives.py --data runs/bench/cds --config configs/amazon-cds.yaml \
        --output runs/negatives-cds --negatives 64 256 1280 5120 --set max_steps=2500 eval_every=500

Every run is `remi train` + `remi evaluate` through benchmarks/ablation.py's run_variant; reports go to
<output>/<model>-<negatives>/. Writes <output>/table.md, <output>/results.json and the plot
(--plot, default benchmarks/results/negatives.png). Runs already in <output>/results.json are kept,
not trained again (delete it to start over).
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ablation import run_variant  # noqa: E402

MODELS = {"ComiRec-SA": ["beta=0", "routing_lambda=0"], "REMI": ["beta=10", "routing_lambda=100"],
          "RR only (remi-tf default)": ["beta=0", "routing_lambda=100"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--negatives", type=int, nargs="+", default=[64, 256, 1280, 5120])
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every run (key=value)")
    parser.add_argument("--plot", default="benchmarks/results/negatives.png")
    args = parser.parse_args()
    results_path = os.path.join(args.output, "results.json")
    done = {}
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as stream:
            done = {(r["model"], r["negatives"]): r for r in json.load(stream)}
    results = []
    for model, settings in MODELS.items():
        runs = [("in-batch", ["negatives=in_batch"])] + [
            (str(n), ["negatives=sampled", f"num_sampled_negatives={n}"]) for n in args.negatives]
        for negatives, mode in runs:
            if (model, negatives) in done:
                results.append(done[model, negatives])
                continue
            result = run_variant(f"{model.split()[0]}-{negatives}", [*settings, *mode, *args.set], args)
            results.append({"model": model, "negatives": negatives, **result})
            print(f"{model}, {negatives} negatives: test R@50 {result['test']['recall@50']:.4f} "
                  f"({result['train_seconds']:.0f} s)", flush=True)
    os.makedirs(args.output, exist_ok=True)
    with open(results_path, "w", encoding="utf-8") as stream:
        json.dump(results, stream, indent=2)
    lines = ["| model | negatives | best step | valid R@50 | test R@50 | test HR@50 | train s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['negatives']} | {r['best_step']} | {r['valid']['recall@50']:.4f} | "
              f"{r['test']['recall@50']:.4f} | {r['test']['hitrate@50']:.4f} | {r['train_seconds']:.0f} |" for r in results]
    with open(os.path.join(args.output, "table.md"), "w", encoding="utf-8") as stream:
        stream.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(results, args.negatives, args.plot)


def plot(results: list[dict], negatives: list[int], path: str) -> None:
    """Test Recall@50 against the number of sampled negatives (log scale), one line per model, and each
    model's in-batch + logQ result as a dashed line of the same colour."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for (model, _), colour in zip(MODELS.items(), ("tab:blue", "tab:orange", "tab:green")):
        sampled = [r["test"]["recall@50"] for r in results if r["model"] == model and r["negatives"] != "in-batch"]
        in_batch = next(r["test"]["recall@50"] for r in results if r["model"] == model and r["negatives"] == "in-batch")
        axes.plot(negatives, sampled, marker="o", color=colour, label=f"{model}, sampled softmax")
        axes.axhline(in_batch, color=colour, linestyle="--", label=f"{model}, in-batch + logQ")
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
