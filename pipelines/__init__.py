"""Data pipelines of remi-tf: log readers, TFRecord schemas, sequence building and tf.data input."""

import remi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
