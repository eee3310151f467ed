"""Per-record logic: stable time sort, the one-pass 5-core filter, the hash-based user split."""

from collections import Counter

from pipelines import sequences


def test_sort_keeps_file_order_on_ties_and_drops_duplicates():
    # (timestamp, (file, record), item), arriving out of order as after a distributed group-by.
    events = [(3, (0, 4), "c"), (1, (0, 1), "b"), (3, (0, 0), "a"), (1, (1, 0), "d"), (2, (0, 2), "e"),
              (1, (1, 5), "b")]
    ordered, duplicates = sequences.sort_and_deduplicate(events)
    assert ordered == [(1, "b"), (1, "d"), (2, "e"), (3, "a"), (3, "c")]
    assert duplicates == 1  # the second (1, "b")


def test_five_core_filter_items_then_users_in_one_pass():
    counts = Counter({"frequent": 5, "also": 7, "rare": 4})
    kept_items = sequences.frequent_items(counts)
    assert kept_items == {"frequent", "also"}
    user = [(t, item) for t, item in enumerate(["frequent", "rare", "also", "frequent", "also", "also"])]
    assert sequences.filter_sequence(user, kept_items) == [(0, "frequent"), (2, "also"), (3, "frequent"),
                                                           (4, "also"), (5, "also")]
    assert sequences.filter_sequence(user[:5], kept_items) is None  # 4 kept items < 5


def test_split_is_deterministic_seeded_and_near_80_10_10():
    users = [f"user{i}" for i in range(20_000)]
    first = [sequences.assign_split(u, seed=7) for u in users]
    assert first == [sequences.assign_split(u, seed=7) for u in users]
    shares = Counter(first)
    assert abs(shares["train"] / len(users) - 0.8) < 0.01
    assert abs(shares["valid"] / len(users) - 0.1) < 0.01
    assert abs(shares["test"] / len(users) - 0.1) < 0.01
    other_seed = [sequences.assign_split(u, seed=8) for u in users]
    assert sum(a != b for a, b in zip(first, other_seed)) > 0.2 * len(users)
