"""The quota and weighted merges of the K lists and the logsumexp and mixture re-scorings, against hand-worked examples
and the numpy twins of tests/numpy_reference.py."""

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import merging
from remi_tf.layers import InterestMixture
from tests import numpy_reference
from tests.numpy_reference import mixture_of_logits

NEG = -np.inf


def quota(ids, scores, weights, k):
    merged = merging.quota_merge(tf.constant(scores, tf.float32), tf.constant(ids, tf.int64),
                                 tf.constant(weights, tf.float32), k)
    return [part.numpy() for part in merged]


def test_slot_quotas_by_largest_remainder():
    weights = np.array([[0.75, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.45, 0.45], [0.0, 0.0, 1.0]])
    got = merging.slot_quotas(tf.constant(weights, tf.float32), 4).numpy()
    # 3 + 1; 1.33 each: the extra slot to the lowest interest; 0.4 / 1.8 / 1.8: the two largest remainders
    np.testing.assert_array_equal(got, [[3, 1, 0], [2, 1, 1], [0, 2, 2], [0, 0, 4]])
    rng = np.random.default_rng(0)
    for k in (1, 7, 50):
        random = rng.dirichlet(np.ones(4), size=30)
        got = merging.slot_quotas(tf.constant(random, tf.float32), k).numpy()
        assert np.all(got.sum(axis=1) == k)
        np.testing.assert_array_equal(got, [numpy_reference.slot_quotas(w, k) for w in random])


def test_quota_merge_hand_worked():
    """Quotas 3 and 1 of 4 slots. Slot 1: interest 0 (0.5 / 3 < 0.5 / 1) takes 10; slot 2: a tie (1.5 / 3 =
    0.5 / 1) goes to the lower interest, which takes 11, also interest 1's best; slot 3: interest 1 takes 20
    (its 11 is gone); slot 4: interest 1 is at its quota, interest 0 takes 12."""
    ids = np.array([[[10, 11, 12, 13], [11, 20, 21, 22]]])
    scores = np.array([[[9.0, 8.0, 7.0, 6.0], [5.0, 4.0, 3.0, 2.0]]])
    got_scores, got_ids, got_interest = quota(ids, scores, [[0.75, 0.25]], 4)
    np.testing.assert_array_equal(got_ids, [[10, 11, 20, 12]])
    np.testing.assert_array_equal(got_interest, [[0, 0, 1, 0]])
    np.testing.assert_array_equal(got_scores, [[9.0, 8.0, 4.0, 7.0]])


def test_quota_merge_passes_unused_slots_on():
    """Interest 1's only result is taken by interest 0 first: its two slots pass to the best remaining results
    (interest 0's), and a row with fewer distinct results than slots is padded."""
    ids = np.array([[[1, 2, 3, 4, 5], [1, 0, 0, 0, 0]], [[7, 8, 0, 0, 0], [8, 0, 0, 0, 0]]])
    scores = np.array([[[9.0, 8, 7, 6, 5], [10.0, NEG, NEG, NEG, NEG]],
                       [[3.0, 2, NEG, NEG, NEG], [4.0, NEG, NEG, NEG, NEG]]])
    got_scores, got_ids, got_interest = quota(ids, scores, [[0.5, 0.5], [0.5, 0.5]], 4)
    np.testing.assert_array_equal(got_ids, [[1, 2, 3, 4], [7, 8, 0, 0]])
    np.testing.assert_array_equal(got_interest, [[0, 0, 0, 0], [0, 1, -1, -1]])
    np.testing.assert_array_equal(got_scores[1], [3.0, 4.0, NEG, NEG])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quota_merge_matches_numpy_loops(seed):
    rng = np.random.default_rng(seed)
    users, interests, per_interest, k = 20, 4, 12, 10
    ids = rng.integers(0, 25, size=(users, interests, per_interest))  # many duplicates across the lists
    scores = np.round(rng.normal(size=ids.shape), 1)  # ties
    scores[rng.random(size=ids.shape) < 0.2] = NEG
    weights = rng.dirichlet(np.full(interests, 0.5), size=users)
    weights[0] = [0.0, 1.0, 0.0, 0.0]
    expected_ids, expected_scores, expected_interest = numpy_reference.quota_merge(ids, scores, weights, k)
    got_scores, got_ids, got_interest = quota(ids, scores, weights.astype(np.float32), k)
    found = expected_ids >= 0
    np.testing.assert_array_equal(np.where(found, got_ids, -1), expected_ids)
    np.testing.assert_array_equal(got_interest, expected_interest)
    np.testing.assert_allclose(got_scores, expected_scores.astype(np.float32))


def test_weighted_merge_adds_log_weights_before_the_score_merge():
    """Scores 3, 1 (weight 0.2) and 2.5, 0.5 (weight 0.8): with lambda 1, 2.5 + log 0.8 = 2.28 > 3 + log 0.2 =
    1.39 > 0.5 + log 0.8 = 0.28 > 1 + log 0.2 = -0.61; with lambda 0 the plain score merge."""
    ids = np.array([[[1, 2], [3, 4]]])
    scores = np.array([[[3.0, 1.0], [2.5, 0.5]]], np.float32)
    weights = np.array([[0.2, 0.8]], np.float32)
    for merge_lambda, order in ((1.0, [3, 1, 4, 2]), (0.0, [1, 3, 2, 4])):
        got_scores, got_ids, got_interest = [part.numpy() for part in merging.merge_interests(
            tf.constant(scores), tf.constant(ids), tf.constant(weights), 4, "weighted", merge_lambda)]
        np.testing.assert_array_equal(got_ids, [order])
        adjusted = scores + merge_lambda * np.log(weights)[:, :, None]
        expected_ids, expected_scores = numpy_reference.merge_interest_topk(ids, adjusted, 4)
        np.testing.assert_array_equal(got_ids, expected_ids)
        np.testing.assert_allclose(got_scores, expected_scores, rtol=1e-6)


