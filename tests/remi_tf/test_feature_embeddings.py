"""Side features in the towers: the embeddings against numpy, and planted data where only the features
carry the answer (tail items known only by their category; users known only by their profile)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.configs import remi_config
from remi_tf import config as config_lib
from remi_tf import item_index, models, train
from remi_tf.feature_tables import FeatureTable
from remi_tf.input import sequence_dataset
from remi_tf.layers.feature_embeddings import ItemFeatureEmbedding, UserFeatureEmbedding, encode_values, feature_vocabulary

FIRST = item_index.FIRST_ITEM_INDEX


def numpy_feature_embedding(layer, values_by_column, vocabularies):
    """Sum over columns of the mean of each value's row (OOV row 0 for unknown or empty values)."""
    total = 0.0
    for column, values in values_by_column.items():
        table = layer.embedding.tables[column].numpy()
        ids = {value: index + 1 for index, value in enumerate(vocabularies[column])}
        total = total + np.stack([table[[ids.get(part, 0) for part in value.split("|")]].mean(axis=0)
                                  for value in values])
    return total


def test_vocabulary_is_most_frequent_first_and_unknown_values_get_the_oov_id():
    assert feature_vocabulary(["b|a", "a", "", "c|a", "b"]) == ["a", "b", "c"]
    assert encode_values(["b|a", "", "zz", "c"], ["a", "b", "c"]).to_list() == [[2, 1], [0], [0], [3]]


def test_item_and_user_feature_embeddings_match_numpy():
    vocabularies = {"genre": ["drama", "comedy", "war"], "decade": ["1990", "1980"]}
    item_values = {"genre": ["", "", "drama|war", "comedy", "", "noir|drama"],
                   "decade": ["", "", "1990", "1980", "1970", "1990"]}
    items = ItemFeatureEmbedding(item_values, vocabularies, dim=5)
    indices = np.array([[2, 3], [5, 4]])
    expected = numpy_feature_embedding(items, {c: [v[i] for i in indices.ravel()] for c, v in item_values.items()},
                                       vocabularies).reshape([2, 2, 5])
    np.testing.assert_allclose(items(tf.constant(indices)).numpy(), expected, rtol=1e-6, atol=1e-7)

    users = UserFeatureEmbedding(vocabularies, dim=5)
    profiles = [["war|comedy", "1980"], ["", "2020"], ["drama", ""]]
    expected = numpy_feature_embedding(users, {c: [p[k] for p in profiles] for k, c in enumerate(vocabularies)},
                                       vocabularies)
    np.testing.assert_allclose(users(tf.constant(profiles)).numpy(), expected, rtol=1e-6, atol=1e-7)


def small_model(item_features=None, user_vocabularies=None, vocabulary_size=6, **overrides):
    config = remi_config(embedding_dim=4, num_interests=2, max_history=3).replace(**overrides)
    return models.RemiModel(config, vocabulary_size, item_features=item_features,
                            user_vocabularies=user_vocabularies)


def test_item_tower_and_query_tower_add_the_features():
    item_table = FeatureTable([f"i{i}" for i in range(6)], {"genre": ["a", "b|a", "", "c", "a", "zz"]})
    model = small_model(item_table, {"gender": ["F", "M"]})
    ids = model.item_embedding.embeddings.numpy()
    features = model.item_features(tf.range(FIRST, FIRST + 6)).numpy()
    expected = ids[FIRST:] + numpy_feature_embedding(model.item_features, item_table.values,
                                                     {"genre": ["a", "b", "c", "zz"]})
    np.testing.assert_allclose(features + ids[FIRST:], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.corpus.embeddings().numpy(), expected, rtol=1e-6, atol=1e-7)
    chunks = np.concatenate([rows.numpy() for _, rows in model.corpus.chunks(4)])
    np.testing.assert_allclose(chunks, expected, rtol=1e-6, atol=1e-7)

    history = np.array([[2, 5, 0], [7, 0, 0]])
    profile = np.array([["M"], ["X"]])  # X: the OOV row
    gender = model.user_features.embedding.tables["gender"].numpy()
    vectors = np.concatenate([np.zeros([2, 4]), expected])[history] + gender[[[2], [0]]]
    interests, routing = model.query_tower.routing(tf.constant(vectors, tf.float32), tf.constant(history >= FIRST))
    served_interests, served_routing = model.interests(tf.constant(history), tf.constant(profile))
    np.testing.assert_allclose(served_interests.numpy(), interests.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served_routing.numpy(), routing.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reads user features"):
        model.query_tower(tf.constant(history))


def fit(model, sequences, steps, user_features=None):
    train.compile_model(model, model.config)
    dataset = sequence_dataset(sequences, model.config.batch_size, model.config.max_history, seed=0,
                               user_features=user_features)
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)


