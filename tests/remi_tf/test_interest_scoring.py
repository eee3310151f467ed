"""Scoring with the K interests in training (hard, max), against numpy transcriptions: the loss, which interest each
candidate's gradient reaches, the served score's extra term."""

import numpy as np
import pytest
import tensorflow as tf

from tests.configs import remi_config
from remi_tf import config as config_lib
from remi_tf import models, scoring
from remi_tf.item_index import FIRST_ITEM_INDEX as FIRST
from remi_tf.tasks import InterestAwareRetrieval
from tests.numpy_reference import ihn_from_similarities, ihn_numpy, served_similarities


def multi_interest_batch(seed, batch=6, extra=4, interests=3, dim=5, vocabulary=7):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, interests, dim)), rng.normal(size=(batch + extra, dim)),
            rng.uniform(0.01, 0.3, size=batch + extra), rng.integers(0, vocabulary, size=batch + extra))


def task_loss(task, queries, candidates, probability, ids):
    return task(tf.constant(queries), tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
                candidate_ids=tf.constant(ids))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["hard", "max"])
def test_multi_interest_loss_matches_numpy(seed, mode):
    interests, candidates, probability, ids = multi_interest_batch(seed)
    task = InterestAwareRetrieval(beta=0.7, temperature=0.5, interest_scoring=mode)
    expected = ihn_from_similarities(served_similarities(interests, candidates, mode), probability, ids,
                                     beta=0.7, temperature=0.5, remove_hits=True)
    np.testing.assert_allclose(task_loss(task, interests, candidates, probability, ids).numpy(), expected, rtol=1e-9)


def test_hard_scoring_of_k_interests_is_the_hard_readout():
    """[B, K, d] queries scored "hard" give the loss of the read-out vectors as [B, d] queries (the default)."""
    interests, candidates, probability, ids = multi_interest_batch(3)
    best = np.argmax(np.einsum("bkd,bd->bk", interests, candidates[:6]), axis=1)
    selected = interests[np.arange(6), best]
    task = InterestAwareRetrieval(beta=0.3)
    np.testing.assert_allclose(task_loss(task, interests, candidates, probability, ids).numpy(),
                               ihn_numpy(selected, candidates, probability, ids, 0.3, 1.0, True), rtol=1e-12)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_gradient_reaches_the_interests_as_served():
    """beta 0: d loss / d s_bj = (softmax_j(s^_b) - [j = b]) / B over the columns the loss sees; scored by the max,
    each column's gradient reaches only its best interest."""
    interests, candidates, probability, _ = multi_interest_batch(4)
    ids = np.arange(len(candidates))  # no accidental hits: every column is seen
    queries = tf.Variable(interests)
    task = InterestAwareRetrieval(interest_scoring="max")
    with tf.GradientTape() as tape:
        loss = task(queries, tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
                    candidate_ids=tf.constant(ids))
    gradient = tape.gradient(loss, queries).numpy()

    batch = len(interests)
    corrected = served_similarities(interests, candidates, "max") - np.log(probability)
    d_scores = (softmax(corrected) - np.eye(batch, len(candidates))) / batch  # [B, C]
    per_interest = np.einsum("bkd,cd->bkc", interests, candidates)
    share = (per_interest == per_interest.max(axis=1, keepdims=True)).astype(float)  # [B, K, C]
    expected = np.einsum("bc,bkc,cd->bkd", d_scores, share, candidates)
    np.testing.assert_allclose(gradient, expected, rtol=1e-8, atol=1e-12)
    never_best = share.sum(axis=2) == 0  # an interest that is best for no candidate gets no gradient
    assert np.all(gradient[never_best] == 0)


def test_served_score_weight_adds_the_max_scored_softmax_to_the_hard_readout():
    """retrieval term = IHN(hard read-out similarities) + w * IHN(max over the interests), both on the batch's
    candidates (logQ off, accidental hits removed), against numpy on the model's own interests and vectors."""
    tf.keras.utils.set_random_seed(6)
    config = remi_config(embedding_dim=4, num_interests=3, max_history=5, served_score_weight=0.5,
                                   logq_correction="none", routing_lambda=0.0)
    model = models.RemiModel(config, 10)
    rng = np.random.default_rng(1)
    history = rng.integers(FIRST, 10 + FIRST, size=(6, 5))
    target = rng.integers(FIRST, 10 + FIRST, size=6)
    _, terms = model.loss_and_terms({"history": tf.constant(history), "target": tf.constant(target)})
    interests = model.query_tower(tf.constant(history))[0].numpy().astype(np.float64)
    candidates = model.query_tower.item_vectors(tf.constant(target)).numpy().astype(np.float64)
    ones = np.ones(len(target))
    expected = [ihn_from_similarities(served_similarities(interests, candidates, mode), ones, target, 0.0, 1.0, True)
                for mode in ("hard", "max")]
    np.testing.assert_allclose(terms[0].numpy(), expected[0] + 0.5 * expected[1], rtol=1e-5)
    with pytest.raises(ValueError, match="served_score_weight.*needs interest_scoring 'hard'"):
        config.replace(interest_scoring="max")


@pytest.mark.parametrize("mode", ["hard", "max"])
def test_one_interest_scores_as_a_single_query_vector(mode):
    """K = 1 (SASRec's user vector): both modes give the loss and gradient of the [B, d] query itself, on the task's
    single-cut path and on the every-position scores."""
    interests, candidates, probability, ids = multi_interest_batch(5, interests=1)
    expected = ihn_numpy(interests[:, 0], candidates, probability, ids, 0.4, 1.0, True)
    queries = tf.Variable(interests)
    with tf.GradientTape() as tape:
        loss = InterestAwareRetrieval(beta=0.4, interest_scoring=mode)(
            queries, tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
            candidate_ids=tf.constant(ids))
    gradient = tape.gradient(loss, queries).numpy()
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
    flat = tf.Variable(interests[:, 0])
    with tf.GradientTape() as tape:
        single = InterestAwareRetrieval(beta=0.4)(flat, tf.constant(candidates),
                                                  candidate_sampling_probability=tf.constant(probability),
                                                  candidate_ids=tf.constant(ids))
    np.testing.assert_allclose(gradient[:, 0], tape.gradient(single, flat).numpy(), rtol=1e-9, atol=1e-15)
    positives = candidates[:6] + 0.5
    positive_scores, scores = scoring.positive_and_candidate_scores(tf.constant(interests), tf.constant(positives),
                                                                    tf.constant(candidates), mode)
    np.testing.assert_allclose(positive_scores.numpy(), np.sum(interests[:, 0] * positives, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(scores.numpy(), interests[:, 0] @ candidates.T, rtol=1e-12)
