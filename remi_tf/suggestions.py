"""What a misspelt name most likely meant: the known names closest to it (config keys and values, command-line
choices, log column names), for error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

NEAR_BEST = 0.1  # names this close to the best match's similarity are offered with it


def did_you_mean(name: object, known: Iterable[object]) -> str:
    """" (did you mean max_steps?)", to append to a message about `name`: the names of `known` closest to it
    (difflib's similarity, without case; up to three, each within NEAR_BEST of the closest), or "" when none is
    close (difflib's cutoff, 0.6)."""
    by_folded = {str(candidate).lower(): str(candidate) for candidate in known}
    folded = str(name).lower()
    matches = difflib.get_close_matches(folded, by_folded, n=3)
    similarity = {match: difflib.SequenceMatcher(None, folded, match).ratio() for match in matches}
    closest = [by_folded[match] for match in matches if similarity[match] >= similarity[matches[0]] - NEAR_BEST]
    return f" (did you mean {' or '.join(closest)}?)" if closest else ""
