"""MIND's number of interests per user (interests_per_user "log2"): K_u against a hand count, the repeated
interests, and a model whose short-history users train and retrieve with K_u interests only."""

import math

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import config as config_lib
from remi_tf import merging, models
from remi_tf.layers import interests_per_user, keep_interests

FIRST = models.FIRST_ITEM_INDEX


@pytest.mark.parametrize("num_interests", [1, 3, 4])
def test_interests_per_user_is_minds_log2_of_the_known_items(num_interests):
    lengths = np.array([0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32])
    mask = np.arange(40)[None, :] < lengths[:, None]
    expected = [max(1, min(num_interests, math.floor(math.log2(n)))) if n else 1 for n in lengths]
    np.testing.assert_array_equal(interests_per_user(tf.constant(mask), num_interests).numpy(), expected)


def test_kept_interests_are_unchanged_and_the_others_repeat_them():
    interests = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    kept = keep_interests(tf.constant(interests), tf.constant([1, 2, 4])).numpy()
    np.testing.assert_array_equal(kept[0], interests[0, [0, 0, 0, 0]])
    np.testing.assert_array_equal(kept[1], interests[1, [0, 1, 0, 1]])
    np.testing.assert_array_equal(kept[2], interests[2])


def short_and_long_histories(max_history=16):
    rng = np.random.default_rng(0)
    history = rng.integers(FIRST, 30 + FIRST, size=(4, max_history))
    for row, length in enumerate((2, 5, 9, 16)):  # K_u 1, 2, 3, 4
        history[row, length:] = 0
    return history


@pytest.mark.parametrize("interest_scoring", ["hard", "max"])
def test_a_user_keeps_k_u_distinct_interests_and_the_others_repeat_them(interest_scoring):
    """Row b's K_u interests differ, interest k >= K_u equals interest k mod K_u, and a long history's four
    interests are those of the same model without the key."""
    tf.keras.utils.set_random_seed(3)
    config = config_lib.RemiConfig(embedding_dim=4, num_interests=4, max_history=16, interests_per_user="log2",
                                   interest_scoring=interest_scoring)
    model = models.RemiModel(config, 30)
    history = short_and_long_histories()
    encoding = model.query_tower.encode(tf.constant(history))
    interests = encoding.interests.numpy()
    for row, kept in enumerate((1, 2, 3, 4)):
        for k in range(4):
            np.testing.assert_array_equal(interests[row, k], interests[row, k % kept])
        assert len({tuple(np.round(interests[row, k], 6)) for k in range(kept)}) == kept  # kept ones differ
    fixed = models.RemiModel(config.replace(interests_per_user="fixed"), 30)
    fixed.set_weights(model.get_weights())
    unrepeated = fixed.query_tower.encode(tf.constant(history)).interests.numpy()
    np.testing.assert_array_equal(unrepeated[3], interests[3])  # a long history keeps all four


def test_the_served_lists_come_from_the_kept_interests_only():
    """Merged by score, every retrieved item of a user with K_u interests is attributed to one of the first
    K_u, and the merged list equals the merge of the K_u interests' own lists."""
    tf.keras.utils.set_random_seed(4)
    config = config_lib.RemiConfig(embedding_dim=8, num_interests=4, max_history=16, interests_per_user="log2")
    model = models.RemiModel(config, 30)
    history = short_and_long_histories()
    interests = model.query_tower.encode(tf.constant(history)).interests
    scores = tf.einsum("bkd,cd->bkc", interests, model.candidate_embeddings())  # [B, K, 30]
    top = tf.math.top_k(scores, k=10)
    merged_scores, merged_indices, interest = merging.merge_interest_results(top.values, top.indices, 10)
    for row, kept in enumerate((1, 2, 3, 4)):
        assert set(interest[row].numpy()) <= set(range(kept))
        own = scores[row, :kept].numpy().max(axis=0)  # each item's best score over the kept interests
        np.testing.assert_array_equal(np.sort(merged_indices[row].numpy()), np.sort(np.argsort(-own)[:10]))


def test_interest_weights_are_zero_for_interests_a_user_does_not_keep():
    tf.keras.utils.set_random_seed(5)
    config = config_lib.RemiConfig(embedding_dim=4, num_interests=4, max_history=16, interests_per_user="log2",
                                   interest_weights="served")
    model = models.RemiModel(config, 30)
    _, _, weights = model.encode(tf.constant(short_and_long_histories()))
    weights = weights.numpy()
    for row, kept in enumerate((1, 2, 3, 4)):
        np.testing.assert_allclose(weights[row, kept:], 0.0, atol=1e-30)
        np.testing.assert_allclose(weights[row, :kept].sum(), 1.0, rtol=1e-6)


def test_unknown_values_and_the_distilled_weights_are_refused():
    with pytest.raises(ValueError, match="interests_per_user.*'fixed', 'log2'"):
        config_lib.RemiConfig(interests_per_user="mind").validate()
    with pytest.raises(ValueError, match="'served'"):
        config_lib.RemiConfig(interests_per_user="log2", interest_weights="distilled").validate()
