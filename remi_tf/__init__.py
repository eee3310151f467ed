"""remi-tf: REMI multi-interest two-tower retrieval on TensorFlow Recommenders.

TFRS needs Keras 2, so TF_USE_LEGACY_KERAS is set here, before TensorFlow is first imported.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from remi_tf import config, layers, losses, metrics, models, tasks  # noqa: E402 (after TF_USE_LEGACY_KERAS is set)
from remi_tf.config import RemiConfig  # noqa: E402 (after TF_USE_LEGACY_KERAS is set)
from remi_tf.models import RemiModel  # noqa: E402 (after TF_USE_LEGACY_KERAS is set)
from remi_tf.tasks import InterestAwareRetrieval  # noqa: E402 (after TF_USE_LEGACY_KERAS is set)

__all__ = ["RemiConfig", "RemiModel", "InterestAwareRetrieval", "config", "layers", "losses", "metrics",
           "models", "tasks"]
