"""The time-based split (`remi prepare --split time --valid-from T1 --test-from T2`): train on the past,
evaluate on the next windows, as a daily retraining loop is judged.

- train: each user's events before T1 (t < T1), with the 5-core filter counted on those events only
  (items seen >= 5 times before T1, then users with >= 5 such events): the vocabulary is what training
  can learn, and the future does not decide what is kept.
- valid: users with events in [T1, T2): history = their events before T1, targets = their events in
  [T1, T2) (the record holds the events before T2 and `history_length` = the events before T1).
- test: users with events from T2 on: history = their events before T2, targets = the events from T2 on.
Every split keeps only events of vocabulary items. A user with targets in a window but no history before
its boundary is a cold user: counted in the manifest, not evaluated. Window events of items outside the
vocabulary (new items) are counted too.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple

import numpy as np

from remi_tf import data_directory
from remi_tf.pipelines import sequences


class TimeBoundaries(NamedTuple):
    """T1 and T2 in the log's timestamp unit (unix seconds for ISO dates): valid [T1, T2), test [T2, ...)."""

    valid_from: int
    test_from: int

    def in_unit(self, time_digits: int) -> TimeBoundaries:
        """The boundaries in the unit of timestamps read with `time_digits` digits of a second (the log's
        integers, which a log with fractional seconds has in seconds, scaled alike)."""
        return TimeBoundaries(data_directory.in_time_unit(self.valid_from, 0, time_digits),
                              data_directory.in_time_unit(self.test_from, 0, time_digits))


def parse_time(text: str, option: str) -> int:
    """`1372636800` (unix seconds) or an ISO date / date-time (`2013-07-01`, UTC unless it has an offset)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected unix seconds or an ISO date such as 2013-07-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())


def parse_boundaries(valid_from: str | None, test_from: str | None) -> TimeBoundaries:
    """--valid-from / --test-from -> TimeBoundaries; both are required and T2 must come after T1."""
    if valid_from is None or test_from is None:
        raise ValueError("--split time needs --valid-from T1 and --test-from T2")
    boundaries = TimeBoundaries(parse_time(valid_from, "--valid-from"), parse_time(test_from, "--test-from"))
    if boundaries.test_from <= boundaries.valid_from:
        raise ValueError(f"--test-from {test_from} ({boundaries.test_from}) must come after --valid-from {valid_from} "
                         f"({boundaries.valid_from}): valid is [T1, T2)")
    return boundaries


def events_before(users: sequences.UserSequences, time: int) -> sequences.UserSequences:
    """Each user's events with timestamp < `time`; users without any are dropped."""
    return sequences.select_events(users, users.timestamps < time, min_length=1)


def split_records(users: sequences.UserSequences, vocabulary: set[bytes], boundaries: TimeBoundaries,
                  num_shards: int, min_user_count: int = sequences.MIN_USER_COUNT
                  ) -> tuple[dict[tuple[str, int], list[sequences.UserRecord]], dict]:
    """The sequence records of every split, and their counts.

    Args:
      users: every user's events (ordered, not filtered).
      vocabulary: the items of the training sequences.

    Returns:
      ((split, shard) -> records in user order, {"splits": {split: counts}, "first_timestamp",
      "last_timestamp", "events_before_valid"}); counts are users and events (in the records), and for
      valid/test targets, cold_users, window_events and window_events_unknown_items.
    """
    known_item = np.fromiter((item in vocabulary for item in users.item_ids), bool, len(users.item_ids))
    known_event = known_item[users.item_codes]
    window_of_event = np.searchsorted(np.array(boundaries), users.timestamps, side="right")  # 0 train, 1, 2
    counts: dict = {"train": {"users": 0, "events": 0}}
    for window, split in ((1, "valid"), (2, "test")):
        in_window = window_of_event == window
        counts[split] = {"users": 0, "events": 0, "targets": 0, "cold_users": 0,
                         "window_events": int(in_window.sum()),
                         "window_events_unknown_items": int((in_window & ~known_event).sum())}
    kept = sequences.select_events(users, known_event, min_length=1)
    items, timestamps = kept.item_ids[kept.item_codes].tolist(), kept.timestamps.tolist()
    records: dict[tuple[str, int], list[sequences.UserRecord]] = {}

    def add(split: str, user: bytes, start: int, end: int, history_length: int | None) -> None:
        serialized = data_directory.encode_sequence(user, items[start:end], timestamps[start:end], history_length)
        records.setdefault((split, sequences.shard_of(user, num_shards)), []).append((user, serialized, end - start))
        counts[split]["users"] += 1
        counts[split]["events"] += end - start

    for user, start, end in zip(kept.users, kept.offsets[:-1].tolist(), kept.offsets[1:].tolist(), strict=True):
        before_valid, before_test = np.searchsorted(kept.timestamps[start:end], boundaries).tolist()
        if before_valid >= min_user_count:
            add("train", user, start, start + before_valid, None)
        for split, history, window_end in (("valid", before_valid, before_test), ("test", before_test, end - start)):
            if window_end > history:
                if history:
                    add(split, user, start, start + window_end, history)
                    counts[split]["targets"] += window_end - history
                else:
                    counts[split]["cold_users"] += 1
    report = {"splits": counts, "events_before_valid": int((window_of_event == 0).sum()),
              "first_timestamp": int(users.timestamps.min(initial=np.iinfo(np.int64).max)),
              "last_timestamp": int(users.timestamps.max(initial=np.iinfo(np.int64).min))}
    return records, report


def check_windows(report: dict, boundaries: TimeBoundaries, time_digits: int = 0) -> None:
    """Stops a time split whose boundaries leave a split without events (a boundary outside the log);
    `boundaries` and the report's times hold `time_digits` digits of a second."""
    def date(timestamp: int) -> str:
        return _date(timestamp // 10 ** time_digits)

    unit = f" {data_directory.TIME_UNITS[time_digits]}" if time_digits else ""
    span = (f"the log's events span [{report['first_timestamp']}, {report['last_timestamp']}]{unit} "
            f"({date(report['first_timestamp'])} to {date(report['last_timestamp'])})")
    if not report["events_before_valid"]:
        raise ValueError(f"--valid-from {boundaries.valid_from}{unit} ({date(boundaries.valid_from)}): no event is "
                         f"before it, nothing to train on; {span}")
    for split, option, value in (("valid", "--valid-from", boundaries.valid_from),
                                 ("test", "--test-from", boundaries.test_from)):
        if not report["splits"][split]["window_events"]:
            raise ValueError(f"{option} {value}{unit} ({date(value)}): the {split} window has no events; {span}")


def _date(timestamp: int) -> str:
    """The UTC date of unix seconds."""
    try:
        return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).date().isoformat()
    except (OverflowError, OSError, ValueError):
        return "not a date"
