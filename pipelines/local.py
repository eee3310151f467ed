"""In-process `remi prepare`: raw logs -> per-user sequence TFRecords, items.tsv and manifest.json.

Output layout (written to a temporary directory, renamed into place only when complete):
  <output>/train-00000-of-0000N.tfrecord, valid-..., test-...   sequence records, users sorted by id
  <output>/items.tsv       item_id<TAB>count<TAB>target_probability, most frequent first (ties by id);
                           target_probability is q of the logQ correction (sequences.target_probability)
  <output>/manifest.json   source, filters, seed, counts per split, schema version
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from remi_tf import atomic, data_directory
from remi_tf.pipelines import bucketed, readers, record_checks, sequences, time_split

logger = logging.getLogger(__name__)

IN_MEMORY_MAX_EVENTS = 4_000_000  # estimated events above which prepare spills to disk (~380 B/event in memory)
BUCKET_EVENTS = 2_000_000  # events per user bucket of the bounded-memory path


class ProgressLine:
    """A progress line on stderr, `<what>: <count> (<rate>/s)`, with a `total`: `<what>: <count> of <total>
    (<rate>/s, about <time> left)`: on a terminal rewritten in place every `every` counts; in a file or pipe
    (where carriage returns would join the updates into one line) a whole line at most every PIPE_INTERVAL_S
    seconds. `done` prints the final count once."""

    PIPE_INTERVAL_S = 10.0

    def __init__(self, what: str, every: int = 100_000, enabled: bool = True, total: int | None = None) -> None:
        self.what, self.every, self.enabled, self.total = what, every, enabled, total
        self.count, self.start = 0, time.monotonic()
        self.printed_at, self.printed_count = self.start, -1  # -1: nothing printed yet

    def update(self, increment: int = 1) -> None:
        self.count += increment
        if not self.enabled:
            return
        if sys.stderr.isatty():
            if self.count % self.every < increment:
                self._print(end="\r")  # done() ends the line
        elif time.monotonic() - self.printed_at >= self.PIPE_INTERVAL_S:
            self._print(end="\n")

    def done(self) -> None:
        if self.enabled and (sys.stderr.isatty() or self.count != self.printed_count):
            self._print(end="\n")

    def _print(self, end: str) -> None:
        self.printed_at, self.printed_count = time.monotonic(), self.count
        rate = self.count / max(self.printed_at - self.start, 1e-9)
        if self.total is None:
            print(f"{self.what}: {self.count:,} ({rate:,.0f}/s)", end=end, file=sys.stderr, flush=True)
            return
        remaining = (self.total - self.count) / rate if rate else 0.0
        left = f", about {duration(remaining)} left" if 0 < remaining else ""
        speed = f"{rate:,.1f}/s" if rate >= 1 else f"{60 * rate:,.1f}/min"
        print(f"{self.what}: {self.count:,} of {self.total:,} ({speed}{left})", end=end, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """A rough duration: 45 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5_400 else f"{seconds / 3_600:.1f} h"


def write_shard(path: str, records: Iterable[sequences.UserRecord], compress: bool) -> int:
    """One sequence shard, records in the given order (a list, or a stream); returns how many were written."""
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    written = 0
    with tf.io.TFRecordWriter(path, options) as writer:
        for _, serialized, _ in records:
            writer.write(serialized)
            written += 1
    return written


def write_vocabulary(path: str, item_counts: sequences.ItemCounts, tallies: sequences.TargetTallies) -> None:
    """items.tsv: item_id<TAB>count<TAB>target_probability, most frequent first, ties broken by id
    (item_counts are sorted by id). Probabilities are written with repr: they read back to the same float."""
    order = np.argsort(-item_counts.counts, kind="stable")
    probability = sequences.target_probability(tallies, item_counts.items)
    with tf.io.gfile.GFile(path, "w") as stream:
        stream.write("".join(f"{item.decode('utf-8')}\t{count}\t{q!r}\n" for item, count, q in zip(
            item_counts.items[order], item_counts.counts[order].tolist(), probability[order].tolist(), strict=True)))


def split_counts(records: dict[tuple[str, int], list[sequences.UserRecord]]) -> dict[str, dict[str, int]]:
    """split -> {users, events}."""
    counts = {split: {"users": 0, "events": 0} for split in data_directory.SPLITS}
    for (split, _), shard in records.items():
        counts[split]["users"] += len(shard)
        counts[split]["events"] += sum(num_events for _, _, num_events in shard)
    return counts


