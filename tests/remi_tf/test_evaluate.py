"""Full-corpus retrieval against numpy, whole and in candidate chunks."""

import numpy as np
import tensorflow as tf

from remi_tf import evaluate, models
from remi_tf.config import RemiConfig


def numpy_merged_topk(model, histories, top_n):
    """Reference: every interest scores every item; items ranked by their best interest score."""
    interests, _ = model.query_tower(tf.constant(histories, tf.int64))
    scores = np.einsum("ukd,nd->ukn", interests.numpy(), model.candidate_embeddings().numpy()).max(axis=1)
    return np.argsort(-scores, axis=1, kind="stable")[:, :top_n] + models.FIRST_ITEM_INDEX


def numpy_interest_topk(model, histories, top_n):
    """Reference: each interest's own top N over the whole corpus, and which interest scores each of the
    merged items best."""
    interests, _ = model.query_tower(tf.constant(histories, tf.int64))
    scores = np.einsum("ukd,nd->ukn", interests.numpy(), model.candidate_embeddings().numpy())
    per_interest = np.argsort(-scores, axis=2, kind="stable")[:, :, :top_n] + models.FIRST_ITEM_INDEX
    merged = numpy_merged_topk(model, histories, top_n) - models.FIRST_ITEM_INDEX
    best_interest = np.take_along_axis(scores.argmax(axis=1), merged, axis=1)
    return per_interest, best_interest


def test_retrieval_in_chunks_equals_whole_corpus_scoring(monkeypatch):
    tf.keras.utils.set_random_seed(1)
    model = models.RemiModel(RemiConfig(embedding_dim=8, num_interests=3, max_history=5), vocabulary_size=101)
    histories = np.random.default_rng(0).integers(2, 103, size=(7, 5))
    expected = numpy_merged_topk(model, histories, top_n=10)
    expected_lists, expected_interest = numpy_interest_topk(model, histories, top_n=10)
    whole = evaluate.retrieve(model, histories, top_n=10, batch_size=4)
    np.testing.assert_array_equal(whole.item_ids, expected)
    np.testing.assert_array_equal(whole.interest_item_ids, expected_lists)
    np.testing.assert_array_equal(whole.interest, expected_interest)
    monkeypatch.setattr(evaluate, "SCORE_CHUNK_BYTES", 4 * 4 * 3 * 13)  # 13 rows a chunk: 8 chunks
    assert len(list(model.candidate_chunks(13))) == 8
    chunked = evaluate.retrieve(model, histories, top_n=10, batch_size=4)
    np.testing.assert_array_equal(chunked.item_ids, expected)
    np.testing.assert_array_equal(chunked.interest_item_ids, expected_lists)
    monkeypatch.setattr(evaluate, "USER_BATCHES_PER_PASS", 1)  # 2 blocks of users, a corpus pass each
    blocks = evaluate.retrieve(model, histories, top_n=10, batch_size=4)
    np.testing.assert_array_equal(blocks.item_ids, expected)
    np.testing.assert_array_equal(blocks.interest, expected_interest)
    assert blocks.routing.shape == (7, 3, 5)
