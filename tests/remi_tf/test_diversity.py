"""ComiRec's diversity-controlled merge and its category-diversity metric, against hand-worked examples
and a transcription of ComiRec's evaluation loop."""

from collections import defaultdict

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import diversity, merging

# Items 10, 11, 20 in category 0, 12 in 1, 21 in 2 (an array indexed by item index).
CATEGORIES = np.zeros(30, np.int32)
CATEGORIES[12], CATEGORIES[21] = 1, 2
IDS = np.array([[[10, 11, 12], [20, 11, 21]]])  # interest 0, interest 1
SCORES = np.array([[[0.9, 0.8, 0.3], [0.85, 0.7, 0.6]]], np.float32)


def merge(coef, k, ids=IDS, scores=SCORES, categories=CATEGORIES):
    picked_scores, picked, interest = merging.diverse_merge(tf.constant(scores), tf.constant(ids),
                                                              tf.constant(categories), coef, k)
    return picked_scores.numpy(), picked.numpy(), interest.numpy()


def test_diverse_merge_hand_worked():
    # By score (11's second copy, 0.7, dropped): 10 (.9), 20 (.85), 11 (.8), 21 (.6), 12 (.3).
    _, by_score, _ = merge(0.0, 4)
    np.testing.assert_array_equal(by_score, [[10, 20, 11, 21]])
    # coef 0.2: 10; then 20 (.85 - .2 = .65 > 11's .6 and 21's .6); then 21 (.6 > 11's .8 - .4); then 11.
    scores, picked, interest = merge(0.2, 4)
    np.testing.assert_array_equal(picked, [[10, 20, 21, 11]])
    np.testing.assert_array_equal(interest, [[0, 1, 1, 0]])
    np.testing.assert_allclose(scores, [[0.9, 0.85, 0.6, 0.8]])  # each item's own score
    # coef 0.5: 10; 21 (.6 > 20's .35); 20 (.35 > .3, .3); 12 (.3 > 11's .8 - 1.0); 11; then nothing.
    scores, picked, interest = merge(0.5, 6)
    np.testing.assert_array_equal(picked, [[10, 21, 20, 12, 11, 0]])
    np.testing.assert_array_equal(interest, [[0, 1, 1, 0, 0, merging.NO_INTEREST]])
    assert np.isneginf(scores[0, -1])


def comirec_merge(ids, scores, categories, coef, k):
    """ComiRec's evaluation loop (THUDM/ComiRec src/train.py, evaluate_full with coef), for one user."""
    item_list = sorted(zip(ids.ravel().tolist(), scores.ravel().tolist()), key=lambda x: x[1], reverse=True)
    seen, items = set(), []
    for item, score in item_list:
        if item not in seen and score > -np.inf:
            seen.add(item)
            items.append((item, score, categories[item]))
    counts, picked = defaultdict(int), []
    for _ in range(min(k, len(items))):
        best, best_score = 0, items[0][1] - coef * counts[items[0][2]]
        for j in range(1, len(items)):
            if items[j][1] - coef * counts[items[j][2]] > best_score:
                best, best_score = j, items[j][1] - coef * counts[items[j][2]]
        picked.append(items[best][0])
        counts[items[best][2]] += 1
        items.pop(best)
    return picked + [0] * (k - len(picked))


@pytest.mark.parametrize("coef", [0.0, 0.25, 1.0, 4.0])
def test_diverse_merge_equals_comirec_loop_with_ties(coef):
    rng = np.random.default_rng(int(coef * 4))
    ids = rng.integers(0, 40, size=(12, 4, 8))  # repeats across interests
    scores = rng.integers(0, 6, size=(12, 4, 8)).astype(np.float32)  # integer scores: ties, exact sums
    scores[rng.random(scores.shape) < 0.1] = -np.inf  # removed results
    categories = rng.integers(0, 5, size=40).astype(np.int32)
    _, picked, _ = merge(coef, 10, ids, scores, categories)
    expected = [comirec_merge(ids[u], scores[u], categories, coef, 10) for u in range(len(ids))]
    np.testing.assert_array_equal(picked, expected)
    by_score = [comirec_merge(ids[u], scores[u], categories, 0.0, 10) for u in range(len(ids))]
    assert (expected != np.array(by_score)).any() == (coef > 0)  # the penalty changes some lists


def test_category_diversity_hand_worked():
    categories = np.array([0, 0, 5, 5, 7, 8, 9])  # index -> category
    lists = np.array([[2, 3, 4, -1],  # categories 5, 5, 7: 2 of 3 pairs differ
                      [4, 5, -1, -1],  # 7, 8: 1 of 1
                      [6, -1, -1, -1]])  # one item: no pair, not counted
    assert diversity.category_diversity(lists, categories) == pytest.approx((2 / 3 + 1.0) / 2)
