"""Per-record logic of sequence building, shared by every runner: time sort, de-duplication, k-core
filter, user split and shard. It works on columns of events (numpy arrays), so that a runner pays a
Python-level cost per user, not per event.

Ids are UTF-8 bytes throughout (byte order is code point order, so users and items sort as text).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from remi_tf import data_directory
from remi_tf.data_directory import MIN_CUT

MIN_ITEM_COUNT = 5
MIN_USER_COUNT = 5
SPLIT_FRACTIONS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
POSITION_FILE_SHIFT = 40  # position = file index << 40 | record index: ties in time keep file order


class EventBlock(NamedTuple):
    """Events as columns, each [n]: user and item ids (object arrays of bytes), int64 timestamps, and
    int64 positions (file index << 40 | record or line number), unique within a run."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    positions: np.ndarray


class UserSequences(NamedTuple):
    """Users [U] sorted by id, and their events in time order as CSR columns: user u's events are
    item_ids[item_codes[offsets[u]:offsets[u + 1]]] and the same slice of timestamps (int64).
    item_ids [V]: the distinct items (bytes), sorted."""

    users: np.ndarray
    offsets: np.ndarray
    item_codes: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class ItemCounts(NamedTuple):
    """Distinct items [V] (bytes, sorted) and their event counts [V] (int64)."""

    items: np.ndarray
    counts: np.ndarray


def object_array(values: Sequence) -> np.ndarray:
    """A 1-D object array (numpy would make a fixed-width bytes array, which drops trailing NULs)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def concatenate(blocks: Iterable[EventBlock]) -> EventBlock:
    blocks = list(blocks)
    if not blocks:
        return EventBlock(object_array([]), object_array([]), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return EventBlock(*(np.concatenate([getattr(block, field) for block in blocks]) for field in EventBlock._fields))


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values [n] -> (uniques [V] sorted, codes [n] with uniques[codes] == values)."""
    if not len(values):
        return object_array([]), np.zeros(0, np.int64)
    uniques, codes = tf.unique(tf.constant(values, dtype=tf.string), out_idx=tf.int64)  # hashing, in C++
    uniques = object_array(uniques.numpy().tolist())
    order = np.array(sorted(range(len(uniques)), key=uniques.__getitem__), dtype=np.int64)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniques[order], rank[codes.numpy()]


def order_users(block: EventBlock) -> tuple[UserSequences, int]:
    """Groups events by user, sorts each user's events by time (ties: file order, whatever order the
    events arrive in) and drops duplicates (the same timestamp and item as an earlier event: a logging
    retry). Returns (the users' sequences, the number of duplicates dropped)."""
    users, user_codes = factorize(block.users)
    items, item_codes = factorize(block.items)
    by_content = np.lexsort((block.positions, item_codes, block.timestamps, user_codes))
    repeats = np.zeros(len(by_content), dtype=bool)
    repeats[by_content[1:]] = ((user_codes[by_content[1:]] == user_codes[by_content[:-1]])
                               & (block.timestamps[by_content[1:]] == block.timestamps[by_content[:-1]])
                               & (item_codes[by_content[1:]] == item_codes[by_content[:-1]]))
    in_time = np.lexsort((block.positions, block.timestamps, user_codes))
    in_time = in_time[~repeats[in_time]]
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_codes[in_time], minlength=len(users)), out=offsets[1:])
    sequences = UserSequences(users, offsets, item_codes[in_time], items, block.timestamps[in_time])
    return sequences, int(repeats.sum())


def item_counts(sequences: UserSequences) -> ItemCounts:
    """The events per item (items without events left out)."""
    counts = np.bincount(sequences.item_codes, minlength=len(sequences.item_ids))
    present = counts > 0
    return ItemCounts(sequences.item_ids[present], counts[present])


def merge_item_counts(parts: Iterable[ItemCounts]) -> ItemCounts:
    """Sums item counts computed on disjoint sets of users."""
    parts = list(parts)
    if not parts:
        return ItemCounts(object_array([]), np.zeros(0, np.int64))
    items, codes = factorize(np.concatenate([part.items for part in parts]))
    counts = np.bincount(codes, weights=np.concatenate([part.counts for part in parts]), minlength=len(items))
    return ItemCounts(items, counts.astype(np.int64))


def frequent_items(counts: ItemCounts, min_count: int = MIN_ITEM_COUNT) -> set[bytes]:
    """Items with at least `min_count` interactions."""
    return set(counts.items[counts.counts >= min_count].tolist())


def filter_users(sequences: UserSequences, kept_items: set[bytes], min_length: int = MIN_USER_COUNT
                 ) -> UserSequences:
    """Every user's events restricted to `kept_items`; users with fewer than `min_length` left are dropped.

    One pass of the 5-core filter (items first, then users), as the REMI/ComiRec protocol.
    """
    kept_item = np.fromiter((item in kept_items for item in sequences.item_ids), bool, len(sequences.item_ids))
    return select_events(sequences, kept_item[sequences.item_codes], min_length)


def select_events(sequences: UserSequences, kept_event: np.ndarray, min_length: int = 0) -> UserSequences:
    """The events where `kept_event` [events] is true, in the same order; users with fewer than
    `min_length` of them are dropped."""
    user_of_event = np.repeat(np.arange(len(sequences.users)), sequences.lengths())
    kept_per_user = np.bincount(user_of_event[kept_event], minlength=len(sequences.users))
    kept_user = kept_per_user >= min_length
    kept_event = kept_event & kept_user[user_of_event]
    offsets = np.zeros(int(kept_user.sum()) + 1, dtype=np.int64)
    np.cumsum(kept_per_user[kept_user], out=offsets[1:])
    return UserSequences(sequences.users[kept_user], offsets, sequences.item_codes[kept_event], sequences.item_ids,
                         sequences.timestamps[kept_event])


