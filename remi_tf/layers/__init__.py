"""Keras layers of the query tower: multi-interest routing and the training read-out."""

from remi_tf.layers.readout import hard_readout
from remi_tf.layers.self_attentive import SelfAttentiveRouting

__all__ = ["SelfAttentiveRouting", "hard_readout"]
