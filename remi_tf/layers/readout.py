"""The training read-out: pick the interest that best matches the positive item."""

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
