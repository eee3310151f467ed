"""Outputs appear whole or not at all: --overwrite replaces by renames, and what killed runs left behind
(temporaries, an old output set aside) is cleaned up or put back by the next run."""

import os
import subprocess

import pytest

from remi_tf import atomic


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def build_with(text: str):
    def build(directory: str) -> None:
        with open(os.path.join(directory, "manifest.json"), "w") as stream:
            stream.write(text)
    return build


def read(path) -> str:
    return open(os.path.join(path, "manifest.json")).read()


def test_overwrite_replaces_and_a_failed_build_keeps_the_old_output(tmp_path):
    output = str(tmp_path / "out")
    atomic.publish_directory(build_with("old"), output)
    with pytest.raises(FileExistsError, match="--overwrite"):
        atomic.publish_directory(build_with("new"), output)

    def failing(directory: str) -> None:
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        atomic.publish_directory(failing, output, overwrite=True)
    assert read(output) == "old" and os.listdir(tmp_path) == ["out"]
    atomic.publish_directory(build_with("new"), output, overwrite=True)
    assert read(output) == "new" and os.listdir(tmp_path) == ["out"]


def test_a_kill_between_the_renames_loses_nothing(tmp_path, monkeypatch):
    output = str(tmp_path / "out")
    atomic.publish_directory(build_with("old"), output)
    real_replace, calls = os.replace, []

    def killed_after_setting_aside(source, target):
        calls.append(target)
        if len(calls) == 2:  # the old output is aside, the new one not yet in
            raise KeyboardInterrupt("killed")
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", killed_after_setting_aside)
    with pytest.raises(KeyboardInterrupt):
        atomic.publish_directory(build_with("new"), output, overwrite=True)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    aside = [name for name in os.listdir(tmp_path) if name.startswith(".out.old-")]
    assert not os.path.exists(output) and len(aside) == 1
    # the killed run's process is gone: give the aside copy a dead pid, as a later run would find it
    stale = f".out.old-{dead_pid()}-{aside[0].split('-', 2)[2]}"
    os.rename(tmp_path / aside[0], tmp_path / stale)
    with pytest.raises(FileExistsError):  # the next run puts the old output back, then refuses to replace it
        atomic.publish_directory(build_with("newer"), output)
    assert read(output) == "old" and os.listdir(tmp_path) == ["out"]


def test_stale_temporaries_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    stale = tmp_path / f".out.tmp-{dead_pid()}-abcd"
    live = tmp_path / f".out.tmp-{os.getpid()}-efgh"  # this process: a run in progress
    other = tmp_path / f".other.tmp-{dead_pid()}-ijkl"  # another output's
    for directory in (stale, live, other):
        directory.mkdir()
        (directory / "part").write_text("x")
    atomic.publish_directory(build_with("new"), str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == sorted(["out", live.name, other.name])


def test_a_leftover_named_by_an_impossible_process_id_is_swept(tmp_path):
    """A `.NAME.tmp-PID-*` whose PID no process can have (os.kill raises OverflowError) is a killed run's."""
    (tmp_path / f".out.tmp-{10 ** 30}-x").mkdir()
    atomic.sweep_stale(str(tmp_path), "out")
    assert not os.listdir(tmp_path)
