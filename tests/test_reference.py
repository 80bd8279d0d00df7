"""An independent float64 NumPy implementation of the chapter's naive training, against the JAX one.

The reference is the chapter's algorithm written out by hand: forward (relu, softmax), Keras's
clipped sparse categorical cross-entropy, the backward pass derived on paper, and SGD at 1e-3.

Backward of the Keras loss: per sample, q = clip(p / sum(p), 1e-7, 1 - 1e-7) and l = -log q[y].
When p[y] is clipped the clip's derivative is zero, so the sample contributes no gradient. Otherwise
dl/dp_j = -delta_jy / p_y + 1 (the +1 from the renormalisation, with sum(p) = 1), and through the
softmax Jacobian p_k (delta_jk - p_j) the constant +1 vanishes: dl/dz = p - onehot(y).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _synthetic import synthetic_mnist

from jaxmnist.config import PRESETS
from jaxmnist.data.cache import cache_path
from jaxmnist.model import chapter_model, init_params
from jaxmnist.optim import make_optimizer
from jaxmnist.step import TrainState, make_train_step

EPSILON = 1e-7
STEPS = 20
NAIVE = PRESETS["naive"]


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_loss(params, x, y):
    """Mean Keras cross-entropy of the two-layer model, float64."""
    (w1, b1), (w2, b2) = params
    p = _softmax(np.maximum(x @ w1 + b1, 0.0) @ w2 + b2)
    q = np.clip(p / p.sum(axis=1, keepdims=True), EPSILON, 1 - EPSILON)
    return float(np.mean(-np.log(q[np.arange(len(y)), y])))


def reference_grads(params, x, y):
    """(loss, grads) by the hand-derived backward pass."""
    (w1, b1), (w2, b2) = params
    pre = x @ w1 + b1
    h = np.maximum(pre, 0.0)
    p = _softmax(h @ w2 + b2)
    rows = np.arange(len(y))
    p_label = p[rows, y]
    loss = float(np.mean(-np.log(np.clip(p_label, EPSILON, 1 - EPSILON))))
    unclipped = (p_label > EPSILON) & (p_label < 1 - EPSILON)
    dz = p.copy()
    dz[rows, y] -= 1.0
    dz *= unclipped[:, None] / len(y)
    dw2, db2 = h.T @ dz, dz.sum(axis=0)
    dpre = (dz @ w2.T) * (pre > 0)
    dw1, db1 = x.T @ dpre, dpre.sum(axis=0)
    return loss, ((dw1, db1), (dw2, db2))


def reference_training(params, batches, learning_rate):
    """SGD (the chapter's update_weights) over `batches`; returns final params and losses."""
    params = [[np.array(a, np.float64) for a in layer] for layer in params]
    losses = []
    for x, y in batches:
        loss, grads = reference_grads(params, x.reshape(len(x), -1) / 255.0, y.astype(np.int64))
        losses.append(loss)
        for layer, layer_grads in zip(params, grads, strict=True):
            for array, grad in zip(layer, layer_grads, strict=True):
                array -= learning_rate * grad
    return params, np.array(losses)


# --- The reference checks itself against finite differences ---------------------------------------


def test_reference_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    params = [
        [rng.uniform(-1, 1, (6, 5)), rng.uniform(-0.5, 0.5, 5)],
        [rng.uniform(-1, 1, (5, 4)), rng.uniform(-0.5, 0.5, 4)],
    ]
    x = rng.uniform(0, 1, (7, 6))
    y = rng.integers(0, 4, 7)
    _, grads = reference_grads(params, x, y)
    for layer, layer_grads in zip(params, grads, strict=True):
        for array, grad in zip(layer, layer_grads, strict=True):
            numeric = np.zeros_like(array)
            for index in np.ndindex(array.shape):
                saved = array[index]
                array[index] = saved + 1e-6
                up = reference_loss(params, x, y)
                array[index] = saved - 1e-6
                down = reference_loss(params, x, y)
                array[index] = saved
                numeric[index] = (up - down) / 2e-6
            np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_reference_gives_clipped_samples_zero_gradient():
    params = [[np.eye(2), np.zeros(2)], [np.array([[40.0, 0.0], [0.0, 0.0]]), np.zeros(2)]]
    x = np.array([[1.0, 0.0]])  # p = softmax([40, 0]): p[1] ~ 4e-18, clipped
    loss, grads = reference_grads(params, x, np.array([1]))
    assert loss == pytest.approx(-np.log(EPSILON))
    for layer in grads:
        for grad in layer:
            np.testing.assert_array_equal(grad, np.zeros_like(grad))


# --- JAX training against the reference -----------------------------------------------------------


def _jax_training(params, batches):
    """The naive preset's step (probs loss, manual SGD) run over `batches`, float32."""
    spec = chapter_model(NAIVE.hidden)
    optimizer = make_optimizer(NAIVE.optimizer, NAIVE.learning_rate)
    step = jax.jit(make_train_step(spec, optimizer, NAIVE.loss, NAIVE.precision))
    state = TrainState(params, optimizer.init(params))
    losses = []
    for x, y in batches:
        state, metrics = step(state, x.reshape(len(x), -1), y.astype(np.int32))
        losses.append(metrics.loss)
    return state.params, np.array([float(loss) for loss in losses])


def _compare(images, labels, seed=0):
    assert NAIVE.optimizer == "sgd" and NAIVE.loss == "probs" and NAIVE.learning_rate == 1e-3
    assert NAIVE.init == "naive" and not NAIVE.shuffle
    size = NAIVE.batch_size
    batches = [
        (images[i * size : (i + 1) * size], labels[i * size : (i + 1) * size]) for i in range(STEPS)
    ]
    initial = init_params(jax.random.key(seed), chapter_model(NAIVE.hidden), NAIVE.init)
    start = [[np.asarray(layer["W"]), np.asarray(layer["b"])] for layer in initial]

    ref_params, ref_losses = reference_training(start, batches, NAIVE.learning_rate)
    jax_params, jax_losses = _jax_training(initial, batches)

    assert len(jax_losses) == STEPS
    np.testing.assert_allclose(jax_losses, ref_losses, rtol=2e-4)
    for layer, jax_layer, ref_layer in zip(start, jax_params, ref_params, strict=True):
        for name, first, ref in zip(("W", "b"), layer, ref_layer, strict=True):
            got = np.asarray(jax_layer[name], np.float64)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
            # The moves away from the initial weights agree, not merely the weights.
            ref_move, got_move = ref - first, got - first
            scale = np.abs(ref_move).max()
            assert scale > 0
            assert np.abs(got_move - ref_move).max() <= 2e-3 * scale
    return ref_losses


def test_jax_matches_reference_on_synthetic_data():
    (images, labels), _ = synthetic_mnist(STEPS * NAIVE.batch_size, 0)
    ref_losses = _compare(images, labels)
    assert ref_losses[0] > 1.0 and ref_losses[-1] < ref_losses[0]


def test_jax_matches_reference_when_samples_are_clipped():
    # Mostly-white images drive the naive model's logits apart: the softmax saturates and many
    # samples' label probabilities fall below 1e-7, so the clip (zero gradient) decides the update.
    (images, labels), _ = synthetic_mnist(STEPS * NAIVE.batch_size, 0)
    images = 255 - images
    initial = init_params(jax.random.key(0), chapter_model(NAIVE.hidden), NAIVE.init)
    (w1, b1), (w2, b2) = ([np.asarray(layer[k], np.float64) for k in "Wb"] for layer in initial)
    x = images[: NAIVE.batch_size].reshape(NAIVE.batch_size, -1) / 255.0
    p = _softmax(np.maximum(x @ w1 + b1, 0.0) @ w2 + b2)
    clipped = np.sum(p[np.arange(len(x)), labels[: len(x)]] <= EPSILON)
    assert 0 < clipped < len(x)  # a mix of clipped and unclipped samples in the first batch
    ref_losses = _compare(images, labels)
    assert ref_losses[0] > 10.0


def _real_mnist():
    if not cache_path().exists():
        pytest.skip(f"no cached MNIST at {cache_path()}")
    from jaxmnist.data import load_mnist

    (images, labels), _ = load_mnist()
    return images[: STEPS * NAIVE.batch_size], labels[: STEPS * NAIVE.batch_size]


@pytest.mark.integration
@pytest.mark.parametrize("seed", [0, 1])
def test_jax_matches_reference_on_the_first_20_real_batches(seed):
    images, labels = _real_mnist()
    ref_losses = _compare(images, labels, seed)
    # The naive init starts with a large loss, as the chapter's 4.74 (its own code here: 6.44).
    assert ref_losses[0] > 2.5 and ref_losses[-1] < ref_losses[0]
