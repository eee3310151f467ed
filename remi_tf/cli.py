"""`remi`: the command line of remi-tf (prepare, train, evaluate).

The CLI is the composition root: it is the one module of remi_tf that reaches into `pipelines`
(imported inside the subcommands), so that the library itself stays free of data-format code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Sequence

import remi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from remi_tf import config as config_lib


def _write_json_atomically(path: str, value: object) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "w", encoding="utf-8") as stream:
        json.dump(value, stream, indent=2)
    os.replace(tmp_path, path)


def cmd_prepare(args: argparse.Namespace) -> int:
    from pipelines import local

    manifest = local.prepare(args.input, args.output, file_format=args.format, seed=args.seed,
                             num_shards=args.num_shards, compress=args.compress, overwrite=args.overwrite)
    counts = ", ".join(f"{split}: {c['users']:,} users / {c['events']:,} events"
                       for split, c in manifest["splits"].items())
    print(f"wrote {args.output}: {manifest['num_items']:,} items; {counts}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines import input as input_lib
    from remi_tf import models
    from remi_tf import train as train_lib

    config = config_lib.load(args.config, args.set or ())
    inputs = input_lib.training_inputs(args.data, config)
    model = models.RemiModel(config, len(inputs.vocabulary), inputs.target_probability)
    os.makedirs(args.model_dir, exist_ok=True)
    shutil.copyfile(os.path.join(args.data, "items.tsv"), os.path.join(args.model_dir, "items.tsv"))
    _write_json_atomically(os.path.join(args.model_dir, "run.json"),
                           {"data_dir": os.path.abspath(args.data), "vocabulary_size": len(inputs.vocabulary)})
    state = train_lib.train(model, config, inputs.dataset, inputs.valid_histories, inputs.valid_targets,
                            args.model_dir,
                            verbose=0 if args.quiet else 1)
    print(f"best valid {train_lib.SELECTION_METRIC} = {state['best']:.4f} at step {state['best_step']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipelines import input as input_lib
    from remi_tf import evaluate as evaluate_lib
    from remi_tf.models import FIRST_ITEM_INDEX

    from remi_tf import train as train_lib

    trained = train_lib.load_trained(args.model_dir)
    config, model, vocabulary = trained.config, trained.model, trained.vocabulary
    user_ids, item_sequences = input_lib.load_sequences(args.data or trained.data_dir, args.split, vocabulary)
    histories, targets = input_lib.evaluation_examples(item_sequences, config.max_history)
    report = {"split": args.split, "model_dir": os.path.abspath(args.model_dir),
              **evaluate_lib.evaluate(model, histories, targets, batch_size=config.eval_batch_size)}
    output = args.output or os.path.join(args.model_dir, f"eval-{args.split}.json")
    _write_json_atomically(output, report)
    print(json.dumps(report, indent=2))
    if args.plots:
        from remi_tf import plots

        _, _, routing = evaluate_lib.retrieve(model, histories[:6], top_n=1)
        written = plots.write_all(args.plots, routing, histories[:6] >= FIRST_ITEM_INDEX, user_ids[:6],
                                  os.path.join(args.model_dir, "history.csv"))
        print("plots: " + ", ".join(written))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remi", description="REMI multi-interest retrieval on TensorFlow.")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="raw logs -> sequence TFRecords, items.tsv, manifest.json")
    prepare.add_argument("--input", required=True, nargs="+", help="log file(s): csv/tsv[.gz] or RecBole .inter")
    prepare.add_argument("--output", required=True, help="output directory (created atomically)")
    prepare.add_argument("--format", choices=("csv", "tsv", "recbole"), help="default: from the file name")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the hash-based user split")
    prepare.add_argument("--num-shards", type=int, default=1, help="shards per split")
    prepare.add_argument("--compress", action="store_true", help="GZIP-compress the shards")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    prepare.set_defaults(run=cmd_prepare)

    train = commands.add_parser("train", help="train REMI on prepared data (resumes an interrupted run)")
    train.add_argument("--data", required=True, help="a directory written by `remi prepare`")
    train.add_argument("--model-dir", required=True, help="checkpoints, logs and the resolved config go here")
    train.add_argument("--config", help="YAML preset, e.g. configs/amazon-cds.yaml")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="Recall/NDCG/HitRate@20/50 of the best checkpoint")
    evaluate.add_argument("--model-dir", required=True)
    evaluate.add_argument("--split", choices=("valid", "test"), default="test")
    evaluate.add_argument("--data", help="prepared data (default: the directory the model was trained on)")
    evaluate.add_argument("--output", help="report path (default: <model-dir>/eval-<split>.json)")
    evaluate.add_argument("--plots", metavar="DIR", help="write routing heatmaps and training curves here")
    evaluate.set_defaults(run=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"remi {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
