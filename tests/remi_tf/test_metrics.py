"""Metrics against hand-worked examples."""

import math

import numpy as np
import pytest

import tensorflow as tf

from remi_tf import merging, metrics
from tests.numpy_reference import merge_interest_topk


def test_merge_sorts_by_score_deduplicates_and_drops_removed_results():
    ids = np.array([[[5, 3, 9], [3, 7, 1]]])
    scores = np.array([[[0.9, 0.5, 0.1], [0.8, 0.7, -np.inf]]], np.float32)  # item 1 removed (-inf)
    # By score: 5 (.9, interest 0), 3 (.8, interest 1), 7 (.7, 1), 3 again (.5, dropped), 9 (.1, 0).
    merged_scores, merged, interest = merging.merge_interest_results(tf.constant(scores), tf.constant(ids), 4)
    np.testing.assert_array_equal(merged, [[5, 3, 7, 9]])
    np.testing.assert_allclose(merged_scores, [[0.9, 0.8, 0.7, 0.1]])
    np.testing.assert_array_equal(interest, [[0, 1, 1, 0]])
    _, short, short_interest = merging.merge_interest_results(tf.constant(scores), tf.constant(ids), 6)
    np.testing.assert_array_equal(short, [[5, 3, 7, 9, 0, 0]])  # fewer than 6: index 0, no interest
    np.testing.assert_array_equal(short_interest[0, 4:], [merging.NO_INTEREST] * 2)
    reference, _ = merge_interest_topk(ids, scores, top_n=6, invalid_ids=[1])
    np.testing.assert_array_equal(reference, [[5, 3, 7, 9, -1, -1]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_equals_the_numpy_reference_with_ties_and_repeats(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 12, size=(16, 4, 6))  # 12 items in 24 slots: items repeat across interests
    scores = rng.integers(0, 5, size=(16, 4, 6)).astype(np.float32)  # few values: ties everywhere
    merged_scores, merged, _ = merging.merge_interest_results(tf.constant(scores), tf.constant(ids), 5)
    expected, expected_scores = merge_interest_topk(ids, scores, top_n=5)
    np.testing.assert_array_equal(merged.numpy(), expected)
    np.testing.assert_array_equal(merged_scores.numpy(), expected_scores)


def test_interest_overlap_hand_worked():
    lists = np.array([
        [[1, 2, 3, 4], [3, 4, 5, 6], [7, 8, -1, -1]],  # J(0,1) = 2/6, J(0,2) = 0, J(1,2) = 0
        [[1, 2, 3, 4], [1, 2, 3, 4], [4, 3, 2, 1]],  # the same set three times: 1
    ])
    assert metrics.interest_overlap(lists) == pytest.approx(((2 / 6) / 3 + 1.0) / 2)
    assert metrics.interest_overlap(lists[:, :1]) == 0.0  # one interest: no pairs


def test_interest_pair_overlap_hand_worked():
    lists = np.array([
        [[1, 2, 3, 4], [3, 4, 5, 6], [7, 8, -1, -1]],  # J(0,1) = 2/6, J(0,2) = 0, J(1,2) = 0
        [[1, 2, 3, 4], [1, 2, 3, 4], [4, 3, 2, 1]],  # the same set three times: 1
    ])
    pairs = metrics.interest_pair_overlap(lists)  # each pair's Jaccard, averaged over the two users
    np.testing.assert_allclose(pairs, [[1.0, (2 / 6 + 1) / 2, 0.5], [(2 / 6 + 1) / 2, 1.0, 0.5],
                                       [0.5, 0.5, 1.0]])
    upper = [pairs[i][j] for i in range(3) for j in range(i + 1, 3)]
    assert metrics.interest_overlap(lists) == pytest.approx(sum(upper) / 3)  # the pairs' mean
    assert metrics.interest_pair_overlap(lists[:, :1]) == [[1.0]]
    assert metrics.interest_pair_overlap(np.full((0, 2, 3), -1)) == [[1.0, 0.0], [0.0, 1.0]]  # no users


def test_interest_share_hand_worked():
    interest = np.array([[0, 0, 2, -1], [1, 0, 0, 2]])  # 7 filled slots: interest 0 in 4, 1 in 1, 2 in 2
    np.testing.assert_allclose(metrics.interest_share(interest, 4), [4 / 7, 1 / 7, 2 / 7, 0.0])
    assert metrics.interest_share(np.full((2, 3), -1), 2) == [0.0, 0.0]


def test_ranking_metrics_hand_worked():
    retrieved = np.array([[5, 3, 7, 9], [42, 1, 2, 3]])
    targets = [np.array([7, 9, 42]), np.array([42])]
    report = metrics.ranking_metrics(retrieved, targets, top_ns=(2, 4))
    # User 0: no hit in the top 2; hits at ranks 2 and 3 of the top 4.
    # User 1: a hit at rank 0 (all of its one target).
    assert report["recall@2"] == pytest.approx((0.0 + 1.0) / 2)
    assert report["hitrate@2"] == pytest.approx(0.5)
    assert report["ndcg@2"] == pytest.approx((0.0 + 1.0) / 2)
    dcg = 1 / math.log2(4) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert report["recall@4"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert report["hitrate@4"] == pytest.approx(1.0)
    assert report["ndcg@4"] == pytest.approx((dcg / idcg + 1.0) / 2)


def test_ndcg_depends_on_the_retrieved_order():
    # The same set of hits, earlier in the list, scores higher (the reference code's set loses this).
    early = metrics.ranking_metrics(np.array([[1, 2, 8, 9]]), [np.array([1, 2, 3])], top_ns=(4,))
    late = metrics.ranking_metrics(np.array([[8, 9, 1, 2]]), [np.array([1, 2, 3])], top_ns=(4,))
    assert early["recall@4"] == late["recall@4"]
    assert early["ndcg@4"] == pytest.approx(1.0)
    assert late["ndcg@4"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))


def test_duplicate_targets_count_once():
    report = metrics.ranking_metrics(np.array([[4, 5]]), [np.array([4, 4, 6])], top_ns=(2,))
    assert report["recall@2"] == pytest.approx(0.5)


def test_routing_diagnostics_uniform_and_collapsed():
    mask = np.array([[True, True, True, True, False]])
    uniform = np.array([[[0.25, 0.25, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]]])
    report = metrics.routing_diagnostics(uniform, mask)
    np.testing.assert_allclose(report["routing_entropy"], [math.log(4), 0.0], atol=1e-12)
    np.testing.assert_allclose(report["routing_max_weight"], [0.25, 1.0])
