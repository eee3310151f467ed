"""The self-attentive routing layer against numpy, its masking, and a SavedModel round trip."""

import os

import numpy as np
import pytest
import tensorflow as tf

from remi_tf.layers import SelfAttentiveRouting, hard_readout


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
