"""How K interests score a candidate: the training read-out ("hard") or the served score ("max",
"logsumexp"). One definition for the task, evaluation and the retrieval SavedModel.

- hard: row b scores every candidate with the one interest closest to its positive (column b),
  k*_b = argmax_k <u_bk, v_b>; only that interest is trained (ComiRec, REMI).
- max: s(u, j) = max_k <u_k, v_j>, the score by which serving ranks item j; each candidate's gradient
  flows into its best interest.
- logsumexp: s(u, j) = tau * log sum_k exp(<u_k, v_j> / tau), a smooth max (tau -> 0 approaches max);
  every interest receives gradient in proportion to softmax_k(<u_k, v_j> / tau).
- mixture: s(u, j) = sum_k pi_k(u, j) <u_k, v_j> with a learned item-dependent gate
  (remi_tf.layers.InterestMixture, mixture of logits).
"""

from __future__ import annotations

import tensorflow as tf

from remi_tf.layers.interest_mixture import InterestMixture
from remi_tf.layers.readout import hard_readout

INTEREST_SCORINGS = ("hard", "max", "logsumexp", "mixture")


def combine_interest_scores(per_interest: tf.Tensor, mode: str, temperature: float = 1.0) -> tf.Tensor:
    """[..., K, C] per-interest scores -> [..., C] the served score of each candidate ("max", "logsumexp")."""
    if mode == "max":
        return tf.reduce_max(per_interest, axis=-2)
    if mode == "logsumexp":
        return temperature * tf.reduce_logsumexp(per_interest / temperature, axis=-2)
    raise ValueError(f"combine_interest_scores: mode must be 'max' or 'logsumexp', got {mode!r}")


def interest_similarities(interests: tf.Tensor, candidates: tf.Tensor, mode: str, temperature: float = 1.0,
                          mixture: InterestMixture | None = None) -> tf.Tensor:
    """Similarity of each row's user with each candidate.

    Args:
      interests: [batch, K, d]; row b's positive is candidate column b (the task's layout).
      candidates: [C, d], C >= batch.
      mode: "hard", "max", "logsumexp" or "mixture" (module docstring).
      temperature: tau of "logsumexp" (> 0).
      mixture: the gate of "mixture".

    Returns:
      [batch, C] similarities.
    """
    if mode not in INTEREST_SCORINGS:
        raise ValueError(f"interest scoring must be one of {INTEREST_SCORINGS}, got {mode!r}")
    if mode == "mixture":
        if mixture is None:
            raise ValueError("interest scoring 'mixture' needs its gate (an InterestMixture layer)")
        return mixture(interests, candidates)
    per_interest = tf.einsum("bkd,cd->bkc", interests, candidates)  # [B, K, C]
    if mode == "hard":
        _, selection = hard_readout(interests, candidates[:tf.shape(interests)[0]])  # [B] k*_b
        return tf.gather(per_interest, selection, batch_dims=1)
    return combine_interest_scores(per_interest, mode, temperature)
