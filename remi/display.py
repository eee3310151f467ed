"""What the command line prints: short, labelled summaries of what prepare and evaluate wrote (the files keep
every figure)."""

from __future__ import annotations

from collections.abc import Sequence

DEAD_SHARE = 0.02  # an interest below this share of the merged lists retrieves (almost) nothing
COLLAPSED_OVERLAP = 0.8  # the K lists are then nearly one list
# Two interests whose top-50 lists overlap more than this (Jaccard) retrieve nearly the same items. Measured on
# ml-100k after 400 steps (issue 40; valid and test users): every pair of five healthy K = 4 models (three
# self-attentive, ComiRec-DR, MIND) at most 0.24; K = 8: the 10 pairs among its five dead interests 0.85-0.94, its
# other pairs at most 0.27; a collapsed K = 4 (interest_scoring=max, mean 0.83) 0.74-0.93.
REDUNDANT_OVERLAP = 0.5


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
        elif report.get("interest_pair_overlap"):
            lines += redundancy_warning(report["interest_pair_overlap"], lengths[-1])
    lines.append(f"report: {path}")
    return "\n".join(lines)


def redundant_groups(pair_overlap: Sequence[Sequence[float]]) -> list[list[int]]:
    """The interests joined by pairs that overlap more than REDUNDANT_OVERLAP (connected groups, each sorted,
    in the order of their first interest)."""
    groups: list[set[int]] = []
    for i, row in enumerate(pair_overlap):
        for j in range(i + 1, len(row)):
            if row[j] > REDUNDANT_OVERLAP:
                touching = [group for group in groups if i in group or j in group]
                groups = [group for group in groups if group not in touching] + [{i, j}.union(*touching)]
    return sorted(sorted(group) for group in groups)


def redundancy_warning(pair_overlap: Sequence[Sequence[float]], top_n: int) -> list[str]:
    """A warning naming the groups of interests whose top-N lists overlap more than REDUNDANT_OVERLAP (with
    the overlap, or the range of their overlaps above it) and what to try; none when there are none."""
    groups = redundant_groups(pair_overlap)
    if not groups:
        return []
    named = []
    for group in groups:
        overlaps = [pair_overlap[i][j] for i in group for j in group
                    if i < j and pair_overlap[i][j] > REDUNDANT_OVERLAP]
        members = ", ".join(f"#{k}" for k in group[:-1]) + f" and #{group[-1]}"
        spread = f"overlap {overlaps[0]:.2f}" if len(overlaps) == 1 else \
            f"overlaps {min(overlaps):.2f}-{max(overlaps):.2f}"
        named.append(f"{members} ({spread})")
    kept = len(pair_overlap) - sum(len(group) - 1 for group in groups)
    return [f"warning: interests {', '.join(named)} retrieve nearly the same top {top_n} items (redundant "
            f"interests): fewer interests (num_interests={kept}), or a larger routing_lambda to set them apart"]
