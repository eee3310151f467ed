"""The routing layers (self-attentive, capsule) against numpy, their masking, a SavedModel round trip,
and the read-outs."""

import os

import numpy as np
import pytest
import tensorflow as tf

from remi_tf.layers import CapsuleRouting, SelfAttentiveRouting, hard_readout, label_aware_readout
from remi_tf.layers.capsule import squash
from remi_tf.losses import routing_regularization


def make_inputs(seed, batch=5, length=6, dim=8):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(batch, length, dim)).astype(np.float32)
    lengths = np.array([length, 1, 3, 4, 2])[:batch]
    mask = np.arange(length)[None, :] < lengths[:, None]
    return embeddings, mask


def routing_numpy(layer, embeddings, mask):
    w1, w2 = layer.attention_hidden.kernel.numpy(), layer.attention_logits.kernel.numpy()
    history = embeddings * mask[:, :, None]
    features = history + layer.position_embedding.numpy()
    logits = np.tanh(features @ w1) @ w2  # [B, L, K]
    logits = np.where(mask[:, :, None], logits, -np.inf).transpose(0, 2, 1)
    routing = np.exp(logits - logits.max(-1, keepdims=True))
    routing /= routing.sum(-1, keepdims=True)
    return routing @ history, routing


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_and_masks_padding(seed):
    embeddings, mask = make_inputs(seed)
    layer = SelfAttentiveRouting(num_interests=3, max_length=6)
    interests, routing = layer(tf.constant(embeddings), tf.constant(mask))
    expected_interests, expected_routing = routing_numpy(layer, embeddings, mask)
    np.testing.assert_allclose(routing.numpy(), expected_routing, atol=1e-6)
    np.testing.assert_allclose(interests.numpy(), expected_interests, atol=1e-5)
    assert np.all(routing.numpy()[~np.broadcast_to(mask[:, None, :], routing.shape)] == 0.0)
    np.testing.assert_allclose(routing.numpy().sum(-1), 1.0, atol=1e-6)


