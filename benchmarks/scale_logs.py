"""Synthetic interaction logs with a known structure, at any size: the input of benchmarks/scale.py.

    python benchmarks/scale_logs.py --items 1000000 --events 12500000 --output runs/scale/1m [--seed 0]

The catalogue is cut into clusters of about `cluster_size` items. Within a cluster, popularity follows a power
law (an item of rank r is drawn with probability ~ (r + 1)^-popularity_exponent); clusters themselves are
chosen with a milder skew (cluster c ~ 1/sqrt(c + 1)). Each user follows 1..max_clusters_per_user clusters (uniform)
and reads a sticky sequence: after each event it stays in its current cluster with probability `stay`, else it
draws one of its clusters again. Sequence lengths are 5 + geometric (mean `mean_events_per_user`); timestamps
are the user's start (uniform over half a year) plus exponential gaps of about an hour, in whole seconds and
strictly increasing within a user. Item ids are a seeded permutation of the item numbers (an id says nothing
about its cluster); user ids are u<number>.

Written into the output directory:
  events.csv.gz   user_id,item_id,timestamp: chunks of users, each chunk in time order (as a log is cut per day)
  clusters.csv    item_id,cluster: the planted truth (usable as `remi prepare --item-features clusters.csv:cluster`)
  users.csv       user_id,clusters: how many clusters each user follows
  generator.json  the parameters and the counts
The same parameters and seed write the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import sys
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

EVENTS_FILE, CLUSTERS_FILE, USERS_FILE, PARAMETERS_FILE = "events.csv.gz", "clusters.csv", "users.csv", "generator.json"
START_TIME = 1_700_000_000  # unix seconds of the earliest user start
START_SPREAD_S = 182 * 86_400
MEAN_GAP_S = 3_600.0
USERS_PER_CHUNK = 100_000
MIN_EVENTS_PER_USER = 5
DRAWS_PER_USER = 64  # cluster draws with replacement from which a user's distinct clusters are taken


@dataclasses.dataclass(frozen=True)
class LogShape:
    """What a generated log looks like (every field > 0; see the module docstring)."""

    num_items: int
    num_events: int
    seed: int = 0
    cluster_size: int = 2_000
    mean_events_per_user: float = 25.0
    max_clusters_per_user: int = 4
    stay: float = 0.8
    popularity_exponent: float = 0.5

    def __post_init__(self) -> None:
        for name in ("num_items", "num_events", "cluster_size", "max_clusters_per_user"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('num_', '').replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if not self.mean_events_per_user > MIN_EVENTS_PER_USER:
            raise ValueError(f"--mean-events-per-user must be > {MIN_EVENTS_PER_USER}, got {self.mean_events_per_user}")
        if not 0 <= self.popularity_exponent < 1:
            raise ValueError(f"--popularity-exponent must be in [0, 1), got {self.popularity_exponent}")
        if not 0 <= self.stay < 1:
            raise ValueError(f"--stay must be in [0, 1), got {self.stay}")

    @property
    def num_clusters(self) -> int:
        return max(1, round(self.num_items / self.cluster_size))


class UserChunk(NamedTuple):
    """Events of a chunk of users, in time order: user numbers, item numbers, timestamps (each [n], int64)."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray


class Catalogue(NamedTuple):
    """Item numbers 0..N-1 by cluster: cluster c holds starts[c] .. starts[c] + sizes[c] - 1; ids[n] names item n."""

    starts: np.ndarray
    sizes: np.ndarray
    cluster_probability: np.ndarray
    ids: np.ndarray


