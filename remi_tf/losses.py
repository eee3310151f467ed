"""REMI's loss terms as small pure functions: routing regularization, the IHN softmax, the interest weights'
distillation and the mixture gate's balance."""

from __future__ import annotations

import tensorflow as tf


def routing_regularization(routing: tf.Tensor, embedding_dim: int, mode: str = "diagonal",
                           mask: tf.Tensor | None = None) -> tf.Tensor:
    """Routing regularization (RR) that keeps each interest's attention from collapsing onto one item.

    Per example, C = (A - mean_L A)(A - mean_L A)^T / d. "diagonal" (the reference code) penalises
    ||diag(C)||^2; "frobenius" (the paper's statement) penalises ||C||_F^2.

    Args:
      routing: A, [batch, K, L] routing weights.
      embedding_dim: d, the divisor of the covariance (the reference code's scale).
      mode: "diagonal" or "frobenius".
      mask: optional [batch, L] validity mask; when given, the mean and the covariance are taken over
        valid positions only (the reference includes padding).

    Returns:
      Scalar: the penalty summed over the batch (the reference code's scale, so lambda = 100 carries over).
    """
    if mode not in ("diagonal", "frobenius"):
        raise ValueError(f"routing_regularization mode must be 'diagonal' or 'frobenius', got {mode!r}")
    if mask is None:
        centred = routing - tf.reduce_mean(routing, axis=-1, keepdims=True)  # [B, K, L]
    else:
        valid = tf.cast(mask, routing.dtype)[:, tf.newaxis, :]  # [B, 1, L]
        count = tf.maximum(tf.reduce_sum(valid, axis=-1, keepdims=True), 1.0)
        mean = tf.reduce_sum(routing * valid, axis=-1, keepdims=True) / count
        centred = (routing - mean) * valid
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
    num_negatives = tf.reduce_sum(tf.cast(negative_mask, similarities.dtype), axis=-1, keepdims=True)  # M_b
    if beta == 0:
        log_weights = tf.zeros_like(similarities)
    else:
        hardness = tf.where(negative_mask, beta * similarities, very_negative)
        log_weights = tf.nn.log_softmax(hardness, axis=-1) + tf.math.log(tf.maximum(num_negatives, 1.0))
    negative_terms = tf.where(negative_mask, corrected_logits + log_weights, very_negative)  # [B, C]
    all_terms = tf.concat([positive_logits[:, tf.newaxis], negative_terms], axis=-1)  # [B, 1 + C]
    return tf.reduce_logsumexp(all_terms, axis=-1) - positive_logits


def interest_weight_distillation(interests: tf.Tensor, target_embeddings: tf.Tensor, weight_logits: tf.Tensor,
                                 temperature: float) -> tf.Tensor:
    """TiMiRec's target-interest distillation: KL(p || pi) per example, where the teacher
    p_k = softmax_k(cos(u_k, v_target) / T) is a constant (its gradient stopped) and pi = softmax(logits).

    Args:
      interests: [batch, K, d]; target_embeddings: [batch, d] the positives' vectors.
      weight_logits: [batch, K] the predictor's logits.
      temperature: T > 0.

    Returns:
      [batch] KL divergences (nats).
    """
    cosine = tf.einsum("bkd,bd->bk", tf.math.l2_normalize(interests, axis=-1),
                       tf.math.l2_normalize(target_embeddings, axis=-1))
    teacher_logits = tf.stop_gradient(cosine / temperature)
    teacher = tf.nn.softmax(teacher_logits, axis=-1)
    return tf.reduce_sum(teacher * (tf.nn.log_softmax(teacher_logits, axis=-1)
                                    - tf.nn.log_softmax(weight_logits, axis=-1)), axis=-1)


def gate_imbalance(gate: tf.Tensor) -> tf.Tensor:
    """How far a batch's mean gate is from using every interest alike: log K - H(mean_b gate_b) = KL(mean gate
    || uniform), 0 when balanced, log K when one interest takes every row (mixture_balance_lambda's term).

    Args:
      gate: [batch, K] each row's distribution over the K interests (rows sum to 1).

    Returns:
      [] nats.
    """
    mean = tf.reduce_mean(gate, axis=0)  # [K]
    num_interests = tf.cast(tf.shape(gate)[-1], gate.dtype)
    return tf.math.log(num_interests) + tf.reduce_sum(mean * tf.math.log(tf.maximum(mean, 1e-12)))
