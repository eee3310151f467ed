"""In-process `remi prepare`: raw logs -> per-user sequence TFRecords, items.tsv and manifest.json.

Output layout (written to a temporary directory, renamed into place only when complete):
  <output>/train-00000-of-0000N.tfrecord, valid-..., test-...   sequence records, users sorted by id
  <output>/items.tsv       item_id<TAB>count, most frequent first (ties by id)
  <output>/manifest.json   source, filters, seed, counts per split, schema version
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import sys
import time
import zlib
from collections import Counter, defaultdict
from typing import Iterable, Sequence

import tensorflow as tf

from pipelines import readers, schema, sequences
from remi_tf import atomic


class ProgressLine:
    """A single, rewritten progress line on stderr: `<what>: <count> (<rate>/s)`."""

    def __init__(self, what: str, every: int = 100_000, enabled: bool = True) -> None:
        self.what, self.every, self.enabled = what, every, enabled
        self.count, self.start = 0, time.monotonic()

    def update(self, increment: int = 1) -> None:
        self.count += increment
        if self.enabled and self.count % self.every < increment:
            self._print(end="\r")  # rewritten in place; done() prints the final count on its own line

    def done(self) -> None:
        if self.enabled:
            self._print(end="\n")

    def _print(self, end: str) -> None:
        rate = self.count / max(time.monotonic() - self.start, 1e-9)
        print(f"{self.what}: {self.count:,} ({rate:,.0f}/s)", end=end, file=sys.stderr, flush=True)


def shard_of(user_id: str, num_shards: int) -> int:
    """The shard of a user: crc32 of the id, so every runner puts a user in the same shard."""
    return zlib.crc32(user_id.encode("utf-8")) % num_shards


def write_shard(path: str, users: Sequence[tuple[str, list[tuple[int, str]]]], compress: bool) -> None:
    """One sequence shard, users in the given order."""
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    with tf.io.TFRecordWriter(path, options) as writer:
        for user_id, events in users:
            writer.write(schema.encode_sequence(user_id, [item for _, item in events], [ts for ts, _ in events]))


def write_split(directory: str, split: str, users: Sequence[tuple[str, list[tuple[int, str]]]],
                num_shards: int, compress: bool) -> None:
    """Writes one split's users (sorted by id) into `num_shards` sequence TFRecord shards."""
    by_shard: list[list] = [[] for _ in range(num_shards)]
    for user in users:
        by_shard[shard_of(user[0], num_shards)].append(user)
    for shard, shard_users in enumerate(by_shard):
        write_shard(os.path.join(directory, schema.shard_name(split, shard, num_shards, compress)), shard_users,
                    compress)


def write_vocabulary(path: str, item_counts: dict[str, int]) -> None:
    """items.tsv: item_id<TAB>count, most frequent first, ties broken by id."""
    with open(path, "w", encoding="utf-8") as stream:
        for item, count in sorted(item_counts.items(), key=lambda pair: (-pair[1], pair[0])):
            stream.write(f"{item}\t{count}\n")


def group_by_user(batches: Iterable[list[readers.Event]], progress: bool) -> dict[str, list[tuple[int, int, str]]]:
    """user_id -> [(timestamp, position, item_id)] in read order (position: file index << 40 | record)."""
    events_by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    reading = ProgressLine("events read", enabled=progress)
    # Millions of small tuples that live to the end: the cyclic GC would rescan them again and again.
    gc.disable()
    try:
        for batch in batches:
            for user_id, item_id, timestamp, (file_index, record), _, _ in batch:
                # The position as one int (file index, then record) compares faster than a tuple.
                events_by_user[user_id].append((timestamp, (file_index << 40) | record, item_id))
            reading.update(len(batch))
    finally:
        gc.enable()
    reading.done()
    return events_by_user


def build_splits(events_by_user: dict[str, list[tuple[int, int, str]]], seed: int
                 ) -> tuple[dict[str, list[tuple[str, list[tuple[int, str]]]]], Counter, dict]:
    """Sort, de-duplicate, 5-core filter and split every user (the rules of pipelines.sequences).

    Returns:
      (split -> [(user_id, [(timestamp, item_id)])] sorted by user, kept item counts, rule counts).
    """
    ordered, duplicates = {}, 0
    for user_id, events in events_by_user.items():
        ordered[user_id], removed = sequences.sort_and_deduplicate(events)
        duplicates += removed
    item_counts = Counter([item for events in ordered.values() for _, item in events])
    kept_items = sequences.frequent_items(item_counts)
    splits: dict[str, list[tuple[str, list[tuple[int, str]]]]] = {split: [] for split in schema.SPLITS}
    vocabulary_counts: Counter = Counter()
    for user_id in sorted(ordered):
        kept = sequences.filter_sequence(ordered[user_id], kept_items)
        if kept is None:
            continue
        splits[sequences.assign_split(user_id, seed)].append((user_id, kept))
        vocabulary_counts.update(item for _, item in kept)
    rules = {"duplicate_events_removed": duplicates, "users_below_min_count": len(ordered) - sum(map(len, splits.values())),
             "items_below_min_count": len(item_counts) - len(kept_items)}
    return splits, vocabulary_counts, rules


