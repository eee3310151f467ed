"""A quiet, fast command line (issue 27): --help and --version without TensorFlow, and no TensorFlow or
ScaNN log lines in a command's default output (--verbose brings them back)."""

import argparse
import logging
import os
import subprocess
import sys

from remi import native_logs
from tests import synthetic

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def environment():
    values = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}  # as a user has it
    return {**values, "PYTHONPATH": REPOSITORY}


def test_help_and_version_do_not_import_tensorflow():
    probe = ("import sys; from remi import cli; import contextlib, io\n"
             "for argv in (['--help'], ['prepare', '--help'], ['--version']):\n"
             "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
             "        try: cli.main(argv)\n"
             "        except SystemExit: pass\n"
             "    assert out.getvalue(), argv\n"
             "print('tensorflow' in sys.modules, out.getvalue().strip())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env=environment(), cwd=REPOSITORY)
    assert done.returncode == 0, done.stderr
    from remi_tf import __version__

    assert done.stdout.split() == ["False", "remi-tf", __version__]


def test_commands_print_no_tensorflow_log_lines_unless_verbose(tmp_path):
    sequences, _ = synthetic.clustered_sequences(num_users=120, num_clusters=6, items_per_cluster=10,
                                                 clusters_per_user=2, length=10, seed=3)
    synthetic.write_log(tmp_path / "log.csv", sequences)

    def remi(*argv):
        done = subprocess.run([sys.executable, "-m", "remi", *argv], capture_output=True, text=True, timeout=180,
                              env=environment(), cwd=REPOSITORY)
        assert done.returncode == 0, done.stderr
        remi.stdout = done.stdout
        return done.stderr

    def prepare(*extra):
        return remi("prepare", "--input", str(tmp_path / "log.csv"), "--output", str(tmp_path / f"out{len(extra)}"),
                    *extra)

    quiet = prepare()
    assert [line for line in quiet.splitlines() if line.split(":")[0] not in (
        "runner", "events read", "users written", "cleaning")] == [], quiet
    verbose = prepare("--verbose")
    assert "cpu_feature_guard" in verbose or "cuda" in verbose.lower(), verbose
    # ScaNN's index build logs through its own absl (no environment variable reaches it): dropped from export
    model = str(tmp_path / "model")
    # A learning rate too small to change the ranking: no improvement at step 20, early stopping with patience 1.
    trained = remi("train", "--data", str(tmp_path / "out0"), "--model-dir", model, "--quiet", "--set",
                   "max_steps=20", "--set", "batch_size=32", "--set", "eval_every=10", "--set", "patience=1",
                   "--set", "learning_rate=1e-9")
    lines = remi.stdout.splitlines()
    # --quiet: a line per evaluation and the result, no blank lines between them
    assert [line.split(":")[0].split(" =")[0] for line in lines] == ["step 10", "step 20", "best valid recall@50"], \
        remi.stdout
    assert [line for line in trained.splitlines() if "early stopping" in line] == [
        "early stopping: no improvement in 1 evaluations"], trained

    def export(*extra):
        return remi("export", "--model-dir", model, "--output", str(tmp_path / "export"), "--index", "scann",
                    "--k", "10", *extra)

    assert not any(native_logs.ABSL_LINE.match(line) for line in export().splitlines())
    assert any(native_logs.ABSL_LINE.match(line) for line in export("--verbose").splitlines())


def test_a_library_record_prints_once_after_absl_configured_the_root_logger(capsys):
    """absl.logging's first record (TensorFlow logs through absl while training) calls logging.basicConfig()
    when the root logger has no handler; the library's records must not then print a second time."""
    from absl import logging as absl_logging

    from remi import cli

    saved = logging.root.handlers[:]  # the process `remi` runs in: no root handler (pytest's are put back)
    logging.root.handlers = []
    try:
        cli.configure_logging()
        absl_logging.debug("a record below absl's level, as TensorFlow's")
        logging.getLogger("remi_tf.train").info("early stopping: no improvement in 1 evaluations")
        logging.getLogger("another.library").warning("a warning of another library")
    finally:
        logging.root.handlers = saved
    assert capsys.readouterr().err.splitlines() == ["early stopping: no improvement in 1 evaluations",
                                                    "WARNING:another.library:a warning of another library"]


def test_every_option_has_a_help_line_with_its_default():
    from remi import cli

    formatter = cli.DefaultsHelpFormatter("remi")
    for name, command in cli.build_parser()._subparsers._group_actions[0].choices.items():
        for action in command._actions:
            if not action.option_strings:
                continue
            assert action.help, (name, action.option_strings)
            if isinstance(action.default, (int, float, str)) and action.default not in (False, argparse.SUPPRESS):
                assert "default" in formatter._get_help_string(action), (name, action.option_strings)