def catalogue(shape: LogShape) -> Catalogue:
    clusters = shape.num_clusters
    sizes = np.full(clusters, shape.num_items // clusters, np.int64)
    sizes[:shape.num_items % clusters] += 1
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    weight = 1.0 / np.sqrt(np.arange(1, clusters + 1))
    rng = np.random.default_rng([shape.seed, 1])
    ids = rng.permutation(shape.num_items)
    return Catalogue(starts, sizes, weight / weight.sum(), ids)


def user_lengths(shape: LogShape) -> np.ndarray:
    """[users] sequence lengths summing to num_events exactly (the last user takes the remainder, at least 5)."""
    rng = np.random.default_rng([shape.seed, 2])
    expected_users = max(1, int(shape.num_events / shape.mean_events_per_user))
    lengths = MIN_EVENTS_PER_USER - 1 + rng.geometric(1.0 / (shape.mean_events_per_user - MIN_EVENTS_PER_USER + 1),
                                                      size=int(expected_users * 1.2) + 10)
    total = np.cumsum(lengths)
    users = max(1, int(np.searchsorted(total, shape.num_events - MIN_EVENTS_PER_USER, side="right")))
    lengths = lengths[:users].copy()
    lengths[-1] += shape.num_events - lengths.sum()
    if lengths[-1] < 1:
        raise ValueError(f"--events {shape.num_events} is too few for one user of {MIN_EVENTS_PER_USER} events")
    return lengths


def user_chunks(shape: LogShape, items: Catalogue, lengths: np.ndarray, clusters_per_user: np.ndarray,
                followed: np.ndarray) -> Iterator[UserChunk]:
    """The events, USERS_PER_CHUNK users at a time (each chunk from its own seeded stream)."""
    for chunk, first in enumerate(range(0, len(lengths), USERS_PER_CHUNK)):
        rng = np.random.default_rng([shape.seed, 3, chunk])
        chunk_lengths = lengths[first:first + USERS_PER_CHUNK]
        user = np.repeat(np.arange(first, first + len(chunk_lengths)), chunk_lengths)
        n = len(user)
        starts = np.concatenate([[0], np.cumsum(chunk_lengths)[:-1]])
        switch = rng.random(n) >= shape.stay
        switch[starts] = True  # every user draws its first cluster
        segment_user = user[switch]
        choice = (rng.random(len(segment_user)) * clusters_per_user[segment_user]).astype(np.int64)
        cluster = followed[segment_user, choice][np.cumsum(switch) - 1]
        rank = power_law_ranks(rng.random(n), items.sizes[cluster], shape.popularity_exponent)
        gaps = np.maximum(1, np.round(rng.exponential(MEAN_GAP_S, n))).astype(np.int64)
        gaps[starts] = START_TIME + rng.integers(0, START_SPREAD_S, len(chunk_lengths))
        timestamps = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[starts] - gaps[starts], chunk_lengths)
        order = np.argsort(timestamps, kind="stable")
        yield UserChunk(user[order], (items.starts[cluster] + rank)[order], timestamps[order])


def power_law_ranks(uniform: np.ndarray, sizes: np.ndarray, exponent: float) -> np.ndarray:
    """Ranks in [0, size) with P(rank r) ~ (r + 1)^-exponent (exponent in [0, 1)): the inverse of the continuous
    power law's distribution function on [1, size + 1), floored."""
    top = (sizes + 1.0) ** (1.0 - exponent)
    x = (1.0 + uniform * (top - 1.0)) ** (1.0 / (1.0 - exponent))
    return np.minimum(np.floor(x).astype(np.int64) - 1, sizes - 1)