def make_manifest(input_paths: Sequence[str], file_format: str, seed: int, num_shards: int, compress: bool,
                  input_events: int, splits: dict, num_items: int, cleaning: dict) -> dict:
    return {
        "source": [os.path.abspath(path) for path in input_paths],
        "format": file_format,
        "filters": {"min_item_count": sequences.MIN_ITEM_COUNT, "min_user_count": sequences.MIN_USER_COUNT,
                    "passes": 1},
        "seed": seed,
        "split_fractions": dict(sequences.SPLIT_FRACTIONS),
        "num_shards": num_shards,
        "compression": "GZIP" if compress else "",
        "schema_version": schema.SCHEMA_VERSION,
        "input_events": input_events,
        "num_items": num_items,
        "splits": splits,
        "cleaning": cleaning,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_prepared(directory: str, splits: dict[str, list[tuple[str, list[tuple[int, str]]]]],
                   vocabulary_counts: Counter, manifest: dict, num_shards: int, compress: bool,
                   progress: bool = True) -> None:
    written = ProgressLine("users written", every=1, enabled=progress)
    for split, users in splits.items():
        write_split(directory, split, users, num_shards, compress)
        written.update(len(users))
    written.done()
    write_vocabulary(os.path.join(directory, "items.tsv"), vocabulary_counts)
    with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as stream:
        json.dump(manifest, stream, indent=2)


def prepare(inputs: Iterable[str], output_dir: str, file_format: str | None = None, seed: int = 0,
            num_shards: int = 1, compress: bool = False, overwrite: bool = False, progress: bool = True,
            max_bad_records: int = 0, behavior: str | None = None) -> dict:
    """Builds the training data set from raw logs in one process (the fast path for one machine).

    Returns:
      The manifest (also written to `<output_dir>/manifest.json`).
    """
    input_paths = readers.expand_inputs(list(inputs))
    file_format = file_format or readers.guess_format(input_paths[0])
    log = readers.BadRecordLog(max_bad_records)
    events_by_user = group_by_user(readers.read_all(input_paths, file_format, log, behavior), progress)
    input_events = sum(len(events) for events in events_by_user.values())
    splits, vocabulary_counts, rules = build_splits(events_by_user, seed)
    if not vocabulary_counts:
        raise ValueError(f"{input_paths}: no user has >= {sequences.MIN_USER_COUNT} interactions with items "
                         f"seen >= {sequences.MIN_ITEM_COUNT} times; nothing to train on")
    cleaning = {**log.summary(), **rules}
    if progress and (cleaning["bad_records"] or cleaning["skipped"] or rules["duplicate_events_removed"]):
        print(f"skipped: {json.dumps({k: v for k, v in cleaning.items() if k != 'bad_examples'})}", file=sys.stderr)
    counts = {split: {"users": len(users), "events": sum(len(events) for _, events in users)}
              for split, users in splits.items()}
    manifest = make_manifest(input_paths, file_format, seed, num_shards, compress, input_events, counts,
                             len(vocabulary_counts), cleaning)
    atomic.publish_directory(lambda directory: write_prepared(directory, splits, vocabulary_counts, manifest, num_shards,
                                                       compress, progress), output_dir, overwrite)
    return manifest


def convert(inputs: Iterable[str], output_dir: str, file_format: str | None = None, num_shards: int = 1,
            compress: bool = False, overwrite: bool = False, max_bad_records: int = 0, behavior: str | None = None,
            progress: bool = True) -> dict:
    """Raw logs -> sharded TFRecord event logs (`events-00000-of-0000N.tfrecord[.gz]`, a user's events in one
    shard, in read order) plus `manifest.json` with the counts and the skipped-record summary."""
    input_paths = readers.expand_inputs(list(inputs))
    file_format = file_format or readers.guess_format(input_paths[0])
    log = readers.BadRecordLog(max_bad_records)
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    summary: dict = {}

    def build(directory: str) -> None:
        paths = [os.path.join(directory, schema.shard_name("events", i, num_shards, compress)) for i in range(num_shards)]
        writers = [tf.io.TFRecordWriter(path, options) for path in paths]
        written = ProgressLine("events written", enabled=progress)
        try:
            for batch in readers.read_all(input_paths, file_format, log, behavior):
                for event in batch:
                    writers[shard_of(event.user_id, num_shards)].write(schema.encode_event(
                        event.user_id, event.item_id, event.timestamp, event.category, event.behavior))
                written.update(len(batch))
        finally:
            for writer in writers:
                writer.close()
        written.done()
        summary.update({"source": [os.path.abspath(p) for p in input_paths], "format": file_format,
                        "behavior": behavior, "events": written.count, "num_shards": num_shards,
                        "compression": "GZIP" if compress else "", "schema_version": schema.SCHEMA_VERSION,
                        "cleaning": log.summary()})
        with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as stream:
            json.dump(summary, stream, indent=2)

    atomic.publish_directory(build, output_dir, overwrite)
    return summary
