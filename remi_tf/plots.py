"""PNG plots people would rather look at than numbers: routing heatmaps and training curves."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after matplotlib.use("Agg"))
import numpy as np  # noqa: E402 (after matplotlib.use("Agg"))
from matplotlib.ticker import MaxNLocator  # noqa: E402 (after matplotlib.use("Agg"))


def routing_heatmaps(routing: np.ndarray, mask: np.ndarray, user_ids: Sequence[str], path: str) -> None:
    """One heatmap per user of the routing matrix A [K, L] (interests x history positions), on a colour
    scale from 0 to the largest weight shown (weights of 0.05-0.25 would all be dark on 0..1).

    Args:
      routing: [users, K, L]; mask: [users, L] valid positions; user_ids: row titles.
    """
    num_users = len(user_ids)
    largest = max(float(routing[row, :, :max(int(mask[row].sum()), 1)].max()) for row in range(num_users))
    figure, axes = plt.subplots(num_users, 1, figsize=(8, 1.2 + 0.9 * num_users * routing.shape[1] / 4),
                                squeeze=False)
    for row, axis in enumerate(axes[:, 0]):
        length = max(int(mask[row].sum()), 1)
        image = axis.imshow(routing[row, :, :length], aspect="auto", cmap="viridis", vmin=0.0, vmax=largest)
        axis.set_title(f"user {user_ids[row]}", fontsize=9)
        axis.set_ylabel("interest")
        axis.set_yticks(range(routing.shape[1]))
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure.colorbar(image, ax=axis, fraction=0.02)
    axes[-1, 0].set_xlabel("history position (oldest first)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def training_curves(history_csv: str, path: str, eval_every: int, validation_json: str | None = None) -> None:
    """Training losses (history.csv: epoch e ends at step (e + 1) * eval_every; an empty cell is a gap) and valid
    metrics against the training step, every evaluation a point (one evaluation still shows), the best step marked.
    With validation.json the valid panel takes its exact steps (a shorter last epoch, an evaluation made on
    resume) and its best step."""
    with open(history_csv, encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        raise ValueError(f"{history_csv} has no rows; train for at least one evaluation first")
    steps = [(int(row["epoch"]) + 1) * eval_every for row in rows]
    loss_keys = [k for k in ("loss", "retrieval_loss", "routing_regularization") if k in rows[0]]
    evaluations = [{"step": step, **row} for step, row in zip(steps, rows, strict=True)]
    best_step = None
    if validation_json and os.path.exists(validation_json):
        with open(validation_json, encoding="utf-8") as stream:
            state = json.load(stream)
        evaluations, best_step = state["evaluations"] or evaluations, state["best_step"]
    metric_keys = [k for k in evaluations[0] if k.startswith("val_") and ("recall" in k or "ndcg" in k or
                                                                           "hitrate" in k) and "union" not in k]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key in loss_keys:
        left.plot(steps, [float(r[key] or "nan") for r in rows], "o-", markersize=3, label=key)
    left.set_xlabel("training step")
    left.set_yscale("log")
    left.legend()
    left.set_title("training")
    valid_steps = [e["step"] for e in evaluations]
    for key in metric_keys:
        right.plot(valid_steps, [float(e[key]) for e in evaluations], "o-", markersize=3,
                   label=key.removeprefix("val_"))
    if best_step is not None:
        for axis in (left, right):
            axis.axvline(best_step, color="grey", linestyle="--", linewidth=1)
        right.annotate(f"best: step {best_step}", (best_step, 1.0), xycoords=("data", "axes fraction"),
                       ha="right", va="top", fontsize=8, color="grey")
    right.set_xlabel("training step")
    right.legend(fontsize=8)
    right.set_title("valid")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_all(directory: str, routing: np.ndarray, mask: np.ndarray, user_ids: Sequence[str],
              history_csv: str | None, eval_every: int, num_users: int = 6) -> list[str]:
    """Writes routing.png (first `num_users` users) and, when the CSV exists, training_curves.png."""
    os.makedirs(directory, exist_ok=True)
    written = [os.path.join(directory, "routing.png")]
    count = min(num_users, len(user_ids))
    routing_heatmaps(routing[:count], mask[:count], user_ids[:count], written[0])
    if history_csv and os.path.exists(history_csv):
        written.append(os.path.join(directory, "training_curves.png"))
        training_curves(history_csv, written[1], eval_every,
                        os.path.join(os.path.dirname(history_csv), "validation.json"))
    return written
