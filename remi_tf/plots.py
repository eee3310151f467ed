"""PNG plots people would rather look at than numbers: routing heatmaps and training curves."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after matplotlib.use("Agg"))
import numpy as np  # noqa: E402 (after matplotlib.use("Agg"))
from matplotlib.ticker import MaxNLocator  # noqa: E402 (after matplotlib.use("Agg"))

LABEL_CHARACTERS = 18  # an item's label under its history position, at most (names are cut)
VALID_PANELS = (("valid recall", "recall"), ("valid NDCG", "ndcg"), ("valid hit rate", "hitrate"))


def routing_heatmaps(routing: np.ndarray, mask: np.ndarray, user_ids: Sequence[str], path: str,
                     position_labels: Sequence[Sequence[str]] | None = None) -> None:
    """One heatmap per user of the routing matrix A [K, L] (interests x history positions) on one colour scale,
    from 0 to the largest weight shown (weights of 0.05-0.25 would all be dark on 0..1), with one colour bar
    whose top tick reads that weight.

    Args:
      routing: [users, K, L]; mask: [users, L] valid positions (first); user_ids: row titles.
      position_labels: per user, a label per valid position (its item's id or name), under the positions.
    """
    num_users, num_interests, _ = routing.shape
    lengths = [max(int(mask[row].sum()), 1) for row in range(num_users)]
    largest = max(float(routing[row, :, :lengths[row]].max()) for row in range(num_users)) or 1.0
    longest = max((len(label) for labels in position_labels or [] for label in labels), default=0)
    label_inches = 0.07 * min(longest, LABEL_CHARACTERS) if position_labels is not None else 0.0
    figure, axes = plt.subplots(num_users, 1, squeeze=False, layout="constrained",
                                figsize=(max(8.0, 2.5 + 0.16 * max(lengths)),
                                         1.2 + num_users * (0.9 * num_interests / 4 + 0.3 + label_inches)))
    for row, axis in enumerate(axes[:, 0]):
        image = axis.imshow(routing[row, :, :lengths[row]], aspect="auto", cmap="viridis", vmin=0.0, vmax=largest)
        axis.set_title(f"user {user_ids[row]}", fontsize=9)
        axis.set_ylabel("interest")
        axis.set_yticks(range(num_interests))
        if position_labels is None:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            shown = [_cut(label) for label in position_labels[row][:lengths[row]]]
            axis.set_xticks(range(len(shown)), shown, rotation=90, fontsize=6)
    colour_bar = figure.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.03, aspect=40, label="routing weight")
    ticks = colour_ticks(largest)
    colour_bar.set_ticks(ticks, labels=[f"{tick:.{_decimals(ticks)}f}" for tick in ticks])
    axes[-1, 0].set_xlabel("history " + ("position" if position_labels is None else "item") + " (oldest first)")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def colour_ticks(largest: float) -> list[float]:
    """Round ticks from 0 up to `largest`, then `largest` itself (a round tick within a tenth of it dropped)."""
    round_ticks = MaxNLocator(nbins=5).tick_values(0.0, largest)
    return [float(tick) for tick in round_ticks if 0.0 <= tick < 0.9 * largest] + [largest]


def _decimals(ticks: Sequence[float]) -> int:
    """Decimals that tell the ticks apart (at least 2)."""
    step = min(b - a for a, b in zip(ticks, ticks[1:], strict=False)) if len(ticks) > 1 else 1.0
    return max(2, math.ceil(-math.log10(step)))


def _cut(label: str) -> str:
    return label if len(label) <= LABEL_CHARACTERS else label[:LABEL_CHARACTERS - 1] + "\u2026"


def training_curves(history_csv: str, path: str, eval_every: int, validation_json: str | None = None) -> None:
    """Training losses (history.csv: epoch e ends at step (e + 1) * eval_every; an empty cell is a gap) and valid
    metrics against the training step, a panel each for the losses, recall (with the oracle's), NDCG and hit rate, every
    evaluation a point (one evaluation still shows), the best step a dashed line named in each legend; the
    legends sit beside their panels, off the curves. With validation.json the valid panels take its exact
    steps (a shorter last epoch, an evaluation made on resume) and its best step."""
    with open(history_csv, encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        raise ValueError(f"{history_csv} has no rows; train for at least one evaluation first")
    steps = [(int(row["epoch"]) + 1) * eval_every for row in rows]
    evaluations: list[dict] = [{"step": step, **row} for step, row in zip(steps, rows, strict=True)]
    best_step = None
    if validation_json and os.path.exists(validation_json):
        with open(validation_json, encoding="utf-8") as stream:
            state = json.load(stream)
        evaluations, best_step = state["evaluations"] or evaluations, state["best_step"]
    figure, axes = plt.subplots(2, 2, figsize=(12, 7.5), layout="constrained")
    losses = {key: [float(row[key] or "nan") for row in rows]
              for key in ("loss", "retrieval_loss", "routing_regularization") if key in rows[0]}
    _panel(axes[0, 0], "training loss", steps, losses, best_step)
    axes[0, 0].set_yscale("log")
    valid_steps = [e["step"] for e in evaluations]
    for axis, (title, family) in zip(axes.flat[1:], VALID_PANELS, strict=True):
        keys = [k for k in evaluations[0] if k.startswith("val_") and "@" in k and "union" not in k and
                k.removeprefix("val_").split("@")[0].split("_")[-1] == family]
        _panel(axis, title, valid_steps, {k.removeprefix("val_"): [float(e[k]) for e in evaluations] for k in keys},
               best_step)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _panel(axis: plt.Axes, title: str, steps: Sequence[int], series: dict[str, list[float]],
           best_step: int | None) -> None:
    """One panel: each series against the steps, the best step's line, the legend to the right."""
    for label, values in series.items():
        axis.plot(steps, values, "o-", markersize=3, label=label)
    if best_step is not None:
        axis.axvline(best_step, color="grey", linestyle="--", linewidth=1, label=f"best: step {best_step}")
    axis.set_title(title)
    axis.set_xlabel("training step")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def write_all(directory: str, routing: np.ndarray, mask: np.ndarray, user_ids: Sequence[str],
              history_csv: str | None, eval_every: int, num_users: int = 6,
              position_labels: Sequence[Sequence[str]] | None = None) -> list[str]:
    """Writes routing.png (first `num_users` users; `position_labels`: see routing_heatmaps) and, when the CSV
    exists, training_curves.png."""
    os.makedirs(directory, exist_ok=True)
    written = [os.path.join(directory, "routing.png")]
    count = min(num_users, len(user_ids))
    routing_heatmaps(routing[:count], mask[:count], user_ids[:count], written[0],
                     None if position_labels is None else position_labels[:count])
    if history_csv and os.path.exists(history_csv):
        written.append(os.path.join(directory, "training_curves.png"))
        training_curves(history_csv, written[1], eval_every,
                        os.path.join(os.path.dirname(history_csv), "validation.json"))
    return written