def assign_split(user_id: bytes, seed: int) -> str:
    """Deterministic, hash-based 80/10/10 user split: the same user and seed always land in the same
    split, whatever the runner, sharding or input order."""
    digest = hashlib.blake2b(b"%d\x00%s" % (seed, user_id), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2.0 ** 64
    cumulative = 0.0
    for split, share in SPLIT_FRACTIONS:
        cumulative += share
        if fraction < cumulative:
            return split
    return SPLIT_FRACTIONS[-1][0]


def shard_of(user_id: bytes, num_shards: int) -> int:
    """The shard of a user: crc32 of the id, so every runner puts a user in the same shard."""
    return zlib.crc32(user_id) % num_shards


def user_buckets(users: np.ndarray, num_buckets: int) -> np.ndarray:
    """users [n] -> [n] int64 bucket of each user (shard_of with `num_buckets`)."""
    uniques, codes = factorize(users)
    return np.array([shard_of(user, num_buckets) for user in uniques], dtype=np.int64)[codes]


class TargetTallies(NamedTuple):
    """The training targets of the random-cut sampler as exact integer tallies, so that runners that merge
    them in any order get the same probabilities to the last bit: item items[i] occurs counts[i] times among
    x_MIN_CUT..x_{n-1} of training users with choices[i] = n - MIN_CUT cuts; `users` training users have a
    cut (n > MIN_CUT). Rows are sorted by (item, choices)."""

    items: np.ndarray
    choices: np.ndarray
    counts: np.ndarray
    users: int


def target_tallies(sequences: UserSequences, seed: int | None) -> TargetTallies:
    """The tallies of the users of `sequences` that `assign_split` puts in train (seed None: of every user,
    when `sequences` are the training sequences of a time split)."""
    lengths = sequences.lengths()
    in_train = np.ones(len(sequences.users), bool) if seed is None else np.fromiter(
        (assign_split(user, seed) == "train" for user in sequences.users), bool, len(sequences.users))
    eligible = in_train & (lengths > MIN_CUT)
    user_of_event = np.repeat(np.arange(len(sequences.users)), lengths)
    position = np.arange(len(sequences.item_codes)) - sequences.offsets[:-1][user_of_event]
    candidate = eligible[user_of_event] & (position >= MIN_CUT)
    tallies = TargetTallies(sequences.item_ids[sequences.item_codes[candidate]],
                            (lengths - MIN_CUT)[user_of_event[candidate]], np.ones(int(candidate.sum()), np.int64),
                            int(eligible.sum()))
    return merge_target_tallies([tallies])


def merge_target_tallies(parts: Iterable[TargetTallies]) -> TargetTallies:
    """Sums tallies of disjoint sets of users; rows sorted by (item, choices)."""
    parts = [part for part in parts if len(part.items)]
    users = sum(part.users for part in parts)
    if not parts:
        return TargetTallies(object_array([]), np.zeros(0, np.int64), np.zeros(0, np.int64), users)
    items, item_codes = factorize(np.concatenate([part.items for part in parts]))
    return summed_tallies(items, item_codes, np.concatenate([part.choices for part in parts]),
                          np.concatenate([part.counts for part in parts]), users)


def summed_tallies(items: np.ndarray, item_codes: np.ndarray, choices: np.ndarray, counts: np.ndarray, users: int
                   ) -> TargetTallies:
    """Tally rows ([n] each: item codes into the sorted `items`, choices, counts) summed per (item, choices),
    rows sorted by (item, choices)."""
    choices, counts = choices.astype(np.int64), counts.astype(np.int64)
    order = np.lexsort((choices, item_codes))
    item_codes, choices, counts = item_codes[order], choices[order], counts[order]
    starts = np.flatnonzero(np.r_[True, (item_codes[1:] != item_codes[:-1]) | (choices[1:] != choices[:-1])])
    return TargetTallies(items[item_codes[starts]], choices[starts], np.add.reduceat(counts, starts), users)


def target_probability(tallies: TargetTallies, items: np.ndarray) -> np.ndarray:
    """q: each of `items`' probability of being the target of a random-cut training example,
    mean over training users of (occurrences in x_MIN_CUT..x_{n-1}) / (n - MIN_CUT).

    Returns:
      [len(items)] float64, 0 for items that are never a target.
    """
    position = {item: index for index, item in enumerate(items.tolist())}
    rows = np.array([position[item] for item in tallies.items.tolist()], np.int64)
    terms = tallies.counts / tallies.choices
    return np.bincount(rows, weights=terms, minlength=len(items)) / max(tallies.users, 1)


UserRecord = tuple[bytes, bytes, int]  # (user id, serialized sequence tf.train.Example, number of events)


def shard_records(sequences: UserSequences, seed: int, num_shards: int) -> dict[tuple[str, int], list[UserRecord]]:
    """(split, shard) -> the sequence records of its users, in user order (plain tuples: Beam's coders
    encode them without pickling)."""
    records: dict[tuple[str, int], list[UserRecord]] = {}
    items, timestamps = sequences.item_ids[sequences.item_codes].tolist(), sequences.timestamps.tolist()
    starts, ends = sequences.offsets[:-1].tolist(), sequences.offsets[1:].tolist()
    for user, start, end in zip(sequences.users, starts, ends, strict=True):
        key = (assign_split(user, seed), shard_of(user, num_shards))
        serialized = data_directory.encode_sequence(user, items[start:end], timestamps[start:end])
        records.setdefault(key, []).append((user, serialized, end - start))
    return records
