"""remi-tf: REMI multi-interest two-tower retrieval on TensorFlow Recommenders.

TFRS needs Keras 2, so TF_USE_LEGACY_KERAS is set here, before TensorFlow is first imported.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.3.0"

# The public names load on first use (PEP 562), so that `import remi_tf` (and `remi --help`) does not import
# TensorFlow.
_PUBLIC = {"RemiConfig": "remi_tf.config", "RemiModel": "remi_tf.models", "InterestAwareRetrieval": "remi_tf.tasks"}
_SUBMODULES = ("config", "layers", "losses", "metrics", "models", "tasks", "input", "train", "training_run",
               "evaluate", "data_directory", "model_directory")

__all__ = ["RemiConfig", "RemiModel", "InterestAwareRetrieval", *_SUBMODULES]


def __getattr__(name: str):
    import importlib

    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"remi_tf.{name}")
    raise AttributeError(f"module 'remi_tf' has no attribute {name!r}")