def test_weighted_merge_drops_an_interest_of_weight_zero():
    ids = np.array([[[1, 2], [3, 4]]])
    scores = tf.constant([[[3.0, 1.0], [9.0, 8.0]]])
    _, got_ids, got_interest = merging.merge_interests(scores, tf.constant(ids), tf.constant([[1.0, 0.0]]), 4,
                                                       "weighted", 1.0)
    np.testing.assert_array_equal(got_ids.numpy(), [[1, 2, 0, 0]])
    np.testing.assert_array_equal(got_interest.numpy(), [[0, 0, -1, -1]])


def test_score_merge_ignores_the_weights():
    rng = np.random.default_rng(3)
    ids, scores = rng.integers(0, 9, size=(5, 3, 6)), rng.normal(size=(5, 3, 6)).astype(np.float32)
    weights = rng.dirichlet(np.ones(3), size=5).astype(np.float32)
    got = merging.merge_interests(tf.constant(scores), tf.constant(ids), tf.constant(weights), 6)
    expected = merging.merge_interest_results(tf.constant(scores), tf.constant(ids), 6)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_rescore_by_logsumexp_over_all_interests():
    """Each retrieved item's score becomes tau * log sum_k exp(<u_k, v_item> / tau); removed results stay -inf;
    "max" leaves the scores as they are."""
    rng = np.random.default_rng(4)
    interests, table = rng.normal(size=(2, 3, 4)), rng.normal(size=(9, 4))
    ids = rng.integers(2, 9, size=(2, 3, 5))
    scores = np.einsum("bkd,bknd->bkn", interests, table[ids])
    scores[0, 1, 2] = NEG
    got = merging.rescore(tf.constant(interests), tf.constant(ids), tf.constant(table), tf.constant(scores),
                          "logsumexp", 0.5).numpy()
    per_interest = np.einsum("bjd,bknd->bknj", interests, table[ids])
    expected = 0.5 * np.log(np.exp(per_interest / 0.5).sum(axis=-1))
    expected[0, 1, 2] = NEG
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    unchanged = merging.rescore(tf.constant(interests), tf.constant(ids), tf.constant(table), tf.constant(scores),
                                "max", 0.5)
    np.testing.assert_array_equal(unchanged.numpy(), scores)


def test_rescore_by_the_mixture_over_all_interests():
    """Each retrieved item's score becomes sum_k pi_k <u_k, v_item> with the gate of remi_tf.layers.InterestMixture
    (numpy twin: tests/numpy_reference.mixture_of_logits); removed results stay -inf."""
    rng = np.random.default_rng(5)
    interests, table = rng.normal(size=(2, 3, 4)), rng.normal(size=(9, 4))
    ids = rng.integers(2, 9, size=(2, 3, 5))
    scores = np.einsum("bkd,bknd->bkn", interests, table[ids])
    scores[1, 0, 4] = NEG
    mixture = InterestMixture(2, 0.7, dtype="float64")
    mixture.build(tf.TensorShape([None, 4]))
    got = merging.rescore(tf.constant(interests), tf.constant(ids), tf.constant(table), tf.constant(scores),
                          "mixture", 0.7, mixture).numpy()
    per_interest = np.einsum("bjd,bknd->bknj", interests, table[ids])
    interest_gates = (interests @ mixture.interest_gate.kernel.numpy())[:, np.newaxis, np.newaxis]  # [B, 1, 1, K, m]
    expected = mixture_of_logits(per_interest, interest_gates, table[ids] @ mixture.item_gate.kernel.numpy(), 0.7)
    expected[1, 0, 4] = NEG
    np.testing.assert_allclose(got, expected, rtol=1e-10)


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


@pytest.mark.parametrize("merge", ["score", "weighted"])
def test_score_merges_draw_only_from_each_interests_top_k(merge):
    """What the retrieval SavedModel relies on (draws_from_each_top_k): merging each interest's top k gives
    the merge of its deeper results, with ties, items shared by interests and removed results; not so for
    quota, whose interests go deeper when others took their items."""
    rng = np.random.default_rng(5)
    users, interests, depth, k = 6, 4, 15, 5
    ids = np.stack([[rng.permutation(25)[:depth] for _ in range(interests)] for _ in range(users)])
    scores = np.round(rng.normal(size=(users, interests, depth)), 1).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = NEG
    weights = tf.constant(rng.dirichlet(np.ones(interests), size=users).astype(np.float32))
    top = tf.math.top_k(tf.constant(scores), k=k)
    shallow = (top.values, tf.gather(tf.constant(ids), top.indices, batch_dims=2))
    assert merging.draws_from_each_top_k(merge, 0.0) and not merging.draws_from_each_top_k("quota", 0.0)
    assert not merging.draws_from_each_top_k(merge, 0.1)
    deep = merging.merge_interests(tf.constant(scores), tf.constant(ids), weights, k, merge, 2.0)
    for a, b in zip(deep, merging.merge_interests(*shallow, weights, k, merge, 2.0)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
