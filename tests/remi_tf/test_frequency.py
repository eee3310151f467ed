"""The streaming frequency estimator (Yi et al. 2019) against a numpy transcription of its update, on a
Zipf stream with known frequencies, after a shift of the distribution, and through a checkpoint."""

import numpy as np
import tensorflow as tf

from remi_tf import frequency

NUM_ITEMS, BATCH = 500, 64


def zipf(num_items: int, exponent: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, num_items + 1) ** exponent
    return weights / weights.sum()


def stream(probability: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """[steps, BATCH] item indices drawn from `probability`."""
    return np.random.default_rng(seed).choice(len(probability), size=(steps, BATCH), p=probability)


def observe_all(estimator: frequency.StreamingFrequencyEstimator, buckets: np.ndarray, batches: np.ndarray) -> None:
    """Feeds [steps, BATCH] item indices, one training step each, in one graph."""
    @tf.function
    def run(batches):
        for batch in batches:
            estimator(tf.gather(buckets, batch, axis=1), training=True)

    run(tf.constant(batches))


def estimate(estimator, buckets, items) -> np.ndarray:
    return estimator(tf.gather(buckets, items, axis=1)).numpy()


def numpy_estimator(buckets: np.ndarray, batches: np.ndarray, num_buckets: int, alpha: float) -> np.ndarray:
    """The paper's update, one sighting at a time at rate max(alpha, 1 / k) for a bucket's k-th sighting
    (repeats within a step get the gap split evenly), in float64: returns the [num_hashes, num_buckets]
    gap averages B."""
    last = np.zeros(buckets.shape[0] * num_buckets, np.int64)
    gap = np.zeros(buckets.shape[0] * num_buckets)
    sightings = np.zeros(buckets.shape[0] * num_buckets, np.int64)
    for step, batch in enumerate(batches, start=1):
        flat = (buckets[:, batch] + np.arange(buckets.shape[0])[:, None] * num_buckets).ravel()
        slots, counts = np.unique(flat, return_counts=True)
        for slot, count in zip(slots, counts):
            share = (step - last[slot]) / count
            for _ in range(count):  # c sightings, each a paper update
                sightings[slot] += 1
                gap[slot] += (share - gap[slot]) * max(alpha, 1.0 / sightings[slot])
            last[slot] = step
    return gap.reshape(buckets.shape[0], num_buckets)


def test_update_matches_a_numpy_transcription_with_collisions_and_repeats():
    num_buckets, alpha = 37, 0.1  # 500 items in 37 buckets: every bucket collides; Zipf heads repeat in a batch
    buckets = frequency.item_buckets([f"item{i}" for i in range(NUM_ITEMS)], num_buckets, num_hashes=3)[:, 2:]
    batches = stream(zipf(NUM_ITEMS), 60, seed=0)
    estimator = frequency.StreamingFrequencyEstimator(num_buckets, 3, alpha)
    observe_all(estimator, buckets, batches)
    expected_gap = numpy_estimator(buckets, batches, num_buckets, alpha)
    np.testing.assert_allclose(estimator.gap.numpy().reshape(3, num_buckets), expected_gap, rtol=1e-5)
    items = np.arange(NUM_ITEMS)
    expected = 1.0 / expected_gap[np.arange(3)[:, None], buckets[:, items]].max(axis=0)  # the least collided hash
    np.testing.assert_allclose(estimate(estimator, buckets, items), expected, rtol=1e-5)


def test_estimates_zipf_frequencies_and_follows_a_shift():
    probability = zipf(NUM_ITEMS)
    buckets = frequency.item_buckets([f"item{i}" for i in range(NUM_ITEMS)], 1 << 16, num_hashes=2)[:, 2:]
    estimator = frequency.StreamingFrequencyEstimator(1 << 16, 2, alpha=0.01)
    observe_all(estimator, buckets, stream(probability, 4000, seed=1))
    frequent = np.flatnonzero(probability * BATCH >= 0.2)  # seen at least every 5 steps: ~800+ sightings
    truth = probability[frequent] * BATCH  # expected occurrences per step
    error = np.abs(estimate(estimator, buckets, frequent) / truth - 1)
    # alpha 0.01 averages ~200 sightings: ~7% standard error per item (seeds 1, 5, 9: mean 0.046-0.054,
    # max 0.15-0.17)
    assert len(frequent) >= 30 and error.mean() < 0.08 and error.max() < 0.25, (error.mean(), error.max())

    shifted = probability[::-1].copy()  # the tail becomes the head
    observe_all(estimator, buckets, stream(shifted, 1000, seed=2))
    frequent = np.flatnonzero(shifted * BATCH >= 1.0)  # >= 1000 sightings since the shift
    error = np.abs(estimate(estimator, buckets, frequent) / (shifted[frequent] * BATCH) - 1)
    assert len(frequent) >= 5 and error.max() < 0.25, error  # seeds 2, 6, 10: 0.12-0.15
    # and the old head, now rare, is no longer estimated as frequent
    assert estimate(estimator, buckets, np.array([0]))[0] < 0.2 * probability[0] * BATCH


def test_state_survives_a_checkpoint(tmp_path):
    buckets = frequency.item_buckets([f"item{i}" for i in range(NUM_ITEMS)], 1024, num_hashes=2)[:, 2:]
    estimator = frequency.StreamingFrequencyEstimator(1024, 2, alpha=0.05)
    observe_all(estimator, buckets, stream(zipf(NUM_ITEMS), 50, seed=3))
    path = tf.train.Checkpoint(estimator=estimator).save(str(tmp_path / "ckpt"))
    restored = frequency.StreamingFrequencyEstimator(1024, 2, alpha=0.05)
    tf.train.Checkpoint(estimator=restored).restore(path).assert_consumed()
    for name in ("step", "last_seen", "gap", "sightings"):
        np.testing.assert_array_equal(getattr(restored, name).numpy(), getattr(estimator, name).numpy())
    more = stream(zipf(NUM_ITEMS), 10, seed=4)
    observe_all(estimator, buckets, more)
    observe_all(restored, buckets, more)
    items = np.arange(NUM_ITEMS)
    np.testing.assert_array_equal(estimate(restored, buckets, items), estimate(estimator, buckets, items))


def test_buckets_depend_on_the_id_not_its_index():
    first = frequency.item_buckets(["a", "b", "c"], 1000, num_hashes=2)
    second = frequency.item_buckets(["c", "a"], 1000, num_hashes=2)
    np.testing.assert_array_equal(first[:, [4, 2]], second[:, [2, 3]])  # c and a: the same buckets
    assert (first[0] != first[1]).any()  # the hashes differ
