"""`remi prepare` as an Apache Beam pipeline: Beam's local runner by default, any runner via `--runner`.

Events travel as blocks of columns (pipelines.sequences.EventBlock), not one element per event, so that
Beam's per-element cost is paid per block and per user bucket:

  files -> ReadBuckets: each file's events split into user buckets (crc32(user) mod num_buckets)
        -> GroupByKey(bucket) -> order_users (group, time sort, de-duplicate) per bucket
        -> item counts summed over buckets -> frequent items (a side input: the 5-core filter)
        -> filter_users + shard_records per bucket -> GroupByKey((split, shard)) -> one TFRecord shard each
        -> target tallies summed over buckets (q of the logQ correction) -> items.tsv and manifest.json.
The time split (pipelines.time_split) counts items on each bucket's events before T1, filters those,
sums the training items into the vocabulary (a side input) and cuts every bucket's users into windows.

Buckets are the unit of parallelism for the per-user work (raise `num_buckets` for large clusters); files
are the unit for reading. The per-record logic is pipelines.sequences', shared with the in-process path,
and the output files are the same byte for byte. The run writes into a temporary directory that is
renamed into place only when the pipeline succeeded (local file systems).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from remi_tf import atomic, data_directory
from remi_tf.pipelines import local, readers, record_checks, sequences, time_split

REPORT = "report"
TIME_DIGITS = "time_digits"  # the digits of a second each file's timestamps need (readers.read_timed_blocks)
RESULTS = ".pipeline-results.json"  # written by the last step, read into the manifest, removed
DEFAULT_BUCKETS = 16
FLUSH_EVENTS = 1 << 20  # a file's events are sent on in pieces of about this many


class ReadBuckets(beam.DoFn):
    """(file index, path) -> (bucket, EventBlock) per user bucket with events in the file; the counts of
    events read, bad records and rule skips go to the REPORT output."""

    def __init__(self, file_format: str, behavior: str | None, num_buckets: int, progress: bool,
                 columns: Mapping[str, str] | None = None, min_rating: float | None = None) -> None:
        self.file_format, self.behavior, self.num_buckets, self.progress = file_format, behavior, num_buckets, progress
        self.columns, self.min_rating = (dict(columns) if columns else None), min_rating

    def setup(self) -> None:
        self.reading = local.ProgressLine("events read", enabled=self.progress)

    def process(self, element: tuple[int, str]) -> Iterator:
        file_index, path = element
        log = record_checks.BadRecordLog(max_bad_records=2 ** 62)  # the limit is applied after the run
        timed, buffered, events, file_digits = [], 0, 0, 0
        for digits, block in readers.read_timed_blocks(path, self.file_format, log, file_index, self.behavior,
                                                       self.columns, self.min_rating):
            timed.append((digits, block))
            buffered += len(block.users)
            file_digits = max(file_digits, digits)
            self.reading.update(len(block.users))
            if buffered >= FLUSH_EVENTS:  # bounded memory for large files
                yield from self._by_bucket(timed)
                events, timed, buffered = events + buffered, [], 0
        yield from self._by_bucket(timed)
        yield beam.pvalue.TaggedOutput(TIME_DIGITS, file_digits)
        yield beam.pvalue.TaggedOutput(REPORT, {"input_events": events + buffered, "bad_by_reason": dict(log.bad),
                                                "bad_examples": log.examples, "skipped": dict(log.skipped)})

    def _by_bucket(self, timed: list[tuple[int, sequences.EventBlock]]
                   ) -> Iterator[tuple[int, tuple[int, sequences.EventBlock]]]:
        """(bucket, (digits of a second, the bucket's events)) for the buffered blocks, in their finest unit."""
        blocks, digits = readers.finest(timed)
        events = sequences.concatenate(blocks)
        buckets = sequences.user_buckets(events.users, self.num_buckets)
        for bucket in np.unique(buckets).tolist():
            yield bucket, (digits, sequences.EventBlock(*(column[buckets == bucket] for column in events)))

    def teardown(self) -> None:
        if self.reading.count:
            self.reading.done()


def _order_bucket(bucket: int, timed: Iterable[tuple[int, sequences.EventBlock]], time_digits: int = 0) -> Iterator:
    """A bucket's events, their timestamps in the run's unit (`time_digits` digits of a second), as users."""
    users, duplicates = sequences.order_users(sequences.concatenate(
        [readers.rescaled_block(block, digits, time_digits) for digits, block in timed]))
    yield users
    yield beam.pvalue.TaggedOutput(REPORT, {"users": len(users.users), "duplicates": duplicates})


def _events_before_valid(users: sequences.UserSequences, boundaries: time_split.TimeBoundaries,
                         time_digits: int) -> sequences.UserSequences:
    return time_split.events_before(users, boundaries.in_unit(time_digits).valid_from)


def _user_split_records(users: sequences.UserSequences, seed: int, num_shards: int) -> Iterator:
    yield from sequences.shard_records(users, seed, num_shards).items()


def _time_split_records(users: sequences.UserSequences, vocabulary: sequences.ItemCounts,
                        boundaries: time_split.TimeBoundaries, num_shards: int, min_user_count: int,
                        time_digits: int) -> Iterator:
    records, report = time_split.split_records(users, set(vocabulary.items.tolist()), boundaries.in_unit(time_digits),
                                               num_shards, min_user_count)
    yield from records.items()
    yield beam.pvalue.TaggedOutput(REPORT, {"time_split": report})


class WriteShard(beam.DoFn):
    """((split, shard), [[UserRecord] per bucket]) -> the shard file, users sorted by id; yields a report
    of the users and events written per split."""

    def __init__(self, directory: str, num_shards: int, compress: bool) -> None:
        self.directory, self.num_shards, self.compress = directory, num_shards, compress

    def process(self, element: tuple[tuple[str, int], Iterable[list[sequences.UserRecord]]]) -> Iterator[dict]:
        (split, shard), parts = element
        records = sorted(record for part in parts for record in part)  # user ids are unique: sorted by user
        name = data_directory.shard_name(split, shard, self.num_shards, self.compress)
        local.write_shard(os.path.join(self.directory, name), records, self.compress)
        yield {"split_users": {split: len(records)}, "split_events": {split: sum(r[2] for r in records)}}


def _merge_reports(reports: Iterable[dict]) -> dict:
    """Sums reports: numbers add up (`first_*` take the minimum, `last_*` the maximum), dicts merge
    recursively, lists concatenate."""
    total: dict = {}
    for report in reports:
        _merge_into(total, report)
    return total


def _merge_into(total: dict, report: dict) -> None:
    for key, value in report.items():
        if isinstance(value, dict):
            _merge_into(total.setdefault(key, {}), value)
        elif isinstance(value, list):
            total.setdefault(key, []).extend(value)
        elif key not in total:
            total[key] = value
        else:
            total[key] = (min if key.startswith("first_") else max if key.startswith("last_") else sum)(
                (total[key], value))


def unknown_pipeline_options(pipeline_args: Sequence[str]) -> list[str]:
    """The `--names` among `pipeline_args` that no Beam pipeline options class defines (Beam itself
    only warns and drops them)."""
    options = PipelineOptions(list(pipeline_args))
    known = options.get_all_options()
    return sorted(f"--{name}" for name in options.get_all_options(retain_unknown_options=True) if name not in known)


def prepare(inputs: Sequence[str], output_dir: str, file_format: str | None = None, seed: int = 0,
            num_shards: int = 1, compress: bool = False, overwrite: bool = False, max_bad_records: int = 0,
            behavior: str | None = None, pipeline_args: Sequence[str] = (), num_buckets: int = DEFAULT_BUCKETS,
            progress: bool = True, boundaries: time_split.TimeBoundaries | None = None,
            columns: Mapping[str, str] | None = None, min_item_count: int = sequences.MIN_ITEM_COUNT,
            min_user_count: int = sequences.MIN_USER_COUNT, min_rating: float | None = None) -> dict:
    """Runs the Beam pipeline (the runner and its options come from `pipeline_args`; default: Beam's
    local runner); `boundaries`: the time split, None: the user split. Returns the manifest."""
    atomic.check_output(output_dir, overwrite)  # before the input is read (publish checks it again)
    input_paths = readers.expand_inputs(list(inputs))
    file_format = file_format or readers.guess_format(input_paths[0])
    local.check_min_counts(min_item_count, min_user_count)
    manifest: dict = {}

    def build(directory: str) -> None:
        _write_empty_shards(directory, num_shards, compress)  # every shard exists, even one no user hashes to
        with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
            reader = ReadBuckets(file_format, behavior, num_buckets, progress, columns, min_rating)
            read = (pipeline | "Files" >> beam.Create(list(enumerate(input_paths)))
                    | "SpreadFiles" >> beam.Reshuffle()  # one file per worker, not all files on one
                    | "Read" >> beam.ParDo(reader).with_outputs(REPORT, TIME_DIGITS, main="buckets"))
            # the finest unit any file needs: every bucket's timestamps are brought to it
            time_digits = beam.pvalue.AsSingleton(
                read[TIME_DIGITS] | "FinestUnit" >> beam.CombineGlobally(lambda digits: max(digits, default=0)))
            ordered = (read.buckets | "GroupByBucket" >> beam.GroupByKey()
                       | "OrderUsers" >> beam.FlatMapTuple(_order_bucket, time_digits=time_digits).with_outputs(
                           REPORT, main="users"))
            item_counts, frequent, kept, vocabulary = _filtered(ordered.users, boundaries, time_digits, min_item_count,
                                                                min_user_count)
            if boundaries is None:
                split = kept | "ShardRecords" >> beam.FlatMap(_user_split_records, seed=seed, num_shards=num_shards
                                                              ).with_outputs(REPORT, main="records")
            else:
                split = ordered.users | "SplitRecords" >> beam.FlatMap(
                    _time_split_records, vocabulary=beam.pvalue.AsSingleton(vocabulary), boundaries=boundaries,
                    num_shards=num_shards, min_user_count=min_user_count, time_digits=time_digits
                ).with_outputs(REPORT, main="records")
            written = (split.records | "GroupByShard" >> beam.GroupByKey()
                       | "WriteShards" >> beam.ParDo(WriteShard(directory, num_shards, compress)))
            tallies = (kept | "TargetTallies" >> beam.Map(sequences.target_tallies,
                                                          seed=seed if boundaries is None else None)
                       | "SumTargetTallies" >> beam.CombineGlobally(sequences.merge_target_tallies))
            report = ((read[REPORT], ordered[REPORT], split[REPORT], written) | "Reports" >> beam.Flatten()
                      | "MergeReports" >> beam.CombineGlobally(_merge_reports))
            _ = (pipeline | "One" >> beam.Create([None]) | "Finish" >> beam.Map(
                _finish, report=beam.pvalue.AsSingleton(report), item_counts=beam.pvalue.AsSingleton(item_counts),
                frequent=beam.pvalue.AsSingleton(frequent), vocabulary=beam.pvalue.AsSingleton(vocabulary),
                tallies=beam.pvalue.AsSingleton(tallies), directory=directory, time_digits=time_digits))
        results_path = os.path.join(directory, RESULTS)
        results = atomic.read_json(results_path)
        tf.io.gfile.remove(results_path)
        manifest.update(_manifest(results, input_paths, file_format, seed, num_shards, compress, max_bad_records,
                                  boundaries, behavior, min_item_count, min_user_count))
        data_directory.write_manifest(directory, manifest)

    data_directory.publish(build, output_dir, overwrite)
    return manifest


def _finish(_: None, report: dict, item_counts: sequences.ItemCounts, frequent: set, vocabulary: sequences.ItemCounts,
            tallies: sequences.TargetTallies, directory: str, time_digits: int) -> None:
    """The pipeline's last step: items.tsv, and the counts the manifest takes (RESULTS, read back by prepare)."""
    local.write_vocabulary(data_directory.items_path(directory), vocabulary, tallies)
    atomic.write_json(os.path.join(directory, RESULTS), {
        **report, "items": len(item_counts.items), "kept_items": len(frequent), "num_items": len(vocabulary.items),
        TIME_DIGITS: time_digits})


def _write_empty_shards(directory: str, num_shards: int, compress: bool) -> None:
    for split in data_directory.SPLITS:
        for shard in range(num_shards):
            local.write_shard(os.path.join(directory, data_directory.shard_name(split, shard, num_shards, compress)),
                              [], compress)


def _filtered(users: beam.PCollection, boundaries: time_split.TimeBoundaries | None,
              time_digits: beam.pvalue.AsSingleton, min_item_count: int, min_user_count: int
              ) -> tuple[beam.PCollection, ...]:
    """The 5-core filter over the training log (the user split: every event; the time split: the events before
    T1): (item counts, frequent items, the kept users, the vocabulary: the kept items' counts)."""
    training = users if boundaries is None else (
        users | "EventsBefore" >> beam.Map(_events_before_valid, boundaries, time_digits))
    item_counts = (training | "ItemCounts" >> beam.Map(sequences.item_counts)
                   | "SumItemCounts" >> beam.CombineGlobally(sequences.merge_item_counts))
    frequent = item_counts | "Frequent" >> beam.Map(sequences.frequent_items, min_item_count)
    kept = training | "FilterUsers" >> beam.Map(sequences.filter_users, min_length=min_user_count,
                                                kept_items=beam.pvalue.AsSingleton(frequent))
    vocabulary = (kept | "KeptItemCounts" >> beam.Map(sequences.item_counts)
                  | "SumKeptItemCounts" >> beam.CombineGlobally(sequences.merge_item_counts))
    return item_counts, frequent, kept, vocabulary


def _manifest(results: dict, input_paths: Sequence[str], file_format: str, seed: int, num_shards: int,
              compress: bool, max_bad_records: int, boundaries: time_split.TimeBoundaries | None,
              behavior: str | None = None, min_item_count: int = sequences.MIN_ITEM_COUNT,
              min_user_count: int = sequences.MIN_USER_COUNT) -> dict:
    time_digits = results[TIME_DIGITS]
    boundaries = None if boundaries is None else boundaries.in_unit(time_digits)
    bad_by_reason = results.get("bad_by_reason", {})
    examples = sorted(results.get("bad_examples", []))
    bad_total = sum(bad_by_reason.values())
    if bad_total > max_bad_records:
        raise ValueError(f"{examples[0]} ({bad_total} bad records; --max-bad-records is {max_bad_records}: raise "
                         "it to skip such records)")
    if boundaries is None:
        splits = {split: {"users": results.get("split_users", {}).get(split, 0),
                          "events": results.get("split_events", {}).get(split, 0)} for split in data_directory.SPLITS}
        kept_users = sum(s["users"] for s in splits.values())
    else:
        time_split.check_windows(results["time_split"], boundaries, time_digits)
        splits = results["time_split"]["splits"]
        kept_users = splits["train"]["users"]
    local.require_items(results["num_items"], input_paths, results.get("input_events", 0), results.get("skipped", {}),
                        behavior, splits if boundaries is None else None, min_item_count, min_user_count)
    cleaning = {"bad_records": bad_total, "bad_by_reason": bad_by_reason, "bad_examples": examples[:10],
                "skipped": results.get("skipped", {}), "duplicate_events_removed": results.get("duplicates", 0),
                "users_below_min_count": results.get("users", 0) - kept_users,
                "items_below_min_count": results["items"] - results["kept_items"]}
    manifest = local.make_manifest(input_paths, file_format, seed, num_shards, compress,
                                   results.get("input_events", 0), splits, results["num_items"], cleaning, boundaries,
                                   min_item_count, min_user_count, time_digits)
    manifest["runner"] = "beam"
    return manifest
