"""What a log record becomes (an Event) and the dirty-input policy every reader applies.

Dirty input rules (each bad record is named with its file, line or record number, and field):
- a malformed line or record, a missing or empty user/item id, an id that is not valid UTF-8 or holds a tab or
  a line break (CSV quoting allows them; items.tsv and the feature tables could not hold them), a missing,
  non-numeric, out-of-range (int64), negative or finer than nanoseconds timestamp, a corrupt TFRecord (the rest of
  that file is unreadable): a bad record. Up to `max_bad_records` (default 0) are skipped and summarised; one
  more stops the run.
- an empty file (no events): skipped and counted.
- events whose behavior is not the one asked for (`--behavior pv`; Taobao logs and TFRecord event logs
  with a behavior field): skipped and counted.
Duplicate events and short users are handled later, by the sequence rules (pipelines.sequences).
"""

from __future__ import annotations

import datetime
import decimal
import re
from collections import Counter
from typing import NamedTuple

from remi_tf import data_directory

# Readers that parse with defaults for the required fields (TFRecord) use this as the missing timestamp.
MISSING_TIMESTAMP = -(2 ** 63)

TIME_UNITS = data_directory.TIME_UNITS  # digits of a second -> the unit's name


class FinerTimeUnit(Exception):
    """A timestamp with more digits of a second than the unit being read holds: the reader starts over in the
    unit of `digits` (readers.read_timed_blocks). Not a bad record."""

    def __init__(self, digits: int, message: str) -> None:
        super().__init__(message)
        self.digits = digits


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


def validate(path: str, position: str, user_id: str, item_id: str, timestamp: str | int, time_digits: int = 0
             ) -> BadRecord | tuple[str, str, int]:
    """The shared per-record checks: ids present and UTF-8, timestamp a non-negative integer; a text timestamp
    is read in the unit of `time_digits` digits of a second (parse_timestamp)."""
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
        try:
            parsed = parse_timestamp(timestamp, time_digits)
        except FinerTimeUnit as finer:
            raise FinerTimeUnit(finer.digits, f"{path}: {position}: {finer}") from None
        if isinstance(parsed, str):
            return bad("timestamp", parsed)
        timestamp = parsed
    if timestamp == MISSING_TIMESTAMP:
        return bad("timestamp", "missing")
    if timestamp < 0:
        return bad("timestamp", f"negative: {timestamp}")
    return user_id, item_id, timestamp


_ISO_FRACTION = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})[.,](\d+)(.*)$")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_EXACT = decimal.Context(prec=80, traps=[decimal.InvalidOperation])  # exact for any int64 count of any unit


def iso_seconds(text: str) -> decimal.Decimal | None:
    """Unix seconds of an ISO 8601 date or time (UTC when it has no offset), exactly (a fraction of any length
    kept), or None when it is not one."""
    if not text[:4].isdigit() or "-" not in text:
        return None
    fraction = decimal.Decimal(0)
    if match := _ISO_FRACTION.match(text):  # fromisoformat keeps microseconds at most: the fraction apart
        text, fraction = match.group(1) + match.group(3), decimal.Decimal("0." + match.group(2))
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    since = moment - _EPOCH
    return (since.days * 86_400 + since.seconds) + decimal.Decimal(since.microseconds).scaleb(-6) + fraction


def _seconds(text: str) -> decimal.Decimal | str:
    """A decimal number or an ISO 8601 time as exact seconds, or the reason it is neither."""
    try:
        seconds = decimal.Decimal(text)
    except decimal.InvalidOperation:
        iso = iso_seconds(text)
        return f"not a number or an ISO 8601 time: {text!r}" if iso is None else iso
    return seconds if seconds.is_finite() else f"not a finite number: {text!r}"


INT64_DIGITS = 18  # a value of 10^19 seconds or more is outside int64 in any unit


def fraction_digits(seconds: decimal.Decimal) -> int:
    """How many digits of a second `seconds` needs (trailing zeros do not count)."""
    _, coefficient, exponent = seconds.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0 or seconds.is_zero():
        return 0
    significant = "".join(map(str, coefficient)).rstrip("0")
    return max(0, -exponent - (len(coefficient) - len(significant)))


def parse_timestamp(text: str, time_digits: int = 0) -> int | str:
    """A timestamp field -> its integer value in the unit of `time_digits` digits of a second (0: the value as
    written), or the reason it is bad. Integers ("978300760"), decimals ("978300760.0", "1.2e9",
    "1714557600.123": seconds, with a fraction) and ISO 8601 times ("2024-05-01T10:00:00.123456Z", "2024-05-01",
    "2024-05-01T12:00:00+02:00": unix seconds, UTC unless the time names its offset) are read exactly. A value
    with more digits of a second than the unit holds raises FinerTimeUnit (the reader starts over in a finer
    unit); one finer than nanoseconds or outside int64 in the unit is bad."""
    text = text.strip()
    try:
        value = int(text) * 10 ** time_digits
    except ValueError:
        seconds = _seconds(text)
        if isinstance(seconds, str):
            return seconds
        if seconds.adjusted() > INT64_DIGITS:  # before the exact product: 1e999999 has a million digits
            return f"out of range: {text!r} (timestamps are int64)"
        needed = fraction_digits(seconds)
        if needed > max(TIME_UNITS):
            return f"finer than nanoseconds: {text!r} ({needed} digits of a second)"
        if needed > time_digits:
            unit = min(digits for digits in TIME_UNITS if digits >= needed)
            raise FinerTimeUnit(unit, f"timestamp {text!r} has {needed} digit(s) of a second: read in "
                                      f"{TIME_UNITS[unit]}") from None
        value = int(_EXACT.multiply(seconds, decimal.Decimal(10) ** time_digits))
    if not -(2 ** 63) < value < 2 ** 63:
        return f"out of range: {text!r} (timestamps are int64" + (
            f" {TIME_UNITS[time_digits]})" if time_digits else ")")
    return value
