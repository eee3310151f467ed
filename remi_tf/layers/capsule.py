"""Capsule (dynamic) routing from behaviours to interests: ComiRec-DR (Cen et al., KDD 2020) and MIND's
behaviour-to-interest routing (Li et al., CIKM 2019), behind the self-attentive routing's interface."""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

BILINEAR_MAPS = ("per_position", "shared")
INITIAL_LOGITS = ("zeros", "random")
INITIAL_MAPS = ("random", "identity")


def squash(capsules: tf.Tensor) -> tf.Tensor:
    """v = |s|^2 / (1 + |s|^2) * s / |s| over the last axis (ComiRec's epsilon 1e-9 inside the root)."""
    squared_norm = tf.reduce_sum(tf.square(capsules), axis=-1, keepdims=True)
    return squared_norm / (1.0 + squared_norm) / tf.sqrt(squared_norm + 1e-9) * capsules


@tf.keras.utils.register_keras_serializable(package="remi_tf")
class CapsuleRouting(tf.keras.layers.Layer):
    """Dynamic routing of a history's item embeddings into K interest capsules.

    Each item e_l is mapped to one prediction per interest, u_kl = W_kl e_l ("per_position": a map per
    interest and history position, ComiRec-DR's code; "shared": one map S for every interest and
    position, MIND's). Routing logits b [K, L] start at zero (ComiRec-DR) or at random values drawn once
    when the layer is built and never trained (MIND; fixed, so that serving is deterministic). Each of
    `iterations` rounds: c = softmax over interests of b, zero at padding; s_k = sum_l c_kl u_kl;
    v_k = squash(s_k); b += u_kl . v_k. As in ComiRec's code, the rounds before the last see the
    predictions through stop_gradient, and the last one's s uses them with their gradient. The coupling
    coefficients therefore carry no gradient: a routing regularization on them does not train anything.
    With `routing_gradient`, every round sees the predictions with their gradient (REMI's fix, issue 24):
    the couplings then depend differentiably on the maps, and the routing regularization trains them.

    Call arguments:
      item_embeddings: [batch, L, d] float (padding rows may be anything: they are zeroed with the mask).
      mask: [batch, L] bool or 0/1, True for real items.

    Returns:
      (interests [batch, K, d], routing [batch, K, L]): the capsules v and the last round's coupling
      coefficients c (each column sums to 1 over the interests at a valid position, 0 on padding), which
      the routing regularization and the diagnostics read.
    """

    def __init__(self, num_interests: int, max_length: int, bilinear_map: str = "per_position",
                 initial_logits: str = "zeros", iterations: int = 3, initial_maps: str = "random",
                 routing_gradient: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if (bilinear_map not in BILINEAR_MAPS or initial_logits not in INITIAL_LOGITS
                or initial_maps not in INITIAL_MAPS or iterations < 1):
            raise ValueError(f"CapsuleRouting needs bilinear_map in {BILINEAR_MAPS}, initial_logits in "
                             f"{INITIAL_LOGITS}, initial_maps in {INITIAL_MAPS} and iterations >= 1, got "
                             f"{bilinear_map!r}, {initial_logits!r}, {initial_maps!r}, {iterations}")
        self.num_interests, self.max_length = num_interests, max_length
        self.bilinear_map, self.initial_logits, self.iterations = bilinear_map, initial_logits, iterations
        self.initial_maps = initial_maps
        self.routing_gradient = routing_gradient

    def build(self, input_shape: Any) -> None:
        dim = int(tf.TensorShape(input_shape)[-1])
        per_position = self.bilinear_map == "per_position"
        map_shape = (self.max_length, self.num_interests, dim, dim) if per_position else (dim, dim)
        initializer: Any  # a callable or a Keras initializer's name
        if self.initial_maps == "identity":
            noise = tf.keras.initializers.RandomNormal(stddev=0.1 / math.sqrt(dim))

            def identity_plus_noise(shape: Any, dtype: Any = None) -> tf.Tensor:
                return tf.eye(dim, batch_shape=shape[:-2], dtype=dtype) + noise(shape, dtype)
            initializer = identity_plus_noise
        elif per_position:
            initializer = tf.keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / dim))  # He's scale, fan-in d
        else:
            initializer = "he_normal"
        self.maps = self.add_weight(name="maps", shape=map_shape, initializer=initializer)
        self.routing_logits = self.add_weight(
            name="routing_logits", shape=(self.num_interests, self.max_length), trainable=False,
            initializer="zeros" if self.initial_logits == "zeros" else tf.keras.initializers.RandomNormal(stddev=1.0))
        super().build(input_shape)

    def call(self, item_embeddings: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        valid = tf.cast(mask, item_embeddings.dtype)[:, tf.newaxis, :]  # [B, 1, L]
        history = item_embeddings * tf.transpose(valid, [0, 2, 1])  # [B, L, d]
        if self.bilinear_map == "per_position":
            predictions = tf.einsum("lkde,ble->bkld", self.maps, history)  # [B, K, L, d]
        else:
            mapped = tf.einsum("de,ble->bld", self.maps, history)
            predictions = tf.tile(mapped[:, tf.newaxis], [1, self.num_interests, 1, 1])  # [B, K, L, d]
        fixed_predictions = predictions if self.routing_gradient else tf.stop_gradient(predictions)
        logits = tf.broadcast_to(self.routing_logits, [tf.shape(history)[0], self.num_interests, self.max_length])
        for round_index in range(self.iterations):
            coupling = tf.nn.softmax(logits, axis=1) * valid  # [B, K, L]
            last = round_index == self.iterations - 1
            capsules = squash(tf.einsum("bkl,bkld->bkd", coupling, predictions if last else fixed_predictions))
            if not last:
                logits = logits + tf.einsum("bkld,bkd->bkl", fixed_predictions, capsules)
        return capsules, coupling

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_interests": self.num_interests, "max_length": self.max_length,
                "bilinear_map": self.bilinear_map, "initial_logits": self.initial_logits,
                "iterations": self.iterations, "initial_maps": self.initial_maps,
                "routing_gradient": self.routing_gradient}
