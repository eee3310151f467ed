"""LazyAdam against Adam's formula in numpy on the rows a batch touches; untouched rows and their moments stay
as they were; dense variables and all-rows batches get stock Adam."""

import math

import numpy as np
import pytest
import tensorflow as tf

from remi_tf.optimizers import LazyAdam

LEARNING_RATE, BETA_1, BETA_2, EPSILON = 0.01, 0.9, 0.999, 1e-7


def sparse_gradient(rows, values):
    return tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(rows, tf.int64), tf.constant([8, 3], tf.int64))


@pytest.mark.parametrize("cosine", [False, True])
def test_lazy_updates_only_the_batch_rows_with_adams_formula(cosine):
    """With a cosine schedule over 3 steps, step t (1-based) moves the rows at lr (1 + cos(pi (t - 1) / 3)) / 2."""
    rng = np.random.default_rng(0)
    initial = rng.normal(size=(8, 3)).astype(np.float32)
    table = tf.Variable(initial)
    schedule = tf.keras.optimizers.schedules.CosineDecay(LEARNING_RATE, 3) if cosine else LEARNING_RATE
    optimizer = LazyAdam(schedule, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON)
    steps = [([1, 4, 4], rng.normal(size=(3, 3))), ([4, 6], rng.normal(size=(2, 3)))]  # row 4 twice in step 1

    expected, m, v = initial.astype(np.float64), np.zeros((8, 3)), np.zeros((8, 3))
    for t, (rows, values) in enumerate(steps, start=1):
        optimizer.apply_gradients([(sparse_gradient(rows, values.astype(np.float32)), table)])
        gradient = np.zeros((8, 3))
        np.add.at(gradient, rows, values)  # duplicates sum, as the gradient of a gather
        touched = np.unique(rows)
        m[touched] = BETA_1 * m[touched] + (1 - BETA_1) * gradient[touched]
        v[touched] = BETA_2 * v[touched] + (1 - BETA_2) * gradient[touched] ** 2
        rate = LEARNING_RATE * (1 + math.cos(math.pi * (t - 1) / 3)) / 2 if cosine else LEARNING_RATE
        alpha = rate * np.sqrt(1 - BETA_2 ** t) / (1 - BETA_1 ** t)
        expected[touched] -= alpha * m[touched] / (np.sqrt(v[touched]) + EPSILON)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    untouched = [0, 2, 3, 5, 7]
    np.testing.assert_array_equal(table.numpy()[untouched], initial[untouched])
    momentum, velocity = optimizer._momentums[0].numpy(), optimizer._velocities[0].numpy()
    assert not momentum[untouched].any() and not velocity[untouched].any()
    np.testing.assert_allclose(momentum, m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(velocity, v, rtol=1e-4, atol=1e-9)  # float32 squares


def test_dense_variables_and_all_row_batches_get_stock_adam():
    rng = np.random.default_rng(1)
    initial = rng.normal(size=(8, 3)).astype(np.float32)
    lazy, stock = tf.Variable(initial), tf.Variable(initial)
    lazy_optimizer, stock_optimizer = LazyAdam(LEARNING_RATE), tf.keras.optimizers.Adam(LEARNING_RATE)
    for _ in range(3):
        values = rng.normal(size=(8, 3)).astype(np.float32)
        lazy_optimizer.apply_gradients([(sparse_gradient(list(range(8)), values), lazy)])  # every row touched
        stock_optimizer.apply_gradients([(tf.constant(values), stock)])
    np.testing.assert_allclose(lazy.numpy(), stock.numpy(), rtol=1e-5, atol=1e-6)
    dense_lazy, dense_stock = tf.Variable(initial), tf.Variable(initial)
    for optimizer, variable in ((LazyAdam(LEARNING_RATE), dense_lazy), (tf.keras.optimizers.Adam(LEARNING_RATE),
                                                                         dense_stock)):
        optimizer.apply_gradients([(tf.constant(initial), variable)])
    np.testing.assert_array_equal(dense_lazy.numpy(), dense_stock.numpy())
