"""The model's objective with the count-based logQ correction, against the numpy IHN softmax."""

import numpy as np
import tensorflow as tf

from tests.configs import remi_config
from remi_tf import config as config_lib
from remi_tf import models
from remi_tf.item_index import FIRST_ITEM_INDEX as FIRST
from tests.numpy_reference import ihn_numpy

VOCABULARY = 12


def hard_readout(interests: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """[B, K, d], [B, d] -> [B, d]: per row the interest that scores its positive highest."""
    return interests[np.arange(len(interests)), np.argmax(np.einsum("bkd,bd->bk", interests, positives), axis=1)]


def test_logq_correction_subtracts_log_q_floored_at_one_in_a_million():
    """The logits lose log max(q_j, 1e-6): the model's loss against the numpy IHN softmax, and without the
    correction (logq_correction "none") against the same softmax with q = 1."""
    tf.keras.utils.set_random_seed(4)
    config = remi_config(embedding_dim=4, num_interests=2, max_history=5, beta=0.5, routing_lambda=0.0)
    probability = np.concatenate([[0.0, 0.0], np.random.default_rng(2).dirichlet(np.ones(VOCABULARY))])
    probability[FIRST + 3] = 1e-9  # below the correction's floor of 1e-6: log(1e-6) for it
    corrected = models.RemiModel(config, VOCABULARY, probability)
    rng = np.random.default_rng(5)
    history = rng.integers(FIRST, VOCABULARY + FIRST, size=(6, 5))
    target = rng.integers(FIRST, VOCABULARY + FIRST, size=6)
    target[0] = FIRST + 3
    interests = corrected.interests(tf.constant(history))[0].numpy().astype(np.float64)
    positives = corrected.item_embedding.embeddings.numpy()[target].astype(np.float64)
    selected = hard_readout(interests, positives)
    inputs = {"history": tf.constant(history), "target": tf.constant(target)}
    expected = ihn_numpy(selected, positives, probability[target], target, beta=0.5, temperature=1.0, remove_hits=True)
    np.testing.assert_allclose(corrected.loss_and_terms(inputs)[1][0].numpy(), expected, rtol=1e-5)
    uncorrected = models.RemiModel(config.replace(logq_correction="none"), VOCABULARY, probability)
    uncorrected.set_weights(corrected.get_weights())
    expected = ihn_numpy(selected, positives, np.ones(len(target)), target, beta=0.5, temperature=1.0,
                         remove_hits=True)
    np.testing.assert_allclose(uncorrected.loss_and_terms(inputs)[1][0].numpy(), expected, rtol=1e-5)
