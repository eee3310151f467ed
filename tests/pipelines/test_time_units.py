"""Fractional seconds (ISO 8601 and decimal) are read exactly, in the coarsest unit that holds them (recorded in the
manifest): a log prepares to the records of the same log written in integer ticks of that unit, order included,
by every path (in memory, spilled to user buckets, Beam, convert) and with a time split."""

import datetime
import os

import pytest
import tensorflow as tf

from remi_tf import data_directory
from remi_tf.pipelines import beam, local, readers, record_checks, tfrecord_logs, time_split
from tests.pipelines.test_local import read_split, write_log

START = 1714557600  # 2024-05-01T10:00:00Z


def timed_rows(num_users=60, events=8, step_ticks=370, digits=3):
    """(user, item, ticks) with several events per second, each user's written newest first: only the fraction
    of a second orders them. Ticks hold `digits` digits of a second."""
    rows = []
    for user in range(num_users):
        for event in reversed(range(events)):
            rows.append((f"u{user}", f"i{(user + event) % 10}", START * 10 ** digits + event * step_ticks + user))
    return rows


def iso(ticks, digits, offset_hours=0):
    """Ticks as an ISO 8601 time with `digits` digits of a second, at a UTC offset of `offset_hours`."""
    seconds, fraction = divmod(ticks, 10 ** digits)
    zone = datetime.timezone(datetime.timedelta(hours=offset_hours))
    moment = datetime.datetime.fromtimestamp(seconds, zone).replace(tzinfo=None).isoformat()
    suffix = "Z" if not offset_hours else f"{offset_hours:+03d}:00"
    return f"{moment}.{fraction:0{digits}d}{suffix}" if digits else moment + suffix


def decimal_seconds(ticks, digits):
    seconds, fraction = divmod(ticks, 10 ** digits)
    return f"{seconds}.{fraction:0{digits}d}"


def data_files(directory):
    """Every file of a data directory but the manifest, by name."""
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))
            if name != data_directory.MANIFEST_FILE}


def test_fractional_iso_and_decimal_seconds_prepare_to_the_records_of_integer_milliseconds(tmp_path):
    rows = timed_rows()
    write_log(tmp_path / "ms.csv", rows)
    write_log(tmp_path / "iso.csv", [(u, i, iso(t, 3, offset_hours=(2 if n % 2 else 0)))
                                     for n, (u, i, t) in enumerate(rows)])
    write_log(tmp_path / "decimal.csv", [(u, i, decimal_seconds(t, 3)) for u, i, t in rows])
    manifests = {name: local.prepare([str(tmp_path / f"{name}.csv")], str(tmp_path / name), progress=False)
                 for name in ("ms", "iso", "decimal")}
    assert [manifests[name]["timestamp_unit"] for name in ("ms", "iso", "decimal")] == ["input", "ms", "ms"]
    expected = read_split(tmp_path / "ms", "train")
    first = next(record for record in expected if record[0] == "u1")  # newest written first, oldest first here
    assert first[2] == sorted(t for u, _, t in rows if u == "u1") and first[1][0] == "i1"
    for name in ("iso", "decimal"):
        assert data_files(tmp_path / name) == data_files(tmp_path / "ms"), name


def test_a_finer_fraction_late_in_a_file_rereads_it_in_the_finer_unit_on_every_path(tmp_path):
    """Milliseconds for more than a block of events, then microseconds: the blocks already read are not read
    twice, and in memory, spilled to buckets and Beam give the records of the same log in integer microseconds."""
    rows = timed_rows(num_users=700, digits=6, step_ticks=370_000)  # whole milliseconds ...
    assert len(rows) > tfrecord_logs.TFRECORD_BATCH + 100
    late = tfrecord_logs.TFRECORD_BATCH + 50
    rows[late] = (rows[late][0], rows[late][1], rows[late][2] + 7)  # ... but one event, past the first block
    write_log(tmp_path / "us.csv", rows)
    write_log(tmp_path / "mixed.csv", [(u, i, decimal_seconds(t, 6).rstrip("0")) for u, i, t in rows])
    assert readers.read_all_blocks([str(tmp_path / "mixed.csv")], None, record_checks.BadRecordLog())[1] == 6
    expected = local.prepare([str(tmp_path / "us.csv")], str(tmp_path / "us"), progress=False, num_shards=2)
    runs = {"memory": local.prepare([str(tmp_path / "mixed.csv")], str(tmp_path / "memory"), progress=False,
                                    num_shards=2),
            "spilled": local.prepare([str(tmp_path / "mixed.csv")], str(tmp_path / "spilled"), progress=False,
                                     num_shards=2, max_events_in_memory=0, bucket_events=1_000),
            "beam": beam.prepare([str(tmp_path / "mixed.csv")], str(tmp_path / "beam"), num_shards=2, progress=False,
                                 pipeline_args=["--runner=DirectRunner", "--direct_num_workers=1"])}
    for name, manifest in runs.items():
        assert manifest["timestamp_unit"] == "us" and manifest["input_events"] == expected["input_events"], name
        assert manifest["splits"] == expected["splits"], name
        assert data_files(tmp_path / name) == data_files(tmp_path / "us"), name


