"""In-process `remi prepare` in bounded memory: the events spilled to disk in user buckets, each bucket built
alone, the sorted runs merged into the shards.

1. Read: every block of events goes to its users' bucket files (crc32 of the user id, pipelines.sequences), so
   a user's events all land in one bucket; only one block is in memory.
2. Order: each bucket in turn is grouped by user, time-sorted and de-duplicated (sequences.order_users); the
   ordered bucket replaces its raw events on disk, and its item counts join a running total.
3. Build: with the items that pass the count filter known, each bucket is filtered, its users' records made
   (in user order) and spilled per (split, shard) as a sorted run; vocabulary counts and target tallies are
   summed exactly (ItemTally, TallyTable).
4. Write: each shard is the merge of its runs by user id (merged_shard), streamed into the published directory
   by local.write_prepared, as the in-memory path writes its shards.

The output is byte for byte what the in-memory path (pipelines.local) writes for the same input and seed: the
per-user rules are the same functions, and the merges are exact. Memory: one bucket's events and the item
tables; disk: about twice the events, in a temporary directory beside a local output (the system's temporary
directory for an output on another file system), removed at the end.
"""

from __future__ import annotations

import errno
import heapq
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from remi_tf import data_directory
from remi_tf.pipelines import readers, record_checks, sequences

RECORDS_PER_RUN_CHUNK = 1_000  # records pickled together in a sorted run


class SpillDirectory:
    """A temporary directory for the buckets and the runs: beside a local `output_dir`, in the system's temporary
    directory for a URL (gs://...); a full disk is reported with the directory's name. Removed on exit, also on
    failure."""

    def __init__(self, output_dir: str) -> None:
        parent = None
        if "://" not in output_dir:
            parent = os.path.dirname(os.path.abspath(output_dir))
            os.makedirs(parent, exist_ok=True)
        name = os.path.basename(output_dir.rstrip("/"))
        # The process id in the name: a killed run's directory is swept by the next (atomic.sweep_stale).
        self.path = tempfile.mkdtemp(prefix=f".{name}.spill-{os.getpid()}-", dir=parent)

    def __enter__(self) -> SpillDirectory:
        return self

    def __exit__(self, error_type: Any, error: BaseException | None, traceback: Any) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"the disk of {self.path} filled while `remi prepare` spilled events there "
                          f"(about twice the input's events, uncompressed): free space on {os.path.dirname(self.path)}"
                          " or prepare with a Beam runner; nothing was written to the output") from error

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)


def spill_events(blocks: Iterator[tuple[int, sequences.EventBlock]], spill: SpillDirectory, num_buckets: int
                 ) -> tuple[int, int]:
    """Step 1: appends each block's events to their users' bucket files, each piece with the digits of a second
    of its timestamps; returns the events read and the finest digits met."""
    streams = [open(spill.file(f"bucket-{bucket}.events"), "wb") for bucket in range(num_buckets)]
    events, finest = 0, 0
    try:
        for digits, block in blocks:
            finest = max(finest, digits)
            buckets = sequences.user_buckets(block.users, num_buckets)
            order = np.argsort(buckets, kind="stable")  # keeps file order within a bucket
            bounds = np.searchsorted(buckets[order], np.arange(num_buckets + 1))
            for bucket in range(num_buckets):
                rows = order[bounds[bucket]:bounds[bucket + 1]]
                if len(rows):
                    pickle.dump((digits, sequences.EventBlock(*(column[rows] for column in block))), streams[bucket],
                                pickle.HIGHEST_PROTOCOL)
            events += len(block.users)
    finally:
        for stream in streams:
            stream.close()
    return events, finest


def _pickles(path: str) -> Iterator[Any]:
    with open(path, "rb") as stream:
        while True:
            try:
                yield pickle.load(stream)
            except EOFError:
                return


def order_buckets(spill: SpillDirectory, num_buckets: int, time_digits: int, on_bucket: Callable[[int], None]
                  ) -> tuple[sequences.ItemCounts, int]:
    """Step 2: each bucket's events, timestamps in the unit of `time_digits` digits of a second, grouped, sorted
    and de-duplicated in place of its raw events; returns the item counts of every bucket summed and the
    duplicates dropped."""
    total = ItemTally()
    duplicates = 0
    for bucket in range(num_buckets):
        raw = spill.file(f"bucket-{bucket}.events")
        ordered, dropped = sequences.order_users(sequences.concatenate(
            [readers.rescaled_block(block, digits, time_digits) for digits, block in _pickles(raw)]))
        os.remove(raw)
        with open(spill.file(f"bucket-{bucket}.ordered"), "wb") as stream:
            pickle.dump(ordered, stream, pickle.HIGHEST_PROTOCOL)
        total.add(sequences.item_counts(ordered))
        duplicates += dropped
        on_bucket(1)
    return total.item_counts(), duplicates


