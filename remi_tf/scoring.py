"""How K interests score a candidate: the training read-out ("hard") or the served score ("max"). One
definition for the task, evaluation and the retrieval SavedModel.

- hard: row b scores every candidate with the one interest closest to its positive (column b),
  k*_b = argmax_k <u_bk, v_b>; only that interest is trained (ComiRec, REMI).
- max: s(u, j) = max_k <u_k, v_j>, the score by which serving ranks item j; each candidate's gradient
  flows into its best interest.
"""

from __future__ import annotations

import tensorflow as tf

from remi_tf.config import INTEREST_SCORINGS
from remi_tf.layers.readout import hard_readout


def interest_similarities(interests: tf.Tensor, candidates: tf.Tensor, mode: str) -> tf.Tensor:
    """Similarity of each row's user with each candidate.

    Args:
      interests: [batch, K, d]; row b's positive is candidate column b (the task's layout).
      candidates: [C, d], C >= batch.
      mode: "hard" or "max" (module docstring).

    Returns:
      [batch, C] similarities.
    """
    return combine_interest_scores(per_interest_scores(interests, candidates), interests, candidates, mode)


def per_interest_scores(interests: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """[batch, K, d], [C, d] -> [batch, K, C] <u_k, v_j>."""
    return tf.einsum("bkd,cd->bkc", interests, candidates)


def combine_interest_scores(per_interest: tf.Tensor, interests: tf.Tensor, candidates: tf.Tensor, mode: str
                            ) -> tf.Tensor:
    """[batch, K, C] per-interest scores -> [batch, C] as `mode` combines them (interests [batch, K, d] and
    candidates [C, d]: the hard read-out's choice of interest)."""
    if mode not in INTEREST_SCORINGS:
        raise ValueError(f"interest scoring must be one of {INTEREST_SCORINGS}, got {mode!r}")
    if per_interest.shape[-2] == 1:  # one interest: both modes read it (without max's costly gradient)
        return per_interest[..., 0, :]
    if mode == "hard":
        _, selection = hard_readout(interests, candidates[:tf.shape(interests)[0]])  # [B] k*_b
        return tf.gather(per_interest, selection, batch_dims=1)
    return tf.reduce_max(per_interest, axis=-2)


def positive_and_candidate_scores(interests: tf.Tensor, positives: tf.Tensor, candidates: tf.Tensor, mode: str
                                  ) -> tuple[tf.Tensor, tf.Tensor]:
    """Scores of rows whose positive is not a candidate column (training on every position).

    Args:
      interests: [n, K, d]; positives: [n, d] each row's positive item vector; candidates: [C, d].
      mode: "hard" (the interest closest to the positive scores it and every candidate) or "max".

    Returns:
      ([n] the positives' scores, [n, C] the candidates').
    """
    if mode not in INTEREST_SCORINGS:
        raise ValueError(f"interest scoring must be one of {INTEREST_SCORINGS}, got {mode!r}")
    if interests.shape[-2] == 1:  # one interest: both modes read it
        return tf.reduce_sum(interests[:, 0] * positives, axis=-1), tf.matmul(interests[:, 0], candidates,
                                                                                transpose_b=True)
    affinity = tf.einsum("nkd,nd->nk", interests, positives)  # [n, K]
    if mode == "max":
        return tf.reduce_max(affinity, axis=-1), tf.reduce_max(per_interest_scores(interests, candidates), axis=-2)
    selected, _ = hard_readout(interests, positives)  # [n, d]
    return tf.reduce_sum(selected * positives, axis=-1), tf.matmul(selected, candidates, transpose_b=True)