def test_a_time_split_of_fractional_times_cuts_where_the_same_log_in_milliseconds_is_cut(tmp_path):
    rows = [(u, i, t + (n % 3) * 86_400_000) for n, (u, i, t) in enumerate(timed_rows(num_users=90, events=24))]
    write_log(tmp_path / "ms.csv", rows)
    write_log(tmp_path / "iso.csv", [(u, i, iso(t, 3)) for u, i, t in rows])
    boundaries = time_split.parse_boundaries("2024-05-02", "2024-05-03")
    in_ms = time_split.TimeBoundaries(boundaries.valid_from * 1000, boundaries.test_from * 1000)
    expected = local.prepare([str(tmp_path / "ms.csv")], str(tmp_path / "ms"), progress=False, boundaries=in_ms,
                             min_user_count=5)
    got = local.prepare([str(tmp_path / "iso.csv")], str(tmp_path / "iso"), progress=False, boundaries=boundaries,
                        min_user_count=5)
    assert (got["valid_from"], got["test_from"], got["timestamp_unit"]) == (in_ms.valid_from, in_ms.test_from, "ms")
    assert got["splits"] == expected["splits"] and got["splits"]["test"]["targets"] > 0
    assert data_files(tmp_path / "iso") == data_files(tmp_path / "ms")


def test_convert_writes_events_in_the_finer_unit_and_names_it(tmp_path):
    rows = timed_rows(num_users=3, events=2, digits=9, step_ticks=1)  # nanoseconds apart
    write_log(tmp_path / "log.csv", [(u, i, iso(t, 9, offset_hours=-5)) for u, i, t in rows])
    manifest = local.convert([str(tmp_path / "log.csv")], str(tmp_path / "events"), progress=False)
    assert manifest["timestamp_unit"] == "ns" and manifest["events"] == len(rows)
    written = [tf.io.parse_single_example(raw, data_directory.EVENT_FEATURES)["timestamp"].numpy()
               for raw in tf.data.TFRecordDataset(str(tmp_path / "events" / "events-00000-of-00001.tfrecord"))]
    assert written == [t for _, _, t in rows]


@pytest.mark.parametrize("text, digits, expected", [
    ("1714557600", 0, 1714557600),
    ("1714557600.000", 0, 1714557600),  # trailing zeros need no finer unit
    ("1.2e9", 0, 1_200_000_000),
    ("1714557600.5", 3, 1714557600500),
    ("2024-05-01T12:00:00.123456789+02:00", 9, 1714557600123456789),
    ("2024-05-01 10:00:00,25", 6, 1714557600250000),
    ("2024-05-01T10:00:00.1234567891Z", 9, "finer than nanoseconds: '2024-05-01T10:00:00.1234567891Z' (10 digits"),
    ("1714557600000", 9, "out of range: '1714557600000' (timestamps are int64 ns)"),
    ("1e9999999", 0, "out of range: '1e9999999'"),  # not Infinity's OverflowError
    ("-1e999999", 3, "out of range: '-1e999999'"),  # refused before a million-digit product is built
    ("0.000", 0, 0),  # zero needs no finer unit
])
def test_timestamps_are_read_exactly_in_the_unit_asked(text, digits, expected):
    got = record_checks.parse_timestamp(text, digits)
    assert got == expected if isinstance(expected, int) else got.startswith(expected), got


def test_a_fraction_finer_than_the_unit_asks_for_the_coarsest_unit_that_holds_it():
    for text, unit in (("1714557600.1", 3), ("1714557600.1234", 6), ("2024-05-01T10:00:00.1234567Z", 9)):
        with pytest.raises(record_checks.FinerTimeUnit) as raised:
            record_checks.parse_timestamp(text, 0)
        assert raised.value.digits == unit


def test_a_boundary_moves_between_units_without_changing_what_is_before_it():
    assert data_directory.in_time_unit(1714557600, 0, 3) == 1714557600000
    assert data_directory.in_time_unit(1714557600123, 3, 0) == 1714557601  # t < 1714557601 s: t < ...123 ms
    assert data_directory.time_digits({"timestamp_unit": "us"}) == 6 and data_directory.time_digits({}) == 0


def test_a_converted_log_keeps_its_unit_through_prepare(tmp_path):
    rows = timed_rows()
    write_log(tmp_path / "ms.csv", rows)
    write_log(tmp_path / "iso.csv", [(u, i, iso(t, 3)) for u, i, t in rows])
    local.convert([str(tmp_path / "iso.csv")], str(tmp_path / "events"), num_shards=2, progress=False)
    expected = local.prepare([str(tmp_path / "ms.csv")], str(tmp_path / "ms"), progress=False)
    for source in (str(tmp_path / "events"), str(tmp_path / "events" / "events-00000-of-00002.tfrecord")):
        got = local.prepare([source], str(tmp_path / "data"), progress=False, overwrite=True)
        assert got["timestamp_unit"] == "ms", source
        if source.endswith("events"):  # both shards: every event
            assert data_files(tmp_path / "data") == data_files(tmp_path / "ms")
    assert expected["timestamp_unit"] == "input"


def test_a_manifest_naming_an_unknown_time_unit_is_refused_naming_the_units():
    from remi_tf import data_directory

    assert [data_directory.time_digits({"timestamp_unit": unit}) for unit in ("input", "ms", "us", "ns")] == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="timestamp_unit 'ps' is not one of input, ms, us, ns"):
        data_directory.time_digits({"timestamp_unit": "ps"})
