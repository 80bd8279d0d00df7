"""The model: the chapter's GradientTape examples with jax.grad, initialisers, dense, sequential."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmnist import model
from jaxmnist.model import (
    chapter_model,
    dense,
    glorot_init,
    init_params,
    logits,
    naive_init,
    predict,
    sequential,
)

# --- The chapter's three GradientTape examples, as jax.grad ---------------------------------------


def test_tape_scalar_y_equals_2x_plus_3():
    grad = jax.grad(lambda x: 2 * x + 3)(0.0)
    assert float(grad) == 2.0


def test_tape_2x2_variable():
    x = jnp.zeros((2, 2))
    # tape.gradient of a non-scalar y is the gradient of sum(y).
    grad = jax.grad(lambda x: jnp.sum(2 * x + 3))(x)
    assert grad.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(grad), np.full((2, 2), 2.0))


def test_tape_matmul_list_of_w_and_b():
    key_w, key_x = jax.random.split(jax.random.key(0))
    W = jax.random.uniform(key_w, (2, 2))
    b = jnp.zeros((2,))
    x = jax.random.uniform(key_x, (2, 2))

    def y_sum(wb):
        W, b = wb
        return jnp.sum(jnp.matmul(x, W) + b)

    grad_W, grad_b = jax.grad(y_sum)([W, b])
    assert grad_W.shape == W.shape and grad_b.shape == b.shape
    # d sum(x @ W + b) / dW = x^T @ ones; / db = one per row of x.
    np.testing.assert_allclose(np.asarray(grad_W), np.asarray(x).T @ np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad_W)[0], np.full(2, np.asarray(x)[:, 0].sum()))
    np.testing.assert_array_equal(np.asarray(grad_b), np.full(2, 2.0))


def test_tape_matmul_with_three_rows_counts_rows_in_db():
    x = jnp.arange(6.0).reshape(3, 2)
    grad_W, grad_b = jax.grad(lambda W, b: jnp.sum(x @ W + b), argnums=(0, 1))(
        jnp.ones((2, 4)), jnp.zeros(4)
    )
    np.testing.assert_array_equal(np.asarray(grad_W), [[6.0] * 4, [9.0] * 4])
    np.testing.assert_array_equal(np.asarray(grad_b), [3.0] * 4)


# --- Initialisers ---------------------------------------------------------------------------------


def test_naive_init_statistics():
    layer = naive_init(jax.random.key(0), 784, 512)
    w = np.asarray(layer["W"])
    assert w.shape == (784, 512) and w.dtype == np.float32
    assert w.min() >= 0.0 and w.max() < 0.1
    assert w.mean() == pytest.approx(0.05, abs=1e-3)
    assert w.std() == pytest.approx(0.1 / np.sqrt(12), rel=0.02)
    np.testing.assert_array_equal(np.asarray(layer["b"]), np.zeros(512, np.float32))


@pytest.mark.parametrize(("fan_in", "fan_out"), [(784, 512), (512, 10)])
def test_glorot_init_statistics(fan_in, fan_out):
    layer = glorot_init(jax.random.key(1), fan_in, fan_out)
    w = np.asarray(layer["W"])
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    assert w.shape == (fan_in, fan_out) and w.dtype == np.float32
    assert -limit <= w.min() and w.max() <= limit
    # Nearly reaches both ends: uniform on the whole interval, not a narrower one.
    assert w.min() < -0.95 * limit and w.max() > 0.95 * limit
    assert w.mean() == pytest.approx(0.0, abs=0.02 * limit)
    assert w.std() == pytest.approx(limit / np.sqrt(3), rel=0.03)
    np.testing.assert_array_equal(np.asarray(layer["b"]), np.zeros(fan_out, np.float32))


@pytest.mark.parametrize("init", ["naive", "glorot"])
def test_chapter_model_has_four_leaves(init):
    params = init_params(jax.random.key(0), chapter_model(), init)
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 4  # the chapter's `assert len(model.weights) == 4`
    assert [leaf.shape for leaf in leaves] == [(784, 512), (512,), (512, 10), (10,)]
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)


def test_params_are_a_pytree_of_arrays_only():
    params = init_params(jax.random.key(0), chapter_model(hidden=8))
    # Static structure (activations) is not in the parameters: the pytree maps and jits cleanly.
    doubled = jax.jit(lambda p: jax.tree.map(lambda a: 2 * a, p))(params)
    assert jax.tree.structure(doubled) == jax.tree.structure(params)


@pytest.mark.parametrize("init", ["naive", "glorot"])
def test_different_keys_give_different_params(init):
    spec = chapter_model(hidden=32)
    a = init_params(jax.random.key(0), spec, init)
    b = init_params(jax.random.key(1), spec, init)
    again = init_params(jax.random.key(0), spec, init)
    for la, lagain in zip(jax.tree.leaves(a), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lagain))
    assert not np.array_equal(np.asarray(a[0]["W"]), np.asarray(b[0]["W"]))
    assert not np.array_equal(np.asarray(a[1]["W"]), np.asarray(b[1]["W"]))


def test_layers_get_independent_keys():
    params = init_params(jax.random.key(0), model.ModelSpec(16, ((16, "relu"), (16, "relu"))))
    assert not np.array_equal(np.asarray(params[0]["W"]), np.asarray(params[1]["W"]))


def test_init_accepts_a_callable():
    def ones(key, fan_in, fan_out):
        return {"W": jnp.ones((fan_in, fan_out)), "b": jnp.zeros(fan_out)}

    params = init_params(jax.random.key(0), chapter_model(hidden=4), ones)
    np.testing.assert_array_equal(np.asarray(params[1]["W"]), np.ones((4, 10)))


# --- dense and sequential -------------------------------------------------------------------------


def test_dense_hand_computed():
    params = {"W": jnp.array([[1.0, -2.0], [0.5, 1.0]]), "b": jnp.array([0.25, -1.0])}
    x = jnp.array([[2.0, 4.0]])
    # x @ W + b = [2 + 2 + 0.25, -4 + 4 - 1] = [4.25, -1]
    np.testing.assert_allclose(np.asarray(dense(params, x)), [[4.25, -1.0]])
    np.testing.assert_allclose(np.asarray(dense(params, x, "relu")), [[4.25, 0.0]])
    e = np.exp([4.25, -1.0])
    np.testing.assert_allclose(np.asarray(dense(params, x, "softmax")), [e / e.sum()], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dense(params, x, jnp.tanh)), [np.tanh([4.25, -1.0])])


def _numpy_forward(params, x):
    w1, b1 = (np.asarray(params[0][k], np.float64) for k in ("W", "b"))
    w2, b2 = (np.asarray(params[1][k], np.float64) for k in ("W", "b"))
    h = np.maximum(x @ w1 + b1, 0.0)
    z = h @ w2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return z, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("init", ["naive", "glorot"])
def test_sequential_and_predict_equal_the_formula(init):
    spec = chapter_model(hidden=64)
    params = init_params(jax.random.key(3), spec, init)
    x = np.asarray(jax.random.uniform(jax.random.key(4), (5, 784)))
    z_ref, p_ref = _numpy_forward(params, x.astype(np.float64))

    probs = sequential(params, jnp.asarray(x), ["relu", "softmax"])
    np.testing.assert_allclose(np.asarray(probs), p_ref, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(predict(params, jnp.asarray(x), spec)), np.asarray(probs))
    np.testing.assert_allclose(np.asarray(probs).sum(axis=1), np.ones(5), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(logits(params, jnp.asarray(x), spec)), z_ref, rtol=1e-5, atol=1e-5
    )


def test_sequential_is_dense_composed():
    spec = chapter_model(hidden=16)
    params = init_params(jax.random.key(0), spec)
    x = jax.random.uniform(jax.random.key(1), (3, 784))
    by_hand = dense(params[1], dense(params[0], x, "relu"), "softmax")
    np.testing.assert_array_equal(
        np.asarray(sequential(params, x, ["relu", "softmax"])), np.asarray(by_hand)
    )


def test_sequential_rejects_mismatched_activations():
    params = init_params(jax.random.key(0), chapter_model(hidden=4))
    with pytest.raises(ValueError):
        sequential(params, jnp.zeros((1, 784)), ["relu"])


def test_bfloat16_logits_close_to_float32():
    spec = chapter_model(hidden=64)
    params = init_params(jax.random.key(0), spec)
    x = jax.random.uniform(jax.random.key(1), (8, 784))
    full = np.asarray(logits(params, x, spec))
    half = logits(params, x, spec, jnp.bfloat16)
    assert half.dtype == jnp.float32  # accumulates and returns float32
    np.testing.assert_allclose(np.asarray(half), full, atol=0.05 * np.abs(full).max())
