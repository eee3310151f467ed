"""remi_tf.process_output.read_lines: lines that arrive in one write are all returned without waiting for more
(a buffered readline after select would hold the second back until the deadline), and a silent or closed
pipe ends the wait with an error, bounded."""

import subprocess
import sys
import time

import pytest

from remi_tf.process_output import read_lines

TWO_LINES_THEN_SILENCE = "import sys, time; sys.stdout.write('serving a\\nserving b\\nrest'); sys.stdout.flush(); " \
                         "time.sleep(60)"


def child(code):
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_lines_written_together_are_returned_at_once():
    process = child(TWO_LINES_THEN_SILENCE)
    try:
        start = time.monotonic()
        lines = read_lines(process.stdout, lambda seen: len(seen) == 2, timeout_s=30)
        assert lines == ["serving a\n", "serving b\n"]
        assert time.monotonic() - start < 20  # not the deadline: the second line was already read
    finally:
        process.kill()
        process.wait(timeout=30)


def test_a_silent_child_times_out_and_a_finished_one_ends_the_wait():
    process = child(TWO_LINES_THEN_SILENCE)
    try:
        with pytest.raises(TimeoutError, match=r"no line in 1 s after \['serving a\\n', 'serving b\\n'\]"):
            read_lines(process.stdout, lambda seen: len(seen) == 3, timeout_s=1)  # 'rest' never ends its line
    finally:
        process.kill()
        process.wait(timeout=30)
    finished = child("print('only line')")
    try:
        with pytest.raises(TimeoutError, match="output ended after"):
            read_lines(finished.stdout, lambda seen: len(seen) == 2, timeout_s=30)
    finally:
        finished.wait(timeout=30)
