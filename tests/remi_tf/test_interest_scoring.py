"""Scoring with the K interests in training (hard, max, logsumexp, mixture) and the interest weights' distillation,
against numpy transcriptions: the loss, which interest each candidate's gradient reaches, the KL term."""

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import config as config_lib
from remi_tf import losses, models
from remi_tf.layers import InterestMixture
from remi_tf.models import FIRST_ITEM_INDEX as FIRST
from remi_tf.tasks import InterestAwareRetrieval
from tests.numpy_reference import (gate_imbalance, ihn_from_similarities, ihn_numpy, mixture_gate, mixture_of_logits,
                                   served_similarities)


def multi_interest_batch(seed, batch=6, extra=4, interests=3, dim=5, vocabulary=7):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, interests, dim)), rng.normal(size=(batch + extra, dim)),
            rng.uniform(0.01, 0.3, size=batch + extra), rng.integers(0, vocabulary, size=batch + extra))


def task_loss(task, queries, candidates, probability, ids):
    return task(tf.constant(queries), tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
                candidate_ids=tf.constant(ids))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode,tau", [("hard", 1.0), ("max", 1.0), ("logsumexp", 1.0), ("logsumexp", 0.2)])
def test_multi_interest_loss_matches_numpy(seed, mode, tau):
    interests, candidates, probability, ids = multi_interest_batch(seed)
    task = InterestAwareRetrieval(beta=0.7, temperature=0.5, interest_scoring=mode, interest_temperature=tau)
    expected = ihn_from_similarities(served_similarities(interests, candidates, mode, tau), probability, ids,
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


@pytest.mark.parametrize("mode,tau", [("max", 1.0), ("logsumexp", 0.5)])
def test_gradient_reaches_the_interests_as_served(mode, tau):
    """beta 0: d loss / d s_bj = (softmax_j(s^_b) - [j = b]) / B over the columns the loss sees; with max each
    column's gradient reaches only its best interest, with logsumexp every interest by softmax_k(<u_k, v_j> / tau)."""
    interests, candidates, probability, _ = multi_interest_batch(4)
    ids = np.arange(len(candidates))  # no accidental hits: every column is seen
    queries = tf.Variable(interests)
    task = InterestAwareRetrieval(interest_scoring=mode, interest_temperature=tau)
    with tf.GradientTape() as tape:
        loss = task(queries, tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
                    candidate_ids=tf.constant(ids))
    gradient = tape.gradient(loss, queries).numpy()

    batch = len(interests)
    corrected = served_similarities(interests, candidates, mode, tau) - np.log(probability)
    d_scores = (softmax(corrected) - np.eye(batch, len(candidates))) / batch  # [B, C]
    per_interest = np.einsum("bkd,cd->bkc", interests, candidates)
    if mode == "max":
        share = (per_interest == per_interest.max(axis=1, keepdims=True)).astype(float)  # [B, K, C]
    else:
        share = softmax(per_interest / tau, axis=1)
    expected = np.einsum("bc,bkc,cd->bkd", d_scores, share, candidates)
    np.testing.assert_allclose(gradient, expected, rtol=1e-8, atol=1e-12)
    if mode == "max":  # an interest that is best for no candidate gets no gradient
        never_best = share.sum(axis=2) == 0
        assert np.all(gradient[never_best] == 0)


def test_distillation_is_kl_to_the_cosine_teacher():
    rng = np.random.default_rng(5)
    interests, targets, logits = rng.normal(size=(4, 3, 6)), rng.normal(size=(4, 6)), rng.normal(size=(4, 3))
    cosine = np.einsum("bkd,bd->bk", interests / np.linalg.norm(interests, axis=-1, keepdims=True),
                       targets / np.linalg.norm(targets, axis=-1, keepdims=True))
    teacher, student = softmax(cosine / 0.2), softmax(logits)
    expected = (teacher * np.log(teacher / student)).sum(axis=1)
    variables = [tf.Variable(interests), tf.Variable(targets), tf.Variable(logits)]
    with tf.GradientTape() as tape:
        kl = losses.interest_weight_distillation(*variables, temperature=0.2)
        total = tf.reduce_sum(kl)
    np.testing.assert_allclose(kl.numpy(), expected, rtol=1e-10)
    d_interests, d_targets, d_logits = tape.gradient(total, variables)
    assert d_interests is None and d_targets is None  # the teacher is a constant
    np.testing.assert_allclose(d_logits.numpy(), student - teacher, rtol=1e-9, atol=1e-12)


def test_model_objective_adds_the_distillation_and_leaves_the_interests_alone():
    """The model's loss is retrieval + routing_lambda * RR + interest_weight_lambda * mean KL; the KL term's
    gradient reaches the predictor only (its inputs are read with the gradient stopped)."""
    tf.keras.utils.set_random_seed(2)
    config = config_lib.RemiConfig(embedding_dim=4, num_interests=3, max_history=5, interest_scoring="max",
                                   interest_weights="distilled", interest_weight_lambda=0.5,
                                   interest_weight_temperature=0.3, routing_lambda=10.0)
    model = models.RemiModel(config, 10)
    rng = np.random.default_rng(0)
    history = rng.integers(FIRST, 10 + FIRST, size=(6, 5))
    history[:, 3:] = 0
    target = rng.integers(FIRST, 10 + FIRST, size=6)
    features = {"history": tf.constant(history), "target": tf.constant(target)}
    with tf.GradientTape(persistent=True) as tape:
        loss, terms = model.objective(features)
        distillation = terms[3]
    retrieval, regularization = terms[0].numpy(), terms[1].numpy()
    encoding = model.query_tower.encode(tf.constant(history))
    kl = losses.interest_weight_distillation(encoding.interests, model.query_tower.candidate_vectors(target),
                                             encoding.weight_logits, 0.3)
    np.testing.assert_allclose(distillation.numpy(), tf.reduce_mean(kl).numpy(), rtol=1e-6)
    np.testing.assert_allclose(loss.numpy(), retrieval + 10.0 * regularization + 0.5 * distillation.numpy(), rtol=1e-6)
    predictor = {v.ref() for v in model.query_tower.interest_weights.trainable_variables}
    reached = []
    for variable, gradient in zip(model.trainable_variables, tape.gradient(distillation, model.trainable_variables)):
        largest = 0.0 if gradient is None else float(tf.reduce_max(tf.abs(tf.convert_to_tensor(gradient))))
        if variable.ref() in predictor:
            reached.append(largest > 1e-4)
        else:
            assert largest == 0.0, (variable.name, largest)
    assert sum(reached) >= 3, reached  # the recency logits and the hidden layer's weights learn


def test_served_score_weight_adds_the_max_scored_softmax_to_the_hard_readout():
    """retrieval term = IHN(hard read-out similarities) + w * IHN(max over the interests), both on the batch's
    candidates (logQ off, accidental hits removed), against numpy on the model's own interests and vectors."""
    tf.keras.utils.set_random_seed(6)
    config = config_lib.RemiConfig(embedding_dim=4, num_interests=3, max_history=5, served_score_weight=0.5,
                                   logq_correction="none", routing_lambda=0.0)
    model = models.RemiModel(config, 10)
    rng = np.random.default_rng(1)
    history = rng.integers(FIRST, 10 + FIRST, size=(6, 5))
    target = rng.integers(FIRST, 10 + FIRST, size=6)
    _, terms = model.objective({"history": tf.constant(history), "target": tf.constant(target)})
    interests = model.query_tower.encode(tf.constant(history)).interests.numpy().astype(np.float64)
    candidates = model.query_tower.candidate_vectors(tf.constant(target)).numpy().astype(np.float64)
    ones = np.ones(len(target))
    expected = [ihn_from_similarities(served_similarities(interests, candidates, mode), ones, target, 0.0, 1.0, True)
                for mode in ("hard", "max")]
    np.testing.assert_allclose(terms[0].numpy(), expected[0] + 0.5 * expected[1], rtol=1e-5)
    with pytest.raises(ValueError, match="served_score_weight.*needs interest_scoring 'hard'"):
        config.replace(interest_scoring="max")


def mixture_layer(dim, gate_dim=3, tau=0.5, seed=0):
    """An InterestMixture in float64 (the tests' dtype) with random gate maps."""
    layer = InterestMixture(gate_dim, tau, dtype="float64")
    layer.build(tf.TensorShape([None, dim]))
    rng = np.random.default_rng(seed)
    for dense in (layer.interest_gate, layer.item_gate):
        dense.kernel.assign(rng.normal(size=(dim, gate_dim)))
    return layer


def numpy_mixture(layer, interests, candidates):
    """[B, K, d], [C, d] -> [B, C] the mixture of logits (tests/numpy_reference), from the layer's gate maps."""
    interest_map, item_map = layer.interest_gate.kernel.numpy(), layer.item_gate.kernel.numpy()
    per_interest = np.einsum("bkd,cd->bck", interests, candidates)
    return mixture_of_logits(per_interest, (interests @ interest_map)[:, np.newaxis], candidates @ item_map,
                             layer.temperature)


@pytest.mark.parametrize("seed", [0, 1])
def test_mixture_loss_matches_numpy(seed):
    interests, candidates, probability, ids = multi_interest_batch(seed)
    layer = mixture_layer(interests.shape[-1], seed=seed)
    task = InterestAwareRetrieval(beta=0.7, temperature=0.5, interest_scoring="mixture", interest_mixture=layer)
    expected = ihn_from_similarities(numpy_mixture(layer, interests, candidates), probability, ids,
                                     beta=0.7, temperature=0.5, remove_hits=True)
    np.testing.assert_allclose(task_loss(task, interests, candidates, probability, ids).numpy(), expected, rtol=1e-8)


def test_mixture_gradient_reaches_interests_and_gate_as_numpy_differences():
    """The mixture's gradient with respect to the interests and to both gate maps equals central differences of
    the numpy loss; every interest receives gradient (the gate is a softmax, not an argmax)."""
    interests, candidates, probability, ids = multi_interest_batch(6)
    ids = np.arange(len(candidates))
    layer = mixture_layer(interests.shape[-1], seed=6)
    task = InterestAwareRetrieval(interest_scoring="mixture", interest_mixture=layer)
    queries = tf.Variable(interests)
    with tf.GradientTape() as tape:
        loss = task(queries, tf.constant(candidates), candidate_sampling_probability=tf.constant(probability),
                    candidate_ids=tf.constant(ids))
    gradients = tape.gradient(loss, [queries, layer.interest_gate.kernel, layer.item_gate.kernel])

    def numpy_loss():
        return ihn_from_similarities(numpy_mixture(layer, queries.numpy(), candidates), probability, ids, beta=0.0,
                                     temperature=1.0, remove_hits=True)

    for variable, gradient in zip([queries, layer.interest_gate.kernel, layer.item_gate.kernel], gradients):
        value, expected = variable.numpy(), np.zeros(variable.shape)
        for position in np.ndindex(*value.shape):
            for sign in (1, -1):
                shifted = value.copy()
                shifted[position] += sign * 1e-6
                variable.assign(shifted)
                expected[position] += sign * numpy_loss() / 2e-6
            variable.assign(value)
        np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-5, atol=1e-8)
    assert np.all(np.abs(gradients[0].numpy()).sum(axis=-1) > 0)


