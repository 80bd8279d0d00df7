"""The training loop: scan and batch loops agreeing, determinism, divergence, stops, callbacks."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from _synthetic import synthetic_mnist

from jaxmnist.batches import as_words, batches, gather_rows
from jaxmnist.config import PRESETS, TrainConfig
from jaxmnist.data import preprocess
from jaxmnist.engine import Callback, fit
from jaxmnist.errors import Interrupted, TrainingDiverged
from jaxmnist.model import chapter_model, predict
from jaxmnist.optim import make_optimizer
from jaxmnist.step import evaluate, init_state, make_train_step

# 300 samples in batches of 64: four full batches and a ragged last one of 44.
N, BATCH, LAST = 300, 64, 44
(X_TRAIN, Y_TRAIN), (X_TEST, Y_TEST) = synthetic_mnist(N, 100)

KERAS = PRESETS["keras"].replace(epochs=2, batch_size=BATCH, hidden=32)
NAIVE = PRESETS["naive"].replace(epochs=2, batch_size=BATCH, hidden=32)


def _fit(config: TrainConfig, seed: int = 0, steps_per_dispatch: int | None = None, **kwargs):
    spec = chapter_model(config.hidden)
    optimizer = make_optimizer(config.optimizer, config.learning_rate)
    init_key, data_key = jax.random.split(jax.random.key(seed))
    state = init_state(init_key, spec, config.init, optimizer)
    if steps_per_dispatch:
        config = config.replace(steps_per_dispatch=steps_per_dispatch)
    return fit(state, X_TRAIN, Y_TRAIN, config=config, data_key=data_key, **kwargs)


@functools.cache
def _cached_fit(config: TrainConfig, steps_per_dispatch: int | None = None):
    """A run shared by several tests (determinism tests make their own fresh runs)."""
    state, results = _fit(config, steps_per_dispatch=steps_per_dispatch)
    return jax.tree.map(np.asarray, state.params), results


def _assert_params_close(a, b, rtol=1e-6, atol=1e-7):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# --- The training set held as words ------------------------------------------------------------


def test_rows_gathered_as_words_are_the_same_bytes():
    images = np.random.default_rng(0).integers(0, 256, (10, 8), dtype=np.uint8)
    images[0] = [0, 1, 127, 128, 254, 255, 16, 32]  # every byte position, both halves of a byte
    words = as_words(images)
    assert words.dtype == np.uint32 and words.shape == (10, 2)
    assert np.shares_memory(words, images)  # a view: the training set is not copied
    index = jax.numpy.array([[0, 3], [9, 0]])  # a seed axis, and a row taken twice
    rows = gather_rows(jax.device_put(words), index)
    assert rows.dtype == np.uint8 and rows.shape == (2, 2, 8)
    np.testing.assert_array_equal(np.asarray(rows), images[np.asarray(index)])


@pytest.mark.parametrize(
    "images",
    [np.zeros((3, 6), np.uint8), np.zeros((3, 8), np.float32), np.zeros((3, 2, 4), np.uint8)],
    ids=["width-not-a-multiple-of-4", "float", "not-rows"],
)
def test_images_that_are_not_uint8_rows_of_whole_words_are_kept_as_they_are(images):
    kept = as_words(images)
    assert kept.dtype == images.dtype and kept.shape == images.shape
    rows = gather_rows(jax.device_put(kept), jax.numpy.array([2, 0]))
    np.testing.assert_array_equal(np.asarray(rows), images[[2, 0]])


# --- The two loops compute the same training ------------------------------------------------------


@pytest.mark.parametrize("preset", [KERAS, NAIVE], ids=["keras", "naive"])
def test_scan_and_batch_loops_agree_with_a_ragged_last_batch(preset):
    scan_params, scan_results = _cached_fit(preset.replace(loop="scan"))
    batch_params, batch_results = _cached_fit(preset.replace(loop="batch"))
    _assert_params_close(scan_params, batch_params)
    for s, b in zip(scan_results, batch_results, strict=True):
        assert len(s.batch_losses) == len(b.batch_losses) == 5
        np.testing.assert_allclose(s.batch_losses, b.batch_losses, rtol=1e-5)
        assert s.loss == pytest.approx(b.loss, rel=1e-5)
        assert s.accuracy == pytest.approx(b.accuracy, abs=1 / N)


@pytest.mark.parametrize("per_dispatch", [2, 3])
def test_steps_per_dispatch_that_does_not_divide_the_epoch(per_dispatch):
    whole_params, whole_results = _cached_fit(KERAS)
    split_params, split_results = _cached_fit(KERAS, steps_per_dispatch=per_dispatch)
    _assert_params_close(whole_params, split_params)
    for w, s in zip(whole_results, split_results, strict=True):
        np.testing.assert_allclose(w.batch_losses, s.batch_losses, rtol=1e-6)
        assert w.loss == pytest.approx(s.loss, rel=1e-6)
        assert w.accuracy == s.accuracy


def test_batch_loop_with_steps_per_dispatch_reports_the_same():
    params, results = _cached_fit(KERAS.replace(loop="batch"))
    split_params, split_results = _cached_fit(KERAS.replace(loop="batch"), steps_per_dispatch=2)
    _assert_params_close(params, split_params, rtol=0, atol=0)
    assert [r.batch_losses for r in results] == [r.batch_losses for r in split_results]


# --- Determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["scan", "batch"])
def test_same_seed_gives_bitwise_identical_losses(loop):
    config = KERAS.replace(loop=loop)
    params_a, results_a = _cached_fit(config)
    state_b, results_b = _fit(config)  # a fresh run: new jitted functions, same seed
    assert [r.batch_losses for r in results_a] == [r.batch_losses for r in results_b]
    assert [(r.loss, r.accuracy) for r in results_a] == [(r.loss, r.accuracy) for r in results_b]
    _assert_params_close(params_a, state_b.params, rtol=0, atol=0)


def test_different_seeds_give_different_runs():
    _, results_a = _cached_fit(KERAS)
    _, results_b = _fit(KERAS.replace(epochs=1), seed=1)
    assert results_a[0].batch_losses != results_b[0].batch_losses


# --- Divergence and interruption ------------------------------------------------------------------


def test_huge_learning_rate_raises_training_diverged_naming_epoch_and_step():
    config = KERAS.replace(optimizer="sgd", learning_rate=1e6)
    messages = []
    # Whole-epoch dispatch, one step per dispatch, and the batch loop name the same first bad step.
    for loop, per_dispatch in (("scan", None), ("scan", 1), ("batch", 1)):
        with pytest.raises(TrainingDiverged, match=r"in epoch 1 at step \d+") as caught:
            _fit(config.replace(loop=loop), steps_per_dispatch=per_dispatch)
        messages.append(str(caught.value))
    assert len(set(messages)) == 1, messages
    message = messages[0]
    assert "\n" not in message and "`learning_rate`" in message
    step = int(message.split("at step ")[1].split(":")[0])
    assert 0 < step < 5


class _StopAfter:
    """should_stop that turns true at its `calls`-th question (and stays true)."""

    def __init__(self, calls: int):
        self.calls, self.asked = calls, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked >= self.calls


def test_should_stop_interrupts_after_the_dispatch():
    # Asked before epoch 1 (no), after its first dispatch of 2 steps (yes).
    with pytest.raises(Interrupted) as caught:
        _fit(KERAS, steps_per_dispatch=2, should_stop=_StopAfter(2))
    assert (caught.value.epoch, caught.value.step) == (1, 2)


def test_a_stop_before_training_interrupts_before_epoch_1():
    with pytest.raises(Interrupted) as caught:
        _fit(KERAS, should_stop=lambda: True)
    assert (caught.value.epoch, caught.value.step) == (1, 0)
    assert str(caught.value) == "interrupted before epoch 1"


def test_a_stop_in_an_epochs_last_dispatch_lets_the_epoch_finish():
    ended = []

    class Record(Callback):
        def on_epoch_end(self, result, state):
            ended.append(result.epoch)

    # One dispatch per epoch: asked before epoch 1 (no), then before epoch 2 (yes).
    with pytest.raises(Interrupted) as caught:
        _fit(KERAS.replace(epochs=3), should_stop=_StopAfter(2), callbacks=[Record()])
    assert ended == [1]
    assert (caught.value.epoch, caught.value.step) == (2, 0)


def test_a_stop_in_the_last_epoch_finishes_training():
    _, results = _fit(KERAS.replace(epochs=1), should_stop=_StopAfter(2))
    assert [r.epoch for r in results] == [1]


# --- fit's results and callbacks ------------------------------------------------------------------


def test_epoch_results_are_sample_weighted_means():
    _, results = _cached_fit(KERAS)
    assert [r.epoch for r in results] == [1, 2]
    for r in results:
        weights = np.array([BATCH] * 4 + [LAST], np.float64)
        expected = np.sum(np.array(r.batch_losses) * weights) / N
        assert r.loss == pytest.approx(expected, rel=1e-12)
        assert r.loss != pytest.approx(np.mean(r.batch_losses), rel=1e-9)  # not an unweighted mean
        assert round(r.accuracy * N) == pytest.approx(r.accuracy * N, abs=1e-9)
        assert r.seconds > 0
    assert results[1].loss < results[0].loss


def test_epoch_accuracy_counts_the_predictions_made_before_each_update():
    # Replays the naive preset's first epoch by hand, batch by batch in order: each batch is
    # scored by the parameters it is about to update, as Keras's running accuracy is.
    config = NAIVE.replace(epochs=1)
    spec = chapter_model(config.hidden)
    optimizer = make_optimizer(config.optimizer, config.learning_rate)
    init_key, _ = jax.random.split(jax.random.key(0))
    state = init_state(init_key, spec, config.init, optimizer)
    step = jax.jit(make_train_step(spec, optimizer, config.loss))
    hits = 0
    for batch in batches(X_TRAIN, Y_TRAIN, BATCH):
        probs = np.asarray(predict(state.params, preprocess(np.asarray(batch.images)), spec))
        hits += int(np.sum(np.argmax(probs, axis=1) == np.asarray(batch.labels)))
        state, _ = step(state, batch.images, batch.labels)
    _, results = _fit(config)
    assert 0 < hits < N  # the synthetic task is neither hopeless nor solved after one epoch
    assert results[0].accuracy == hits / N


class _Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_epoch_begin(self, epoch, steps):
        self.events.append(("begin", epoch, steps))

    def on_batches(self, epoch, first_step, batch_losses, done, loss, accuracy):
        self.events.append(("batches", epoch, first_step, len(batch_losses), done))

    def on_epoch_end(self, result, state):
        self.events.append(("end", result.epoch))


@pytest.mark.parametrize("loop", ["scan", "batch"])
def test_callbacks_see_each_dispatch(loop):
    recorder = _Recorder()
    _fit(KERAS.replace(loop=loop), steps_per_dispatch=2, callbacks=[recorder])
    epoch = [
        ("batches", 1, 0, 2, 2),
        ("batches", 1, 2, 2, 4),
        ("batches", 1, 4, 1, 5),
    ]
    assert recorder.events[:5] == [("begin", 1, 5), *epoch, ("end", 1)]
    assert recorder.events[5] == ("begin", 2, 5)
    assert len(recorder.events) == 10


def test_start_epoch_continues_the_run():
    config = KERAS.replace(epochs=1)
    state, first = _fit(config)  # its state is donated to the continuation below
    _, data_key = jax.random.split(jax.random.key(0))
    state, second = fit(
        state, X_TRAIN, Y_TRAIN, config=config.replace(epochs=2), data_key=data_key, start_epoch=1
    )
    whole_params, whole = _cached_fit(KERAS)
    assert [r.epoch for r in second] == [2]
    assert first[0].batch_losses == whole[0].batch_losses
    np.testing.assert_allclose(second[0].batch_losses, whole[1].batch_losses, rtol=1e-6)
    _assert_params_close(state.params, whole_params)


def test_fit_learns_the_synthetic_task():
    params, results = _cached_fit(KERAS)
    loss, acc = evaluate(params, X_TEST, Y_TEST, chapter_model(KERAS.hidden))
    assert acc > 0.8
    assert results[-1].accuracy > 0.8


@pytest.mark.parametrize("loop", ["scan", "batch"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_through_the_donating_loops(preset, loop):
    # fit donates the whole state to each dispatch: an optimizer whose state shares a buffer
    # between two leaves fails here, not in a unit test of the optimizer alone.
    config = PRESETS[preset].replace(epochs=2, batch_size=BATCH, hidden=32, loop=loop)
    state, results = _fit(config)
    assert all(np.isfinite(r.loss) for r in results)
    assert results[1].loss < results[0].loss
