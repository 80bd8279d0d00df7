"""The jit-compiled step and evaluation: masking, the loss it reports, evaluate against NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _synthetic import synthetic_mnist

from jaxmnist import losses
from jaxmnist import step as step_module
from jaxmnist.data import preprocess
from jaxmnist.model import chapter_model, init_params, predict
from jaxmnist.optim import make_optimizer
from jaxmnist.step import TrainState, evaluate, make_evaluate, make_train_step

N, BATCH, LAST = 300, 64, 44
(X_TRAIN, Y_TRAIN), (X_TEST, Y_TEST) = synthetic_mnist(N, 100)


def _assert_params_close(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _trained_params():
    """A few SGD steps on the synthetic task, so evaluation sees confident predictions."""
    spec = chapter_model(32)
    optimizer = make_optimizer("rmsprop", 1e-3)
    params = init_params(jax.random.key(0), spec)
    state = TrainState(params, optimizer.init(params))
    step = jax.jit(make_train_step(spec, optimizer))
    for start in range(0, N - BATCH + 1, BATCH):
        images, labels = X_TRAIN[start : start + BATCH], Y_TRAIN[start : start + BATCH]
        state, _ = step(state, images, labels.astype(np.int32))
    return state.params


def test_padded_masked_step_equals_the_unpadded_step():
    spec = chapter_model(32)
    optimizer = make_optimizer("sgd", 0.1)
    params = init_params(jax.random.key(0), spec)
    state = TrainState(params, optimizer.init(params))
    step = jax.jit(make_train_step(spec, optimizer, "logits"))
    images, labels = jnp.asarray(X_TRAIN[:LAST]), jnp.asarray(Y_TRAIN[:LAST].astype(np.int32))
    real_state, real = step(state, images, labels)
    # Pad with copies of real rows (as the scan loop does) and mask them out.
    padded_images = jnp.concatenate([images, images[: BATCH - LAST]])
    padded_labels = jnp.concatenate([labels, (labels[: BATCH - LAST] + 1) % 10])
    valid = jnp.arange(BATCH) < LAST
    padded_state, padded = step(state, padded_images, padded_labels, valid)
    assert float(real.count) == float(padded.count) == LAST
    assert float(real.correct) == float(padded.correct)
    assert float(padded.loss) == pytest.approx(float(real.loss), rel=1e-6)
    _assert_params_close(real_state.params, padded_state.params)


def test_train_step_loss_is_the_forward_loss_and_it_descends():
    spec = chapter_model(32)
    optimizer = make_optimizer("sgd", 1e-3)
    params = init_params(jax.random.key(0), spec, "naive")
    step = jax.jit(make_train_step(spec, optimizer, "probs"))
    images, labels = X_TRAIN[:BATCH], Y_TRAIN[:BATCH].astype(np.int32)
    state, metrics = step(TrainState(params, ()), images, labels)
    probs = predict(params, preprocess(jnp.asarray(images)), spec)
    expected = jnp.mean(losses.sparse_categorical_crossentropy(probs, jnp.asarray(labels)))
    assert float(metrics.loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(metrics.correct) == float(jnp.sum(losses.correct(probs, jnp.asarray(labels))))
    assert float(metrics.count) == BATCH
    _, after = step(state, images, labels)
    assert float(after.loss) < float(metrics.loss)


# --- evaluate -----------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["logits", "probs"])
def test_evaluate_matches_numpy(loss):
    spec = chapter_model(32)
    params = _trained_params()
    got_loss, got_acc = evaluate(params, X_TEST, Y_TEST, spec, loss=loss)
    probs = np.asarray(predict(params, preprocess(jnp.asarray(X_TEST)), spec), np.float64)
    expected_acc = np.mean(np.argmax(probs, axis=1) == Y_TEST)
    picked = np.clip(probs[np.arange(len(Y_TEST)), Y_TEST], 1e-7, 1 - 1e-7)
    assert got_acc == pytest.approx(expected_acc, abs=1e-7)
    assert got_loss == pytest.approx(np.mean(-np.log(picked)), rel=1e-4)


def test_evaluate_compiles_once_for_every_call_on_the_same_shapes():
    # Other tests evaluate other shapes with the same settings.
    step_module._evaluate_program.cache_clear()
    spec = chapter_model(32)
    params = _trained_params()
    first = evaluate(params, X_TEST, Y_TEST, spec)
    again = evaluate(params, X_TEST, Y_TEST, spec)
    run = make_evaluate(spec, "logits", "float32")
    assert first == again
    assert run is make_evaluate(spec, "logits", "float32")
    assert run._cache_size() == 1  # one compiled program served both calls


@pytest.mark.parametrize("loss", ["logits", "probs"])
def test_masked_evaluation_ignores_the_padding_rows(loss):
    # A set split over several devices is padded to a multiple of their count; the padding
    # (here 5 rows of other images with wrong labels) must not count.
    spec = chapter_model(32)
    params = _trained_params()
    run = make_evaluate(spec, loss)
    images = np.asarray(X_TEST).reshape(len(X_TEST), -1)
    padded = np.concatenate([images, images[:5]])
    wrong = np.concatenate([Y_TEST, (Y_TEST[:5] + 1) % 10]).astype(np.int32)
    valid = np.arange(len(padded)) < len(images)
    masked = run(params, padded, wrong, valid)
    plain = run(params, images, Y_TEST.astype(np.int32))
    np.testing.assert_allclose(np.asarray(masked), np.asarray(plain), rtol=1e-6)
    unmasked = run(params, padded, wrong)
    assert float(unmasked[1]) != pytest.approx(float(plain[1]), abs=1e-9)
