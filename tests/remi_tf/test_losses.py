"""Routing regularization against a numpy computation of DESIGN.md's formula (section 2)."""

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import losses


def routing_regularization_numpy(routing, dim, mode):
    total = 0.0
    for b in range(routing.shape[0]):
        a = routing[b]  # [K, L]
        centred = a - a.mean(axis=1, keepdims=True)
        covariance = centred @ centred.T / dim  # [K, K]
        total += np.sum(np.diag(covariance) ** 2) if mode == "diagonal" else np.sum(covariance ** 2)
    return total


def random_routing(rng, batch=6, interests=4, length=7):
    logits = rng.normal(size=(batch, interests, length)) * 2.0
    return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["diagonal", "frobenius"])
def test_routing_regularization_matches_numpy(seed, mode):
    routing = random_routing(np.random.default_rng(seed))
    got = losses.routing_regularization(tf.constant(routing), embedding_dim=16, mode=mode)
    np.testing.assert_allclose(got.numpy(), routing_regularization_numpy(routing, 16, mode), rtol=1e-10)


def test_routing_regularization_hand_worked():
    # One example, K = 2, L = 2: rows [1, 0] and [0.5, 0.5]; centred rows [0.5, -0.5] and [0, 0].
    # C = [[0.5, 0], [0, 0]] / d with d = 2 -> diag = [0.25, 0]; ||diag||^2 = 0.0625 = ||C||_F^2.
    routing = tf.constant([[[1.0, 0.0], [0.5, 0.5]]])
    assert losses.routing_regularization(routing, 2).numpy() == pytest.approx(0.0625)
    assert losses.routing_regularization(routing, 2, "frobenius").numpy() == pytest.approx(0.0625)
    # Two interests on opposite items: rows [1, 0] and [0, 1]; centred [0.5, -0.5] and [-0.5, 0.5].
    # C = [[0.5, -0.5], [-0.5, 0.5]] / 2: diag = [0.25, 0.25] -> 0.125; the off-diagonal -0.25s count only
    # in ||C||_F^2 = 4 * 0.0625 = 0.25, so the two modes differ here.
    routing = tf.constant([[[1.0, 0.0], [0.0, 1.0]]])
    assert losses.routing_regularization(routing, 2).numpy() == pytest.approx(0.125)
    assert losses.routing_regularization(routing, 2, "frobenius").numpy() == pytest.approx(0.25)


def test_routing_regularization_rejects_unknown_mode():
    with pytest.raises(ValueError, match="diagonal"):
        losses.routing_regularization(tf.ones([1, 2, 3]), 4, mode="trace")
