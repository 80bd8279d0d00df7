"""Optimizers: manual SGD against optax SGD, and RMSprop against a hand-written Keras 3 update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _synthetic import synthetic_mnist

from jaxmnist.model import ModelSpec, init_params
from jaxmnist.optim import (
    OPTIMIZERS,
    Optimizer,
    from_optax,
    keras_adam,
    keras_rmsprop,
    make_optimizer,
    manual_sgd,
)
from jaxmnist.step import TrainState, make_train_step


def test_manual_sgd_is_p_minus_lr_g():
    opt = manual_sgd(0.5)
    params = {"W": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    grads = {"W": jnp.array([0.5, -2.0]), "b": jnp.array(4.0)}
    state = opt.init(params)
    assert jax.tree.leaves(state) == []
    new, state = opt.apply(params, grads, state)
    np.testing.assert_array_equal(np.asarray(new["W"]), [0.75, 3.0])
    assert float(new["b"]) == 1.0


def _run_steps(optimizer: Optimizer, steps: int = 100):
    """`steps` jitted training steps of a small MLP on fixed synthetic batches."""
    spec = ModelSpec(784, ((32, "relu"), (10, "softmax")))
    params = init_params(jax.random.key(0), spec, "glorot")
    (x, y), _ = synthetic_mnist(320, 0)
    x, y = jnp.asarray(x.reshape(10, 32, 784)), jnp.asarray(y.reshape(10, 32).astype(np.int32))
    step = make_train_step(spec, optimizer, loss="logits")

    @jax.jit
    def run(state):
        def body(state, i):
            state, metrics = step(state, x[i % 10], y[i % 10])
            return state, metrics.loss

        return jax.lax.scan(body, state, jnp.arange(steps))

    return run(TrainState(params, optimizer.init(params)))


def test_manual_sgd_and_optax_sgd_agree_after_100_steps():
    manual_state, manual_losses = _run_steps(make_optimizer("sgd", 0.05))
    optax_state, optax_losses = _run_steps(make_optimizer("optax-sgd", 0.05))
    assert float(manual_losses[-1]) < 0.5 * float(manual_losses[0])  # it really trained
    manual_leaves, optax_leaves = (jax.tree.leaves(s.params) for s in (manual_state, optax_state))
    for a, b in zip(manual_leaves, optax_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(manual_losses), np.asarray(optax_losses), rtol=1e-6)


def _keras_rmsprop_numpy(params, grads_sequence, lr=1e-3, rho=0.9, epsilon=1e-7):
    """Keras 3's RMSprop.update_step, float64: v starts at zero, epsilon inside the root."""
    params = [np.asarray(p, np.float64).copy() for p in params]
    velocities = [np.zeros_like(p) for p in params]
    for grads in grads_sequence:
        for p, v, g in zip(params, velocities, grads, strict=True):
            v[...] = rho * v + (1 - rho) * np.square(g)
            p -= lr * g / np.sqrt(v + epsilon)
    return params


def test_keras_rmsprop_first_step_by_hand():
    opt = from_optax(keras_rmsprop(1e-3))
    params = jnp.array([0.0, 0.0, 0.0, 0.0])
    grads = jnp.array([1.0, -2.0, 1e-4, 0.0])
    new, _ = opt.apply(params, grads, opt.init(params))
    # v = 0.1 g^2; update = lr g / sqrt(0.1 g^2 + 1e-7).
    expected = [
        -1e-3 / np.sqrt(0.1 + 1e-7),
        2e-3 / np.sqrt(0.4 + 1e-7),
        -1e-7 / np.sqrt(1e-9 + 1e-7),  # epsilon outside the root would give -3.15e-3
        0.0,
    ]
    np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-5)


def test_keras_rmsprop_matches_hand_written_update_over_several_steps():
    rng = np.random.default_rng(0)
    shapes = [(5, 3), (3,)]
    # Small starting weights, so float32 rounding of the weights does not hide the moves.
    params = [(rng.normal(size=s) * 1e-3).astype(np.float32) for s in shapes]
    grads_sequence = [
        [(rng.normal(size=s) * scale).astype(np.float32) for s in shapes]
        for scale in (1.0, 0.1, 3.0, 1e-3, 0.5, 1e-4, 2.0, 0.01)
    ]
    opt = from_optax(keras_rmsprop(1e-3))
    current = [jnp.asarray(p) for p in params]
    state = opt.init(current)
    for grads in grads_sequence:
        current, state = opt.apply(current, [jnp.asarray(g) for g in grads], state)
    expected = _keras_rmsprop_numpy(params, grads_sequence)
    for got, want, start in zip(current, expected, params, strict=True):
        assert np.abs(want - start).min() > 1e-4  # every weight moved
        np.testing.assert_allclose(np.asarray(got) - start, want - start, rtol=1e-5, atol=1e-9)


