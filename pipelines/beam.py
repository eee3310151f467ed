"""`remi prepare --runner <BeamRunner>`: the preprocessing as an Apache Beam pipeline.

read files -> group events by user -> stable time sort + de-duplication -> item counts -> 5-core filter
-> hash-based split -> (split, shard) groups -> sequence TFRecord shards, items.tsv, manifest.json.
The per-record logic is pipelines.sequences', shared with the in-process path, and the output files are
the same byte for byte (users sorted by id within a shard; shard = crc32(user) mod N). The run writes into
a temporary directory that is renamed into place only when the pipeline succeeded (local file systems).
"""

from __future__ import annotations

import json
import os
from typing import Iterator, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import local, readers, schema, sequences
from remi_tf import atomic

BAD = "bad"
SKIPPED = "skipped"


class ReadFile(beam.DoFn):
    """(file index, path) -> events; bad records and rule skips go to tagged outputs."""

    def __init__(self, file_format: str, behavior: str | None) -> None:
        self.file_format, self.behavior = file_format, behavior

    def process(self, element: tuple[int, str]) -> Iterator:
        file_index, path = element
        log = readers.BadRecordLog(max_bad_records=2 ** 62)  # the limit is applied after the run
        for event in readers.read_events(path, self.file_format, log, file_index, self.behavior):
            yield event
        for reason, count in log.bad.items():
            yield beam.pvalue.TaggedOutput(BAD, (reason, count))
        for example in log.examples:
            yield beam.pvalue.TaggedOutput(BAD, ("example", example))
        for rule, count in log.skipped.items():
            yield beam.pvalue.TaggedOutput(SKIPPED, (rule, count))


def _kept_user(user: tuple[str, tuple[list, int]], kept_items: dict, seed: int, num_shards: int) -> Iterator:
    user_id, (ordered, _) = user
    kept = sequences.filter_sequence(ordered, kept_items)
    if kept is not None:
        yield (sequences.assign_split(user_id, seed), local.shard_of(user_id, num_shards)), (user_id, kept)


class WriteShard(beam.DoFn):
    """((split, shard), users) -> one sequence shard with the users sorted by id."""

    def __init__(self, directory: str, num_shards: int, compress: bool) -> None:
        self.directory, self.num_shards, self.compress = directory, num_shards, compress

    def process(self, element: tuple[tuple[str, int], list]) -> Iterator[tuple[str, tuple[int, int]]]:
        (split, shard), users = element
        users = sorted(users)
        local.write_shard(os.path.join(self.directory, schema.shard_name(split, shard, self.num_shards, self.compress)),
                          users, self.compress)
        yield split, (len(users), sum(len(events) for _, events in users))


