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


def ihn_numpy(query, candidates, probability, ids, beta, temperature, remove_hits, in_batch=True, logq_weight=1.0):
    """DESIGN.md section 2 (the IHN softmax), literally, in float64; logq_weight scales the log q_j term."""
    return ihn_from_similarities(query @ candidates.T, probability, ids, beta, temperature, remove_hits, in_batch,
                                 logq_weight)


def ihn_from_similarities(similarities, probability, ids, beta, temperature, remove_hits, in_batch=True,
                          logq_weight=1.0):
    """The IHN softmax of [B, C] similarities (row b's positive: column b)."""
    batch, num_candidates = similarities.shape
    s = similarities / temperature
    corrected = s - logq_weight * np.log(np.clip(probability, 1e-6, 1.0))
    losses = []
    for b in range(batch):
        negatives = [j for j in range(num_candidates)
                     if j != b and not (remove_hits and ids[j] == ids[b]) and (in_batch or j >= batch)]
        hardness = np.exp(beta * s[b, negatives])
        weights = len(negatives) * hardness / hardness.sum()
        denominator = np.exp(corrected[b, b]) + np.sum(weights * np.exp(corrected[b, negatives]))
        losses.append(-corrected[b, b] + np.log(denominator))
    return np.mean(losses)


def served_similarities(interests, candidates, mode, tau=1.0):
    """[B, K, d], [C, d] -> [B, C]: the hard read-out (the interest closest to column b, row b's positive),
    or the max / tau-logsumexp over the K interests, literally."""
    per_interest = np.einsum("bkd,cd->bkc", interests, candidates)
    if mode == "hard":
        best = [int(np.argmax(per_interest[b, :, b])) for b in range(len(interests))]
        return np.stack([per_interest[b, best[b]] for b in range(len(interests))])
    if mode == "max":
        return per_interest.max(axis=1)
    top = per_interest.max(axis=1, keepdims=True)
    return tau * np.log(np.exp((per_interest - top) / tau).sum(axis=1)) + top[:, 0]


def mixture_gate(per_interest, interest_gates, item_gates, tau):
    """[..., K] scores <u_k, v_j>, [..., K, m] P u_k and [..., m] Q v_j -> [..., K] the gate
    pi = softmax_k(<u_k, v_j> / tau + <P u_k, Q v_j> / sqrt(m)), literally."""
    affinity = (interest_gates * item_gates[..., np.newaxis, :]).sum(axis=-1) / np.sqrt(item_gates.shape[-1])
    logits = per_interest / tau + affinity
    gate = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return gate / gate.sum(axis=-1, keepdims=True)


def mixture_of_logits(per_interest, interest_gates, item_gates, tau):
    """The same inputs -> [...] the mixture of logits sum_k pi_k <u_k, v_j>."""
    return (mixture_gate(per_interest, interest_gates, item_gates, tau) * per_interest).sum(axis=-1)


def gate_imbalance(gate):
    """[B, K] -> KL(mean_b gate_b || uniform) = sum_k m_k log(m_k K), in plain numpy."""
    mean = gate.mean(axis=0)
    return float(sum(m * np.log(m * len(mean)) for m in mean if m > 0))


def slot_quotas(weights, k):
    """Largest remainder: floor(k * w) each, then +1 for the largest remainders (ties: lower index)."""
    exact = k * np.asarray(weights, np.float64)
    quota = np.floor(exact).astype(int)
    order = sorted(range(len(quota)), key=lambda i: (-(exact[i] - quota[i]), i))
    for i in order[:k - quota.sum()]:
        quota[i] += 1
    return quota


def quota_merge(interest_ids, interest_scores, weights, k):
    """The quota merge of remi_tf.merging, one user at a time, in plain loops: each slot goes to the interest
    furthest below its quota ((filled + 0.5) / quota, ties: lower index), which gives its best remaining
    item; an item is taken once; with no interest below quota left, the best remaining result of any.

    Returns:
      (ids [users, k] (-1 pads), scores [users, k], interest [users, k] (-1 pads)).
    """
    users, num_interests, _ = interest_ids.shape
    ids = np.full((users, k), -1, np.int64)
    scores = np.full((users, k), -np.inf)
    interest = np.full((users, k), -1, np.int64)
    for u in range(users):
        quota = slot_quotas(weights[u], k)
        available = interest_scores[u] > -np.inf
        filled = np.zeros(num_interests, int)
        for step in range(k):
            has = available.any(axis=1)
            if not has.any():
                break
            below = [i for i in range(num_interests) if has[i] and filled[i] < quota[i]]
            if below:
                chosen = min(below, key=lambda i: ((filled[i] + 0.5) / max(quota[i], 1), i))
            else:
                chosen = max((i for i in range(num_interests) if has[i]),
                             key=lambda i: (interest_scores[u, i][available[i]].max(), -i))
            entries = np.flatnonzero(available[chosen])
            entry = entries[np.argmax(interest_scores[u, chosen, entries])]
            ids[u, step], scores[u, step], interest[u, step] = interest_ids[u, chosen, entry], \
                interest_scores[u, chosen, entry], chosen
            available &= interest_ids[u] != interest_ids[u, chosen, entry]
            filled[chosen] += 1
    return ids, scores, interest