def test_mixture_scoring_needs_its_gate():
    with pytest.raises(ValueError, match="interest_mixture"):
        InterestAwareRetrieval(interest_scoring="mixture")


def test_gate_imbalance_against_hand_worked_values():
    assert losses.gate_imbalance(tf.constant([[1.0, 0.0], [0.0, 1.0]])).numpy() == pytest.approx(0.0, abs=1e-7)
    assert losses.gate_imbalance(tf.constant([[1.0, 0.0], [1.0, 0.0]])).numpy() == pytest.approx(np.log(2))
    # mean (0.75, 0.25): 0.75 log 1.5 + 0.25 log 0.5
    assert losses.gate_imbalance(tf.constant([[0.5, 0.5], [1.0, 0.0]])).numpy() == pytest.approx(
        0.75 * np.log(1.5) + 0.25 * np.log(0.5))


def test_mixture_balance_adds_the_imbalance_of_the_positives_gate_and_trains_interests_and_gate():
    """terms[4] = KL(mean gate on the positives || uniform) from numpy on the model's own interests, positives and
    gate maps; loss = retrieval + routing_lambda * RR + lambda * that; its gradient reaches both gate maps and the
    interests' routing."""
    tf.keras.utils.set_random_seed(3)
    config = config_lib.RemiConfig(embedding_dim=4, num_interests=3, max_history=5, interest_scoring="mixture",
                                   mixture_gate_dim=2, interest_temperature=0.5, mixture_balance_lambda=2.0,
                                   routing_lambda=10.0)
    model = models.RemiModel(config, 10)
    rng = np.random.default_rng(4)
    history = rng.integers(FIRST, 10 + FIRST, size=(6, 5))
    target = rng.integers(FIRST, 10 + FIRST, size=6)
    with tf.GradientTape() as tape:
        loss, terms = model.objective({"history": tf.constant(history), "target": tf.constant(target)})
        imbalance = terms[4]
    interests = model.query_tower.encode(tf.constant(history)).interests.numpy().astype(np.float64)
    positives = model.query_tower.candidate_vectors(tf.constant(target)).numpy().astype(np.float64)
    mixture = model.interest_mixture
    gate = mixture_gate(np.einsum("bkd,bd->bk", interests, positives),
                        interests @ mixture.interest_gate.kernel.numpy(), positives @ mixture.item_gate.kernel.numpy(),
                        0.5)
    assert gate_imbalance(gate) > 1e-3  # not balanced at the start: the term has something to do
    np.testing.assert_allclose(imbalance.numpy(), gate_imbalance(gate), rtol=1e-4)
    np.testing.assert_allclose(loss.numpy(), terms[0].numpy() + 10.0 * terms[1].numpy() + 2.0 * imbalance.numpy(),
                               rtol=1e-6)
    reached = {variable.ref() for variable, gradient in zip(
        model.trainable_variables, tape.gradient(imbalance, model.trainable_variables), strict=True)
        if gradient is not None and float(tf.reduce_max(tf.abs(tf.convert_to_tensor(gradient)))) > 1e-6}
    gate_maps = {mixture.interest_gate.kernel.ref(), mixture.item_gate.kernel.ref()}
    assert gate_maps <= reached and reached - gate_maps  # both gate maps, and the towers too
    assert "mixture_balance" in [metric.name for metric in model.metrics]


def test_mixture_balance_needs_the_mixture_and_a_weight_of_at_least_zero():
    with pytest.raises(ValueError, match="mixture_balance_lambda.*needs interest_scoring 'mixture'"):
        config_lib.RemiConfig().replace(interest_scoring="max", mixture_balance_lambda=1.0)
    with pytest.raises(ValueError, match="mixture_balance_lambda.*>= 0"):
        config_lib.RemiConfig().replace(interest_scoring="mixture", mixture_balance_lambda=-1.0)
