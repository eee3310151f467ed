"""Recall against diversity of the merged K-interest list for several ComiRec merge coefficients (issue 10).

    python benchmarks/diversity.py --model-dir runs/diversity-beauty/model --coef 0 0.05 0.1 0.2 0.5 1

The model's data directory must have item categories (`remi prepare --item-features ITEMS.csv:COLUMN`).
Each coefficient is one `remi evaluate --set diversity_coef=C` on the test split (reports in
<model-dir>/eval-test-coef<C>.json); prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os

from cli_runs import remi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--coef", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.5, 1.0])
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    print("| diversity_coef | R@20 | R@50 | HR@50 | NDCG@50 | category diversity@20 | category diversity@50 | "
          "interest share of the top 50 |\n|---|---|---|---|---|---|---|---|")
    for coef in args.coef:
        output = os.path.join(args.model_dir, f"eval-{args.split}-coef{coef:g}.json")
        remi("evaluate", "--model-dir", args.model_dir, "--split", args.split, "--output", output,
             "--set", f"diversity_coef={coef}")
        with open(output, encoding="utf-8") as stream:
            report = json.load(stream)
        shares = " / ".join(f"{share:.2f}" for share in report["interest_share"])
        print(f"| {coef:g} | {report['recall@20']:.4f} | {report['recall@50']:.4f} | {report['hitrate@50']:.4f} | "
              f"{report['ndcg@50']:.4f} | {report['category_diversity@20']:.4f} | "
              f"{report['category_diversity@50']:.4f} | {shares} |", flush=True)


if __name__ == "__main__":
    main()
