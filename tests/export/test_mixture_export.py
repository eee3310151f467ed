"""A model scored by the mixture of logits (interest_scoring mixture), exported: the retrieval SavedModel re-scores
each interest's exact top (k + L) with the model's gate and merges them as numpy does; evaluation ranks by the
same score."""

import os

import numpy as np
import pytest
import tensorflow as tf

from remi import cli
from remi_tf import evaluate, model_directory
from remi_tf.models import FIRST_ITEM_INDEX
from tests import numpy_reference
from tests.export.small_models import HISTORIES, model_rows, train_on_clusters

K = 12


@pytest.fixture(scope="module")
def mixture_model_dir(tmp_path_factory):
    return train_on_clusters(tmp_path_factory.mktemp("mixture"), 2, "interest_scoring=mixture",
                             "interest_temperature=0.5", "mixture_gate_dim=4")


def numpy_mixture_lookup(model, interests, depth):
    """Each interest's exact top `depth` table rows, re-scored by the mixture of logits over all interests."""
    table = model.candidate_embeddings().numpy().astype(np.float64)
    top = np.argsort(-np.einsum("bkd,nd->bkn", interests, table), axis=-1, kind="stable")[:, :, :depth]
    vectors = table[top]  # [B, K, depth, d]
    mixture = model.interest_mixture
    interest_gates = (interests @ mixture.interest_gate.kernel.numpy())[:, np.newaxis, np.newaxis]
    combined = numpy_reference.mixture_of_logits(np.einsum("bjd,bknd->bknj", interests, vectors), interest_gates,
                                                 vectors @ mixture.item_gate.kernel.numpy(), mixture.temperature)
    return top + FIRST_ITEM_INDEX, combined


def test_exported_mixture_lookup_matches_numpy(mixture_model_dir, tmp_path):
    output = str(tmp_path / "export")
    assert cli.main(["export", "--model-dir", mixture_model_dir, "--output", output, "--index", "brute-force",
                     "--k", str(K)]) == 0
    trained = model_directory.load_trained(mixture_model_dir)
    model, vocabulary = trained.model, trained.vocabulary
    position = {item: i + FIRST_ITEM_INDEX for i, item in enumerate(vocabulary)}
    rows = model_rows(model, vocabulary, HISTORIES)
    interests = model.encode(tf.constant(rows))[0].numpy().astype(np.float64)
    ids, combined = numpy_mixture_lookup(model, interests, K + model.config.max_history)
    expected_ids, expected_scores = numpy_reference.merge_interest_topk(ids, combined, K)

    histories = tf.ragged.constant(HISTORIES).to_tensor("")
    served = tf.saved_model.load(os.path.join(output, "remi", "1")).signatures["include_history"](history=histories)
    got_ids = [[position[item.decode()] for item in row] for row in served["item_ids"].numpy()]
    np.testing.assert_array_equal(got_ids, expected_ids)
    np.testing.assert_allclose(served["scores"].numpy(), expected_scores, rtol=1e-4, atol=1e-5)
    # each merged score is a mixture: no larger than the item's best single-interest score
    best = np.einsum("bkd,bnd->bkn", interests, model.vectors_by_index().numpy()[expected_ids]).max(axis=1)
    assert np.all(expected_scores <= best + 1e-5)

    found = evaluate.retrieve(model, rows, K, exclude_history=False)  # evaluation: each interest's top K, re-scored
    ids, combined = numpy_mixture_lookup(model, interests, K)
    np.testing.assert_array_equal(found.item_ids, numpy_reference.merge_interest_topk(ids, combined, K)[0])
