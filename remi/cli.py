"""`remi`: the command line of remi-tf (convert, prepare, train, evaluate, export, serve, lookup).

The composition root: it imports remi_tf, pipelines and export (the latter two inside the subcommands,
so that `remi --help` is quick); none of them imports it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

# TensorFlow's and ScaNN's start-up lines (cuInit, CPU features) only with --verbose; before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if "--verbose" in sys.argv else "3")

import remi_tf  # noqa: E402 (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow; imports none)
from remi import display, native_logs
from remi_tf import config as config_lib
from remi_tf.suggestions import did_you_mean

if TYPE_CHECKING:  # annotations only: `remi --help` loads neither
    import numpy as np

    from remi_tf.model_directory import TrainedModel


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (no upper bound when high is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            expected = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected an integer {expected}, got {value}")
        return value
    return parse


def non_negative_float(text: str) -> float:
    """An argparse type: a finite float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def recall_fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


POSITIVE, NON_NEGATIVE, PORT = bounded_int(1), bounded_int(0), bounded_int(0, 65535)


def choose_runner(runner: str, inputs: Sequence[str], pipeline_args: Sequence[str], time_split: bool = False) -> str:
    """`auto` -> `in-process` (whose user split spills to disk past local.IN_MEMORY_MAX_EVENTS events, so its
    memory stays bounded at any size), except Beam's local runner (`DirectRunner`) when Beam options are given
    or a time split's inputs hold more events than the in-process path keeps in memory (by an estimate of the
    decompressed size: readers.estimate_events); other names are kept."""
    if runner != "auto":
        return runner
    if pipeline_args:
        return "DirectRunner"
    if not time_split:
        return "in-process"
    from remi_tf.pipelines import local, readers

    events = readers.estimate_events(readers.expand_inputs(list(inputs)))
    return "in-process" if events <= local.IN_MEMORY_MAX_EVENTS else "DirectRunner"


