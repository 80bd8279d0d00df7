"""The model: initialisers, dense (its gradient too), sequential, and training's path through it."""

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

# --- The chapter's GradientTape examples, on jaxmnist's own dense ---------------------------------
# `dense` carries a hand-written backward pass (the fast layout of `_matmul`); these check it
# against the chapter's hand-computable gradients, in both of its layouts.


@pytest.mark.parametrize("units", [4, model.THIN_OUTPUT + 8], ids=["thin", "wide"])
def test_dense_gradient_is_the_chapters_tape_example(units):
    # tape.gradient(sum(x @ W + b), [W, b]) with x = [[0, 1], [2, 3], [4, 5]], W = 1, b = 0:
    # dW[i, :] = sum of column i of x (6 and 9), db = one per row of x (3).
    x = jnp.arange(6.0).reshape(3, 2)
    params = {"W": jnp.ones((2, units)), "b": jnp.zeros(units)}
    grads = jax.grad(lambda p: jnp.sum(dense(p, x)))(params)
    np.testing.assert_array_equal(np.asarray(grads["W"]), [[6.0] * units, [9.0] * units])
    np.testing.assert_array_equal(np.asarray(grads["b"]), [3.0] * units)


@pytest.mark.parametrize("units", [10, 64], ids=["thin", "wide"])
def test_dense_gradient_matches_autodiff_of_the_formula(units):
    kx, kw, kb, kg = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(kx, (16, 48))
    params = {"W": jax.random.normal(kw, (48, units)), "b": jax.random.normal(kb, (units,))}
    cotangent = jax.random.normal(kg, (16, units))

    def plain(p, x):
        return jnp.sum(jax.nn.relu(x @ p["W"] + p["b"]) * cotangent)

    def ours(p, x):
        return jnp.sum(dense(p, x, "relu") * cotangent)

    expected = jax.grad(plain, argnums=(0, 1))(params, x)
    got = jax.grad(ours, argnums=(0, 1))(params, x)
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        assert e.shape == g.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-5)


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
    half = logits(params, x, spec, "bfloat16")
    assert half.dtype == jnp.float32  # accumulates and returns float32
    np.testing.assert_allclose(np.asarray(half), full, atol=0.05 * np.abs(full).max())


def test_training_logits_are_sequential_with_a_linear_output():
    # Training and predict share one code path: the logits are `sequential` without the softmax.
    spec = chapter_model(hidden=16)
    params = init_params(jax.random.key(0), spec)
    x = jax.random.uniform(jax.random.key(1), (3, 784))
    z = logits(params, x, spec)
    np.testing.assert_array_equal(
        np.asarray(z), np.asarray(sequential(params, x, ["relu", "linear"]))
    )
    np.testing.assert_array_equal(
        np.asarray(jax.nn.softmax(z)), np.asarray(predict(params, x, spec))
    )
