"""The model's item index layout: 0 is padding, 1 is the out-of-vocabulary bucket, 2.. are the vocabulary's items in
`items.tsv` order (the layout of `tf.keras.layers.StringLookup(mask_token="", num_oov_indices=1)`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

OOV_INDEX = 1  # index 0 pads histories
FIRST_ITEM_INDEX = 2


def item_lookup(vocabulary: Sequence[str], invert: bool = False) -> tf.keras.layers.StringLookup:
    """StringLookup with the model's index layout (padding "" -> 0, unknown -> 1, items -> 2..). The vocabulary
    goes in as a numpy array: a list would be kept as a tracked list, which every checkpoint and SavedModel
    traversal walks item by item (a 1 M-item export spent minutes there: BENCHMARKS.md 11)."""
    return tf.keras.layers.StringLookup(vocabulary=np.asarray(list(vocabulary), dtype=object), mask_token="",
                                        num_oov_indices=1,
                                        invert=invert, name="item_lookup_inverse" if invert else "item_lookup")