def cmd_prepare(args: argparse.Namespace) -> int:
    from remi_tf import atomic
    from remi_tf.pipelines import feature_csvs, readers, time_split

    if args.split == "users" and (args.valid_from or args.test_from):
        raise ValueError("--valid-from/--test-from need --split time")
    boundaries = time_split.parse_boundaries(args.valid_from, args.test_from) if args.split == "time" else None
    atomic.check_output(args.output, args.overwrite)  # before any file is read (the runner's estimate reads logs)

    options = dict(file_format=args.format, seed=args.seed, num_shards=args.num_shards, compress=args.compress,
                   overwrite=args.overwrite, max_bad_records=args.max_bad_records, behavior=args.behavior,
                   boundaries=boundaries, columns=readers.parse_columns(args.columns),
                   min_item_count=args.min_item_interactions, min_user_count=args.min_user_interactions,
                   min_rating=args.min_rating)
    # A malformed file fails before anything is written.
    read_features = [feature_csvs.read_feature_csv(spec, key) for spec, key in
                    ((args.item_features, "item_id"), (args.user_features, "user_id")) if spec]
    runner = choose_runner(args.runner, args.input, args.pipeline_args, time_split=boundaries is not None)
    print(f"runner: {runner}", file=sys.stderr)
    if runner == "in-process":
        if args.pipeline_args:
            raise ValueError(f"unrecognized arguments {args.pipeline_args}: Beam pipeline options need a Beam "
                             "--runner")
        from remi_tf.pipelines import local

        manifest = local.prepare(args.input, args.output, **options)
    else:
        from remi_tf.pipelines import beam

        unknown = beam.unknown_pipeline_options(args.pipeline_args)
        if unknown:
            raise ValueError(f"unknown option(s) {named_with_closest(unknown, args.option_names)}: neither `remi "
                             "prepare`'s (see --help) nor Beam's pipeline options")
        manifest = beam.prepare(args.input, args.output, **options, num_buckets=args.user_buckets,
                                pipeline_args=[f"--runner={runner}", *args.pipeline_args])
    counts = ", ".join(f"{split}: {c['users']:,} users / {c['events']:,} events"
                       + (f" ({c['cold_users']:,} cold users not evaluated)" if c.get("cold_users") else "")
                       for split, c in manifest["splits"].items())
    print(display.cleaning_summary(manifest), file=sys.stderr)
    print(f"wrote {args.output}: {manifest['num_items']:,} items; {counts}")
    if read_features:
        from remi_tf import data_directory
        from remi_tf import input as input_lib

        for features in read_features:
            items = features.key == "item_id"
            ids = input_lib.read_vocabulary(args.output) if items else input_lib.read_user_ids(args.output)
            summary = feature_csvs.write_feature_table(features, args.output, ids)
            kind = "items" if items else "users"
            data_directory.write_manifest(args.output, {**(data_directory.read_manifest(args.output) or {}),
                                                        f"{kind[:-1]}_features": summary})
            print(f"{kind[:-1]} features {summary['columns']}: {summary[f'{kind}_with_features']:,} {kind}, "
                  f"{summary[f'{kind}_without_features']:,} without (OOV bucket)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from remi_tf.pipelines import local, readers

    summary = local.convert(args.input, args.output, file_format=args.format, num_shards=args.num_shards,
                            compress=args.compress, overwrite=args.overwrite, max_bad_records=args.max_bad_records,
                            behavior=args.behavior, columns=readers.parse_columns(args.columns),
                            min_rating=args.min_rating)
    print(f"wrote {args.output}: {summary['events']:,} events in {args.num_shards} shard(s)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.local_cluster:  # this command once per task of a cluster of local processes
        from remi_tf import local_cluster

        command = [sys.executable, "-m", "remi", *_without_option(args.argv, "--local-cluster")]
        return local_cluster.run(local_cluster.parse_shape(args.local_cluster), command,
                                 timeout_s=args.local_cluster_timeout)
    from remi_tf import local_cluster, training_run
    from remi_tf import train as train_lib

    local_cluster.follow_parent()  # a task of a local cluster ends with the process that started it
    strategy = [f"strategy={args.strategy}"] if args.strategy else []
    config = config_lib.load(args.config, [*(args.set or ()), *strategy])
    state = training_run.run(args.data, args.model_dir, config, args.warm_start, verbose=0 if args.quiet else 1)
    if state is not None:
        print(f"best valid {train_lib.SELECTION_METRIC} = {state['best']:.4f} at step {state['best_step']}")
    return 0


def _without_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` without `option VALUE` / `option=VALUE`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def evaluation_overrides(overrides: Sequence[str] | None) -> dict[str, object]:
    """`--set` values of evaluation-time keys (config.EVALUATION_KEYS); a training key is refused, since it
    would not change the trained model."""
    values = config_lib.parse_overrides(overrides or ())
    training_keys = sorted(set(values) - set(config_lib.EVALUATION_KEYS))
    if training_keys:
        named = ", ".join(key + did_you_mean(key, config_lib.EVALUATION_KEYS) for key in training_keys)
        raise ValueError(f"--set {named}: not an evaluation-time key (the model was trained with "
                         f"its value); evaluation-time keys: {', '.join(config_lib.EVALUATION_KEYS)}")
    return values


def evaluation_config(config: config_lib.RemiConfig, overrides: Sequence[str] | None) -> config_lib.RemiConfig:
    """The trained model's config with `--set` overrides of evaluation-time keys, validated."""
    return config_lib.from_mapping(evaluation_overrides(overrides), config, source="--set")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from remi_tf import atomic, feature_tables, model_directory
    from remi_tf import evaluate as evaluate_lib
    from remi_tf import input as input_lib
    from remi_tf.export import client as client_lib
    from remi_tf.item_index import FIRST_ITEM_INDEX
    from remi_tf.pipelines import local

    if args.item_names and not args.plots:
        raise ValueError("--item-names names the history items of the routing heatmaps: give --plots DIR too")
    names = client_lib.read_item_names(args.item_names) if args.item_names else {}  # a bad file fails first
    model_directory.check_trained(args.model_dir)  # the checks first, then the model is built and loaded
    config = evaluation_config(model_directory.read_config(args.model_dir), args.set)
    vocabulary = model_directory.read_vocabulary(args.model_dir)
    if args.data and input_lib.read_vocabulary(args.data) != vocabulary:
        raise ValueError(f"{os.path.join(args.data, 'items.tsv')} lists other items than the model's vocabulary "
                         f"({os.path.join(args.model_dir, 'items.tsv')}): evaluate on data prepared with the same "
                         "items (the model's own data directory, or a split of the same `remi prepare` run)")
    trained = model_directory.load_trained(args.model_dir)
    model, data_dir = trained.model, args.data or trained.data_dir
    user_ids, histories, targets = input_lib.load_evaluation_split(data_dir, args.split, vocabulary,
                                                                   config.max_history)
    split_users = len(user_ids)
    if args.users:
        chosen = input_lib.user_sample(split_users, args.users, config.seed)
        user_ids, histories, targets = [user_ids[i] for i in chosen], histories[chosen], [targets[i] for i in chosen]
    categories = feature_tables.read_categories(data_dir, vocabulary, FIRST_ITEM_INDEX)
    profiles = evaluate_lib.user_profiles(model, data_dir, user_ids)
    progress = local.ProgressLine(f"{args.split} users evaluated", every=1, total=len(user_ids))
    sample = {"sampled_users": {"users": len(user_ids), "of": split_users, "seed": config.seed}} if args.users else {}
    report = {"split": args.split, "model_dir": os.path.abspath(args.model_dir), **sample,
              **({"diversity_coef": config.diversity_coef} if config.diversity_coef else {}),
              **evaluate_lib.evaluate(model, histories, targets, batch_size=config.eval_batch_size,
                                      categories=categories, diversity_coef=config.diversity_coef,
                                      user_features=profiles,
                                      progress=lambda done: progress.update(int(done) - progress.count))}
    progress.done()
    output = args.output or os.path.join(args.model_dir, f"eval-{args.split}.json")
    atomic.write_json(output, report)
    print(json.dumps(report, indent=2) if args.json else display.evaluation_summary(report, output))
    if args.plots:
        written = evaluation_plots(args.plots, args.model_dir, trained, histories[:6], user_ids[:6],
                                   None if profiles is None else profiles[:6], names)
        print("plots: " + ", ".join(written))
    return 0


def evaluation_plots(directory: str, model_dir: str, trained: TrainedModel, histories: np.ndarray,
                     user_ids: Sequence[str], profiles: np.ndarray | None, names: Mapping[str, str]) -> list[str]:
    """`evaluate --plots`: the routing heatmaps of these users (their history items named by `names`, else
    by id) and the model directory's training curves; returns the paths written."""
    from remi_tf import evaluate as evaluate_lib
    from remi_tf import model_directory, plots
    from remi_tf.item_index import FIRST_ITEM_INDEX

    routing = evaluate_lib.retrieve(trained.model, histories, top_n=1, user_features=profiles).routing
    items = [[trained.vocabulary[index - FIRST_ITEM_INDEX] for index in history if index >= FIRST_ITEM_INDEX]
             for history in histories]
    return plots.write_all(directory, routing, histories >= FIRST_ITEM_INDEX, user_ids,
                           model_directory.path(model_dir, model_directory.HISTORY_FILE), trained.config.eval_every,
                           position_labels=[[names.get(item, item) for item in row] for row in items])


def cmd_export(args: argparse.Namespace) -> int:
    from remi_tf.export import exporter, serving_layout

    settings = evaluation_overrides(args.set)
    with native_logs.absl_lines_dropped(enabled=not args.verbose):  # ScaNN's index build logs through absl
        published = exporter.export(args.model_dir, args.output, name=args.name, version=args.version,
                                    index=args.index, k=args.k, serving_base_path=args.serving_base_path,
                                    settings=settings, target_recall=args.target_recall)
    for served, path in published.items():
        print(f"{served}: {path}")
    for config_file in (serving_layout.MODELS_CONFIG, serving_layout.SCANN_MODELS_CONFIG):
        if os.path.exists(os.path.join(args.output, config_file)):
            print(f"{config_file}: {os.path.join(args.output, config_file)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    from remi_tf.export import server as server_lib
    from remi_tf.export.batching import Batcher

    if args.workers > 1:
        from remi_tf.export import server_processes

        return server_processes.run(args.argv, args.workers, args.host, args.port, args.grpc_port)
    batcher = Batcher(args.batching_max_rows, args.batching_timeout_micros / 1e6, args.batching_threads) \
        if args.batching else None
    server = server_lib.Server(args.export_dir, args.host, args.port, args.grpc_port,
                               max_batch_size=args.max_batch_size, batcher=batcher, reuse_port=args.reuse_port).start()
    models = ", ".join(f"{name}/{version}" for name, version in sorted(server.registry.served().items()))
    models = models or f"nothing yet (waiting for `remi export --output {args.export_dir}`)"
    print(f"serving {models}: REST http://{args.host}:{server.port}, gRPC {args.host}:"
          f"{server.grpc_port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    from remi_tf.export import client as client_lib

    client = client_lib.RemiClient(args.server, model=args.model, use_grpc=args.grpc,
                                   signature_name="include_history" if args.include_history else "serving_default")
    history = args.history.split()
    names = client_lib.read_item_names(args.item_names) if args.item_names else None
    profile = {}
    for setting in args.user_feature or ():
        column, separator, value = setting.partition("=")
        if not separator or not column:
            raise ValueError(f"--user-feature expects COLUMN=VALUE, got {setting!r}")
        profile[column] = [value]
    try:
        (candidates,) = client.lookup_when_up([history], k=args.k, wait_seconds=args.wait, user_features=profile)
    except client_lib.ServerUnavailable as error:
        waited = f" (waited {args.wait:g} s)" if args.wait else ""
        raise client_lib.ServerUnavailable(
            f"{error}{waited}: start one with `remi serve --export-dir EXPORT_DIR` (REST on port 8501, gRPC on 8500), "
            "or pass --wait SECONDS when it is still starting") from None
    if len(candidates.item_ids) < args.k:
        print(f"note: the server returns {len(candidates.item_ids)} candidates per history (its export's --k); "
              f"showing {len(candidates.item_ids)} of the {args.k} asked for", file=sys.stderr)
    print(json.dumps({**candidates._asdict(), "results": client_lib.candidate_rows(candidates, names)}, indent=2)
          if args.json else client_lib.format_candidates(history, candidates, names))
    return 0


class SuggestingParser(argparse.ArgumentParser):
    """An ArgumentParser whose "invalid choice" errors (an option's value, the command's name) name the closest
    choices: `remi trian` -> "did you mean train?"."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{did_you_mean(value, action.choices)} "
                                                 f"(choose from {', '.join(map(repr, action.choices))})")

    def option_names(self) -> list[str]:
        return list(self._option_string_actions)


def named_with_closest(arguments: Sequence[str], options: Sequence[str]) -> str:
    """Unrecognized `arguments` as given, each option followed by the closest of `options` (did_you_mean)."""
    return " ".join(argument + did_you_mean(argument.split("=", 1)[0], options) if argument.startswith("--")
                    else argument for argument in arguments)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help when it has a default worth showing (not None, False or a
    default its help already states)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = all(action.default is not value for value in (None, False, argparse.SUPPRESS)) and "default" not in text
        return f"{text} (default: {action.default})".lstrip() if shown and action.option_strings else text


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(prog="remi", description="REMI multi-interest retrieval on TensorFlow.",
                              allow_abbrev=False)  # a misspelt --overwrit must not mean --overwrite
    parser.add_argument("--version", action="version", version=f"remi-tf {remi_tf.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, **kwargs) -> argparse.ArgumentParser:
        command = commands.add_parser(name, allow_abbrev=False, formatter_class=DefaultsHelpFormatter, **kwargs)
        command.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
        command.add_argument("--verbose", action="store_true", help="show TensorFlow's and ScaNN's log lines")
        return command

    def add_input_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--input", required=True, nargs="+",
                             help="log files or globs: csv/tsv[.gz], RecBole .inter, Taobao csv, TFRecord event logs")
        command.add_argument("--output", required=True, help="output directory (appears only when complete)")
        command.add_argument("--format", choices=("csv", "tsv", "recbole", "taobao", "tfrecord"),
                             help="default: from the file name (Taobao needs --format taobao)")
        command.add_argument("--behavior", help="keep only this behavior (pv, buy, cart, fav): Taobao logs, "
                                                "TFRecord event logs with a behavior field, CSV/TSV files with a "
                                                "behavior column")
        command.add_argument("--columns", metavar="user=COL,item=COL,timestamp=COL[,behavior=COL][,rating=COL]",
                             help="CSV/TSV header names of the fields when they differ from user_id, item_id, "
                                  "timestamp (and behavior)")
        command.add_argument("--min-rating", type=float, metavar="R",
                             help="keep events whose rating column is >= R (CSV/TSV `rating`, or --columns "
                                  "rating=COL; RecBole `rating:float`)")
        command.add_argument("--num-shards", type=POSITIVE, default=1, help="output shards (per split)")
        command.add_argument("--compress", action="store_true", help="GZIP-compress the shards")
        command.add_argument("--max-bad-records", type=NON_NEGATIVE, default=0,
                             help="bad records to skip (and summarise in the manifest) before stopping")
        command.add_argument("--overwrite", action="store_true", help="replace an existing output directory")

    convert = add_command("convert", help="raw logs -> sharded TFRecord event logs")
    add_input_options(convert)
    convert.set_defaults(run=cmd_convert)

    prepare = add_command("prepare", help="logs -> sequence TFRecords, items.tsv, manifest.json")
    add_input_options(prepare)
    prepare.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of the hash-based user split")
    prepare.add_argument("--min-item-interactions", type=POSITIVE, default=5,
                         help="the count filter: items with fewer interactions are dropped")
    prepare.add_argument("--min-user-interactions", type=bounded_int(5), default=5,
                         help="then users with fewer kept interactions are dropped (at least 5: a training "
                              "example needs 4 items before its target)")
    prepare.add_argument("--split", choices=("users", "time"), default="users",
                         help="users: held-out users 80/10/10 (the paper's protocol, default); time: train on "
                              "events before --valid-from, valid on [valid-from, test-from), test from test-from")
    prepare.add_argument("--valid-from", metavar="T1", help="--split time: unix seconds or an ISO date (2013-07-01)")
    prepare.add_argument("--test-from", metavar="T2", help="--split time: unix seconds or an ISO date, after T1")
    prepare.add_argument("--runner", default="auto",
                         help="auto (default: in-process, which spills to disk past 4 M events; Beam's DirectRunner "
                              "for Beam options or a time split of more events), "
                              "in-process (one process, the fastest on one machine), or a Beam runner "
                              "(DirectRunner, FlinkRunner, SparkRunner, DataflowRunner, ...); further --options "
                              "go to Beam")
    prepare.add_argument("--user-buckets", type=POSITIVE, default=16,
                         help="Beam runners: user buckets, the parallelism of the per-user work (more for "
                              "large clusters)")
    prepare.add_argument("--item-features", metavar="ITEMS.csv[:COL,COL]",
                         help="item side features: a CSV whose header starts with item_id; the named columns "
                              "(default: all others) are categorical, `|` separates several values; written to "
                              "item_features.tsv (the first column is the category of diversity metrics); "
                              "the item tower embeds them. RecBole atomic files (ml-100k.item) too: token_seq "
                              "fields are multi-valued")
    prepare.add_argument("--user-features", metavar="USERS.csv[:COL,COL]",
                         help="user profile features: a CSV whose header starts with user_id, columns as "
                              "--item-features; written to user_features.tsv; the query tower embeds them and "
                              "the served models take them as inputs named by their columns")
    prepare.set_defaults(run=cmd_prepare)

    train = add_command("train", help="train REMI on prepared data (resumes an interrupted run)")
    train.add_argument("--data", required=True, help="a directory written by `remi prepare`")
    train.add_argument("--model-dir", required=True, help="checkpoints, logs and the resolved config go here")
    train.add_argument("--config", help="YAML preset, e.g. configs/amazon-cds.yaml")
    train.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                       help="override config keys: --set a=1 b=2 (repeatable)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--warm-start", metavar="PREVIOUS_MODEL_DIR",
                       help="start from a trained model: item rows carried by id into this data's vocabulary "
                            "(new items initialised, gone ones dropped), routing and streaming logQ state as they are")
    train.add_argument("--strategy", choices=config_lib.STRATEGIES,
                       help="tf.distribute strategy (config key `strategy`; default auto: from TF_CONFIG)")
    train.add_argument("--local-cluster", metavar="workers=N[,ps=M]",
                       help="run this command as every task of a cluster of processes on 127.0.0.1")
    train.add_argument("--local-cluster-timeout", type=non_negative_float, default=24 * 3600.0, metavar="SECONDS",
                       help="stop the local cluster if the chief has not finished by then")
    train.set_defaults(run=cmd_train)

    evaluate = add_command("evaluate", help="Recall/NDCG/HitRate@20/50 of the best checkpoint")
    evaluate.add_argument("--model-dir", required=True, help="a directory written by `remi train`")
    evaluate.add_argument("--split", choices=("valid", "test"), default="test", help="the users evaluated")
    evaluate.add_argument("--users", type=POSITIVE, metavar="N",
                          help="evaluate a seeded sample of N of the split's users (the model's seed; default: all, "
                               "the protocol); the report says so")
    evaluate.add_argument("--data", help="prepared data (default: the directory the model was trained on)")
    evaluate.add_argument("--output", help="report path (default: <model-dir>/eval-<split>.json)")
    evaluate.add_argument("--plots", metavar="DIR", help="write routing heatmaps and training curves here")
    evaluate.add_argument("--item-names", metavar="FILE",
                          help="CSV/TSV with a header, item id then name (e.g. ml-100k.item): the routing heatmaps "
                               "name the history's items (default: their ids)")
    evaluate.add_argument("--json", action="store_true", help="print the whole report as JSON (it is always written "
                                                               "to --output)")
    evaluate.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                          help="evaluation-time config keys: diversity_coef (> 0: ComiRec's category-aware merge of "
                               "the K lists), eval_batch_size")
    evaluate.set_defaults(run=cmd_evaluate)

    export = add_command("export", help="SavedModels + ScaNN index in TF Serving's layout")
    export.add_argument("--model-dir", required=True, help="a directory written by `remi train`")
    export.add_argument("--output", required=True, help="export directory: <output>/<name>/<version>/")
    export.add_argument("--name", default="remi", help="served name of the retrieval model")
    export.add_argument("--version", type=POSITIVE, help="default: one more than the newest exported")
    export.add_argument("--index", choices=("auto", "scann", "brute-force", "both"),
                        default="auto", help="the retrieval models: <name> with ScaNN, <name> exact, or both "
                        "(<name>-exact); auto: exact below the catalogue size where ScaNN starts to pay on a "
                        "2-CPU machine (25,000 items); from there both where the tuned ScaNN search is the "
                        "faster when timed at export, else exact")
    export.add_argument("--k", type=POSITIVE, default=50, help="candidates per interest and merged")
    export.add_argument("--target-recall", type=recall_fraction, default=0.95,
                        help="the ScaNN model searches as many leaves as reach this recall of exact search on "
                             "held-out queries (0: the fixed options)")
    export.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                        help="how the served model merges the K lists: diversity_coef (> 0: ComiRec's "
                             "category-aware merge, needs item features; default: the model's config, 0: by score)")
    export.add_argument("--serving-base-path", default="/models", help="where models.config says the "
                        "export directory is mounted (TF Serving's docker image: /models)")
    export.set_defaults(run=cmd_export)

    serve = add_command("serve", help="local server with TF Serving's REST and gRPC APIs")
    serve.add_argument("--export-dir", required=True, help="the --output of `remi export`")
    serve.add_argument("--host", default="127.0.0.1", help="the address both servers bind")
    serve.add_argument("--port", type=PORT, default=8501, help="REST port")
    serve.add_argument("--grpc-port", type=PORT, default=8500, help="gRPC port")
    serve.add_argument("--max-batch-size", type=POSITIVE, default=1024, help="most histories in one request")
    serve.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True,
                       help="run concurrent requests in batches (TF Serving's batching)")
    serve.add_argument("--batching-max-rows", type=POSITIVE, default=64, help="most histories in one batch")
    serve.add_argument("--batching-timeout-micros", type=NON_NEGATIVE, default=0,
                       help="how long a batch that is not full waits for more requests")
    serve.add_argument("--batching-threads", type=POSITIVE, default=1, help="batches run at the same time")
    serve.add_argument("--workers", type=POSITIVE, default=1,
                       help="server processes sharing both ports (each loads the models and batches its own "
                            "requests): more answer more requests where cores are free")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for --workers' processes
    serve.set_defaults(run=cmd_serve)

    lookup = add_command("lookup", help="candidates for a history from TF Serving or `remi serve`")
    lookup.add_argument("--server", required=True, help="http://HOST:PORT (REST) or HOST:PORT with --grpc")
    lookup.add_argument("--grpc", action="store_true", help="use TF Serving's gRPC API (--server HOST:PORT)")
    lookup.add_argument("--model", default="remi", help="the served model name")
    lookup.add_argument("--history", required=True, help="space-separated item ids, oldest first")
    lookup.add_argument("--k", type=POSITIVE, default=20, help="candidates to show")
    lookup.add_argument("--user-feature", action="append", metavar="COLUMN=VALUE",
                        help="a user profile feature, for a model trained with --user-features (repeat per column)")
    lookup.add_argument("--include-history", action="store_true", help="allow the history's items")
    lookup.add_argument("--json", action="store_true", help="print JSON: the outputs and the rows shown")
    lookup.add_argument("--item-names", metavar="FILE",
                        help="CSV/TSV with a header, item id then name (e.g. ml-100k.item): show names")
    lookup.add_argument("--wait", type=non_negative_float, default=0.0, metavar="SECONDS",
                        help="retry while no server answers (one that is still starting)")
    lookup.set_defaults(run=cmd_lookup)
    for command in commands.choices.values():  # what an unrecognized option is compared with
        if isinstance(command, SuggestingParser):
            command.set_defaults(option_names=command.option_names())
    return parser


LIBRARY_LOGGERS = ("remi_tf",)  # remi_tf.pipelines and remi_tf.export log under it


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a handler made once keeps working when the
    stream is replaced, as test captures do)."""

    @property
    def stream(self):  # a property in place of StreamHandler's attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """The libraries' log records (loads, refusals, fallbacks) as plain lines on stderr, INFO and above. In a
    process whose root logger has no handler (the `remi` command), one there for the other loggers' records,
    printed as logging.basicConfig prints them: absl (TensorFlow's logging) otherwise calls basicConfig at its
    first record, and each library line printed a second time through that root handler."""
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        if not library.handlers:
            library.addHandler(handler)
        library.setLevel(logging.INFO)
    root = logging.getLogger()
    if not root.handlers:
        others = StderrHandler()
        others.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
        others.addFilter(lambda record: record.name.split(".")[0] not in LIBRARY_LOGGERS)
        root.addHandler(others)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "prepare":
        parser.error(f"unrecognized arguments: {named_with_closest(extra, args.option_names)}")
    args.pipeline_args = extra
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.debug:
        return args.run(args)
    try:
        return args.run(args)
    except Exception as error:  # noqa: BLE001 (every error ends in one line; --debug shows the traceback)
        code, kind = exit_code(error)
        message = " ".join(str(error).split()) or type(error).__name__
        hint = "" if kind else f" ({type(error).__name__}; run with --debug for the traceback)"
        print(f"remi {args.command}: error: {message}{hint}", file=sys.stderr)
        return code


USAGE, FAILURE = 2, 1  # exit codes: the input or the command line is wrong / the run failed


def exit_code(error: BaseException) -> tuple[int, bool]:
    """(exit code, whether the error type is an expected one whose message names the input and the fix).
    Usage errors (bad input, arguments, configuration; missing or existing paths): 2. Failures (a run that
    failed, a port in use, a corrupt or truncated file TensorFlow read, an overflow): 1. Anything else is
    unexpected: 1, with the type and a pointer to --debug."""
    import yaml

    for types, code in EXPECTED_ERRORS:
        if isinstance(error, types):
            return code, True
    if isinstance(error, yaml.YAMLError):
        return USAGE, True
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(error, tf.errors.OpError):
        return FAILURE, True
    return FAILURE, False


EXPECTED_ERRORS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...] = (
    ((ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError), USAGE),
    ((RuntimeError, OSError, OverflowError), FAILURE),
)


if __name__ == "__main__":
    sys.exit(main())
