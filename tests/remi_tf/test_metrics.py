"""Metrics against hand-worked examples."""

import math

import numpy as np
import pytest

from remi_tf import metrics


def test_merge_sorts_by_score_deduplicates_and_drops_invalid():
    ids = np.array([[[5, 3, 9], [3, 7, 1]]])
    scores = np.array([[[0.9, 0.5, 0.1], [0.8, 0.7, 0.2]]])
    # By score: 5 (.9), 3 (.8), 7 (.7), 3 again (.5, dropped), 1 (.2, invalid), 9 (.1).
    merged, merged_scores = metrics.merge_interest_topk(ids, scores, top_n=4, invalid_ids=[1])
    np.testing.assert_array_equal(merged, [[5, 3, 7, 9]])
    np.testing.assert_allclose(merged_scores, [[0.9, 0.8, 0.7, 0.1]])
    short, _ = metrics.merge_interest_topk(ids, scores, top_n=6, invalid_ids=[1])
    np.testing.assert_array_equal(short, [[5, 3, 7, 9, -1, -1]])


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
