"""Keras layers of the query tower: the sequence encoder, multi-interest routing and the training read-outs."""

from remi_tf.layers.capsule import CapsuleRouting
from remi_tf.layers.causal_encoder import CausalSelfAttentionEncoder
from remi_tf.layers.item_embedding import ItemEmbedding
from remi_tf.layers.last_position import LastPosition
from remi_tf.layers.readout import hard_readout, label_aware_readout
from remi_tf.layers.self_attentive import SelfAttentiveRouting

__all__ = ["CapsuleRouting", "CausalSelfAttentionEncoder", "ItemEmbedding", "LastPosition", "SelfAttentiveRouting",
           "hard_readout", "label_aware_readout"]
