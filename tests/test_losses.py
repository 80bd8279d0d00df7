"""Losses against hand-computed values: Keras's clipped cross-entropy, the stable form, accuracy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmnist.losses import (
    EPSILON,
    accuracy,
    correct,
    softmax_cross_entropy,
    sparse_categorical_crossentropy,
)


def _scce(probs, labels):
    return np.asarray(sparse_categorical_crossentropy(jnp.asarray(probs), jnp.asarray(labels)))


def test_hand_computed_values():
    probs = [[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]]
    np.testing.assert_allclose(_scce(probs, [1, 2]), [-math.log(0.7), -math.log(0.25)], rtol=1e-6)


def test_mean_over_batch_as_the_chapter_averages():
    probs = jnp.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    mean = jnp.mean(sparse_categorical_crossentropy(probs, jnp.array([1, 2])))
    assert float(mean) == pytest.approx((-math.log(0.7) - math.log(0.25)) / 2, rel=1e-6)


def test_zero_probability_is_clipped_to_minus_log_epsilon():
    loss = _scce([[0.0, 1.0, 0.0]], [0])
    assert EPSILON == 1e-7
    assert loss[0] == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert loss[0] == pytest.approx(16.118095, rel=1e-6)


def test_probability_one_is_clipped_below_one():
    loss = _scce([[0.0, 1.0, 0.0]], [1])
    # 1 - 1e-7 rounds to float32 0.99999988, so the loss is -log of that, not 0.
    expected = -math.log(float(np.float32(1.0 - 1e-7)))
    assert loss[0] > 0
    assert loss[0] == pytest.approx(expected, rel=1e-3)
    assert loss[0] == pytest.approx(-math.log(1 - 1e-7), rel=0.25)


def test_tiny_probability_is_clipped_not_infinite():
    loss = _scce([[1e-30, 1.0 - 1e-30]], [0])
    assert np.isfinite(loss).all()
    assert loss[0] == pytest.approx(16.118095, rel=1e-6)


def test_rows_are_renormalised_before_the_log():
    normalised = _scce([[0.2, 0.6, 0.2]], [1])
    doubled = _scce([[0.4, 1.2, 0.4]], [1])
    halved = _scce([[0.1, 0.3, 0.1]], [1])
    assert normalised[0] == pytest.approx(-math.log(0.6), rel=1e-6)
    np.testing.assert_allclose(doubled, normalised, rtol=1e-6)
    np.testing.assert_allclose(halved, normalised, rtol=1e-6)


def test_labels_of_any_integer_dtype():
    probs = jnp.array([[0.1, 0.9], [0.8, 0.2]])
    expected = _scce(probs, np.array([1, 0], np.int32))
    for dtype in (np.uint8, np.int64):
        np.testing.assert_array_equal(_scce(probs, np.array([1, 0], dtype)), expected)


def test_stable_form_agrees_with_probs_form_where_nothing_is_clipped():
    z = jax.random.normal(jax.random.key(0), (64, 10)) * 3
    labels = jax.random.randint(jax.random.key(1), (64,), 0, 10)
    stable = np.asarray(softmax_cross_entropy(z, labels))
    probs_form = np.asarray(sparse_categorical_crossentropy(jax.nn.softmax(z), labels))
    assert probs_form.max() < -math.log(EPSILON) - 1  # really nothing clipped
    np.testing.assert_allclose(stable, probs_form, rtol=1e-5, atol=1e-6)


def test_stable_form_hand_computed():
    z = jnp.array([[1.0, 2.0, 3.0]])
    expected = -(1.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))
    assert float(softmax_cross_entropy(z, jnp.array([0]))[0]) == pytest.approx(expected, rel=1e-6)


def test_stable_form_does_not_clip_or_overflow():
    z = jnp.array([[0.0, 100.0], [1000.0, 0.0]])
    stable = np.asarray(softmax_cross_entropy(z, jnp.array([0, 0])))
    np.testing.assert_allclose(stable, [100.0, 0.0], atol=1e-5)
    clipped = _scce(jax.nn.softmax(z), [0, 0])
    assert clipped[0] == pytest.approx(16.118095, rel=1e-6)


def test_clipped_sample_gets_zero_gradient():
    def mean_loss(z, labels):
        return jnp.mean(sparse_categorical_crossentropy(jax.nn.softmax(z), labels))

    z = jnp.array([[0.0, 40.0, 0.0], [1.0, 2.0, 0.5]])
    grad = np.asarray(jax.grad(mean_loss)(z, jnp.array([0, 1])))
    np.testing.assert_array_equal(grad[0], np.zeros(3))  # p[label] ~ 4e-18, clipped
    p = np.asarray(jax.nn.softmax(z[1]))
    np.testing.assert_allclose(grad[1], (p - np.eye(3)[1]) / 2, rtol=1e-5, atol=1e-7)


def test_stable_form_gradient_is_softmax_minus_onehot():
    z = jnp.array([[0.5, -1.0, 2.0]])
    grad = np.asarray(jax.grad(lambda z: softmax_cross_entropy(z, jnp.array([2]))[0])(z))
    np.testing.assert_allclose(grad, np.asarray(jax.nn.softmax(z)) - [0, 0, 1], rtol=1e-5)


def test_correct_and_accuracy():
    scores = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = jnp.array([1, 1, 1, 0])
    np.testing.assert_array_equal(np.asarray(correct(scores, labels)), [1.0, 0.0, 1.0, 1.0])
    assert float(accuracy(scores, labels)) == 0.75
    # Logits rank like their probabilities.
    assert float(accuracy(jnp.log(scores), labels)) == 0.75


def test_accuracy_ties_go_to_the_first_class_as_argmax():
    assert float(accuracy(jnp.array([[0.5, 0.5]]), jnp.array([0]))) == 1.0
    assert float(accuracy(jnp.array([[0.5, 0.5]]), jnp.array([1]))) == 0.0
