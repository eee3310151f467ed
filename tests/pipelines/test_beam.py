"""The Beam pipeline equals the in-process path record by record; splits are deterministic."""

import os

from pipelines import beam, local, schema
from tests.pipelines.test_dirty_input import write_events
from tests.pipelines.test_local import planted_log, read_split, write_log


def test_beam_output_equals_the_in_process_output(tmp_path, datasets_dir):
    inter = os.path.join(datasets_dir, "ml-100k-recbole", "ml-100k.inter")
    beam_manifest = beam.prepare([inter], str(tmp_path / "beam"), num_shards=3,
                                 pipeline_args=["--runner=DirectRunner", "--direct_num_workers=1"])
    local_manifest = local.prepare([inter], str(tmp_path / "local"), num_shards=3, progress=False)
    names = sorted(os.listdir(tmp_path / "local"))
    assert names == sorted(os.listdir(tmp_path / "beam"))
    for name in names:
        if name != "manifest.json":
            assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "beam" / name).read_bytes(), name
    for key in ("input_events", "num_items", "splits", "cleaning"):
        assert beam_manifest[key] == local_manifest[key], key


def test_beam_counts_bad_records_and_publishes_nothing_when_over_the_limit(tmp_path):
    rows = planted_log()
    write_log(tmp_path / "log.csv", rows + [("u1", "i1", "-1")])
    try:
        beam.prepare([str(tmp_path / "log.csv")], str(tmp_path / "out"), pipeline_args=["--runner=DirectRunner"])
        raise AssertionError("expected a ValueError")
    except ValueError as error:
        assert "field 'timestamp': negative" in str(error)
    assert not os.path.exists(tmp_path / "out")
    manifest = beam.prepare([str(tmp_path / "log.csv")], str(tmp_path / "out"), max_bad_records=1,
                            pipeline_args=["--runner=DirectRunner"])
    assert manifest["cleaning"]["bad_records"] == 1


def test_split_is_the_same_across_runs_and_shard_counts(tmp_path):
    rows = planted_log(num_users=120)
    write_events(tmp_path / "events.tfrecord", rows)
    assignments = []
    for run, shards in enumerate((1, 4, 4)):
        out = tmp_path / f"out{run}"
        local.prepare([str(tmp_path / "events.tfrecord")], str(out), num_shards=shards, progress=False)
        assignments.append({split: sorted(user for user, _, _ in read_split(out, split)) for split in schema.SPLITS})
    assert assignments[0] == assignments[1] == assignments[2]
    assert sum(len(users) for users in assignments[0].values()) == 120
