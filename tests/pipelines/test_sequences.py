"""Per-record logic on columns: grouping, stable time sort, de-duplication, the one-pass 5-core filter,
the hash-based user split."""

from collections import Counter

import numpy as np

from remi_tf.pipelines import sequences


def block(events: list[tuple[str, str, int, int]]) -> sequences.EventBlock:
    """(user, item, timestamp, position) rows -> an EventBlock."""
    users, items, timestamps, positions = zip(*events)
    return sequences.EventBlock(sequences.object_array([u.encode() for u in users]),
                                sequences.object_array([i.encode() for i in items]),
                                np.array(timestamps, np.int64), np.array(positions, np.int64))


def as_lists(users: sequences.UserSequences) -> dict[str, list[tuple[int, str]]]:
    items = users.item_ids[users.item_codes]
    return {user.decode(): [(int(t), i.decode()) for t, i in zip(users.timestamps[start:end], items[start:end])]
            for user, start, end in zip(users.users, users.offsets[:-1], users.offsets[1:])}


def as_dict(counts: sequences.ItemCounts) -> dict[bytes, int]:
    return dict(zip(counts.items.tolist(), counts.counts.tolist()))


def test_users_sorted_events_in_time_then_file_order_and_duplicates_dropped():
    # Arriving out of order, as after a distributed group-by; positions give the file order.
    events = block([("u2", "c", 3, 4), ("u1", "x", 9, 7), ("u2", "b", 1, 1), ("u2", "a", 3, 0), ("u2", "d", 1, 10),
                    ("u2", "e", 2, 2), ("u2", "b", 1, 15), ("u10", "b", 1, 3), ("u2", "b", 5, 16)])
    ordered, duplicates = sequences.order_users(events)
    assert list(ordered.users) == [b"u1", b"u10", b"u2"]  # sorted by id, as text
    assert as_lists(ordered) == {"u1": [(9, "x")], "u10": [(1, "b")],
                                 "u2": [(1, "b"), (1, "d"), (2, "e"), (3, "a"), (3, "c"), (5, "b")]}
    assert duplicates == 1  # the second (1, "b") of u2; (5, "b") is a new event
    assert as_dict(sequences.item_counts(ordered)) == {b"b": 3, b"x": 1, b"d": 1, b"e": 1, b"a": 1, b"c": 1}


def test_item_counts_of_disjoint_users_add_up():
    first, _ = sequences.order_users(block([("u1", "a", 1, 0), ("u1", "b", 2, 1), ("u2", "a", 1, 2)]))
    second, _ = sequences.order_users(block([("u3", "c", 1, 3), ("u3", "a", 2, 4)]))
    merged = sequences.merge_item_counts([sequences.item_counts(first), sequences.item_counts(second)])
    assert merged.items.tolist() == [b"a", b"b", b"c"] and merged.counts.tolist() == [3, 1, 1]


def test_the_result_does_not_depend_on_arrival_order():
    rng = np.random.default_rng(0)
    rows = [(f"u{rng.integers(20)}", f"i{rng.integers(30)}", int(rng.integers(5)), position)
            for position in range(400)]
    reference, _ = sequences.order_users(block(rows))
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    ordered, _ = sequences.order_users(block(shuffled))
    assert as_lists(ordered) == as_lists(reference)
    for user, events in as_lists(reference).items():  # the plain-Python reference: sort, keep first of each
        expected, seen = [], set()
        for timestamp, _, item in sorted((t, p, i) for u, i, t, p in rows if u == user):
            if (timestamp, item) not in seen:
                seen.add((timestamp, item))
                expected.append((timestamp, item))
        assert events == expected


def test_five_core_filter_items_then_users_in_one_pass():
    counts = sequences.ItemCounts(sequences.object_array([b"also", b"frequent", b"rare"]), np.array([7, 5, 4]))
    kept_items = sequences.frequent_items(counts)
    assert kept_items == {b"frequent", b"also"}
    long_user = [("a", item, t, t) for t, item in enumerate(["frequent", "rare", "also", "frequent", "also", "also"])]
    short_user = [("b", item, t, 10 + t) for t, item in enumerate(["frequent", "rare", "also", "frequent", "also"])]
    ordered, _ = sequences.order_users(block(long_user + short_user))
    kept = sequences.filter_users(ordered, kept_items)
    assert as_lists(kept) == {"a": [(0, "frequent"), (2, "also"), (3, "frequent"), (4, "also"), (5, "also")]}
    assert kept.offsets.tolist() == [0, 5]  # b keeps 4 events < 5: dropped


def test_split_is_deterministic_seeded_and_near_80_10_10():
    users = [f"user{i}".encode() for i in range(20_000)]
    first = [sequences.assign_split(u, seed=7) for u in users]
    assert first == [sequences.assign_split(u, seed=7) for u in users]
    shares = Counter(first)
    assert abs(shares["train"] / len(users) - 0.8) < 0.01
    assert abs(shares["valid"] / len(users) - 0.1) < 0.01
    assert abs(shares["test"] / len(users) - 0.1) < 0.01
    other_seed = [sequences.assign_split(u, seed=8) for u in users]
    assert sum(a != b for a, b in zip(first, other_seed)) > 0.2 * len(users)