def followed_clusters(shape: LogShape, items: Catalogue, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """([users] how many clusters each user follows, [users, width] distinct clusters drawn by popularity; a user
    follows the first count of its row)."""
    rng = np.random.default_rng([shape.seed, 4])
    width = min(shape.max_clusters_per_user, shape.num_clusters)
    count = np.minimum(rng.integers(1, shape.max_clusters_per_user + 1, num_users), width)
    followed = np.empty((num_users, width), np.int64)
    block = max(1, 4_000_000 // max(shape.num_clusters, DRAWS_PER_USER))
    for first in range(0, num_users, block):
        rows = min(block, num_users - first)
        if shape.num_clusters <= DRAWS_PER_USER:  # Gumbel top-k: exact draws without replacement
            keys = np.log(items.cluster_probability)[np.newaxis] + rng.gumbel(size=(rows, shape.num_clusters))
            followed[first:first + rows] = np.argsort(-keys, axis=1)[:, :width]
        else:  # the first distinct values of DRAWS_PER_USER draws with replacement
            followed[first:first + rows] = first_distinct(
                rng.choice(shape.num_clusters, size=(rows, DRAWS_PER_USER), p=items.cluster_probability), width)
    return count, followed


def first_distinct(draws: np.ndarray, width: int) -> np.ndarray:
    """[rows, width]: each row's first `width` distinct values of `draws` [rows, m], in draw order (a row with
    fewer repeats its first value)."""
    order = np.argsort(draws, axis=1, kind="stable")
    ordered = np.take_along_axis(draws, order, axis=1)
    repeat = np.zeros_like(ordered, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    position = np.where(repeat, draws.shape[1], order)  # a repeat sorts after every first occurrence
    firsts = np.sort(position, axis=1)[:, :width]
    firsts = np.where(firsts == draws.shape[1], firsts[:, :1], firsts)
    return np.take_along_axis(draws, firsts, axis=1)


def write_log(shape: LogShape, output_dir: str, progress: bool = True) -> dict:
    """Writes the log and its truth into `output_dir` (created; its files replaced); returns generator.json."""
    os.makedirs(output_dir, exist_ok=True)
    items = catalogue(shape)
    lengths = user_lengths(shape)
    count, followed = followed_clusters(shape, items, len(lengths))
    item_ids = np.char.add("i", items.ids.astype(str)).astype(object)
    cluster_of = np.repeat(np.arange(shape.num_clusters), items.sizes)
    temporary = os.path.join(output_dir, f".{EVENTS_FILE}.partial")
    written = 0
    with gzip.open(temporary, "wt", compresslevel=1, newline="") as stream:
        stream.write("user_id,item_id,timestamp\n")
        for chunk in user_chunks(shape, items, lengths, count, followed):
            stream.write("".join(f"u{user},{item},{time}\n" for user, item, time in zip(
                chunk.users.tolist(), item_ids[chunk.items].tolist(), chunk.timestamps.tolist())))
            written += len(chunk.users)
            if progress:
                print(f"events written: {written:,} of {shape.num_events:,}", file=sys.stderr, flush=True)
    os.replace(temporary, os.path.join(output_dir, EVENTS_FILE))
    _write_text(os.path.join(output_dir, CLUSTERS_FILE), "item_id,cluster\n" + "".join(
        f"{item},c{cluster}\n" for item, cluster in zip(item_ids.tolist(), cluster_of.tolist())))
    _write_text(os.path.join(output_dir, USERS_FILE), "user_id,clusters\n" + "".join(
        f"u{user},{clusters}\n" for user, clusters in enumerate(count.tolist())))
    parameters = {**dataclasses.asdict(shape), "num_clusters": shape.num_clusters, "num_users": len(lengths),
                  "events": written, "users_by_clusters_followed": {
                      str(k): int((count == k).sum()) for k in range(1, followed.shape[1] + 1)}}
    _write_text(os.path.join(output_dir, PARAMETERS_FILE), json.dumps(parameters, indent=2) + "\n")
    return parameters


def _write_text(path: str, text: str) -> None:
    with open(path + ".partial", "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(path + ".partial", path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, required=True, help="catalogue size")
    parser.add_argument("--events", type=int, required=True, help="interactions in the log")
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cluster-size", type=int, default=LogShape.cluster_size)
    parser.add_argument("--mean-events-per-user", type=float, default=LogShape.mean_events_per_user)
    parser.add_argument("--max-clusters-per-user", type=int, default=LogShape.max_clusters_per_user)
    parser.add_argument("--stay", type=float, default=LogShape.stay)
    parser.add_argument("--popularity-exponent", type=float, default=LogShape.popularity_exponent)
    args = parser.parse_args(argv)
    try:
        shape = LogShape(args.items, args.events, args.seed, args.cluster_size, args.mean_events_per_user,
                         args.max_clusters_per_user, args.stay, args.popularity_exponent)
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(write_log(shape, args.output), indent=2))


if __name__ == "__main__":
    main()
