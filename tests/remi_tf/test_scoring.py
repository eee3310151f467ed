"""Scoring options of the objective: cosine scoring (`normalize_embeddings`), the share of the logQ correction
(`logq_weight`) and the learning-rate schedule."""

import math

import numpy as np
import tensorflow as tf

from remi_tf import config as config_lib
from remi_tf import models, train
from remi_tf.input import sequence_dataset
from remi_tf.models import FIRST_ITEM_INDEX as FIRST
from tests.numpy_reference import ihn_numpy

VOCABULARY = 12


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def hard_readout(interests: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """[B, K, d], [B, d] -> [B, d]: per row the interest that scores its positive highest."""
    return interests[np.arange(len(interests)), np.argmax(np.einsum("bkd,bd->bk", interests, positives), axis=1)]


def test_normalized_embeddings_score_unit_vectors_everywhere():
    """Training, evaluation and export score the unit-length interests and item vectors: the loss is the
    IHN softmax of cosine similarities over the temperature, computed here from the raw model's vectors."""
    tf.keras.utils.set_random_seed(3)
    config = config_lib.RemiConfig(embedding_dim=4, num_interests=2, max_history=5, beta=0.5, temperature=0.2,
                                   routing_lambda=0.0, normalize_embeddings=True)
    probability = np.concatenate([[0.0, 0.0], np.random.default_rng(0).dirichlet(np.ones(VOCABULARY))])
    cosine = models.RemiModel(config, VOCABULARY, probability)
    raw = models.RemiModel(config.replace(normalize_embeddings=False), VOCABULARY, probability)
    raw.set_weights(cosine.get_weights())

    rng = np.random.default_rng(1)
    history = rng.integers(FIRST, VOCABULARY + FIRST, size=(6, 5))
    history[:, :2] = 0  # padding
    target = rng.integers(FIRST, VOCABULARY + FIRST, size=6)
    raw_interests = raw.interests(tf.constant(history))[0].numpy()
    table = raw.item_embedding.embeddings.numpy()

    interests = cosine.interests(tf.constant(history))[0].numpy()
    np.testing.assert_allclose(interests, unit(raw_interests), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cosine.candidate_embeddings().numpy(), unit(table[FIRST:]), rtol=1e-5, atol=1e-6)
    chunks = np.concatenate([rows.numpy() for _, rows in cosine.candidate_chunks(5)])
    np.testing.assert_allclose(chunks, unit(table[FIRST:]), rtol=1e-5, atol=1e-6)

    positives = unit(table[target].astype(np.float64))
    query = unit(raw_interests.astype(np.float64))
    expected = ihn_numpy(hard_readout(query, positives), positives, probability[target], target, beta=0.5,
                         temperature=0.2, remove_hits=True)
    _, terms = cosine.objective({"history": tf.constant(history), "target": tf.constant(target)})
    np.testing.assert_allclose(terms[0].numpy(), expected, rtol=1e-5)


def test_logq_weight_scales_the_correction():
    """The logits lose logq_weight * log max(q_j, 1e-6): the model's loss against the numpy IHN softmax at
    weights 0.5, 1 and 0 (which equals logq_correction "none")."""
    tf.keras.utils.set_random_seed(4)
    config = config_lib.RemiConfig(embedding_dim=4, num_interests=2, max_history=5, beta=0.5, routing_lambda=0.0)
    probability = np.concatenate([[0.0, 0.0], np.random.default_rng(2).dirichlet(np.ones(VOCABULARY))])
    probability[FIRST + 3] = 1e-9  # below the correction's floor of 1e-6: weight * log(1e-6) for it
    full = models.RemiModel(config, VOCABULARY, probability)
    rng = np.random.default_rng(5)
    history = rng.integers(FIRST, VOCABULARY + FIRST, size=(6, 5))
    target = rng.integers(FIRST, VOCABULARY + FIRST, size=6)
    target[0] = FIRST + 3
    interests = full.interests(tf.constant(history))[0].numpy().astype(np.float64)
    positives = full.item_embedding.embeddings.numpy()[target].astype(np.float64)
    selected = hard_readout(interests, positives)
    inputs = {"history": tf.constant(history), "target": tf.constant(target)}
    losses = {}
    for weight in (0.5, 1.0, 0.0):
        model = models.RemiModel(config.replace(logq_weight=weight), VOCABULARY, probability)
        model.set_weights(full.get_weights())
        losses[weight] = model.objective(inputs)[1][0].numpy()
        expected = ihn_numpy(selected, positives, probability[target], target, beta=0.5, temperature=1.0,
                             remove_hits=True, logq_weight=weight)
        np.testing.assert_allclose(losses[weight], expected, rtol=1e-5)
    uncorrected = models.RemiModel(config.replace(logq_correction="none"), VOCABULARY, probability)
    uncorrected.set_weights(full.get_weights())
    np.testing.assert_allclose(uncorrected.objective(inputs)[1][0].numpy(), losses[0.0], rtol=1e-6)
    assert len({round(float(value), 4) for value in losses.values()}) == 3


def test_cosine_schedule_decays_the_learning_rate_to_zero_over_max_steps():
    """lr_t = lr * (1 + cos(pi t / max_steps)) / 2 at optimizer step t (0-based), for both optimizers (that
    LazyAdam's sparse updates move at the scheduled rate: test_optimizers)."""
    sequences = [np.arange(FIRST, FIRST + VOCABULARY)] * 64
    for optimizer in ("lazy_adam", "adam"):
        config = config_lib.RemiConfig(embedding_dim=4, max_history=5, batch_size=8, learning_rate=0.01, max_steps=8,
                                       steps_per_execution=1, learning_rate_schedule="cosine", optimizer=optimizer)
        model = models.RemiModel(config, VOCABULARY)
        train.compile_model(model, config)
        dataset = sequence_dataset(sequences, config.batch_size, config.max_history, seed=0)
        for step in range(config.max_steps):
            model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
            expected = 0.01 * (1 + math.cos(math.pi * step / config.max_steps)) / 2
            np.testing.assert_allclose(model.optimizer.learning_rate.numpy(), expected, rtol=1e-5, atol=1e-9)
        assert int(model.optimizer.iterations.numpy()) == config.max_steps
    constant = config.replace(learning_rate_schedule="constant")
    model = models.RemiModel(constant, VOCABULARY)
    train.compile_model(model, constant)
    model.fit(sequence_dataset(sequences, 8, 5, seed=0), epochs=1, steps_per_epoch=3, verbose=0)
    np.testing.assert_allclose(model.optimizer.learning_rate.numpy(), 0.01, rtol=1e-6)