def test_rmsprop_by_name_is_keras_rmsprop_at_the_given_rate():
    opt = make_optimizer("rmsprop", 0.01)
    params, grads = jnp.array([1.0]), jnp.array([3.0])
    new, _ = opt.apply(params, grads, opt.init(params))
    assert float(new[0]) == pytest.approx(1.0 - 0.01 * 3.0 / np.sqrt(0.9 + 1e-7), rel=1e-6)


def _keras_adam_numpy(params, grads_sequence, lr=1e-3, b1=0.9, b2=0.999, epsilon=1e-7):
    """Keras 3's Adam.update_step, float64: the bias correction folded into the step size and
    epsilon added to sqrt(v), not to sqrt(v_hat)."""
    params = [np.asarray(p, np.float64).copy() for p in params]
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_sequence, start=1):
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        for p, m, v, g in zip(params, ms, vs, grads, strict=True):
            m += (g - m) * (1 - b1)
            v += (np.square(g) - v) * (1 - b2)
            p -= m * alpha / (np.sqrt(v) + epsilon)
    return params


def test_keras_adam_first_step_by_hand():
    opt = from_optax(keras_adam(1e-3))
    params = jnp.zeros(3)
    grads = jnp.array([0.5, -2.0, 1e-6])
    new, _ = opt.apply(params, grads, opt.init(params))
    # m = 0.1 g, v = 0.001 g^2, alpha = lr sqrt(0.001) / 0.1: the step is
    # lr * sqrt(0.001) * g / (sqrt(0.001) |g| + 1e-7).
    root = np.sqrt(0.001)
    expected = [-1e-3 * root * 0.5 / (root * 0.5 + 1e-7), 1e-3 * root * 2 / (root * 2 + 1e-7)]
    # For a tiny gradient epsilon dominates: Keras moves 2.4e-4, optax.adam (eps on sqrt(v_hat))
    # would move 9.1e-4.
    expected.append(-1e-3 * root * 1e-6 / (root * 1e-6 + 1e-7))
    np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-5)
    optax_adam = from_optax(optax.adam(1e-3, eps=1e-7))
    other, _ = optax_adam.apply(params, grads, optax_adam.init(params))
    assert abs(float(other[2]) - expected[2]) > 5e-4  # the test tells the two rules apart


def test_keras_adam_matches_hand_written_update_over_several_steps():
    rng = np.random.default_rng(1)
    shapes = [(5, 3), (3,)]
    params = [(rng.normal(size=s) * 1e-3).astype(np.float32) for s in shapes]
    grads_sequence = [
        [(rng.normal(size=s) * scale).astype(np.float32) for s in shapes]
        for scale in (1.0, 0.1, 3.0, 1e-3, 0.5, 1e-6, 2.0, 0.01, 1e-7, 1.0)
    ]
    opt = make_optimizer("adam", 1e-3)
    current = [jnp.asarray(p) for p in params]
    state = opt.init(current)
    for grads in grads_sequence:
        current, state = opt.apply(current, [jnp.asarray(g) for g in grads], state)
    expected = _keras_adam_numpy(params, grads_sequence)
    for got, want, start in zip(current, expected, params, strict=True):
        assert np.abs(want - start).min() > 1e-5  # every weight moved
        np.testing.assert_allclose(np.asarray(got) - start, want - start, rtol=2e-5, atol=1e-9)


def test_adam_first_step_moves_each_weight_by_about_lr():
    opt = make_optimizer("adam", 1e-3)
    params, grads = jnp.zeros(3), jnp.array([0.5, -2.0, 10.0])
    new, _ = opt.apply(params, grads, opt.init(params))
    np.testing.assert_allclose(np.asarray(new), [-1e-3, 1e-3, -1e-3], rtol=1e-3)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_lowers_the_loss(name):
    lr = {"sgd": 0.05, "optax-sgd": 0.05}.get(name, 1e-3)
    _, losses = _run_steps(make_optimizer(name, lr), steps=30)
    assert float(losses[-1]) < float(losses[0])


def test_unknown_optimizer_is_a_key_error():
    with pytest.raises(KeyError):
        make_optimizer("adagrad", 1e-3)
