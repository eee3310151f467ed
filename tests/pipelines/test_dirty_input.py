"""Dirty input: each case is handled by its documented rule or stops with an error naming file, position
and field; --max-bad-records decides when to stop; the summary lands in the manifest."""

import json
import os
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import data_directory
from remi_tf.pipelines import beam, local, readers
from tests.pipelines.test_local import planted_log, write_log


def prepare(tmp_path, paths, **kwargs):
    return local.prepare([str(p) for p in paths], str(tmp_path / "out"), progress=False, overwrite=True, **kwargs)


@pytest.mark.parametrize("row, message", [
    ("u1,i1", "line 2: field '(line)': expected 3 fields, got 2"),
    (",i1,5", "line 2: field 'user_id': missing or empty"),
    ("u1,,5", "line 2: field 'item_id': missing or empty"),
    ("u1,i1,", "line 2: field 'timestamp': missing or empty"),
    ("u1,i1,-3", "line 2: field 'timestamp': negative: -3"),
    ("u1,i1,noon", "line 2: field 'timestamp': not a number or an ISO 8601 time: 'noon'"),
    ("u1,i1,1e20", "line 2: field 'timestamp': out of range: '1e20' (timestamps are int64)"),
    ("u1,i1,9223372036854775808", "line 2: field 'timestamp': out of range"),
    ("u1,i1,1.1234567891", "line 2: field 'timestamp': finer than nanoseconds: '1.1234567891' (10 digits"),
    ("u1,i1,nan", "line 2: field 'timestamp': not a finite number: 'nan'"),
    ('u1,"i\t1",5', "line 2: field 'item_id': holds a tab or a line break"),
])
def test_bad_lines_stop_the_run_by_default_and_are_skipped_when_allowed(tmp_path, row, message):
    good = "\n".join(",".join(map(str, r)) for r in planted_log())
    (tmp_path / "log.csv").write_text(f"user_id,item_id,timestamp\n{row}\n{good}\n")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare(tmp_path, [tmp_path / "log.csv"])
    assert not os.path.exists(tmp_path / "out")
    manifest = prepare(tmp_path, [tmp_path / "log.csv"], max_bad_records=1)
    assert manifest["cleaning"]["bad_records"] == 1
    assert message.split(": ", 2)[-1] in json.dumps(manifest["cleaning"])
    assert json.load(open(tmp_path / "out" / "manifest.json"))["cleaning"]["bad_records"] == 1


def test_non_utf8_ids_are_bad_records(tmp_path):
    good = "\n".join(",".join(map(str, r)) for r in planted_log()).encode()
    (tmp_path / "log.csv").write_bytes(b"user_id,item_id,timestamp\nu1,caf\xe9,3\n" + good + b"\n")
    with pytest.raises(ValueError, match="line 2: field 'item_id': not valid UTF-8"):
        prepare(tmp_path, [tmp_path / "log.csv"])


def test_duplicates_short_users_and_empty_files_follow_the_rules(tmp_path):
    rows = planted_log()
    write_log(tmp_path / "log.csv", rows + rows[:8])  # u0's 8 events logged twice
    (tmp_path / "empty.csv").write_text("user_id,item_id,timestamp\n")
    (tmp_path / "blank.csv").write_text("")
    manifest = prepare(tmp_path, [tmp_path / "log.csv", tmp_path / "empty.csv", tmp_path / "blank.csv"])
    cleaning = manifest["cleaning"]
    assert cleaning["duplicate_events_removed"] == 8
    assert cleaning["skipped"] == {"empty_files": 2}
    assert cleaning["users_below_min_count"] == 1  # the user with one event
    assert manifest["input_events"] == len(rows) + 8


def write_events(path, events, compress=False):
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for event in events:
            writer.write(event if isinstance(event, bytes) else data_directory.encode_event(*event))


