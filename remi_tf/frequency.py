"""Streaming frequency estimation for the logQ correction (Yi et al., "Sampling-Bias-Corrected Neural
Modeling for Large Corpus Item Recommendations", RecSys 2019, section 4).

Per hash bucket of an item id the estimator keeps A, the last step the bucket was seen, and B, a moving
average of the steps between sightings: B <- (1 - alpha) B + alpha (t - A), A <- t. An item's estimated
frequency is 1 / B, its expected occurrences per training step (a constant factor away from q, the
per-example probability: the softmax does not see a constant shift of log q). Items share buckets when
their hashes collide, which makes B too small; with several hash functions the estimate takes the
largest B, as the paper does, so a collision has to happen under every hash to bias it.

Choices the paper leaves open: an item seen c times in one batch counts as c sightings spread over the
gap, c updates with (t - A) / c done at once (every sighting weighs the same, so 1 / B is not biased
towards steps with few sightings); and the k-th sighting of a bucket updates at rate max(alpha, 1/k),
a running mean until 1 / alpha sightings and the paper's moving average after (without it, a bucket
seen a few dozen times in a run would keep most of its first, one-sample gap: on amazon-cds, where most
items are seen < 50 times in 5,000 steps, that cost ~0.01 test Recall@50 against count-based q). The
first sighting's gap is the steps since the estimator started (for a steady stream, a sample of the
same distribution as the gaps).

Buckets come from the item id string (tf.strings.to_hash_bucket_strong with one key per hash), not from
its index, so the state means the same thing under another vocabulary: a warm-started model carries it
over as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

HASH_KEY = 0x5EED_1F0_2019  # the second half of every hash function's 128-bit SipHash key
NUM_HASHES = 2  # the hash functions of a model's estimator (BENCHMARKS.md 9.2 ran with two; none other was tried)


def item_buckets(vocabulary: Sequence[str], num_buckets: int, num_hashes: int) -> np.ndarray:
    """[num_hashes, len(vocabulary) + 2] int64 hash buckets of the model's item indices (0: padding,
    1: out of vocabulary, 2..: the vocabulary in order; padding and OOV hash the empty string)."""
    ids = tf.constant(["", ""] + list(vocabulary))
    return np.stack([tf.strings.to_hash_bucket_strong(ids, num_buckets, key=[hash_index, HASH_KEY]).numpy()
                     for hash_index in range(num_hashes)])


class StreamingFrequencyEstimator(tf.keras.layers.Layer):
    """Per-bucket last-seen steps, gap averages and sighting counts (non-trainable weights: checkpointed
    with the model).

    Call: buckets [num_hashes, n] int (every hash's bucket of each of n items), training ->
    [n] float32 estimated occurrences per step. With training=True the estimator first counts the n
    items as one step's sightings.

    Under a synchronous strategy every replica updates its own copy of the mirrored state (aggregation
    NONE: no collective) and must see the same items, the global batch's: the copies then stay equal.
    """

    def __init__(self, num_buckets: int, num_hashes: int, alpha: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_buckets < 1 or num_hashes < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"streaming logQ expects num_buckets >= 1, num_hashes >= 1 and 0 < alpha <= 1, got "
                             f"{num_buckets}, {num_hashes}, {alpha}")
        self.num_buckets, self.num_hashes, self.alpha = num_buckets, num_hashes, alpha
        size = num_hashes * num_buckets
        replica_local = dict(trainable=False, aggregation=tf.VariableAggregation.NONE)
        self.step = self.add_weight(name="step", shape=[], dtype=tf.int64, initializer="zeros", **replica_local)
        self.last_seen = self.add_weight(name="last_seen", shape=[size], dtype=tf.int64, initializer="zeros",
                                         **replica_local)
        self.gap = self.add_weight(name="gap", shape=[size], dtype=tf.float32, initializer="zeros", **replica_local)
        self.sightings = self.add_weight(name="sightings", shape=[size], dtype=tf.float32, initializer="zeros",
                                         **replica_local)

    def call(self, buckets: tf.Tensor, training: bool = False) -> tf.Tensor:
        flat = self._flat(buckets)  # [num_hashes * n]
        if training:
            self._observe(flat)
        gaps = tf.reshape(tf.gather(self.gap, flat), tf.shape(buckets))
        largest = tf.reduce_max(gaps, axis=0)  # the least collided hash
        return 1.0 / tf.maximum(largest, 1e-6)

    def _flat(self, buckets: tf.Tensor) -> tf.Tensor:
        offsets = tf.range(self.num_hashes, dtype=tf.int64)[:, None] * self.num_buckets
        return tf.reshape(tf.cast(buckets, tf.int64) + offsets, [-1])

    def _observe(self, flat: tf.Tensor) -> None:
        step = self.step.assign_add(1)
        seen, _, count = tf.unique_with_counts(flat)
        count = tf.cast(count, tf.float32)
        elapsed = tf.cast(step - tf.gather(self.last_seen, seen), tf.float32) / count
        before = tf.gather(self.sightings, seen)
        # The weight left on the old average after sightings before+1..before+count at rates max(alpha, 1/k):
        # the running-mean ones (k <= K) multiply to before / (before + theirs), the others give 1 - alpha each.
        running_mean_end = float(math.floor(1.0 / self.alpha))
        kept = before / tf.maximum(before, tf.minimum(before + count, running_mean_end)) * tf.pow(
            1.0 - self.alpha, tf.maximum(0.0, before + count - tf.maximum(before, running_mean_end)))
        average = kept * tf.gather(self.gap, seen) + (1.0 - kept) * elapsed
        self.gap.scatter_update(tf.IndexedSlices(average, seen))
        self.sightings.scatter_update(tf.IndexedSlices(before + count, seen))
        self.last_seen.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(seen), step), seen))

    def get_config(self) -> dict:
        return {**super().get_config(), "num_buckets": self.num_buckets, "num_hashes": self.num_hashes,
                "alpha": self.alpha}
