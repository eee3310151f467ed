"""What a log record becomes (an Event) and the dirty-input policy every reader applies.

Dirty input rules (each bad record is named with its file, line or record number, and field):
- a malformed line or record, a missing or empty user/item id, an id that is not valid UTF-8 or holds a tab or
  a line break (CSV quoting allows them; items.tsv and the feature tables could not hold them), a missing,
  non-numeric, fractional, out-of-range (int64) or negative timestamp, a corrupt TFRecord (the rest of that file
  is unreadable): a bad
  record. Up to `max_bad_records` (default 0) are skipped and summarised; one more stops the run.
- an empty file (no events): skipped and counted.
- events whose behavior is not the one asked for (`--behavior pv`; Taobao logs and TFRecord event logs
  with a behavior field): skipped and counted.
Duplicate events and short users are handled later, by the sequence rules (pipelines.sequences).
"""

from __future__ import annotations

import datetime
import math
from collections import Counter
from typing import NamedTuple

# Readers that parse with defaults for the required fields (TFRecord) use this as the missing timestamp.
MISSING_TIMESTAMP = -(2 ** 63)


class Event(NamedTuple):
    user_id: str
    item_id: str
    timestamp: int
    position: tuple[int, int] = (0, 0)  # (file index, record index): breaks timestamp ties in file order
    category: str | None = None
    behavior: str | None = None


class BadRecord(NamedTuple):
    path: str
    position: str  # "line 12" or "record 7"
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.position}: field {self.field!r}: {self.reason}"


class BadRecordLog:
    """Counts skipped input; raises a ValueError naming the record once more than `max_bad_records` are bad."""

    def __init__(self, max_bad_records: int = 0) -> None:
        self.max_bad_records = max_bad_records
        self.bad: Counter = Counter()  # reason -> count
        self.examples: list[str] = []
        self.skipped: Counter = Counter()  # rule -> count (not errors: empty files, other behaviors, ...)

    def add(self, record: BadRecord) -> None:
        self.bad[record.reason] += 1
        if len(self.examples) < 10:
            self.examples.append(str(record))
        total = sum(self.bad.values())
        if total > self.max_bad_records:
            raise ValueError(f"{record} (bad record {total}; --max-bad-records is {self.max_bad_records}: raise it "
                             "to skip such records)")

    def summary(self) -> dict:
        return {"bad_records": sum(self.bad.values()), "bad_by_reason": dict(self.bad),
                "bad_examples": self.examples, "skipped": dict(self.skipped)}


def _is_utf8(value: str) -> bool:
    """False when the text came from bytes that are not UTF-8 (decoded with surrogateescape)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def validate(path: str, position: str, user_id: str, item_id: str, timestamp: str | int
             ) -> BadRecord | tuple[str, str, int]:
    """The shared per-record checks: ids present and UTF-8, timestamp a non-negative integer."""
    def bad(field: str, reason: str) -> BadRecord:
        return BadRecord(path, position, field, reason)

    for field, value in (("user_id", user_id), ("item_id", item_id)):
        if not value:
            return bad(field, "missing or empty")
        if not _is_utf8(value):
            return bad(field, "not valid UTF-8")
        if any(character in value for character in "\t\n\r"):
            return bad(field, f"holds a tab or a line break ({value!r}): ids are written to tab-separated files")
    if isinstance(timestamp, str):
        if not timestamp.strip():
            return bad("timestamp", "missing or empty")
        parsed = parse_timestamp(timestamp)
        if isinstance(parsed, str):
            return bad("timestamp", parsed)
        timestamp = parsed
    if timestamp == MISSING_TIMESTAMP:
        return bad("timestamp", "missing")
    if timestamp < 0:
        return bad("timestamp", f"negative: {timestamp}")
    return user_id, item_id, timestamp


def iso_seconds(text: str) -> float | None:
    """Unix seconds of an ISO 8601 date or time (UTC when it has no offset), or None when it is not one."""
    if not text[:4].isdigit() or "-" not in text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def parse_timestamp(text: str) -> int | str:
    """A timestamp field -> its integer value, or the reason it is bad. Integers, integral decimals
    ("978300760", "978300760.0", "1.2e9") and ISO 8601 times ("2024-05-01T10:00:00Z", "2024-05-01": unix
    seconds, UTC unless the time names its offset) are read; a fractional value is refused rather than
    truncated (events at 1.2 and 1.7 would become one time, and duplicates), as is one outside int64."""
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            iso = iso_seconds(text)
            if iso is None:
                return f"not a number or an ISO 8601 time: {text!r}"
            number = iso
        if not math.isfinite(number):
            return f"not a finite number: {text!r}"
        if not number.is_integer():
            return (f"fractional: {text!r}; timestamps are integer ticks (int64): write them in a finer unit, "
                    "e.g. milliseconds, so that distinct events keep distinct times")
        value = int(number)
    if not -(2 ** 63) < value < 2 ** 63:
        return f"out of range: {text!r} (timestamps are int64)"
    return value
