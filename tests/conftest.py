"""Shared test set-up: legacy Keras for TFRS (before TensorFlow loads) and the data-set location."""

import os

import pytest

import remi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

DATASETS_DIR = os.environ.get("REMI_DATASETS", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                              "datasets"))


@pytest.fixture
def datasets_dir() -> str:
    """The real data sets (../shared/datasets by default, or $REMI_DATASETS); skips when absent."""
    if not os.path.isdir(DATASETS_DIR):
        pytest.skip(f"real data sets not found at {DATASETS_DIR}; set REMI_DATASETS")
    return DATASETS_DIR


def pytest_terminal_summary(terminalreporter) -> None:
    """Says how many tests the missing real data sets skipped (pytest only counts skips)."""
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if "real data sets not found" in str(report.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} test(s) skipped: the real data sets are not at {DATASETS_DIR} "
                                    "(set REMI_DATASETS to run them)", yellow=True, bold=True)
