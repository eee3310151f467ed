"""The merge of the K lists by score, against the numpy twin of tests/numpy_reference.py."""

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import merging
from tests import numpy_reference

NEG = -np.inf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_merge_matches_numpy_with_ties_duplicates_and_removed_results(seed):
    """The merge by sorted (item, score) keys against the numpy twin (sort by score, first occurrence of an item kept) on results
    with equal scores (rounded; 0.0 and -0.0), negative scores, an item in several interests and twice in one,
    removed (-inf) results, int32 and int64 indices; the interest of each pick is the first interest, in
    interest order, that scored it best."""
    rng = np.random.default_rng(seed)
    users, interests, depth, k = 7, 4, 12, 20
    ids = rng.integers(0, 30, size=(users, interests, depth))
    scores = np.round(rng.normal(size=(users, interests, depth)), 1).astype(np.float32)
    scores[0, 0, :3], scores[0, 1, :3], ids[0, 1, :3] = -0.0, 0.0, ids[0, 0, :3]  # the same items
    scores[rng.random(scores.shape) < 0.1] = NEG
    expected_ids, expected_scores = numpy_reference.merge_interest_topk(ids, scores, k)
    for dtype in (tf.int32, tf.int64):
        got_scores, got_ids, got_interest = [part.numpy() for part in merging.merge_interest_results(
            tf.constant(scores), tf.constant(ids, dtype), k)]
        found = expected_ids >= 0
        np.testing.assert_array_equal(got_ids[found], expected_ids[found])
        np.testing.assert_array_equal(got_scores, expected_scores)
        assert np.all(got_interest[~found] == merging.NO_INTEREST) and np.all(got_ids[~found] == 0)
        for user, slot in zip(*np.nonzero(found)):
            best = [j for j in range(interests) if np.any((ids[user, j] == got_ids[user, slot])
                                                          & (scores[user, j] == got_scores[user, slot]))]
            assert got_interest[user, slot] == best[0]


def test_the_score_merge_draws_only_from_each_interests_top_k():
    """What the retrieval SavedModel relies on (draws_from_each_top_k): merging each interest's top k gives
    the merge of its deeper results, with ties, items shared by interests and removed results."""
    rng = np.random.default_rng(5)
    users, interests, depth, k = 6, 4, 15, 5
    ids = np.stack([[rng.permutation(25)[:depth] for _ in range(interests)] for _ in range(users)])
    scores = np.round(rng.normal(size=(users, interests, depth)), 1).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = NEG
    top = tf.math.top_k(tf.constant(scores), k=k)
    shallow = (top.values, tf.gather(tf.constant(ids), top.indices, batch_dims=2))
    assert merging.draws_from_each_top_k(0.0) and not merging.draws_from_each_top_k(0.1)
    deep = merging.merge_interests(tf.constant(scores), tf.constant(ids), k)
    for a, b in zip(deep, merging.merge_interests(*shallow, k), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