def _sum_pairs(pairs: Sequence[tuple[int, int]]) -> tuple[int, int]:
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def prepare(inputs: Sequence[str], output_dir: str, file_format: str | None = None, seed: int = 0,
            num_shards: int = 1, compress: bool = False, overwrite: bool = False, max_bad_records: int = 0,
            behavior: str | None = None, pipeline_args: Sequence[str] = ()) -> dict:
    """Runs the Beam pipeline (the runner and its options come from `pipeline_args`). Returns the manifest."""
    input_paths = readers.expand_inputs(list(inputs))
    file_format = file_format or readers.guess_format(input_paths[0])
    manifest: dict = {}

    def build(directory: str) -> None:
        for split in schema.SPLITS:  # every shard exists, even one that no user hashes to
            for shard in range(num_shards):
                local.write_shard(os.path.join(directory, schema.shard_name(split, shard, num_shards, compress)),
                                  [], compress)
        results_path = os.path.join(directory, ".pipeline-results.json")
        with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
            read = (pipeline | "Files" >> beam.Create(list(enumerate(input_paths)))
                    | "Read" >> beam.ParDo(ReadFile(file_format, behavior)).with_outputs(BAD, SKIPPED, main="events"))
            events = read.events
            by_user = (events | "KeyByUser" >> beam.Map(lambda e: (e.user_id, (e.timestamp, e.position, e.item_id)))
                       | "GroupByUser" >> beam.GroupByKey()
                       | "SortDedupe" >> beam.MapTuple(lambda user, evs: (user, sequences.sort_and_deduplicate(evs))))
            item_counts = (by_user | "Items" >> beam.FlatMap(lambda user: [item for _, item in user[1][0]])
                           | "CountItems" >> beam.combiners.Count.PerElement())
            kept_items = item_counts | "Frequent" >> beam.Filter(lambda pair: pair[1] >= sequences.MIN_ITEM_COUNT)
            kept_users = by_user | "FilterSplit" >> beam.FlatMap(
                _kept_user, kept_items=beam.pvalue.AsDict(kept_items), seed=seed, num_shards=num_shards)
            written = (kept_users | "GroupByShard" >> beam.GroupByKey()
                       | "WriteShards" >> beam.ParDo(WriteShard(directory, num_shards, compress))
                       | "SplitCounts" >> beam.CombinePerKey(_sum_pairs))
            vocabulary = (kept_users | "KeptItems" >> beam.FlatMap(lambda user: [item for _, item in user[1][1]])
                          | "CountKept" >> beam.combiners.Count.PerElement() | "VocabList" >> beam.combiners.ToList())
            _ = vocabulary | "WriteVocabulary" >> beam.Map(
                lambda pairs: local.write_vocabulary(os.path.join(directory, "items.tsv"), dict(pairs)))
            results = {
                "input_events": events | "CountEvents" >> beam.combiners.Count.Globally(),
                "users": by_user | "CountUsers" >> beam.combiners.Count.Globally(),
                "duplicates": by_user | "Duplicates" >> beam.Map(lambda user: user[1][1])
                | "SumDuplicates" >> beam.CombineGlobally(sum),
                "items": item_counts | "CountAllItems" >> beam.combiners.Count.Globally(),
                "kept_items": kept_items | "CountKeptItems" >> beam.combiners.Count.Globally(),
                "num_items": vocabulary | "VocabularySize" >> beam.Map(len),
                "splits": written | "SplitList" >> beam.combiners.ToList(),
                "bad": read[BAD] | "BadList" >> beam.combiners.ToList(),
                "skipped": read[SKIPPED] | "SkippedList" >> beam.combiners.ToList(),
            }
            _ = (pipeline | "One" >> beam.Create([None]) | "Results" >> beam.Map(
                lambda _, **values: atomic.write_json(results_path, values),
                **{key: beam.pvalue.AsSingleton(value) for key, value in results.items()}))
        with open(results_path, encoding="utf-8") as stream:
            results_values = json.load(stream)
        os.remove(results_path)
        manifest.update(_manifest(results_values, input_paths, file_format, seed, num_shards, compress,
                                  max_bad_records))
        with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as stream:
            json.dump(manifest, stream, indent=2)

    atomic.publish_directory(build, output_dir, overwrite)
    return manifest


def _manifest(results: dict, input_paths: Sequence[str], file_format: str, seed: int, num_shards: int,
              compress: bool, max_bad_records: int) -> dict:
    bad_by_reason: dict[str, int] = {}
    examples = sorted(example for reason, example in results["bad"] if reason == "example")
    for reason, count in results["bad"]:
        if reason != "example":
            bad_by_reason[reason] = bad_by_reason.get(reason, 0) + count
    bad_total = sum(bad_by_reason.values())
    if bad_total > max_bad_records:
        raise ValueError(f"{examples[0]} ({bad_total} bad records; --max-bad-records is {max_bad_records}: raise "
                         "it to skip such records)")
    skipped: dict[str, int] = {}
    for rule, count in results["skipped"]:
        skipped[rule] = skipped.get(rule, 0) + count
    splits = {split: {"users": 0, "events": 0} for split in schema.SPLITS}
    for split, (users, events) in results["splits"]:
        splits[split] = {"users": users, "events": events}
    if not results["num_items"]:
        raise ValueError(f"{list(input_paths)}: no user has >= {sequences.MIN_USER_COUNT} interactions with items "
                         f"seen >= {sequences.MIN_ITEM_COUNT} times; nothing to train on")
    cleaning = {"bad_records": bad_total, "bad_by_reason": bad_by_reason, "bad_examples": examples[:10],
                "skipped": skipped, "duplicate_events_removed": results["duplicates"],
                "users_below_min_count": results["users"] - sum(s["users"] for s in splits.values()),
                "items_below_min_count": results["items"] - results["kept_items"]}
    manifest = local.make_manifest(input_paths, file_format, seed, num_shards, compress, results["input_events"],
                                   splits, results["num_items"], cleaning)
    manifest["runner"] = "beam"
    return manifest
