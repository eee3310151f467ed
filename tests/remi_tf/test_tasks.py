"""The IHN task against a numpy computation, TFRS's Retrieval (beta = 0) and the reference estimator."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf.tasks import InterestAwareRetrieval
from tests.numpy_reference import ihn_numpy


def random_batch(seed, batch=8, extra=5, dim=6, vocabulary=6):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(batch, dim))
    candidates = rng.normal(size=(batch + extra, dim))
    ids = rng.integers(0, vocabulary, size=batch + extra)  # small vocabulary: accidental hits happen
    probability = rng.uniform(0.01, 0.3, size=batch + extra)
    return query, candidates, probability, ids


def call(task, query, candidates, probability, ids):
    return task(tf.constant(query), tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
                candidate_ids=tf.constant(ids)).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_matches_numpy_formula(seed, beta, temperature):
    query, candidates, probability, ids = random_batch(seed)
    assert len(set(ids[:8])) < 8 or len(set(ids)) < len(ids)  # the batch has accidental hits
    for remove_hits in (True, False):
        task = InterestAwareRetrieval(beta=beta, temperature=temperature, remove_accidental_hits=remove_hits)
        expected = ihn_numpy(query, candidates, probability, ids, beta, temperature, remove_hits)
        np.testing.assert_allclose(call(task, query, candidates, probability, ids), expected, rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_only_negatives_match_numpy(seed):
    query, candidates, probability, ids = random_batch(seed)
    task = InterestAwareRetrieval(beta=1.5, in_batch_negatives=False)
    expected = ihn_numpy(query, candidates, probability, ids, 1.5, 1.0, True, in_batch=False)
    np.testing.assert_allclose(call(task, query, candidates, probability, ids), expected, rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beta_zero_equals_tfrs_retrieval(seed):
    query, candidates, probability, ids = random_batch(seed, extra=0)
    query, candidates, probability = (x.astype(np.float32) for x in (query, candidates, probability))
    tfrs_task = tfrs.tasks.Retrieval(
        loss=tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE),
        remove_accidental_hits=True, temperature=0.7)
    expected = tfrs_task(tf.constant(query), tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
                         candidate_ids=tf.constant(ids), compute_metrics=False, compute_batch_metrics=False)
    got = call(InterestAwareRetrieval(beta=0.0, temperature=0.7), query, candidates, probability, ids)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5)


def reference_estimator(positive, negatives, beta):
    """The reference code's sampled softmax with IHN (uniform noise, so its logQ terms cancel)."""
    x = np.concatenate([[positive], negatives])
    x = x - x.max()
    importance = np.exp(beta * x[1:] - np.max(beta * x[1:]))
    reweighted = np.sum(importance * np.exp(x[1:])) / importance.mean()
    return -(x[0] - np.log(np.exp(x[0]) + reweighted))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.1, 1.0, 10.0])
def test_uniform_q_equals_reference_estimator(seed, beta):
    rng = np.random.default_rng(seed)
    batch, extra, dim = 6, 20, 5
    query = rng.normal(size=(batch, dim)) * 0.5
    candidates = rng.normal(size=(batch + extra, dim)) * 0.5
    ids = np.arange(batch + extra)  # no accidental hits
    uniform = np.full(batch + extra, 1.0 / 1000)
    scores = query @ candidates.T
    # Shared sampled negatives only, as the reference code.
    expected = np.mean([reference_estimator(scores[b, b], scores[b, batch:], beta) for b in range(batch)])
    got = call(InterestAwareRetrieval(beta=beta, in_batch_negatives=False), query, candidates, uniform, ids)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # In-batch negatives: the other rows' positives play the sampled negatives.
    expected_in_batch = np.mean([reference_estimator(scores[b, b], np.delete(scores[b, :batch], b), beta)
                                 for b in range(batch)])
    got_in_batch = call(InterestAwareRetrieval(beta=beta), query, candidates[:batch], uniform[:batch], ids[:batch])
    np.testing.assert_allclose(got_in_batch, expected_in_batch, rtol=1e-9)


def test_accidental_hit_removal_needs_ids():
    with pytest.raises(ValueError, match="candidate_ids"):
        InterestAwareRetrieval()(tf.ones([2, 3]), tf.ones([2, 3]))


def test_takes_retrievals_weights_and_metrics_with_their_meaning():
    """A TFRS user's arguments: sample_weight, metrics (FactorizedTopK), batch_metrics, loss_metrics and
    compute_metrics give what tfrs.tasks.Retrieval gives (beta = 0)."""
    query, candidates, probability, ids = (x.astype(np.float32) if x.dtype == np.float64 else x
                                           for x in random_batch(3, extra=0))
    weights = np.random.default_rng(4).uniform(0.0, 2.0, size=len(query)).astype(np.float32)
    corpus = tf.data.Dataset.from_tensor_slices((ids, candidates)).batch(4)  # (identifier, embedding)

    def arguments():
        return dict(metrics=tfrs.metrics.FactorizedTopK(corpus, ks=(1, 3)),
                    batch_metrics=[tf.keras.metrics.CategoricalAccuracy(), tf.keras.metrics.TopKCategoricalAccuracy(2)],
                    loss_metrics=[tf.keras.metrics.Mean()])

    theirs = tfrs.tasks.Retrieval(loss=tf.keras.losses.CategoricalCrossentropy(
        from_logits=True, reduction=tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE), remove_accidental_hits=True,
        **arguments())
    ours = InterestAwareRetrieval(beta=0.0, **arguments())
    inputs = dict(sample_weight=tf.constant(weights), candidate_sampling_probability=tf.constant(probability),
                  candidate_ids=tf.constant(ids))
    for task in (theirs, ours):
        loss = task(tf.constant(query), tf.constant(candidates), **inputs)
        task.loss_value = float(loss)
    np.testing.assert_allclose(ours.loss_value, theirs.loss_value, rtol=1e-5)
    unweighted = ours(tf.constant(query), tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
                      candidate_ids=tf.constant(ids), compute_metrics=False, compute_batch_metrics=False)
    assert not np.isclose(float(unweighted), ours.loss_value)  # the weights matter...
    np.testing.assert_allclose(  # ...as sum_b w_b l_b / B, so weights of 1 give the mean
        float(ours(tf.constant(query), tf.constant(candidates), sample_weight=tf.ones(len(query)),
                   candidate_sampling_probability=tf.constant(probability), candidate_ids=tf.constant(ids),
                   compute_metrics=False, compute_batch_metrics=False)), float(unweighted), rtol=1e-6)
    pairs = list(zip(ours.factorized_metrics[0]._top_k_metrics + ours.batch_metrics,
                     theirs.factorized_metrics[0]._top_k_metrics + theirs._batch_metrics))
    assert len(pairs) == 4 and any(0 < float(mine.result()) < 1 for mine, _ in pairs)
    for mine, reference in pairs:  # the second and third calls of ours skipped these (compute_metrics=False)
        np.testing.assert_allclose(float(mine.result()), float(reference.result()), rtol=1e-6, err_msg=mine.name)
    assert ours.loss_metrics[0].count == 3 and theirs._loss_metrics[0].count == 1
