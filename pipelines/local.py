"""In-process `remi prepare`: raw logs -> per-user sequence TFRecords, items.tsv and manifest.json.

Output layout (written to a temporary directory, renamed into place only when complete):
  <output>/train-00000-of-0000N.tfrecord, valid-..., test-...   sequence records, users sorted by id
  <output>/items.tsv       item_id<TAB>count, most frequent first (ties by id)
  <output>/manifest.json   source, filters, seed, counts per split, schema version
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from typing import Iterable, Sequence

import tensorflow as tf

from pipelines import readers, schema, sequences


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


def _shard_of(user_id: str, num_shards: int) -> int:
    return zlib.crc32(user_id.encode("utf-8")) % num_shards


def write_split(directory: str, split: str, users: Sequence[tuple[str, list[tuple[int, str]]]],
                num_shards: int, compress: bool) -> None:
    """Writes one split's users (sorted by id) into `num_shards` sequence TFRecord shards."""
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    writers = [tf.io.TFRecordWriter(os.path.join(directory, schema.shard_name(split, i, num_shards, compress)),
                                    options) for i in range(num_shards)]
    try:
        for user_id, events in users:
            record = schema.encode_sequence(user_id, [item for _, item in events], [ts for ts, _ in events])
            writers[_shard_of(user_id, num_shards)].write(record)
    finally:
        for writer in writers:
            writer.close()


def write_vocabulary(path: str, item_counts: Counter) -> None:
    """items.tsv: item_id<TAB>count, most frequent first, ties broken by id."""
    with open(path, "w", encoding="utf-8") as stream:
        for item, count in sorted(item_counts.items(), key=lambda pair: (-pair[1], pair[0])):
            stream.write(f"{item}\t{count}\n")


def publish_directory(build: callable, output_dir: str, overwrite: bool) -> None:
    """Runs `build(tmp_dir)` and renames tmp_dir to `output_dir` only if it succeeds."""
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; remove it or pass --overwrite")
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
    try:
        build(tmp_dir)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(tmp_dir, output_dir)
    finally:
        if os.path.exists(tmp_dir):
            shutil.rmtree(tmp_dir)


def prepare(input_paths: Iterable[str], output_dir: str, file_format: str | None = None, seed: int = 0,
            num_shards: int = 1, compress: bool = False, overwrite: bool = False, progress: bool = True
            ) -> dict:
    """Builds the training data set from raw logs in one process.

    Returns:
      The manifest (also written to `<output_dir>/manifest.json`).
    """
    input_paths = list(input_paths)
    events_by_user: dict[str, list[tuple[int, str]]] = defaultdict(list)
    item_counts: Counter = Counter()
    reading = ProgressLine("events read", enabled=progress)
    for path in input_paths:
        for event in readers.read_events(path, file_format):
            events_by_user[event.user_id].append((event.timestamp, event.item_id))
            item_counts[event.item_id] += 1
            reading.update()
    reading.done()
    num_events = reading.count

    kept_items = sequences.frequent_items(item_counts)
    splits: dict[str, list[tuple[str, list[tuple[int, str]]]]] = {split: [] for split in schema.SPLITS}
    vocabulary_counts: Counter = Counter()
    for user_id in sorted(events_by_user):
        kept = sequences.filter_sequence(sequences.sort_by_time(events_by_user[user_id]), kept_items)
        if kept is None:
            continue
        splits[sequences.assign_split(user_id, seed)].append((user_id, kept))
        vocabulary_counts.update(item for _, item in kept)

    manifest = {
        "source": [os.path.abspath(path) for path in input_paths],
        "format": file_format or readers.guess_format(input_paths[0]),
        "filters": {"min_item_count": sequences.MIN_ITEM_COUNT, "min_user_count": sequences.MIN_USER_COUNT,
                    "passes": 1},
        "seed": seed,
        "split_fractions": dict(sequences.SPLIT_FRACTIONS),
        "num_shards": num_shards,
        "compression": "GZIP" if compress else "",
        "schema_version": schema.SCHEMA_VERSION,
        "input_events": num_events,
        "num_items": len(vocabulary_counts),
        "splits": {split: {"users": len(users), "events": sum(len(events) for _, events in users)}
                   for split, users in splits.items()},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if not vocabulary_counts:
        raise ValueError(f"{input_paths}: no user has >= {sequences.MIN_USER_COUNT} interactions with items "
                         f"seen >= {sequences.MIN_ITEM_COUNT} times; nothing to train on")

    def build(directory: str) -> None:
        for split, users in splits.items():
            write_split(directory, split, users, num_shards, compress)
        write_vocabulary(os.path.join(directory, "items.tsv"), vocabulary_counts)
        with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as stream:
            json.dump(manifest, stream, indent=2)

    publish_directory(build, output_dir, overwrite)
    return manifest