def test_padding_embeddings_do_not_change_the_output():
    embeddings, mask = make_inputs(0)
    layer = SelfAttentiveRouting(num_interests=4, max_length=6)
    first = layer(tf.constant(embeddings), tf.constant(mask))
    noisy = np.where(mask[:, :, None], embeddings, 100.0).astype(np.float32)
    second = layer(tf.constant(noisy), tf.constant(mask))
    for a, b in zip(first, second):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_saved_model_reload_gives_the_same_outputs(tmp_path):
    embeddings, mask = make_inputs(1)
    item_input = tf.keras.Input([6, 8], name="item_embeddings")
    mask_input = tf.keras.Input([6], dtype=tf.bool, name="mask")
    outputs = SelfAttentiveRouting(num_interests=2, max_length=6, name="routing")(item_input, mask_input)
    model = tf.keras.Model([item_input, mask_input], outputs)
    path = os.path.join(tmp_path, "routing_model")
    model.save(path)
    reloaded = tf.keras.models.load_model(path)
    assert isinstance(reloaded.get_layer("routing"), SelfAttentiveRouting)
    assert reloaded.get_layer("routing").get_config()["num_interests"] == 2
    for a, b in zip(model([embeddings, mask]), reloaded([embeddings, mask])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_hard_readout_selects_the_best_matching_interest():
    interests = tf.constant([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]],
                             [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    positives = tf.constant([[0.1, 2.0], [-3.0, 0.2]])
    selected, selection = hard_readout(interests, positives)
    np.testing.assert_array_equal(selection.numpy(), [1, 2])
    np.testing.assert_allclose(selected.numpy(), [[0.0, 1.0], [-1.0, 0.0]])


def capsule_routing_numpy(layer, embeddings, mask):
    """ComiRec's CapsuleNetwork (THUDM/ComiRec src/model.py) transcribed to numpy: bilinear map,
    transpose to [B, K, L, d], 3 routing rounds with softmax over the interests and masked couplings."""
    batch, length, dim = embeddings.shape
    num_interests = layer.num_interests
    history = embeddings * mask[:, :, None]
    maps = layer.maps.numpy()
    if layer.bilinear_map == "per_position":  # w [1, L, K*d, d] in ComiRec: sum over the input axis
        w = maps.reshape(length, num_interests * dim, dim)[None]
        hat = np.sum(w * history[:, :, None, :], axis=3)  # [B, L, K*d]
    else:  # MIND: one dense map, tiled over the interests
        hat = np.tile(history @ maps.T, [1, 1, num_interests])
    hat = hat.reshape(batch, length, num_interests, dim).transpose(0, 2, 1, 3)  # [B, K, L, d]
    b = np.broadcast_to(layer.routing_logits.numpy(), (batch, num_interests, length)).copy()
    attention_mask = np.tile(mask[:, None, :], [1, num_interests, 1])
    for i in range(layer.iterations):
        c = np.exp(b - b.max(axis=1, keepdims=True))
        c = c / c.sum(axis=1, keepdims=True)
        c = np.where(attention_mask, c, 0.0)
        s = np.matmul(c[:, :, None, :], hat)  # [B, K, 1, d]
        norm = np.sum(s ** 2, -1, keepdims=True)
        v = norm / (1 + norm) / np.sqrt(norm + 1e-9) * s
        if i < layer.iterations - 1:
            b = b + np.matmul(hat, v.transpose(0, 1, 3, 2)).reshape(batch, num_interests, length)
    return v.reshape(batch, num_interests, dim), c


@pytest.mark.parametrize("bilinear_map, initial_logits, initial_maps", [
    ("per_position", "zeros", "random"), ("shared", "random", "random"), ("per_position", "zeros", "identity")])
def test_capsule_routing_matches_comirecs_capsule_network(bilinear_map, initial_logits, initial_maps):
    embeddings, mask = make_inputs(2)
    layer = CapsuleRouting(num_interests=3, max_length=6, bilinear_map=bilinear_map, initial_logits=initial_logits,
                           initial_maps=initial_maps)
    interests, routing = layer(tf.constant(embeddings), tf.constant(mask))
    expected_interests, expected_routing = capsule_routing_numpy(layer, embeddings, mask)
    np.testing.assert_allclose(routing.numpy(), expected_routing, atol=1e-5)
    np.testing.assert_allclose(interests.numpy(), expected_interests, atol=1e-5)
    valid = np.broadcast_to(mask[:, None, :], routing.shape)
    assert np.all(routing.numpy()[~valid] == 0.0)
    np.testing.assert_allclose(routing.numpy().sum(axis=1)[mask], 1.0, atol=1e-6)  # each item split over interests
    assert np.all(np.linalg.norm(interests.numpy(), axis=-1) < 1.0)  # squashed
    if initial_logits == "random":  # MIND: fixed random logits, not trained; the same output on every call
        assert layer.routing_logits not in layer.trainable_weights and np.abs(layer.routing_logits.numpy()).max() > 0
        np.testing.assert_array_equal(layer(tf.constant(embeddings), tf.constant(mask))[0].numpy(), interests.numpy())


@pytest.mark.parametrize("bilinear_map", ["per_position", "shared"])
def test_identity_initial_maps_start_each_prediction_at_the_items_embedding(bilinear_map):
    """maps = I + N(0, (0.1 / sqrt(d))^2): a history of copies of one item gives capsules along that item
    (cosine ~ 1), and the per-interest maps differ (the noise tells the interests apart)."""
    dim, length = 32, 6
    tf.random.set_seed(0)
    layer = CapsuleRouting(num_interests=3, max_length=length, bilinear_map=bilinear_map, initial_maps="identity")
    item = np.random.default_rng(1).normal(size=dim).astype(np.float32)
    interests, _ = layer(tf.constant(np.tile(item, (1, length, 1))), tf.constant(np.ones((1, length), bool)))
    maps = layer.maps.numpy()
    noise = maps - np.eye(dim, dtype=np.float32)
    assert abs(noise.std() - 0.1 / np.sqrt(dim)) < 0.1 * 0.1 / np.sqrt(dim) and abs(noise.mean()) < 0.005
    cosines = interests.numpy()[0] @ item / np.linalg.norm(interests.numpy()[0], axis=-1) / np.linalg.norm(item)
    assert np.all(cosines > 0.97)
    if bilinear_map == "per_position":
        assert np.abs(maps[:, 0] - maps[:, 1]).max() > 0.01
    with pytest.raises(ValueError, match="initial_maps"):
        CapsuleRouting(num_interests=3, max_length=length, initial_maps="orthogonal")


def test_capsule_gradients_reach_the_maps_only_through_the_last_round():
    """ComiRec stops the gradient of the earlier rounds: the map's gradient equals that of one round
    whose coupling coefficients are given as constants."""
    embeddings, mask = make_inputs(3)
    layer = CapsuleRouting(num_interests=2, max_length=6)
    inputs = tf.constant(embeddings), tf.constant(mask)
    with tf.GradientTape() as tape:
        interests, coupling = layer(*inputs)
        loss = tf.reduce_sum(interests * tf.range(1.0, 1.0 + interests.shape[-1]))
    gradient = tape.gradient(loss, layer.maps)
    fixed_coupling = tf.constant(coupling.numpy())
    with tf.GradientTape() as tape:
        history = inputs[0] * tf.cast(inputs[1], tf.float32)[:, :, None]
        predictions = tf.einsum("lkde,ble->bkld", layer.maps, history)
        capsules = squash(tf.einsum("bkl,bkld->bkd", fixed_coupling, predictions))
        reference_loss = tf.reduce_sum(capsules * tf.range(1.0, 1.0 + interests.shape[-1]))
    np.testing.assert_allclose(gradient.numpy(), tape.gradient(reference_loss, layer.maps).numpy(), atol=1e-5)
    np.testing.assert_allclose(loss.numpy(), reference_loss.numpy(), rtol=1e-6)


@pytest.mark.parametrize("bilinear_map, initial_logits", [("per_position", "zeros"), ("shared", "random")])
def test_routing_regularization_trains_nothing_in_a_capsule_layer(bilinear_map, initial_logits):
    """The couplings of dynamic routing are computed from stop_gradient predictions, so RR on them has no
    gradient to the maps or the item embeddings: on ComiRec-DR (per-position maps, zero logits) and MIND
    (shared map, fixed random logits) "+RR" is the baseline. On the self-attentive routing, whose weights
    are learned, the same penalty reaches every weight."""
    embeddings, mask = make_inputs(4)
    inputs = tf.Variable(embeddings)
    capsule = CapsuleRouting(num_interests=2, max_length=6, bilinear_map=bilinear_map, initial_logits=initial_logits)
    attentive = SelfAttentiveRouting(num_interests=2, max_length=6)
    for layer, trained in ((capsule, False), (attentive, True)):
        with tf.GradientTape() as tape:
            _, routing = layer(inputs, tf.constant(mask))
            penalty = routing_regularization(routing, embedding_dim=8)
        assert penalty.numpy() > 0
        gradients = tape.gradient(penalty, [inputs, *layer.trainable_weights])
        moved = [g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients]
        assert moved == [trained] * len(gradients), (type(layer).__name__, moved)


@pytest.mark.parametrize("bilinear_map, initial_logits", [("per_position", "zeros"), ("shared", "random")])
def test_routing_gradient_lets_the_routing_regularization_train_the_capsules(bilinear_map, initial_logits):
    """With routing_gradient the rounds see the predictions with their gradient: RR reaches the maps and the
    item embeddings; the forward pass is unchanged (the same weights give the same interests and couplings)."""
    embeddings, mask = make_inputs(4)
    inputs = tf.Variable(embeddings)
    stopped = CapsuleRouting(num_interests=2, max_length=6, bilinear_map=bilinear_map, initial_logits=initial_logits)
    flowing = CapsuleRouting(num_interests=2, max_length=6, bilinear_map=bilinear_map, initial_logits=initial_logits,
                             routing_gradient=True)
    stopped(inputs, tf.constant(mask))
    flowing(inputs, tf.constant(mask))
    flowing.set_weights(stopped.get_weights())
    with tf.GradientTape() as tape:
        interests, routing = flowing(inputs, tf.constant(mask))
        penalty = routing_regularization(routing, embedding_dim=8)
    for got, expected in zip((interests, routing), stopped(inputs, tf.constant(mask))):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)
    gradients = tape.gradient(penalty, [inputs, flowing.maps])
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)
    assert flowing.get_config()["routing_gradient"] and not stopped.get_config()["routing_gradient"]


def test_label_aware_readout_weights_interests_by_powered_affinity():
    interests = np.array([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]], np.float32)
    positive = np.array([[0.5, 1.0]], np.float32)
    affinity = (interests[0] @ positive[0])  # [0.5, 2.0, 1.5]
    for power in (0, 1, 2):
        weights = np.exp(affinity ** power) / np.exp(affinity ** power).sum()
        np.testing.assert_allclose(label_aware_readout(tf.constant(interests), tf.constant(positive), power).numpy(),
                                   [weights @ interests[0]], rtol=1e-6)


def test_capsule_maps_start_at_the_identity_for_dr_and_at_random_for_mind():
    """The measured choice (BENCHMARKS.md 10.5): identity won for ComiRec-DR on every data set, not for MIND."""
    from remi_tf import models
    from tests.configs import remi_config

    def routing(name):
        return models.routing_layer(remi_config(routing=name).validate())

    assert routing("comirec_dr").initial_maps == "identity" and routing("mind").initial_maps == "random"
    assert routing("comirec_dr").iterations == routing("mind").iterations == 3
