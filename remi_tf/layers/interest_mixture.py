"""A mixture-of-logits scorer over the K interests with an item-dependent gate (Zhai et al., "Revisiting
neural retrieval on accelerators", KDD 2023): s(u, j) = sum_k pi_k(u, j) <u_k, v_j>.

The gate pi_k(u, j) = softmax_k(<u_k, v_j> / tau + <P u_k, Q v_j> / sqrt(m)) learns, for each candidate,
which interest to trust: the first term is a soft max over the interests' scores (tau -> 0 approaches
interest_scoring "max"), the second a low-rank bilinear affinity (P, Q: [d, m]) that can hand an item to
an interest whose score is not the largest. Since s(u, j) <= max_k <u_k, v_j>, each interest's own top
results are the candidates a lookup re-scores with it.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="remi_tf")
class InterestMixture(tf.keras.layers.Layer):
    """Mixture-of-logits scores of candidates under K interests.

    Args:
      gate_dim: m, the rank of the gate's bilinear affinity.
      temperature: tau of the gate's soft max over the interests' scores (> 0).
    """

    def __init__(self, gate_dim: int = 16, temperature: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if gate_dim < 1:
            raise ValueError(f"gate_dim must be >= 1, got {gate_dim}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.gate_dim = gate_dim
        self.temperature = float(temperature)

    def build(self, input_shape: Any) -> None:
        dim = int(tf.TensorShape(input_shape)[-1])
        self.interest_gate = tf.keras.layers.Dense(self.gate_dim, use_bias=False, dtype=self.dtype_policy,
                                                   name="interest_gate")
        self.item_gate = tf.keras.layers.Dense(self.gate_dim, use_bias=False, dtype=self.dtype_policy, name="item_gate")
        self.interest_gate.build(tf.TensorShape([None, dim]))
        self.item_gate.build(tf.TensorShape([None, dim]))
        super().build(input_shape)

    def probabilities(self, per_interest: tf.Tensor, affinity: tf.Tensor) -> tf.Tensor:
        """[..., K] scores <u_k, v_j> and [..., K] gate affinities <P u_k, Q v_j> -> [..., K] the gate pi."""
        return tf.nn.softmax(per_interest / self.temperature + affinity / math.sqrt(self.gate_dim), axis=-1)

    def mix(self, per_interest: tf.Tensor, affinity: tf.Tensor) -> tf.Tensor:
        """[..., K] scores and gate affinities -> [...] the mixture sum_k pi_k <u_k, v_j>."""
        return tf.reduce_sum(self.probabilities(per_interest, affinity) * per_interest, axis=-1)

    def gate(self, interests: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """interests [B, K, d], items [B, d] (one per row, e.g. its positive) -> [B, K] the gate pi(u_b, v_b)."""
        per_interest = tf.einsum("bkd,bd->bk", interests, items)
        affinity = tf.einsum("bkm,bm->bk", self.interest_gate(interests), self.item_gate(items))
        return self.probabilities(per_interest, affinity)

    def call(self, interests: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
        """interests [B, K, d], candidates [C, d] -> [B, C] mixture scores."""
        per_interest = tf.einsum("bkd,cd->bck", interests, candidates)  # [B, C, K]
        affinity = tf.einsum("bkm,cm->bck", self.interest_gate(interests), self.item_gate(candidates))
        return self.mix(per_interest, affinity)

    def rescore(self, interests: tf.Tensor, vectors: tf.Tensor) -> tf.Tensor:
        """interests [B, K, d], vectors [B, K, n, d] (each interest's retrieved items) -> [B, K, n] the
        mixture score of every retrieved item over all K interests."""
        per_interest = tf.einsum("bjd,bknd->bknj", interests, vectors)  # [B, K, n, K]
        affinity = tf.einsum("bjm,bknm->bknj", self.interest_gate(interests), self.item_gate(vectors))
        return self.mix(per_interest, affinity)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gate_dim": self.gate_dim, "temperature": self.temperature}
