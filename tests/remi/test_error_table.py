"""Every error of the command line ends in one line naming the input and the fix, with exit code 2 for a
usage error (bad input, arguments or configuration) and 1 for a failure (issue 25): the error table of
remi/cli.py (`exit_code`), a row per case, run as a user runs them (a subprocess), and the last-resort
handler with --debug."""

import os
import socket
import subprocess
import sys

import pytest

from remi import cli
from tests import synthetic

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_remi(*arguments, timeout=120):
    """`python -m remi ARGUMENTS` -> (exit code, stderr)."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPOSITORY}
    done = subprocess.run([sys.executable, "-m", "remi", *map(str, arguments)], capture_output=True, text=True,
                          timeout=timeout, env=environment, cwd=REPOSITORY)
    return done.returncode, done.stderr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    data = synthetic.prepared_clusters(root, num_users=200, num_clusters=6, items_per_cluster=10, clusters_per_user=2,
                                       length=12, seed=1)
    lines = open(root / "data.csv").read().splitlines()
    (root / "huge_time.csv").write_text("\n".join(lines[:3] + [lines[3].rsplit(",", 1)[0] + ",1e20"] + lines[4:]))
    (root / "broken.yaml").write_text("num_interests: [4\n")
    truncated = root / "truncated"
    os.makedirs(truncated)
    for name in os.listdir(data):
        content = open(os.path.join(data, name), "rb").read()
        open(truncated / name, "wb").write(content[:-20] if name.startswith("train-") else content)
    return root


def error_line(stderr, command):
    """The error line; the rest of stderr may be argparse's usage or TensorFlow's start-up logging, never a
    traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"remi {command}: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


# (arguments, exit code, what the one line says); {root} is the fixture's directory.
CASES = [
    (["prepare", "--input", "{root}/huge_time.csv", "--output", "{root}/o1"], 2,
     "huge_time.csv: line 4: field 'timestamp': out of range: '1e20'"),  # was OverflowError
    (["prepare", "--input", "{root}/data.csv", "--output", "{root}/o2", "--num-shards", "0"], 2,
     "argument --num-shards: expected an integer >= 1, got 0"),  # was ZeroDivisionError
    (["convert", "--input", "{root}/data.csv", "--output", "{root}/o3", "--num-shards", "-2"], 2,
     "argument --num-shards: expected an integer >= 1, got -2"),  # was IndexError
    (["train", "--data", "{root}/data", "--model-dir", "{root}/m1", "--config", "{root}/broken.yaml"], 2,
     "broken.yaml: not valid YAML"),
    (["train", "--data", "{root}/data", "--model-dir", "{root}/m2", "--config", "{root}"], 2,
     "a directory; expected a YAML preset"),  # was IsADirectoryError
    (["train", "--data", "{root}/truncated", "--model-dir", "{root}/m3", "--quiet"], 2,
     "train-00000-of-00001.tfrecord: a truncated or corrupt TFRecord shard"),  # was DataLossError
]


@pytest.mark.parametrize("arguments, code, message", CASES, ids=[" ".join(case[0][:1] + case[0][-2:]) for case in CASES])
def test_each_error_is_one_line_with_its_exit_code(inputs, arguments, code, message):
    arguments = [argument.format(root=inputs) for argument in arguments]
    returned, stderr = run_remi(*arguments)
    assert returned == code, stderr
    assert message in error_line(stderr, arguments[0])
    for option in ("--output", "--model-dir"):  # nothing written
        if option in arguments:
            assert not os.path.exists(arguments[arguments.index(option) + 1])


def test_a_port_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        returned, stderr = run_remi("serve", "--export-dir", tmp_path, "--port", port, "--grpc-port", 0, timeout=60)
    assert returned == 1
    assert f"REST port 127.0.0.1:{port}: Address already in use; choose another with --port" in \
        error_line(stderr, "serve")


def test_a_model_directory_given_to_serve_is_named(inputs, tmp_path, capsys):
    model_dir = tmp_path / "model"
    os.makedirs(model_dir / "best")
    (model_dir / "config.yaml").write_text("num_interests: 4\n")
    assert cli.main(["serve", "--export-dir", str(model_dir), "--port", "0", "--grpc-port", "0"]) == 2
    assert f"is a model directory (`remi train`'s --model-dir), not an export: run `remi export --model-dir " \
           f"{model_dir} --output EXPORT_DIR`" in capsys.readouterr().err
    assert cli.main(["serve", "--export-dir", str(tmp_path / "nowhere"), "--port", "0", "--grpc-port", "0"]) == 2
    assert "no such directory; expected the --output of `remi export`" in capsys.readouterr().err


def test_a_catalogue_below_the_retrieval_depth_is_refused_before_training(tmp_path, capsys):
    data = synthetic.prepared_clusters(tmp_path, num_users=200, num_clusters=4, items_per_cluster=10,
                                       clusters_per_user=2, length=12, seed=2)  # 40 items
    assert cli.main(["train", "--data", data, "--model-dir", str(tmp_path / "m"), "--quiet"]) == 2
    assert "items.tsv: 40 items, fewer than the 50 that evaluation ranks" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_an_unexpected_error_is_one_line_pointing_to_debug(monkeypatch, capsys):
    def broken(args):
        raise KeyError("item_ids")

    parser = cli.build_parser

    def patched_parser():
        built = parser()
        built._subparsers._group_actions[0].choices["lookup"].set_defaults(run=broken)
        return built

    monkeypatch.setattr(cli, "build_parser", patched_parser)
    arguments = ["lookup", "--server", "http://127.0.0.1:1", "--history", "a"]
    assert cli.main(arguments) == 1
    assert capsys.readouterr().err == ("remi lookup: error: 'item_ids' (KeyError; run with --debug for the "
                                       "traceback)\n")
    with pytest.raises(KeyError):
        cli.main([*arguments, "--debug"])


@pytest.mark.parametrize("error, code", [
    (ValueError("x"), 2), (FileNotFoundError("x"), 2), (FileExistsError("x"), 2), (IsADirectoryError("x"), 2),
    (RuntimeError("x"), 1), (OSError("x"), 1), (OverflowError("x"), 1), (KeyError("x"), 1),
])
def test_exit_codes_by_error_type(error, code):
    assert cli.exit_code(error)[0] == code
