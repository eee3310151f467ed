"""The training read-outs: the interest that best matches the positive item (hard), or an attention
over the interests (MIND's label-aware)."""

from __future__ import annotations

import tensorflow as tf


def hard_readout(interests: tf.Tensor, positive_embeddings: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Selects, per example, the interest with the largest inner product with the positive item.

    Args:
      interests: [batch, K, d].
      positive_embeddings: [batch, d].

    Returns:
      (selected [batch, d], selection [batch] int32 in [0, K)). Gradients flow only into the selected
      interest, as in MIND, ComiRec and REMI.
    """
    affinity = tf.einsum("bkd,bd->bk", interests, positive_embeddings)  # [B, K]
    selection = tf.argmax(affinity, axis=-1, output_type=tf.int32)
    return tf.gather(interests, selection, batch_dims=1), selection


def label_aware_readout(interests: tf.Tensor, positive_embeddings: tf.Tensor, power: int) -> tf.Tensor:
    """MIND's label-aware attention: the interests weighted by softmax_k((v_k . e)^p).

    Args:
      interests: [batch, K, d].
      positive_embeddings: [batch, d].
      power: p >= 0 (an integer, so that negative affinities stay real); 0 averages the interests, and
        a large p approaches the hard read-out.

    Returns:
      [batch, d]; gradients reach every interest in proportion to its weight.
    """
    affinity = tf.einsum("bkd,bd->bk", interests, positive_embeddings)  # [B, K]
    weights = tf.nn.softmax(tf.pow(affinity, tf.cast(power, affinity.dtype)), axis=-1)
    return tf.einsum("bk,bkd->bd", weights, interests)