def test_tfrecord_event_logs_plain_and_gzip_match_csv(tmp_path):
    rows = planted_log()
    write_log(tmp_path / "log.csv", rows)
    write_events(tmp_path / "a.tfrecord", [(u, i, t) for u, i, t in rows[:200]])
    write_events(tmp_path / "b.tfrecord.gz", [(u, i, t) for u, i, t in rows[200:]], compress=True)
    from_csv = local.prepare([str(tmp_path / "log.csv")], str(tmp_path / "csv"), progress=False)
    from_records = local.prepare([str(tmp_path / "*.tfrecord*")], str(tmp_path / "rec"), file_format="tfrecord",
                                 progress=False)
    assert from_csv["splits"] == from_records["splits"]
    for name in os.listdir(tmp_path / "csv"):
        if name != "manifest.json":
            assert (tmp_path / "csv" / name).read_bytes() == (tmp_path / "rec" / name).read_bytes(), name


def test_bad_and_corrupt_tfrecords_name_the_record(tmp_path):
    rows = [(u, i, t) for u, i, t in planted_log()]
    missing_user = tf.train.Example(features=tf.train.Features(feature={
        "item_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"i1"])),
        "timestamp": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))})).SerializeToString()
    write_events(tmp_path / "events.tfrecord", rows[:5] + [missing_user] + rows[5:])
    with pytest.raises(ValueError, match=r"events.tfrecord: record 5: field 'user_id': missing"):
        local.prepare([str(tmp_path / "events.tfrecord")], str(tmp_path / "out"), progress=False)
    write_events(tmp_path / "good.tfrecord", rows)
    data = (tmp_path / "good.tfrecord").read_bytes()
    (tmp_path / "corrupt.tfrecord").write_bytes(data[:len(data) // 2] + b"\x00garbage" + data[len(data) // 2 + 8:])
    with pytest.raises(ValueError, match=r"corrupt.tfrecord: record \d+: field '\(file\)': corrupt TFRecord"):
        local.prepare([str(tmp_path / "corrupt.tfrecord")], str(tmp_path / "out"), progress=False)
    manifest = local.prepare([str(tmp_path / "corrupt.tfrecord")], str(tmp_path / "out"), progress=False,
                             max_bad_records=1)
    assert 0.4 * len(rows) < manifest["input_events"] < 0.6 * len(rows)  # the records before the corruption
    assert manifest["cleaning"]["bad_records"] == 1
    # Several shards are first read in parallel assuming clean input; a bad one sends every file through
    # the careful path, which names the same records and keeps the same events.
    with pytest.raises(ValueError, match=r"events.tfrecord: record 5: field 'user_id': missing"):
        local.prepare([str(tmp_path / "good.tfrecord"), str(tmp_path / "events.tfrecord")], str(tmp_path / "out2"),
                      progress=False)
    both = local.prepare([str(tmp_path / "good.tfrecord"), str(tmp_path / "corrupt.tfrecord")],
                         str(tmp_path / "out2"), progress=False, max_bad_records=1)
    assert both["input_events"] == len(rows) + manifest["input_events"]
    assert both["cleaning"]["bad_records"] == 1 and "corrupt.tfrecord" in both["cleaning"]["bad_examples"][0]


def test_taobao_raw_format_with_behavior_filter(tmp_path, datasets_dir):
    path = os.path.join(datasets_dir, "taobao-userbehavior-sample", "UserBehavior.csv")
    summary = local.convert([path], str(tmp_path / "events"), file_format="taobao", behavior="pv", num_shards=2,
                            compress=True, progress=False)
    lines = open(path).read().splitlines()
    pv = [line.split(",") for line in lines if line.split(",")[3] == "pv"]
    assert summary["events"] == len(pv) and summary["cleaning"]["skipped"]["other_behavior"] == len(lines) - len(pv)
    records = [tf.io.parse_single_example(r, data_directory.EVENT_FEATURES) for r in tf.data.TFRecordDataset(
        sorted(str(p) for p in (tmp_path / "events").glob("events-*.tfrecord.gz")), compression_type="GZIP")]
    assert sorted((r["user_id"].numpy().decode(), r["item_id"].numpy().decode(), int(r["timestamp"]),
                   r["category"].numpy().decode(), r["behavior"].numpy().decode()) for r in records) == \
        sorted((u, i, int(t), c, b) for u, i, c, b, t in pv)


@pytest.mark.parametrize("num_shards", [1, 3])  # one shard: the careful reader; several: the parallel one
def test_behavior_filter_on_tfrecord_event_logs_matches_the_taobao_csv(tmp_path, datasets_dir, num_shards):
    path = os.path.join(datasets_dir, "taobao-userbehavior-sample", "UserBehavior.csv")
    local.convert([path], str(tmp_path / "events"), file_format="taobao", num_shards=num_shards, progress=False)
    from_csv = local.prepare([path], str(tmp_path / "csv"), file_format="taobao", behavior="pv", progress=False)
    from_records = local.prepare([str(tmp_path / "events" / "events-*.tfrecord")], str(tmp_path / "rec"),
                                 behavior="pv", progress=False)
    lines = open(path).read().splitlines()
    other = sum(line.split(",")[3] != "pv" for line in lines)
    assert from_records["cleaning"]["skipped"] == from_csv["cleaning"]["skipped"] == {"other_behavior": other}
    assert from_records["input_events"] == from_csv["input_events"] == len(lines) - other
    for name in os.listdir(tmp_path / "csv"):
        if name != "manifest.json":
            assert (tmp_path / "csv" / name).read_bytes() == (tmp_path / "rec" / name).read_bytes(), name


def test_a_log_with_nothing_left_after_the_filters_is_an_error_and_writes_nothing(tmp_path):
    write_log(tmp_path / "log.csv", [(f"u{u}", f"i{u}", t) for u in range(20) for t in range(4)])  # 4 events each
    for runner in (local, beam):
        with pytest.raises(ValueError, match=r"log.csv'\]: no user has >= 5 interactions .* nothing to train on"):
            runner.prepare([str(tmp_path / "log.csv")], str(tmp_path / "out"), progress=False)
        assert not os.path.exists(tmp_path / "out")


def test_integral_decimal_timestamps_are_read_exactly(tmp_path):
    """RecBole writes timestamps as floats: "881250949.0" and "8.8125095e8" are the integers they spell."""
    rows = [(u, i, t) for u, i, t in planted_log()]
    write_log(tmp_path / "ints.csv", rows)
    write_log(tmp_path / "floats.csv", [(u, i, f"{t}.0" if n % 2 else f"{t * 10}e-1") for n, (u, i, t) in
                                        enumerate(rows)])
    ints = prepare(tmp_path, [tmp_path / "ints.csv"])
    ints_files = {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")
                  if name != "manifest.json"}
    floats = prepare(tmp_path, [tmp_path / "floats.csv"])
    assert floats["input_events"] == ints["input_events"] == len(rows)
    for name, content in ints_files.items():
        assert (tmp_path / "out" / name).read_bytes() == content, name


def test_a_byte_order_mark_is_read(tmp_path):
    write_log(tmp_path / "log.csv", planted_log())
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "log.csv").read_bytes())
    with_bom = prepare(tmp_path, [tmp_path / "bom.csv"])
    assert with_bom["input_events"] == len(planted_log()) and with_bom["cleaning"]["bad_records"] == 0


