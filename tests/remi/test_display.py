"""What evaluate and prepare print: the short tables and warnings, from hand-made reports."""

from remi import display

REPORT = {"split": "test", "num_users": 1697, "recall@20": 0.0757, "ndcg@20": 0.0903, "hitrate@20": 0.2516,
          "recall@50": 0.1393, "ndcg@50": 0.1204, "hitrate@50": 0.3972, "interest_overlap": 0.3169,
          "interest_share": [0.127, 0.175, 0.689, 0.009], "oracle_recall@50": 0.1889}


def test_evaluation_summary_is_a_table_with_the_interests_and_names_a_dead_one():
    lines = display.evaluation_summary(REPORT, "m/eval-test.json").splitlines()
    assert lines[:5] == ["test split, 1,697 users", f"{'':<10}{'@20':>9}{'@50':>9}",
                         f"{'recall':<10}{0.0757:>9.4f}{0.1393:>9.4f}", f"{'ndcg':<10}{0.0903:>9.4f}{0.1204:>9.4f}",
                         f"{'hitrate':<10}{0.2516:>9.4f}{0.3972:>9.4f}"]
    assert lines[5] == "interests: share of the merged top 50 #0 0.13 #1 0.17 #2 0.69 #3 0.01; overlap of their lists 0.32"
    assert lines[6] == "best single interest per user (oracle) recall@50 0.1889"
    assert lines[7].startswith("warning: interest(s) #3 retrieve under 2% of the merged lists (dead interests)")
    assert lines[-1] == "report: m/eval-test.json" and len(lines) == 9  # no collapse warning at overlap 0.32


def test_collapsed_interests_are_named_with_the_key_that_addresses_them():
    collapsed = {**REPORT, "interest_overlap": 0.91, "interest_share": [0.3, 0.3, 0.2, 0.2]}
    text = display.evaluation_summary(collapsed, "r.json")
    assert "warning: the 4 interests retrieve nearly the same lists (overlap 0.91, routing collapse): raise " \
           "routing_lambda" in text and "dead" not in text
    single = {key: value for key, value in REPORT.items() if not key.startswith(("interest", "oracle"))}
    assert "interests" not in display.evaluation_summary({**single, "interest_share": [1.0]}, "r.json")


def redundancy_warnings(pair_overlap, mean_overlap=0.3):
    report = {**REPORT, "interest_pair_overlap": pair_overlap, "interest_overlap": mean_overlap,
              "interest_share": [0.25] * len(pair_overlap)}
    return [line for line in display.evaluation_summary(report, "r.json").splitlines() if "warning" in line]


def test_interests_that_retrieve_the_same_items_are_named_with_what_to_try():
    # #0 and #2 retrieve the same 50 items, #1 and #3 most of them; the mean (0.39) is far from a collapse.
    pairs = [[1.0, 0.05, 1.0, 0.1], [0.05, 1.0, 0.1, 0.8], [1.0, 0.1, 1.0, 0.3], [0.1, 0.8, 0.3, 1.0]]
    assert redundancy_warnings(pairs) == [
        "warning: interests #0 and #2 (overlap 1.00), #1 and #3 (overlap 0.80) retrieve nearly the same top 50 "
        "items (redundant interests): fewer interests (num_interests=2), or a larger routing_lambda to set them "
        "apart"]
    # Overlapping pairs join into one group: #0-#1 and #0-#2 (#1-#2 itself below the threshold).
    chained = [[1.0, 0.9, 0.7, 0.0], [0.9, 1.0, 0.4, 0.0], [0.7, 0.4, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    assert redundancy_warnings(chained) == [
        "warning: interests #0, #1 and #2 (overlaps 0.70-0.90) retrieve nearly the same top 50 items (redundant "
        "interests): fewer interests (num_interests=2), or a larger routing_lambda to set them apart"]
    # Below display.REDUNDANT_OVERLAP (the healthy models measured had no pair above 0.27): no warning.
    below = [[1.0, 0.27, 0.45, 0.1], [0.27, 1.0, 0.1, 0.2], [0.45, 0.1, 1.0, 0.3], [0.1, 0.2, 0.3, 1.0]]
    assert redundancy_warnings(below) == []
    # A collapse (every pair alike) is said once, by the collapse warning.
    collapsed = redundancy_warnings([[1.0] * 4] * 4, mean_overlap=1.0)
    assert len(collapsed) == 1 and "routing collapse" in collapsed[0]


def test_cleaning_summary_names_each_reason_and_what_was_kept():
    manifest = {"input_events": 1200, "num_items": 74, "filters": {"min_user_count": 5, "min_item_count": 5},
                "splits": {"train": {"users": 50}, "valid": {"users": 7}, "test": {"users": 3}},
                "cleaning": {"bad_records": 2, "duplicate_events_removed": 0, "skipped": {"other_behavior": 30},
                             "users_below_min_count": 4, "items_below_min_count": 6}}
    assert display.cleaning_summary(manifest) == (
        "cleaning: 1,200 events read; dropped 2 bad records, 30 other behavior, 4 users below 5 events, 6 items "
        "below 5 events; kept 60 users and 74 items")
