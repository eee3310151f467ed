"""Per-record logic of sequence building, shared by every runner: time sort, k-core filter, user split."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Iterable, Sequence

MIN_ITEM_COUNT = 5
MIN_USER_COUNT = 5
SPLIT_FRACTIONS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))


def sort_and_deduplicate(events: Iterable[tuple[int, Any, str]]) -> tuple[list[tuple[int, str]], int]:
    """A user's (timestamp, position, item_id) events -> ((timestamp, item_id) in time order, duplicates).

    Ties in time keep file order (position: any unique value ordered like (file index, record index)),
    whatever order the events
    arrive in (a distributed group-by does not keep it). An event with the same timestamp and item as an
    earlier one is a duplicate (a logging retry) and is dropped.
    """
    pairs = [(timestamp, item) for timestamp, _, item in sorted(events)]  # positions are unique: items never compared
    if len(set(pairs)) == len(pairs):  # the common case, without a Python-level loop
        return pairs, 0
    ordered, seen = [], set()
    for pair in pairs:
        if pair not in seen:
            seen.add(pair)
            ordered.append(pair)
    return ordered, len(pairs) - len(ordered)


def frequent_items(item_counts: Counter, min_count: int = MIN_ITEM_COUNT) -> set[str]:
    """Items with at least `min_count` interactions."""
    return {item for item, count in item_counts.items() if count >= min_count}


def filter_sequence(events: Sequence[tuple[int, str]], kept_items: set[str],
                    min_length: int = MIN_USER_COUNT) -> list[tuple[int, str]] | None:
    """A user's events restricted to `kept_items`; None when fewer than `min_length` remain.

    One pass of the 5-core filter (items first, then users), as the REMI/ComiRec protocol.
    """
    kept = [event for event in events if event[1] in kept_items]
    return kept if len(kept) >= min_length else None


def assign_split(user_id: str, seed: int) -> str:
    """Deterministic, hash-based 80/10/10 user split: the same user and seed always land in the same
    split, whatever the runner, sharding or input order."""
    digest = hashlib.blake2b(f"{seed}\x00{user_id}".encode("utf-8"), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2.0 ** 64
    cumulative = 0.0
    for split, share in SPLIT_FRACTIONS:
        cumulative += share
        if fraction < cumulative:
            return split
    return SPLIT_FRACTIONS[-1][0]
