"""Keras layers of the query tower: multi-interest routing, the training read-outs and the interest weights."""

from remi_tf.layers.capsule import CapsuleRouting
from remi_tf.layers.interest_count import interests_per_user, keep_interests
from remi_tf.layers.interest_mixture import InterestMixture
from remi_tf.layers.interest_weights import InterestWeights
from remi_tf.layers.item_embedding import ItemEmbedding
from remi_tf.layers.readout import hard_readout, label_aware_readout
from remi_tf.layers.self_attentive import SelfAttentiveRouting

__all__ = ["CapsuleRouting", "InterestMixture", "InterestWeights", "ItemEmbedding", "SelfAttentiveRouting",
           "hard_readout", "interests_per_user", "keep_interests", "label_aware_readout"]
