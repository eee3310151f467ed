"""Synthetic interaction data with planted structure: users consume items from a few item clusters."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

FIRST_ITEM_INDEX = 2  # the model's index of the first real item (0 pads, 1 is OOV)


def clustered_sequences(num_users: int, num_clusters: int, items_per_cluster: int, clusters_per_user: int,
                        length: int, seed: int, cluster_shares: Sequence[float] | None = None
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each user picks `clusters_per_user` clusters and consumes `length` items, each from one of them
    (the user's i-th cluster with probability cluster_shares[i]; default: uniformly).

    Returns:
      (sequences of model item indices, each user's set of clusters). Item index
      FIRST_ITEM_INDEX + c * items_per_cluster + i is item i of cluster c.
    """
    rng = np.random.default_rng(seed)
    sequences, user_clusters = [], []
    for _ in range(num_users):
        clusters = rng.choice(num_clusters, size=clusters_per_user, replace=False)
        chosen = rng.choice(clusters, size=length, p=cluster_shares)
        items = chosen * items_per_cluster + rng.integers(0, items_per_cluster, size=length)
        sequences.append((items + FIRST_ITEM_INDEX).astype(np.int64))
        user_clusters.append(clusters)
    return sequences, user_clusters


def write_log(path, sequences: list[np.ndarray], user_prefix: str = "u") -> None:
    """A CSV event log (user_id,item_id,timestamp) of the sequences: user <prefix><u>, item item<index>,
    timestamps 0, 1, .. in sequence order."""
    with open(path, "w") as stream:
        stream.write("user_id,item_id,timestamp\n")
        stream.writelines(f"{user_prefix}{user},item{item},{time}\n" for user, items in enumerate(sequences)
                          for time, item in enumerate(items))


def prepared_clusters(root, name: str = "data", user_prefix: str = "u", **cluster_args) -> str:
    """`remi prepare` of a clustered log (`clustered_sequences(**cluster_args)`) into root/<name>; returns it."""
    from remi import cli

    sequences, _ = clustered_sequences(**cluster_args)
    log = os.path.join(root, f"{name}.csv")
    write_log(log, sequences, user_prefix=user_prefix)
    output = os.path.join(root, name)
    assert cli.main(["prepare", "--input", log, "--output", output]) == 0
    return output