def test_csv_behavior_filter_reads_a_behavior_column_and_names_a_missing_one(tmp_path):
    rows = planted_log()
    write_log(tmp_path / "log.csv", [(u, i, t, "buy" if n % 3 == 0 else "pv") for n, (u, i, t) in enumerate(rows)],
              header="user_id,item_id,timestamp,behavior")
    manifest = prepare(tmp_path, [tmp_path / "log.csv"], behavior="pv")
    assert manifest["cleaning"]["skipped"]["other_behavior"] == sum(n % 3 == 0 for n in range(len(rows)))
    assert manifest["input_events"] == len(rows) - manifest["cleaning"]["skipped"]["other_behavior"]
    write_log(tmp_path / "plain.csv", rows)
    with pytest.raises(ValueError, match=r"plain.csv: line 1: header .* lacks column\(s\) \['behavior'\] "
                                         r"\(--behavior keeps the events whose behavior column has that value\)"):
        prepare(tmp_path, [tmp_path / "plain.csv"], behavior="pv")


def test_empty_input_and_an_unknown_behavior_get_their_own_messages(tmp_path, datasets_dir):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("user_id,item_id,timestamp\n")
    for name in ("empty.csv", "header.csv"):
        with pytest.raises(ValueError, match=r"no events: the input is empty \(1 empty file\(s\)\)"):
            prepare(tmp_path, [tmp_path / name])
    path = os.path.join(datasets_dir, "taobao-userbehavior-sample", "UserBehavior.csv")
    lines = open(path).read().splitlines()
    for runner in (local, beam):
        with pytest.raises(ValueError, match=rf"no event has behavior 'pvv' \({len(lines):,} events of other "
                                             r"behaviors were skipped; Taobao's are pv, buy, cart, fav\)"):
            runner.prepare([path], str(tmp_path / "out"), file_format="taobao", behavior="pvv", progress=False)
        assert not os.path.exists(tmp_path / "out")


