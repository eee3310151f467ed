"""What a CSV/TSV header that lacks the expected columns found, and the fix: the `--columns` option with the
header's own names guessed for the fields, or the other delimiter when the whole header is one cell."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from remi_tf.suggestions import did_you_mean

# `--columns` names of the fields, and header names (folded: lower case, letters and digits) that mean each
OPTION_NAMES = {"user_id": "user", "item_id": "item", "timestamp": "timestamp", "behavior": "behavior",
                "rating": "rating"}
SYNONYMS = {
    "user_id": ("user", "userid", "uid", "users", "customer", "customerid", "visitor", "visitorid", "member",
                "memberid", "client", "clientid", "account", "accountid", "reviewer", "reviewerid", "buyer", "person"),
    "item_id": ("item", "itemid", "iid", "items", "product", "productid", "sku", "movie", "movieid", "article",
                "articleid", "asin", "track", "trackid", "song", "songid", "video", "videoid", "book", "bookid", "isbn",
                "business", "businessid", "venue", "venueid", "poi", "content", "contentid", "goods", "goodsid"),
    "timestamp": ("timestamp", "time", "ts", "date", "datetime", "eventtime", "eventtimestamp", "eventdate",
                  "created", "createdat", "clicktime", "unixtime", "epoch", "when"),
    "behavior": ("behavior", "behaviour", "action", "event", "eventtype", "type"),
    "rating": ("rating", "ratings", "score", "stars", "star"),
}
DELIMITER_NAMES = {",": ("','", "CSV", "csv"), "\t": ("a tab", "TSV", "tsv")}


def _folded(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def guess_column(field: str, header: Sequence[str]) -> str | None:
    """The header name that most likely holds `field` (user_id, item_id, timestamp, ...), or None."""
    by_folded = {_folded(name): name for name in header}
    return next((by_folded[synonym] for synonym in SYNONYMS.get(field, ()) if synonym in by_folded), None)


def missing_columns_message(path: str, header: Sequence[str], columns: Mapping[str, str], delimiter: str) -> str:
    """The error for a header that lacks some of `columns` ({field: header name}): what it found, what it lacks
    (with the closest name when one is missing) and the fix."""
    missing = [name for name in columns.values() if name not in header]
    message = f"{path}: line 1: header {list(header)} lacks column(s) {missing}"
    if len(missing) == 1:
        message += did_you_mean(missing[0], header)
    for field, why in (("behavior", "--behavior keeps the events whose behavior column has that value"),
                       ("rating", "--min-rating reads a rating column")):
        if columns.get(field) in missing:
            message += f" ({why})"
    other = "\t" if delimiter == "," else ","
    if len(header) == 1 and other in header[0] and delimiter in DELIMITER_NAMES:
        said, looks = DELIMITER_NAMES[delimiter][1], DELIMITER_NAMES[other]
        told = "its name says" if _named(path, DELIMITER_NAMES[delimiter][2]) else "it is read as"
        return f"{message}: the file's delimiter looks like {looks[0]} but {told} {said} (--format {looks[2]} reads it)"
    if any(":" in name for name in columns.values()):  # RecBole's typed header: its names are fixed
        return message
    named = {field: name if name in header else guess_column(field, header) for field, name in columns.items()}
    spec = ",".join(f"{OPTION_NAMES[field]}={name or '...'}" for field, name in named.items() if field in OPTION_NAMES)
    return f"{message}; name the header's columns: --columns {spec}"


def _named(path: str, extension: str) -> bool:
    return os.path.basename(path).removesuffix(".gz").endswith(f".{extension}")