def read_columns(input_paths: Sequence[str], file_format: str, log: record_checks.BadRecordLog,
                 behavior: str | None, progress: bool, columns: Mapping[str, str] | None = None,
                 min_rating: float | None = None) -> tuple[sequences.EventBlock, int]:
    """Every input file's events as one block of columns, and the digits of a second its timestamps hold (the
    finest unit a file needs: readers.read_timed_blocks)."""
    reading = ProgressLine("events read", enabled=progress)
    blocks, time_digits = readers.read_all_blocks(input_paths, file_format, log, behavior, on_block=reading.update,
                                                  columns=columns, min_rating=min_rating)
    reading.done()
    return sequences.concatenate(blocks), time_digits


def require_items(num_items: int, input_paths: Sequence[str], input_events: int, skipped: dict,
                  behavior: str | None, splits: dict | None = None, min_item_count: int = sequences.MIN_ITEM_COUNT,
                  min_user_count: int = sequences.MIN_USER_COUNT) -> None:
    """Stops a run that has nothing to train on, saying why: empty input, a --behavior no event has, the
    count filters, or (user split) no train or valid users (an empty test split is written: evaluating it
    then says so)."""
    if not input_events:
        if skipped.get("other_behavior"):
            raise ValueError(f"{list(input_paths)}: no event has behavior {behavior!r} ({skipped['other_behavior']:,} "
                             "events of other behaviors were skipped; Taobao's are pv, buy, cart, fav)")
        raise ValueError(f"{list(input_paths)}: no events: the input is empty"
                         + (f" ({skipped['empty_files']} empty file(s))" if skipped.get("empty_files") else ""))
    if not num_items:
        raise ValueError(f"{list(input_paths)}: no user has >= {min_user_count} interactions with items "
                         f"seen >= {min_item_count} times; nothing to train on")
    empty = [split for split in ("train", "valid") if splits is not None and not splits[split]["users"]]
    if empty and splits is not None:
        users = sum(counts["users"] for counts in splits.values())
        raise ValueError(f"{list(input_paths)}: the user split leaves {' and '.join(empty)} without users ({users:,} "
                         f"users kept, split {dict(sequences.SPLIT_FRACTIONS)} by a hash of the user id): training "
                         "learns from train users and selects checkpoints on valid users; use more users")


def check_min_counts(min_item_count: int, min_user_count: int) -> None:
    """The count filters' bounds: an item kept at least once; a user with a training example (the random-cut
    sampler needs sequences.MIN_CUT items before a target)."""
    if min_item_count < 1:
        raise ValueError(f"--min-item-interactions must be >= 1, got {min_item_count}")
    if min_user_count < sequences.MIN_CUT + 1:
        raise ValueError(f"--min-user-interactions must be >= {sequences.MIN_CUT + 1} (a training example needs "
                         f"{sequences.MIN_CUT} items before its target), got {min_user_count}")


