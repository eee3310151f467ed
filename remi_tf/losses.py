"""REMI's loss terms as small pure functions: routing regularization and the IHN softmax."""

from __future__ import annotations

import tensorflow as tf

from remi_tf.config import ROUTING_REGULARIZATION_MODES


def routing_regularization(routing: tf.Tensor, embedding_dim: int, mode: str = "diagonal") -> tf.Tensor:
    """Routing regularization (RR) that keeps each interest's attention from collapsing onto one item.

    Per example, C = (A - mean_L A)(A - mean_L A)^T / d. "diagonal" (the reference code) penalises
    ||diag(C)||^2; "frobenius" (the paper's statement) penalises ||C||_F^2.

    Args:
      routing: A, [batch, K, L] routing weights.
      embedding_dim: d, the divisor of the covariance (the reference code's scale).
      mode: "diagonal" or "frobenius".

    Returns:
      Scalar: the penalty summed over the batch (the reference code's scale, so lambda = 100 carries over).
    """
    if mode not in ROUTING_REGULARIZATION_MODES:
        raise ValueError(f"routing_regularization mode must be one of {ROUTING_REGULARIZATION_MODES}, got {mode!r}")
    centred = routing - tf.reduce_mean(routing, axis=-1, keepdims=True)  # [B, K, L], padding included (reference)
    if mode == "diagonal":
        diagonal = tf.reduce_sum(tf.square(centred), axis=-1) / embedding_dim  # [B, K]
        return tf.reduce_sum(tf.square(diagonal))
    covariance = tf.matmul(centred, centred, transpose_b=True) / embedding_dim  # [B, K, K]
    return tf.reduce_sum(tf.square(covariance))


def interest_aware_softmax_loss(similarities: tf.Tensor, corrected_logits: tf.Tensor, negative_mask: tf.Tensor,
                                positive_logits: tf.Tensor, beta: float) -> tf.Tensor:
    """Per-example interest-aware hard-negative (IHN) softmax loss, in log space.

    loss_b = -p_b + log(exp(p_b) + sum_{j in neg(b)} w_bj exp(s^_bj)), with
    w_bj = M_b * softmax_{j in neg(b)}(beta * s_bj), so the weights average 1 and beta = 0 gives the
    plain sampled softmax.

    Args:
      similarities: s, [batch, C] uncorrected similarities (hardness is similarity, before logQ).
      corrected_logits: s^, [batch, C] logits after temperature and logQ correction.
      negative_mask: [batch, C] bool, True where column j is a negative of row b.
      positive_logits: [batch] corrected logit of each row's positive.
      beta: hardness; 0 weighs every negative equally.

    Returns:
      [batch] loss per example.
    """
    very_negative = tf.constant(-1e30, similarities.dtype)
    negative_logits = corrected_logits
    if beta != 0:
        num_negatives = tf.reduce_sum(tf.cast(negative_mask, similarities.dtype), axis=-1, keepdims=True)  # M_b
        hardness = tf.where(negative_mask, beta * similarities, very_negative)
        negative_logits += tf.nn.log_softmax(hardness, axis=-1) + tf.math.log(tf.maximum(num_negatives, 1.0))
    negatives = tf.reduce_logsumexp(tf.where(negative_mask, negative_logits, very_negative), axis=-1)  # [B]
    return tf.nn.softplus(negatives - positive_logits)  # log(exp(p) + exp(negatives)) - p
