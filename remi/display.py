"""What the command line prints: short, labelled summaries of what prepare and evaluate wrote (the files keep
every figure)."""

from __future__ import annotations

DEAD_SHARE = 0.02  # an interest below this share of the merged lists retrieves (almost) nothing
COLLAPSED_OVERLAP = 0.8  # the K lists are then nearly one list


def cleaning_summary(manifest: dict) -> str:
    """One labelled line of what prepare read, dropped (by reason) and kept."""
    cleaning = manifest["cleaning"]
    dropped = {"bad records": cleaning["bad_records"], "duplicate events": cleaning["duplicate_events_removed"],
               **{rule.replace("_", " "): count for rule, count in cleaning["skipped"].items()},
               f"users below {manifest['filters']['min_user_count']} events": cleaning["users_below_min_count"],
               f"items below {manifest['filters']['min_item_count']} events": cleaning["items_below_min_count"]}
    users = sum(split["users"] for split in manifest["splits"].values())
    dropped_text = ", ".join(f"{count:,} {what}" for what, count in dropped.items() if count) or "nothing"
    return (f"cleaning: {manifest['input_events']:,} events read; dropped {dropped_text}; kept {users:,} users and "
            f"{manifest['num_items']:,} items")


def evaluation_summary(report: dict, path: str) -> str:
    """The report as a short table: Recall/NDCG/HitRate at each list length, each interest's share of the
    merged lists and their overlap, and warnings in words (dead interests, collapsed routing) naming the
    config key that addresses them."""
    lengths = sorted(int(key.split("@")[1]) for key in report if key.startswith("recall@"))
    sample = report.get("sampled_users")
    users = f"{report['num_users']:,} users" if sample is None else \
        f"a sample of {sample['users']:,} of {sample['of']:,} users (seed {sample['seed']}; the protocol reads all)"
    lines = [f"{report['split']} split, {users}",
             f"{'':<10}" + "".join(f"{'@' + str(n):>9}" for n in lengths)]
    for metric in ("recall", "ndcg", "hitrate"):
        lines.append(f"{metric:<10}" + "".join(f"{report[f'{metric}@{n}']:>9.4f}" for n in lengths))
    shares = report.get("interest_share", [])
    if len(shares) > 1:
        lines.append("interests: share of the merged top " + str(lengths[-1]) + " " +
                     " ".join(f"#{k} {share:.2f}" for k, share in enumerate(shares)) +
                     f"; overlap of their lists {report['interest_overlap']:.2f}")
        if "oracle_recall@" + str(lengths[-1]) in report:
            lines.append(f"best single interest per user (oracle) recall@{lengths[-1]} "
                         f"{report[f'oracle_recall@{lengths[-1]}']:.4f}")
        dead = [k for k, share in enumerate(shares) if share < DEAD_SHARE]
        if dead:
            lines.append(f"warning: interest(s) {', '.join(f'#{k}' for k in dead)} retrieve under {DEAD_SHARE:.0%} of "
                         "the merged lists (dead interests): fewer interests (num_interests) may serve as well")
        if report["interest_overlap"] > COLLAPSED_OVERLAP:
            lines.append(f"warning: the {len(shares)} interests retrieve nearly the same lists (overlap "
                         f"{report['interest_overlap']:.2f}, routing collapse): raise routing_lambda, or train "
                         "with interest_scoring=hard")
    lines.append(f"report: {path}")
    return "\n".join(lines)
