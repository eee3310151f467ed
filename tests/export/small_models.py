"""Small models trained through the CLI on synthetic clusters, and their inputs, for export tests of one
configuration each."""

import numpy as np

from remi import cli
from remi_tf.item_index import FIRST_ITEM_INDEX
from tests import synthetic
from tests.configs import REMI_SETTINGS

HISTORIES = [["item2", "item3", "item4", "item60", "item61"], ["item500", "item501", "item90"], ["item7"]]


def train_on_clusters(root, seed: int, *settings: str) -> str:
    """Trains 200 steps (d 8, K 3) on 800 users of 20 clusters with `settings` (key=value) added; returns the
    model directory."""
    data = synthetic.prepared_clusters(root, user_prefix="user", num_users=800, num_clusters=20, items_per_cluster=30,
                                       clusters_per_user=3, length=30, seed=seed)
    assert cli.main(["train", "--data", data, "--model-dir", str(root / "model"), "--quiet",
                     "--set", *REMI_SETTINGS, "max_steps=200", "eval_every=100", "embedding_dim=8", "num_interests=3",
                     *settings]) == 0
    return str(root / "model")


def model_rows(model, vocabulary, histories) -> np.ndarray:
    """[users, L] the model's item indices of raw histories (the last L known items, left-aligned)."""
    index = {item: i + FIRST_ITEM_INDEX for i, item in enumerate(vocabulary)}
    rows = np.zeros((len(histories), model.config.max_history), np.int64)
    for r, history in enumerate(histories):
        known = [index[i] for i in history if i in index][-model.config.max_history:]
        rows[r, :len(known)] = known
    return rows