def make_manifest(input_paths: Sequence[str], file_format: str, seed: int, num_shards: int, compress: bool,
                  input_events: int, splits: dict, num_items: int, cleaning: dict,
                  boundaries: time_split.TimeBoundaries | None = None, min_item_count: int = sequences.MIN_ITEM_COUNT,
                  min_user_count: int = sequences.MIN_USER_COUNT, time_digits: int = 0) -> dict:
    """The manifest; `split` says how users and events were split: "users" (hash of the user id with
    `seed`, `split_fractions`) or "time" (`valid_from`/`test_from`, the boundaries in the timestamps' unit);
    `timestamp_unit` names the unit of `time_digits` digits of a second (data_directory.TIME_UNITS)."""
    split = {"split": "users", "split_fractions": dict(sequences.SPLIT_FRACTIONS)} if boundaries is None else {
        "split": "time", "valid_from": boundaries.valid_from, "test_from": boundaries.test_from}
    return {
        "source": [atomic.absolute(path) for path in input_paths],
        "format": file_format,
        "filters": {"min_item_count": min_item_count, "min_user_count": min_user_count,
                    "passes": 1},
        "seed": seed,
        **split,
        "num_shards": num_shards,
        "compression": "GZIP" if compress else "",
        "schema_version": data_directory.SCHEMA_VERSION,
        "timestamp_unit": data_directory.TIME_UNITS[time_digits],
        "input_events": input_events,
        "num_items": num_items,
        "splits": splits,
        "cleaning": cleaning,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_prepared(directory: str, shard_records: Callable[[str, int], Iterable[sequences.UserRecord]],
                   vocabulary_counts: sequences.ItemCounts, tallies: sequences.TargetTallies, manifest: dict,
                   num_shards: int, compress: bool, progress: bool = True) -> None:
    """The data directory's files; `shard_records(split, shard)`: that shard's records in user order."""
    written = ProgressLine("users written", every=1, enabled=progress)
    for split in data_directory.SPLITS:
        for shard in range(num_shards):  # every shard exists, even one that no user hashes to
            name = data_directory.shard_name(split, shard, num_shards, compress)
            written.update(write_shard(os.path.join(directory, name), shard_records(split, shard), compress))
    written.done()
    write_vocabulary(data_directory.items_path(directory), vocabulary_counts, tallies)
    data_directory.write_manifest(directory, manifest)


def prepare(inputs: Iterable[str], output_dir: str, file_format: str | None = None, seed: int = 0,
            num_shards: int = 1, compress: bool = False, overwrite: bool = False, progress: bool = True,
            max_bad_records: int = 0, behavior: str | None = None,
            boundaries: time_split.TimeBoundaries | None = None, columns: Mapping[str, str] | None = None,
            min_item_count: int = sequences.MIN_ITEM_COUNT, min_user_count: int = sequences.MIN_USER_COUNT,
            min_rating: float | None = None, max_events_in_memory: int = IN_MEMORY_MAX_EVENTS,
            bucket_events: int = BUCKET_EVENTS) -> dict:
    """Builds the training data set from raw logs in one process (the fast path for one machine), with
    the per-record logic of pipelines.sequences that the Beam pipeline uses. `boundaries`: the time split
    (pipelines.time_split); None: the user split.

    A user split of more than `max_events_in_memory` events (readers.estimate_events) is built in bounded
    memory: spilled to disk in user buckets of about `bucket_events` events (pipelines.bucketed), with the same
    output; the time split is built in memory.

    Returns:
      The manifest (also written to `<output_dir>/manifest.json`).
    """
    input_paths = readers.expand_inputs(list(inputs))
    file_format = file_format or readers.guess_format(input_paths[0])
    log = record_checks.BadRecordLog(max_bad_records)
    check_min_counts(min_item_count, min_user_count)
    atomic.check_output(output_dir, overwrite)  # before the input is read (publish checks it again)
    if boundaries is None:
        estimated = readers.estimate_events(input_paths, file_format)
        if estimated > max_events_in_memory:
            return prepare_bucketed(input_paths, output_dir, file_format, log, max(2, -(-estimated // bucket_events)),
                                    seed, num_shards, compress, overwrite, progress, behavior, columns, min_item_count,
                                    min_user_count, min_rating)
    events, time_digits = read_columns(input_paths, file_format, log, behavior, progress, columns, min_rating)
    boundaries = None if boundaries is None else boundaries.in_unit(time_digits)
    ordered, duplicates = sequences.order_users(events)
    # The user split filters every event; the time split only the events before T1 (the training log).
    training = ordered if boundaries is None else time_split.events_before(ordered, boundaries.valid_from)
    all_item_counts = sequences.item_counts(training)
    frequent = sequences.frequent_items(all_item_counts, min_item_count)
    kept = sequences.filter_users(training, frequent, min_user_count)
    vocabulary_counts = sequences.item_counts(kept)
    if boundaries is None:
        records = sequences.shard_records(kept, seed, num_shards)
        splits = split_counts(records)
        tallies = sequences.target_tallies(kept, seed)
    else:
        records, report = time_split.split_records(ordered, set(vocabulary_counts.items.tolist()), boundaries,
                                                   num_shards, min_user_count)
        time_split.check_windows(report, boundaries, time_digits)
        splits = report["splits"]
        tallies = sequences.target_tallies(kept, seed=None)
    require_items(len(vocabulary_counts.items), input_paths, len(events.users), log.skipped, behavior,
                  splits if boundaries is None else None, min_item_count, min_user_count)
    cleaning = {**log.summary(), "duplicate_events_removed": duplicates,
                "users_below_min_count": len(ordered.users) - len(kept.users),
                "items_below_min_count": len(all_item_counts.items) - len(frequent)}
    manifest = make_manifest(input_paths, file_format, seed, num_shards, compress, len(events.users),
                             splits, len(vocabulary_counts.items), cleaning, boundaries, min_item_count, min_user_count,
                             time_digits)
    data_directory.publish(lambda directory: write_prepared(
        directory, lambda split, shard: records.get((split, shard), []), vocabulary_counts, tallies, manifest,
        num_shards, compress, progress), output_dir, overwrite)
    return manifest


def prepare_bucketed(input_paths: Sequence[str], output_dir: str, file_format: str, log: record_checks.BadRecordLog,
                     num_buckets: int, seed: int, num_shards: int, compress: bool, overwrite: bool, progress: bool,
                     behavior: str | None, columns: Mapping[str, str] | None, min_item_count: int,
                     min_user_count: int, min_rating: float | None) -> dict:
    """prepare() of a user split in bounded memory (pipelines.bucketed): the same output."""
    with bucketed.SpillDirectory(output_dir) as spill:
        reading = ProgressLine("events read", enabled=progress)
        input_events, time_digits = bucketed.read_into_buckets(input_paths, file_format, log, behavior, columns,
                                                               min_rating, num_buckets, spill, reading.update)
        reading.done()
        sorting = ProgressLine(f"user buckets sorted (spilled to {spill.path})", every=1, enabled=progress,
                               total=num_buckets)
        all_item_counts, duplicates = bucketed.order_buckets(spill, num_buckets, time_digits, sorting.update)
        sorting.done()
        frequent = sequences.frequent_items(all_item_counts, min_item_count)
        building = ProgressLine("user buckets built", every=1, enabled=progress, total=num_buckets)
        built = bucketed.build_buckets(spill, num_buckets, frequent, seed, num_shards, min_user_count, building.update)
        building.done()
        vocabulary, tallies = built.vocabulary.item_counts(), built.tallies.tallies()
        require_items(len(vocabulary.items), input_paths, input_events, log.skipped, behavior, built.splits,
                      min_item_count, min_user_count)
        cleaning = {**log.summary(), "duplicate_events_removed": duplicates,
                    "users_below_min_count": built.users_below_min_count,
                    "items_below_min_count": len(all_item_counts.items) - len(frequent)}
        manifest = make_manifest(input_paths, file_format, seed, num_shards, compress, input_events, built.splits,
                                 len(vocabulary.items), cleaning, None, min_item_count, min_user_count, time_digits)
        data_directory.publish(lambda directory: write_prepared(
            directory, lambda split, shard: bucketed.merged_shard(spill, split, shard, num_buckets), vocabulary,
            tallies, manifest, num_shards, compress, progress), output_dir, overwrite)
    return manifest


def convert(inputs: Iterable[str], output_dir: str, file_format: str | None = None, num_shards: int = 1,
            compress: bool = False, overwrite: bool = False, max_bad_records: int = 0, behavior: str | None = None,
            progress: bool = True, columns: Mapping[str, str] | None = None, min_rating: float | None = None) -> dict:
    """Raw logs -> sharded TFRecord event logs (`events-00000-of-0000N.tfrecord[.gz]`, a user's events in one
    shard, in read order) plus `manifest.json` with the counts and the skipped-record summary."""
    atomic.check_output(output_dir, overwrite)  # before the input is read (publish checks it again)
    input_paths = readers.expand_inputs(list(inputs))
    file_format = file_format or readers.guess_format(input_paths[0])
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    summary: dict = {}

    def build(directory: str, time_digits: int) -> None:
        log = record_checks.BadRecordLog(max_bad_records)
        paths = [os.path.join(directory, data_directory.shard_name("events", i, num_shards, compress))
                 for i in range(num_shards)]
        writers = [tf.io.TFRecordWriter(path, options) for path in paths]
        written = ProgressLine("events written", enabled=progress)
        try:
            for batch in readers.read_all(input_paths, file_format, log, behavior, columns, min_rating, time_digits):
                for event in batch:
                    writers[sequences.shard_of(event.user_id.encode("utf-8"), num_shards)].write(
                        data_directory.encode_event(event.user_id, event.item_id, event.timestamp, event.category,
                                                    event.behavior))
                written.update(len(batch))
        finally:
            for writer in writers:
                writer.close()
        written.done()
        summary.update({"source": [atomic.absolute(p) for p in input_paths], "format": file_format,
                        "behavior": behavior, "events": written.count, "num_shards": num_shards,
                        "compression": "GZIP" if compress else "", "schema_version": data_directory.SCHEMA_VERSION,
                        "timestamp_unit": data_directory.TIME_UNITS[time_digits], "cleaning": log.summary()})
        data_directory.write_manifest(directory, summary)

    time_digits = 0  # events are written as they are read: a finer unit met on the way starts the output over
    while True:
        try:
            data_directory.publish(functools.partial(build, time_digits=time_digits), output_dir, overwrite)
            return summary
        except record_checks.FinerTimeUnit as finer:
            logger.info(f"{finer}: converting again in {data_directory.TIME_UNITS[finer.digits]}")
            time_digits = finer.digits
