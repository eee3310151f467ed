"""remi.native_logs: absl's lines written to descriptor 2 are dropped, every other line comes back."""

import os

import pytest

from remi import native_logs

ABSL = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796281157.897152     652 partitioner_factory_base.cc:58] Size of sampled dataset: 1349\n"
        b"W0000 00:00:1796281157.899296     652 gmm_utils.cc:1026] Could not normalize centroid.\n")


def test_absl_lines_are_dropped_and_the_rest_kept(capfd):
    with native_logs.absl_lines_dropped():
        os.write(2, b"loaded the model\n" + ABSL + b"W0000 is not an absl line\n")
    assert capfd.readouterr().err == "loaded the model\nW0000 is not an absl line\n"


def test_every_line_comes_back_when_the_block_raises(capfd):
    with pytest.raises(RuntimeError), native_logs.absl_lines_dropped():
        os.write(2, ABSL)
        raise RuntimeError("index build failed")
    assert capfd.readouterr().err == ABSL.decode()


def test_disabled_passes_descriptor_2_through(capfd):
    with native_logs.absl_lines_dropped(enabled=False):
        os.write(2, ABSL)
    assert capfd.readouterr().err == ABSL.decode()
