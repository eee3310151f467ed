"""REMI's multi-interest model as the tests build it: 0.3.0 made SASRec's tower the default (BENCHMARKS.md 13), and
tests written for the K-interest model name its keys (remi_tf.config.DEFAULTS_BEFORE_0_3_0)."""

from remi_tf import config as config_lib

REMI_MODEL = dict(config_lib.DEFAULTS_BEFORE_0_3_0)
REMI_SETTINGS = [f"{key}={value}" for key, value in REMI_MODEL.items()]  # `--set` values


def remi_config(**overrides) -> config_lib.RemiConfig:
    """RemiConfig with REMI's multi-interest model's keys, then `overrides` (not validated, as the constructor)."""
    return config_lib.RemiConfig(**{**REMI_MODEL, **overrides})
