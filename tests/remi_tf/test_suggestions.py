"""did_you_mean: the closest known names, hand-checked against difflib's similarity (2 * matches / total length)."""

from remi_tf.suggestions import did_you_mean


def test_the_closest_names_within_a_tenth_of_the_best():
    # "user" to userId: 2 * 4 / 10 = 0.8; to user_id: 2 * 4 / 11 = 0.73 (within 0.1); to item_id: below 0.6
    assert did_you_mean("user", ["item_id", "user_id", "userId"]) == " (did you mean userId or user_id?)"
    # max_step to max_steps: 16 / 17 = 0.94; to max_history: 2 * 4 / 19 = 0.42, below the cutoff
    assert did_you_mean("max_step", ["max_history", "max_steps"]) == " (did you mean max_steps?)"


def test_case_is_ignored_and_nothing_close_says_nothing():
    assert did_you_mean("BATCH_SIZE", ["batch_size"]) == " (did you mean batch_size?)"
    assert did_you_mean("zzz", ["batch_size", "beta"]) == ""
    assert did_you_mean("x", []) == ""
