"""Full-corpus retrieval against numpy, whole and in candidate chunks."""

import numpy as np
import tensorflow as tf

from tests.configs import remi_config
from remi_tf import evaluate, item_index, models


def numpy_merged_topk(model, histories, top_n):
    """Reference: every interest scores every item; items ranked by their best interest score."""
    interests, _ = model.query_tower(tf.constant(histories, tf.int64))
    scores = np.einsum("ukd,nd->ukn", interests.numpy(), model.corpus.embeddings().numpy()).max(axis=1)
    return np.argsort(-scores, axis=1, kind="stable")[:, :top_n] + item_index.FIRST_ITEM_INDEX


def numpy_interest_topk(model, histories, top_n):
    """Reference: each interest's own top N over the whole corpus, and which interest scores each of the
    merged items best."""
    interests, _ = model.query_tower(tf.constant(histories, tf.int64))
    scores = np.einsum("ukd,nd->ukn", interests.numpy(), model.corpus.embeddings().numpy())
    per_interest = np.argsort(-scores, axis=2, kind="stable")[:, :, :top_n] + item_index.FIRST_ITEM_INDEX
    merged = numpy_merged_topk(model, histories, top_n) - item_index.FIRST_ITEM_INDEX
    best_interest = np.take_along_axis(scores.argmax(axis=1), merged, axis=1)
    return per_interest, best_interest


def test_retrieval_in_chunks_equals_whole_corpus_scoring(monkeypatch):
    tf.keras.utils.set_random_seed(1)
    model = models.RemiModel(remi_config(embedding_dim=8, num_interests=3, max_history=5), vocabulary_size=101)
    histories = np.random.default_rng(0).integers(2, 103, size=(7, 5))
    expected = numpy_merged_topk(model, histories, top_n=10)
    expected_lists, expected_interest = numpy_interest_topk(model, histories, top_n=10)
    whole = evaluate.retrieve(model, histories, top_n=10, batch_size=4, exclude_history=False)
    np.testing.assert_array_equal(whole.item_ids, expected)
    np.testing.assert_array_equal(whole.interest_item_ids, expected_lists)
    np.testing.assert_array_equal(whole.interest, expected_interest)
    monkeypatch.setattr(evaluate, "SCORE_CHUNK_BYTES", 4 * 4 * 3 * 13)  # 13 rows a chunk: 8 chunks
    assert len(list(model.corpus.chunks(13))) == 8
    chunked = evaluate.retrieve(model, histories, top_n=10, batch_size=4, exclude_history=False)
    np.testing.assert_array_equal(chunked.item_ids, expected)
    np.testing.assert_array_equal(chunked.interest_item_ids, expected_lists)
    monkeypatch.setattr(evaluate, "USER_BATCHES_PER_PASS", 1)  # 2 blocks of users, a corpus pass each
    blocks = evaluate.retrieve(model, histories, top_n=10, batch_size=4, exclude_history=False)
    np.testing.assert_array_equal(blocks.item_ids, expected)
    np.testing.assert_array_equal(blocks.interest, expected_interest)
    assert blocks.routing.shape == (7, 3, 5)


def test_blocked_top_k_is_top_k_with_ties_and_ragged_blocks():
    rng = np.random.default_rng(0)
    blocked = tf.function(evaluate.blocked_top_k)
    for shape, k in [((3, 2, 5_000), 50), ((4, evaluate.TOP_K_BLOCK * 300 + 7), 20), ((2, 300), 50), ((5, 1_000), 3)]:
        scores = tf.constant(rng.integers(0, 30, shape).astype(np.float32))  # many ties, at the k-th place too
        values, indices = blocked(scores, tf.constant(k))
        expected = tf.math.top_k(scores, k)
        np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
        np.testing.assert_array_equal(indices.numpy(), expected.indices.numpy())  # ties: the lower index first


def test_retrieval_over_many_blocks_equals_numpy_and_reports_progress():
    tf.keras.utils.set_random_seed(2)
    model = models.RemiModel(remi_config(embedding_dim=8, num_interests=2, max_history=5), vocabulary_size=3_000)
    histories = np.random.default_rng(1).integers(2, 3_002, size=(9, 5))
    done = []
    found = evaluate.retrieve(model, histories, top_n=5, batch_size=4, progress=done.append,  # 47 blocks > 4 k
                               exclude_history=False)
    np.testing.assert_array_equal(found.item_ids, numpy_merged_topk(model, histories, top_n=5))
    assert done == sorted(done) and done[-1] == 9


def test_a_sample_of_users_gets_the_rows_the_whole_split_gets():
    from remi_tf import input as input_lib

    tf.keras.utils.set_random_seed(3)
    model = models.RemiModel(remi_config(embedding_dim=8, num_interests=3, max_history=5), vocabulary_size=200)
    histories = np.random.default_rng(4).integers(2, 202, size=(40, 5))
    chosen = input_lib.user_sample(40, 12, seed=5)
    assert len(set(chosen)) == 12 and list(chosen) == sorted(chosen)
    whole = evaluate.retrieve(model, histories, top_n=20, batch_size=8)
    sample = evaluate.retrieve(model, histories[chosen], top_n=20, batch_size=8)
    np.testing.assert_array_equal(sample.item_ids, whole.item_ids[chosen])


def test_retrieval_leaves_out_the_history_as_the_served_model_does():
    """The library's default answer is the served default signature's (history items excluded, each interest
    reaching past them), and exclude_history=False is the signature include_history's."""
    from remi_tf.export import saved_model

    tf.keras.utils.set_random_seed(4)
    model = models.RemiModel(remi_config(embedding_dim=8, num_interests=3, max_history=5), vocabulary_size=60)
    vocabulary = [f"i{index}" for index in range(60)]
    histories = np.random.default_rng(6).integers(2, 62, size=(6, 5))
    module = saved_model.RetrievalModule(model, vocabulary, "brute-force", k=10)
    names = tf.constant(np.array(["", "[UNK]"] + vocabulary, dtype=object)[histories])
    for exclude, signature in ((True, module.serve), (False, module.serve_including_history)):
        served = signature(history=names)
        found = evaluate.retrieve(model, histories, top_n=10, batch_size=4, exclude_history=exclude)
        assert [[vocabulary[i - item_index.FIRST_ITEM_INDEX] for i in row] for row in found.item_ids] == \
            served["item_ids"].numpy().astype(str).tolist()
        np.testing.assert_allclose(found.scores, served["scores"].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(found.interest, served["interest"].numpy())
        overlap = [len(set(row) & set(history)) for row, history in zip(found.item_ids, histories, strict=True)]
        assert (max(overlap) == 0) if exclude else (max(overlap) > 0)  # the model scores its history high