def test_data_without_train_or_valid_users_is_refused_at_prepare(tmp_path):
    """One user (the crash after training of issue 25, item 17) leaves two of the three splits empty."""
    write_log(tmp_path / "one.csv", [("u0", f"i{t % 10}", t) for t in range(60)])
    for runner in (local, beam):
        with pytest.raises(ValueError, match=r"the user split leaves (train|valid)( and valid)? without users "
                                             r"\(1 users kept"):
            runner.prepare([str(tmp_path / "one.csv")], str(tmp_path / "out"), progress=False)
        assert not os.path.exists(tmp_path / "out")


def test_other_column_names_and_iso_timestamps_read_as_the_plain_log(tmp_path):
    """`--columns user=uid,item=sku,timestamp=ts` and ISO 8601 times (UTC, or with an offset) give the bytes
    of the same log with the default header and unix seconds."""
    import datetime

    rows = planted_log()
    base = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)
    seconds = [(u, i, int(base.timestamp()) + 3600 * t) for u, i, t in rows]
    write_log(tmp_path / "plain.csv", seconds)
    iso = [(i, u, (base + datetime.timedelta(hours=t)).isoformat().replace("+00:00", "Z") if n % 2 else
            (base + datetime.timedelta(hours=t)).astimezone(datetime.timezone(datetime.timedelta(hours=2))).isoformat())
           for n, (u, i, t) in enumerate(rows)]
    write_log(tmp_path / "own.csv", iso, header="sku,uid,ts")
    plain = prepare(tmp_path, [tmp_path / "plain.csv"])
    expected = {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")
                if name != "manifest.json"}
    own = prepare(tmp_path, [tmp_path / "own.csv"], columns=readers.parse_columns("user=uid,item=sku,timestamp=ts"))
    assert own["input_events"] == plain["input_events"] == len(rows)
    for name, content in expected.items():
        assert (tmp_path / "out" / name).read_bytes() == content, name
    with pytest.raises(ValueError, match=r"--columns 'user=uid,thing=x': expected FIELD=HEADER pairs"):
        readers.parse_columns("user=uid,thing=x")


def test_the_count_filters_take_other_thresholds_in_process_and_on_beam(tmp_path):
    """--min-item-interactions 3 --min-user-interactions 6: items seen >= 3 times, then users with >= 6 kept
    events (one pass), against a count by hand; Beam writes the same bytes."""
    rng = np.random.default_rng(4)
    rows = [(f"u{u}", f"i{rng.integers(40)}", t) for u in range(120) for t in range(int(rng.integers(4, 10)))]
    write_log(tmp_path / "log.csv", rows)
    item_counts = Counter(item for _, item, _ in rows)
    kept_items = {item for item, count in item_counts.items() if count >= 3}
    user_counts = Counter(user for user, item, _ in rows if item in kept_items)
    kept_users = {user for user, count in user_counts.items() if count >= 6}
    manifest = local.prepare([str(tmp_path / "log.csv")], str(tmp_path / "a"), progress=False, min_item_count=3,
                             min_user_count=6)
    assert sum(split["users"] for split in manifest["splits"].values()) == len(kept_users)
    assert manifest["filters"]["min_item_count"] == 3 and manifest["filters"]["min_user_count"] == 6
    assert manifest["num_items"] == len({item for user, item, _ in rows if user in kept_users and item in kept_items})
    beam.prepare([str(tmp_path / "log.csv")], str(tmp_path / "b"), progress=False, min_item_count=3, min_user_count=6)
    for name in os.listdir(tmp_path / "a"):
        if name != "manifest.json":
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with pytest.raises(ValueError, match=r"--min-user-interactions must be >= 5"):
        local.prepare([str(tmp_path / "log.csv")], str(tmp_path / "c"), progress=False, min_user_count=3)