class ItemTally:
    """Item counts summed over buckets in a dict (each bucket costs its own distinct items, not the catalogue's:
    merging sorted tables bucket by bucket re-sorted every item seen so far, 26 times at 50 M events)."""

    def __init__(self) -> None:
        self.counts: dict[bytes, int] = {}

    def add(self, part: sequences.ItemCounts) -> None:
        counts = self.counts
        for item, count in zip(part.items.tolist(), part.counts.tolist(), strict=True):
            counts[item] = counts.get(item, 0) + count

    def item_counts(self) -> sequences.ItemCounts:
        """As sequences.item_counts: items sorted, with their counts."""
        items = sorted(self.counts)
        return sequences.ItemCounts(sequences.object_array(items),
                                    np.fromiter((self.counts[item] for item in items), np.int64, len(items)))


class TallyTable:
    """Target tallies summed over buckets as sequences.merge_target_tallies sums them (the same rows in the same
    order, so q is the same to the last bit): each bucket's rows kept as integer columns (items by a code), sorted
    and summed once at the end. A dict keyed by (item, choices) held 7 GB at 50 M events."""

    def __init__(self) -> None:
        self.codes: dict[bytes, int] = {}
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.users = 0

    def add(self, part: sequences.TargetTallies) -> None:
        codes = self.codes
        item_codes = np.fromiter((codes.setdefault(item, len(codes)) for item in part.items.tolist()), np.int64,
                                 len(part.items))
        self.parts.append((item_codes, part.choices.astype(np.int64), part.counts.astype(np.int64)))
        self.users += part.users

    def tallies(self) -> sequences.TargetTallies:
        if not self.parts or not self.codes:
            return sequences.TargetTallies(sequences.object_array([]), np.zeros(0, np.int64), np.zeros(0, np.int64),
                                           self.users)
        items = sorted(self.codes)  # byte order, as factorize sorts
        rank = np.empty(len(items), np.int64)
        rank[np.fromiter((self.codes[item] for item in items), np.int64, len(items))] = np.arange(len(items))
        parts, self.parts = self.parts, []
        return sequences.summed_tallies(sequences.object_array(items),
                                        rank[np.concatenate([codes for codes, _, _ in parts])],
                                        np.concatenate([choices for _, choices, _ in parts]),
                                        np.concatenate([counts for _, _, counts in parts]), self.users)


class Built:
    """Step 3's sums over the buckets."""

    def __init__(self) -> None:
        self.vocabulary = ItemTally()
        self.tallies = TallyTable()
        self.splits = {split: {"users": 0, "events": 0} for split in data_directory.SPLITS}
        self.users_below_min_count = 0


def build_buckets(spill: SpillDirectory, num_buckets: int, frequent: set[bytes], seed: int, num_shards: int,
                  min_user_count: int, on_bucket: Callable[[int], None]) -> Built:
    """Step 3: each ordered bucket filtered, its records spilled as sorted runs per (split, shard)."""
    built = Built()
    for bucket in range(num_buckets):
        path = spill.file(f"bucket-{bucket}.ordered")
        with open(path, "rb") as stream:
            ordered = pickle.load(stream)
        os.remove(path)
        kept = sequences.filter_users(ordered, frequent, min_user_count)
        built.users_below_min_count += len(ordered.users) - len(kept.users)
        built.vocabulary.add(sequences.item_counts(kept))
        built.tallies.add(sequences.target_tallies(kept, seed))
        for (split, shard), records in sequences.shard_records(kept, seed, num_shards).items():
            built.splits[split]["users"] += len(records)
            built.splits[split]["events"] += sum(num_events for _, _, num_events in records)
            with open(spill.file(f"run-{split}-{shard}-{bucket}"), "wb") as stream:
                for start in range(0, len(records), RECORDS_PER_RUN_CHUNK):
                    pickle.dump(records[start:start + RECORDS_PER_RUN_CHUNK], stream, pickle.HIGHEST_PROTOCOL)
        on_bucket(1)
    return built


def merged_shard(spill: SpillDirectory, split: str, shard: int, num_buckets: int
                 ) -> Iterator[sequences.UserRecord]:
    """Step 4: the records of one (split, shard) from every bucket's sorted run, in user order."""
    runs = [_run(spill.file(f"run-{split}-{shard}-{bucket}")) for bucket in range(num_buckets)]
    return heapq.merge(*runs, key=lambda record: record[0])


def _run(path: str) -> Iterator[sequences.UserRecord]:
    if not os.path.exists(path):
        return
    for chunk in _pickles(path):
        yield from chunk
    os.remove(path)


def read_into_buckets(input_paths: Sequence[str], file_format: str, log: record_checks.BadRecordLog,
                      behavior: str | None, columns: Mapping[str, str] | None, min_rating: float | None,
                      num_buckets: int, spill: SpillDirectory, on_block: Callable[[int], None]) -> tuple[int, int]:
    """Step 1 over every input file, one file at a time (the reader that names bad records); returns the events
    read and the digits of a second of the finest unit a file needs (readers.read_timed_blocks)."""
    def blocks() -> Iterator[tuple[int, sequences.EventBlock]]:
        for file_index, path in enumerate(input_paths):
            for digits, block in readers.read_timed_blocks(path, file_format, log, file_index, behavior, columns,
                                                           min_rating):
                on_block(len(block.users))
                yield digits, block
    return spill_events(blocks(), spill, num_buckets)
