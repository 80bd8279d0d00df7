"""The fast preset computes what it claims: label smoothing, the warmup-linear schedule and Keras's
Adam, each by hand, then its whole training step against a float64 NumPy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _synthetic import synthetic_mnist

from jaxmnist import losses
from jaxmnist.config import PRESETS, validate
from jaxmnist.engine import fit
from jaxmnist.errors import CheckpointError, UsageError
from jaxmnist.model import chapter_model, init_params, logits
from jaxmnist.optim import WARMUP_FRACTION, optimizer_for, warmup_linear
from jaxmnist.resume import check_compatible
from jaxmnist.runner import train_and_evaluate
from jaxmnist.step import TrainState, init_state, make_train_step

FAST = PRESETS["fast"]


def test_fast_preset_is_the_chapters_model_family():
    # One hidden ReLU layer on the 784 pixels, nothing that reads the test set.
    assert chapter_model(FAST.hidden).layers == ((FAST.hidden, "relu"), (10, "softmax"))
    assert FAST.validation_split == 0 and FAST.train_samples == 0
    assert validate(FAST) is FAST


# --- label smoothing -------------------------------------------------------------------------


def test_smoothed_loss_hand_computed():
    # Two classes of ten for readability: logits 0 except 2.0 on class 0, label 0, s = 0.1.
    z = jnp.zeros((1, 10)).at[0, 0].set(2.0)
    log_p = 2.0 - np.log(np.exp(2.0) + 9.0), -np.log(np.exp(2.0) + 9.0)
    want = -(0.9 + 0.1 / 10) * log_p[0] - 9 * (0.1 / 10) * log_p[1]
    got = losses.per_sample_loss(z, jnp.array([0]), "logits", 0.1)
    assert float(got[0]) == pytest.approx(want, rel=1e-6)


def test_smoothing_zero_is_the_plain_loss_and_probs_agree_with_logits():
    z = jax.random.normal(jax.random.key(1), (16, 10))
    y = jnp.arange(16) % 10
    for kind in ("logits", "probs"):
        np.testing.assert_array_equal(
            losses.per_sample_loss(z, y, kind, 0.0), losses.per_sample_loss(z, y, kind)
        )
    # Nothing is clipped at these logits, so Keras's probability form is the logits form.
    np.testing.assert_allclose(
        losses.per_sample_loss(z, y, "probs", 0.1),
        losses.per_sample_loss(z, y, "logits", 0.1),
        rtol=1e-5,
    )


def test_smoothed_gradient_is_softmax_minus_smoothed_target():
    z = jax.random.normal(jax.random.key(2), (4, 10))
    y = jnp.array([3, 0, 9, 3])
    grad = jax.grad(lambda z: jnp.sum(losses.per_sample_loss(z, y, "logits", 0.2)))(z)
    target = 0.8 * jax.nn.one_hot(y, 10) + 0.02
    np.testing.assert_allclose(grad, jax.nn.softmax(z) - target, atol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), True, "0.1"])
def test_label_smoothing_outside_zero_one_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="`label_smoothing` must be in"):
        validate(FAST.replace(label_smoothing=bad))


# --- the schedule ----------------------------------------------------------------------------


def test_warmup_linear_hand_computed():
    assert WARMUP_FRACTION == 0.1
    rate = warmup_linear(1.0, 100)  # 10 steps up, 90 down
    for step, want in [(0, 0.0), (5, 0.5), (10, 1.0), (55, 0.5), (100, 0.0), (150, 0.0)]:
        assert float(rate(step)) == pytest.approx(want, abs=1e-7), step


def test_schedule_spans_every_epoch_of_the_run():
    # 512 images in batches of 128: 4 steps an epoch, 8 in 2 epochs.
    (images, labels), _ = synthetic_mnist(512, 8)
    config = FAST.replace(hidden=16, epochs=2)
    optimizer = optimizer_for(config)
    state = init_state(jax.random.key(0), chapter_model(16), config.init, optimizer)
    state, results = fit(state, images, labels, config=config, data_key=jax.random.key(1))
    assert len(results) == 2 and int(state.opt_state.count) == 8
    # The last of those 8 updates ran at warmup_linear(peak, 8)(7) = peak / 7, after it 0.
    rate = warmup_linear(config.learning_rate, 8)
    assert float(rate(7)) == pytest.approx(config.learning_rate / 7) and float(rate(8)) == 0.0


@pytest.mark.parametrize("split", [0.0, 0.25])
def test_fit_spans_the_schedule_over_every_step_it_takes(monkeypatch, split):
    # 512 images, a quarter held out or not, in batches of 128: 3 or 4 steps an epoch, 2 epochs.
    from jaxmnist import engine, optim, seeds

    asked = []

    def recording(config, steps_per_epoch=1):
        asked.append(config.epochs * steps_per_epoch)
        return optim.optimizer_for(config, steps_per_epoch)

    monkeypatch.setattr(engine, "optimizer_for", recording)
    monkeypatch.setattr(seeds, "optimizer_for", recording)
    (images, labels), _ = synthetic_mnist(512, 8)
    config = FAST.replace(hidden=16, epochs=2, validation_split=split)
    steps = 2 * (3 if split else 4)

    def fresh():
        return init_state(jax.random.key(0), chapter_model(16), config.init, optimizer_for(config))

    state, _ = fit(fresh(), images, labels, config=config, data_key=jax.random.key(1))
    [seeded] = seeds.fit_seeds(
        [fresh()], images, labels, config=config, data_keys=[jax.random.key(1)]
    )
    assert asked == [steps, steps]
    assert int(state.opt_state.count) == int(seeded.opt_state.count) == steps


def test_evaluation_reports_the_smoothed_loss():
    from jaxmnist.step import evaluate

    (images, labels), _ = synthetic_mnist(64, 8)
    spec = chapter_model(16)
    params = init_params(jax.random.key(0), spec, "glorot")
    z = logits(params, images.reshape(64, -1).astype(np.float32) / 255, spec)
    want = float(jnp.mean(losses.per_sample_loss(z, jnp.asarray(labels), "logits", 0.1)))
    plain = float(jnp.mean(losses.per_sample_loss(z, jnp.asarray(labels), "logits")))
    got, _ = evaluate(params, images, labels, spec, label_smoothing=0.1)
    assert got == pytest.approx(want, rel=1e-6) and abs(got - plain) > 1e-3


def test_resuming_a_schedule_with_more_epochs_is_refused(tmp_path):
    meta = {"config": FAST.replace(epochs=2).to_dict(), "data_fingerprint": "f", "epoch": 2}
    with pytest.raises(CheckpointError, match="`epochs` 2, and its `schedule` warmup-linear spans"):
        check_compatible(meta, FAST.replace(epochs=3), "f", tmp_path)
    constant = FAST.replace(epochs=2, schedule="constant")
    meta["config"] = constant.to_dict()
    check_compatible(meta, constant.replace(epochs=3), "f", tmp_path)  # a constant rate may go on
    # A constant-rate checkpoint asked to go on with a schedule: the schedule is what differs.
    with pytest.raises(CheckpointError, match="`schedule` 'constant', this run asks for"):
        check_compatible(meta, FAST.replace(epochs=3), "f", tmp_path)


# --- the whole step against float64 NumPy ----------------------------------------------------


def _reference_step(params, state, x, y, t, rate, smoothing, b1=0.9, b2=0.999, eps=1e-7):
    """One fast-preset step, float64: relu MLP, smoothed cross-entropy (its gradient through the
    softmax is p - target), Keras 3's Adam at this step's scheduled rate."""
    (w1, b1_), (w2, b2_) = params
    pre = x @ w1 + b1_
    h = np.maximum(pre, 0.0)
    z = h @ w2 + b2_
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    target = (1 - smoothing) * np.eye(10)[y] + smoothing / 10
    loss = float(np.mean(-(target * log_p).sum(axis=1)))
    dz = (np.exp(log_p) - target) / len(y)
    dpre = (dz @ w2.T) * (pre > 0)
    grads = [x.T @ dpre, dpre.sum(0), h.T @ dz, dz.sum(0)]
    flat = [w1, b1_, w2, b2_]
    alpha = rate * np.sqrt(1 - b2**t) / (1 - b1**t)
    new = []
    for p, g, m, v in zip(flat, grads, state[0], state[1], strict=True):
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        new.append(p - m * alpha / (np.sqrt(v) + eps))
    return [(new[0], new[1]), (new[2], new[3])], loss


def test_fast_step_matches_float64_reference_over_a_whole_schedule():
    steps, batch = 12, 32
    (images, labels), _ = synthetic_mnist(steps * batch, 8)
    config = FAST.replace(hidden=24, epochs=1, batch_size=batch)
    spec = chapter_model(config.hidden)
    optimizer = optimizer_for(config, steps)
    step = jax.jit(
        make_train_step(spec, optimizer, config.loss, config.precision, config.label_smoothing)
    )
    params = init_params(jax.random.key(0), spec, config.init)
    state = TrainState(params, optimizer.init(params))
    ref = [tuple(np.asarray(layer[k], np.float64) for k in "Wb") for layer in params]
    moments = [[np.zeros_like(p) for layer in ref for p in layer] for _ in range(2)]
    schedule = warmup_linear(config.learning_rate, steps)
    x = images.reshape(len(images), -1)
    for t in range(steps):
        xb, yb = x[t * batch : (t + 1) * batch], labels[t * batch : (t + 1) * batch].astype(int)
        state, metrics = step(state, xb, yb.astype(np.int32))
        ref, ref_loss = _reference_step(
            ref, moments, xb / 255.0, yb, t + 1, float(schedule(t)), config.label_smoothing
        )
        assert float(metrics.loss) == pytest.approx(ref_loss, rel=1e-5)
    for layer, (w, b) in zip(state.params, ref, strict=True):
        np.testing.assert_allclose(layer["W"], w, rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(layer["b"], b, rtol=1e-4, atol=2e-5)
    assert ref_loss < 1.5  # it learned: the reference moved, and jax moved with it


def test_fast_preset_trains_synthetic_digits():
    data = synthetic_mnist(1024, 256, seed=3)
    result = train_and_evaluate(FAST.replace(hidden=32), data)
    assert result.test_accuracy > 0.9
    assert len(result.history) == FAST.epochs == 3


@pytest.mark.parametrize("how", ["sequential", "vmap"])
def test_fast_preset_seeds_are_their_separate_runs(how):
    # The schedule's step count lives in each seed's optimizer state, vmapped or not.
    from jaxmnist.seeds import train_and_evaluate_seeds

    data = synthetic_mnist(512, 128, seed=4)
    config = FAST.replace(hidden=16)
    together = train_and_evaluate_seeds(config, data, [0, 5], how=how)
    for seed, result in zip([0, 5], together, strict=True):
        alone = train_and_evaluate(config.replace(seed=seed), data)
        pairs = zip(jax.tree.leaves(result.state), jax.tree.leaves(alone.state), strict=True)
        for got, want in pairs:
            if how == "sequential":
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