def test_min_rating_keeps_the_events_rated_at_least_r(tmp_path, datasets_dir):
    """A CSV's rating column (named by --columns) and RecBole's rating:float: events below R are skipped and
    counted, the rest read as without the filter; a non-numeric rating is a bad record."""
    rows = planted_log()
    write_log(tmp_path / "rated.csv", [(u, i, t, 1 + n % 5) for n, (u, i, t) in enumerate(rows)],
              header="user_id,item_id,timestamp,stars")
    write_log(tmp_path / "kept.csv", [(u, i, t) for n, (u, i, t) in enumerate(rows) if 1 + n % 5 >= 2])
    expected = prepare(tmp_path, [tmp_path / "kept.csv"])
    files = {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")
             if name != "manifest.json"}
    rated = prepare(tmp_path, [tmp_path / "rated.csv"], columns=readers.parse_columns("rating=stars"), min_rating=2)
    assert rated["cleaning"]["skipped"]["below_min_rating"] == len(rows) - expected["input_events"]
    for name, content in files.items():
        assert (tmp_path / "out" / name).read_bytes() == content, name
    inter = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    lines = open(inter).read().splitlines()[1:]
    recbole = local.prepare([inter], str(tmp_path / "ml"), progress=False, min_rating=4)
    assert recbole["input_events"] == sum(float(line.split("\t")[2]) >= 4 for line in lines)
    (tmp_path / "bad.csv").write_text("user_id,item_id,timestamp,rating\nu1,i1,5,good\n")
    with pytest.raises(ValueError, match=r"bad.csv: line 2: field 'rating': not a number: 'good'"):
        prepare(tmp_path, [tmp_path / "bad.csv"], min_rating=4)


@pytest.mark.parametrize("name, header, expected", [
    # the header's own names guessed for the fields (issue 40 item 7)
    ("own.csv", "uid,movie,ts,rating", "--columns user=uid,item=movie,timestamp=ts"),
    ("shop.csv", "customer_id,sku,event_time", "--columns user=customer_id,item=sku,timestamp=event_time"),
    ("camel.csv", "userId,productId,date", "--columns user=userId,item=productId,timestamp=date"),
    ("partly.csv", "user_id,article_code,timestamp", "--columns user=user_id,item=...,timestamp=timestamp"),
    # a near miss of an expected name is named too (issue 40 item 6)
    ("typo.csv", "user_id,item_idd,timestamp", "lacks column(s) ['item_id'] (did you mean item_idd?)"),
    # the delimiter the name promises is not the one the header uses
    ("commas.tsv", "user_id,item_id,timestamp", "the file's delimiter looks like ',' but its name says TSV "
                                                "(--format csv reads it)"),
    ("tabs.csv", "user_id\titem_id\ttimestamp", "the file's delimiter looks like a tab but its name says CSV "
                                                "(--format tsv reads it)"),
])
def test_a_header_without_the_expected_columns_says_what_it_found_and_the_fix(tmp_path, name, header, expected):
    delimiter = "\t" if "\t" in header else ","
    (tmp_path / name).write_text(header + "\n" + delimiter.join(["u1", "i1", "1", "5"][:header.count(delimiter) + 1])
                                 + "\n")
    with pytest.raises(ValueError) as error:
        readers.read_event_batches(str(tmp_path / name)).__next__()
    message = str(error.value)
    assert f"{name}: line 1: header " in message and expected in message, message
    assert header.split(delimiter)[0] in message  # what it found


def test_columns_naming_a_missing_header_name_get_the_closest(tmp_path):
    (tmp_path / "log.csv").write_text("uid,sku,ts\nu1,i1,1\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['skus'\] \(did you mean sku\?\)"):
        readers.read_event_batches(str(tmp_path / "log.csv"), columns={"user_id": "uid", "item_id": "skus",
                                                                       "timestamp": "ts"}).__next__()


def test_a_misspelt_columns_field_names_the_closest():
    with pytest.raises(ValueError, match=r"FIELD one of user, item, timestamp, behavior, rating .*; FIELD 'usr' "
                                         r"\(did you mean user\?\)"):
        readers.parse_columns("usr=uid,item=sku,timestamp=ts")