PLANTED = dict(embedding_dim=8, max_history=10, batch_size=64, learning_rate=0.01, steps_per_execution=50)


@pytest.mark.parametrize("with_features", [True, False])
def test_item_features_place_never_seen_items_by_category(with_features):
    """8 clusters of 20 items, category = cluster; the last 10 items of each cluster never occur in
    training. Ranking only those tail items, a user's top 10 should be its cluster's tail: with the
    category in the item tower they share its embedding; without, they are random (1/8 by chance)."""
    clusters, per_cluster, seen = 8, 20, 10
    rng = np.random.default_rng(0)
    user_clusters = rng.integers(0, clusters, size=800)
    sequences = [FIRST + c * per_cluster + rng.integers(0, seen, size=12) for c in user_clusters]
    vocabulary_size = clusters * per_cluster
    table = FeatureTable([f"i{i}" for i in range(vocabulary_size)],
                         {"category": [f"c{i // per_cluster}" for i in range(vocabulary_size)]})
    tf.keras.utils.set_random_seed(0)
    model = small_model(table if with_features else None, vocabulary_size=vocabulary_size, **PLANTED)
    fit(model, sequences, steps=250)

    histories = np.stack([sequence[-10:] for sequence in sequences[:200]])
    interests, _ = model.interests(tf.constant(histories))
    tail = np.array([c * per_cluster + i for c in range(clusters) for i in range(seen, per_cluster)])
    scores = np.einsum("ukd,nd->ukn", interests.numpy(), model.corpus.embeddings().numpy()[tail]).max(axis=1)
    top = tail[np.argsort(-scores, axis=1)[:, :per_cluster - seen]] // per_cluster  # clusters of the top tail items
    precision = float(np.mean(top == user_clusters[:200, np.newaxis]))
    if with_features:
        assert precision > 0.8, precision
    else:
        assert precision < 0.3, precision


@pytest.mark.parametrize("with_features", [True, False])
def test_user_features_find_the_cluster_a_history_does_not_show(with_features):
    """Every user starts with 4 items from a pool common to all; then come items of their group's
    cluster, and the group is the profile's value. From the common items alone only the profile tells
    the cluster: with it recall@10 of the group's cluster approaches 1, without it ~1/4."""
    groups, per_cluster, pool = 4, 10, 20
    rng = np.random.default_rng(1)
    user_groups = rng.integers(0, groups, size=800)
    sequences = [np.concatenate([FIRST + rng.integers(0, pool, size=4),
                                 FIRST + pool + g * per_cluster + rng.integers(0, per_cluster, size=4)])
                 for g in user_groups]
    profiles = np.array([[f"g{g}"] for g in user_groups], dtype=object)
    tf.keras.utils.set_random_seed(0)
    vocabularies = {"group": [f"g{g}" for g in range(groups)]} if with_features else None
    model = small_model(user_vocabularies=vocabularies, vocabulary_size=pool + groups * per_cluster, **PLANTED)
    fit(model, sequences, steps=250, user_features=profiles if with_features else None)

    histories = np.zeros([200, PLANTED["max_history"]], np.int64)
    histories[:, :4] = np.stack([sequence[:4] for sequence in sequences[:200]])
    interests, _ = model.interests(tf.constant(histories), tf.constant(profiles[:200].astype(str))
                                   if with_features else None)
    scores = np.einsum("ukd,nd->ukn", interests.numpy(), model.corpus.embeddings().numpy()).max(axis=1)
    top = np.argsort(-scores, axis=1)[:, :per_cluster] + FIRST
    recall = np.mean([np.isin(sequence[4:], row).mean() for sequence, row in zip(sequences[:200], top)])
    if with_features:
        assert recall > 0.8, recall
    else:
        assert recall < 0.5, recall
