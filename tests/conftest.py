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
