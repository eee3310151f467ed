"""Numpy twins of production code, for tests to compare against (independent computations)."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def merge_interest_topk(interest_ids: np.ndarray, interest_scores: np.ndarray, top_n: int,
                        invalid_ids: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Merges K per-interest retrievals into one list per user.

    The K*N results are sorted by score (stable: earlier interests win ties), de-duplicated keeping the
    best score, invalid ids (padding, OOV) dropped, and the first `top_n` kept.

    Args:
      interest_ids: [users, K, N] retrieved ids per interest.
      interest_scores: [users, K, N] their scores.
      top_n: length of the merged list.
      invalid_ids: ids never returned.

    Returns:
      (ids [users, top_n], scores [users, top_n]); short lists are padded with id -1 and score -inf.
    """
    num_users = interest_ids.shape[0]
    flat_ids = interest_ids.reshape(num_users, -1)
    flat_scores = interest_scores.reshape(num_users, -1)
    order = np.argsort(-flat_scores, axis=1, kind="stable")
    merged_ids = np.full((num_users, top_n), -1, dtype=np.int64)
    merged_scores = np.full((num_users, top_n), -np.inf, dtype=np.float32)
    invalid = set(invalid_ids)
    for user in range(num_users):
        seen: set[int] = set()
        position = 0
        for column in order[user]:
            item = int(flat_ids[user, column])
            if item in seen or item in invalid:
                continue
            seen.add(item)
            merged_ids[user, position] = item
            merged_scores[user, position] = flat_scores[user, column]
            position += 1
            if position == top_n:
                break
    return merged_ids, merged_scores


def ihn_numpy(query, candidates, probability, ids, beta, temperature, remove_hits, in_batch=True):
    """DESIGN.md section 2 (the IHN softmax), literally, in float64."""
    return ihn_from_similarities(query @ candidates.T, probability, ids, beta, temperature, remove_hits, in_batch)


def ihn_from_similarities(similarities, probability, ids, beta, temperature, remove_hits, in_batch=True):
    """The IHN softmax of [B, C] similarities (row b's positive: column b)."""
    batch, num_candidates = similarities.shape
    s = similarities / temperature
    corrected = s - np.log(np.clip(probability, 1e-6, 1.0))
    losses = []
    for b in range(batch):
        negatives = [j for j in range(num_candidates)
                     if j != b and not (remove_hits and ids[j] == ids[b]) and (in_batch or j >= batch)]
        hardness = np.exp(beta * s[b, negatives])
        weights = len(negatives) * hardness / hardness.sum()
        denominator = np.exp(corrected[b, b]) + np.sum(weights * np.exp(corrected[b, negatives]))
        losses.append(-corrected[b, b] + np.log(denominator))
    return np.mean(losses)


def served_similarities(interests, candidates, mode):
    """[B, K, d], [C, d] -> [B, C]: the hard read-out (the interest closest to column b, row b's positive),
    or the max over the K interests, literally."""
    per_interest = np.einsum("bkd,cd->bkc", interests, candidates)
    if mode == "hard":
        best = [int(np.argmax(per_interest[b, :, b])) for b in range(len(interests))]
        return np.stack([per_interest[b, best[b]] for b in range(len(interests))])
    return per_interest.max(axis=1)


def target_probability(train_sequences: Iterable[np.ndarray], vocabulary_size: int, min_cut: int) -> np.ndarray:
    """q, the twin of pipelines/sequences.target_probability: the probability that each index is the target of a
    random-cut training example, from the index sequences themselves.

    A user with n items yields target x_k for k uniform in [min_cut, n), so index i gets
    mean over users of (occurrences of i in x_min_cut..x_{n-1}) / (n - min_cut).

    Returns:
      [vocabulary_size + 2] probabilities (0 for padding and OOV), summing to 1.
    """
    probability = np.zeros(vocabulary_size + 2, np.float64)
    eligible = 0
    for sequence in train_sequences:
        if len(sequence) > min_cut:
            targets = sequence[min_cut:]
            np.add.at(probability, targets, 1.0 / len(targets))
            eligible += 1
    return probability / max(eligible, 1)


def every_position_numpy(interests, history, target, table, candidate_ids, candidate_q, positive_q, beta,
                         temperature, in_batch=True, num_positives=None, mode="hard"):
    """SASRec's objective, literally, in float64: every real position t of left-aligned `history` [b, L] (its
    interests[b, t], [K, d]) has the positive history[b, t + 1], or target[b] after the last real item; the
    candidates are `candidate_ids` (their rows of `table`, column j's q candidate_q[j]), minus the position's
    positive id (accidental hits) and, without in-batch negatives, minus the first num_positives; a positive's q is
    positive_q[its index]. K interests score by the one closest to the positive ("hard") or their max ("max")."""
    losses = []
    for b in range(history.shape[0]):
        real = [t for t in range(history.shape[1]) if history[b, t] >= 2]
        for t in real:
            positive = target[b] if t == real[-1] else history[b, t + 1]
            chosen = interests[b, t][np.argmax(interests[b, t] @ table[positive])]
            score = (lambda item: chosen @ table[item]) if mode == "hard" else (
                lambda item: np.max(interests[b, t] @ table[item]))
            p = score(positive) / temperature - np.log(np.clip(positive_q[positive], 1e-6, 1.0))
            negatives = [j for j, item in enumerate(candidate_ids)
                         if item != positive and (in_batch or j >= num_positives)]
            s = np.array([score(candidate_ids[j]) / temperature for j in negatives])
            corrected = s - np.log(np.clip(candidate_q[negatives], 1e-6, 1.0))
            hardness = np.exp(beta * s)
            weights = len(negatives) * hardness / hardness.sum()
            losses.append(-p + np.log(np.exp(p) + np.sum(weights * np.exp(corrected))))
    return np.mean(losses)
