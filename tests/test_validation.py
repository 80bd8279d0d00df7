"""`validation_split`: which images are held out, what is computed on them, where it is kept."""

from __future__ import annotations

import contextlib
import io
import json

import jax
import numpy as np
import pytest
from _synthetic import synthetic_mnist

import jaxmnist.data
from jaxmnist import train
from jaxmnist.batches import hold_out
from jaxmnist.callbacks import EpochResult
from jaxmnist.config import PRESETS, validate
from jaxmnist.engine import fit
from jaxmnist.errors import UsageError
from jaxmnist.model import chapter_model
from jaxmnist.optim import make_optimizer
from jaxmnist.progress import format_bar
from jaxmnist.step import evaluate, init_state

CONFIG = PRESETS["keras"].replace(epochs=2, batch_size=64, hidden=32)
IMAGES, LABELS = synthetic_mnist(400, 16)[0]


@pytest.mark.parametrize(
    ("n", "fraction", "kept"),
    [
        (10, 0.25, 7),  # 10 * 0.75 = 7.5: Keras floors, so 3 are held out
        (10, 0.3, 7),  # 10 * 0.7 = 7.000000000000001 in floating point: still 7
        (60_000, 0.1, 54_000),
        (60_000, 0.2, 48_000),
        (400, 0.125, 350),
    ],
)
def test_the_last_fraction_is_held_out_before_any_shuffle(n, fraction, kept):
    images = np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2)
    labels = np.arange(n) % 10
    (x, y), (vx, vy) = hold_out(images, labels, fraction)
    assert len(x) == kept and len(vx) == n - kept
    np.testing.assert_array_equal(x, images[:kept])
    np.testing.assert_array_equal(vx, images[kept:])
    np.testing.assert_array_equal(np.concatenate([y, vy]), labels)


def test_no_split_holds_nothing_out():
    (x, y), validation = hold_out(IMAGES, LABELS, 0.0)
    assert x is IMAGES and y is LABELS and validation is None


@pytest.mark.parametrize(
    ("fraction", "message"),
    [
        (1.0, "`validation_split` must be in [0, 1), got 1.0"),
        (-0.1, "`validation_split` must be in [0, 1), got -0.1"),
        (float("nan"), "`validation_split` must be in [0, 1), got nan"),
        (0.999, "leaves 0 to train on and 400 to validate"),
    ],
)
def test_a_split_that_leaves_nothing_on_one_side_is_refused(fraction, message):
    with pytest.raises(UsageError) as error:
        validate(CONFIG.replace(validation_split=fraction), train_size=400)
    assert message in str(error.value)


def test_the_batch_must_fit_in_what_is_left_for_training():
    with pytest.raises(UsageError, match="`batch_size` 64 is larger than the 50 training"):
        validate(CONFIG.replace(validation_split=0.875), train_size=400)


def _fit(config):
    spec = chapter_model(config.hidden)
    optimizer = make_optimizer(config.optimizer, config.learning_rate)
    init_key, data_key = jax.random.split(jax.random.key(0))
    state = init_state(init_key, spec, config.init, optimizer)
    return fit(state, IMAGES, LABELS, config=config, data_key=data_key)


@pytest.mark.parametrize("loop", ["scan", "batch"])
def test_training_sees_only_the_rest_and_validation_is_evaluate_on_the_held_out(loop):
    config = CONFIG.replace(validation_split=0.125, loop=loop)
    state, results = _fit(config)
    # The same run on the first 350 images alone, without a split, trains the same weights.
    spec = chapter_model(config.hidden)
    optimizer = make_optimizer(config.optimizer, config.learning_rate)
    init_key, data_key = jax.random.split(jax.random.key(0))
    alone, alone_results = fit(
        init_state(init_key, spec, config.init, optimizer),
        IMAGES[:350],
        LABELS[:350],
        config=config.replace(validation_split=0.0),
        data_key=data_key,
    )
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(alone.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r.loss for r in results] == [r.loss for r in alone_results]
    assert all(r.val_loss is None for r in alone_results)
    # After the last epoch, the validation figures are `evaluate` on images 350..399.
    loss, accuracy = evaluate(state.params, IMAGES[350:], LABELS[350:], spec, config.loss)
    assert results[-1].val_loss == pytest.approx(loss, rel=1e-6)
    assert results[-1].val_accuracy == pytest.approx(accuracy, abs=1e-7)
    assert results[0].val_loss != results[1].val_loss  # computed after every epoch


def test_keras_bar_ends_the_epoch_line_with_validation_as_keras_does():
    line = format_bar(422, 422, 2.0, 0.9185, 0.2806, validation=(0.1202, 0.9668))
    assert line.endswith(
        "- accuracy: 0.9185 - loss: 0.2806 - val_accuracy: 0.9668 - val_loss: 0.1202"
    )
    assert "val_" not in format_bar(3, 422, 2.0, 0.9, 0.3)


def _main(argv, data):
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jaxmnist.data, "load_mnist", lambda *a, **k: data)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = train.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_prints_keeps_and_resumes_the_validation_figures(tmp_path):
    data = synthetic_mnist(400, 100)
    flags = ["--hidden", "32", "--no-compile-cache", "--validation-split", "0.2"]
    flags += ["--checkpoint-dir", str(tmp_path / "ckpt")]
    code, out, err = _main([*flags, "--epochs", "1"], data)
    assert code == 0, err
    code, out, err = _main(
        [*flags, "--epochs", "2", "--resume", "--metrics-out", str(tmp_path / "m.jsonl")], data
    )
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    (epoch,) = [r for r in records if r["event"] == "epoch"]
    assert epoch["epoch"] == 2 and epoch["steps"] == 3  # 320 images in batches of 128
    assert f"val_accuracy: {epoch['val_accuracy']:.4f} - val_loss: {epoch['val_loss']:.4f}" in out
    history = jaxmnist.load_checkpoint(tmp_path / "ckpt")[1]["history"]
    assert [sorted(h) for h in history] == [
        sorted(["epoch", "loss", "accuracy", "seconds", "batch_losses", "val_loss", "val_accuracy"])
    ] * 2  # the resumed run kept epoch 1's figures and added epoch 2's
    assert history[1]["val_loss"] == epoch["val_loss"]


def test_epoch_results_without_validation_keep_no_val_keys():
    from jaxmnist.callbacks import epoch_record

    record = epoch_record(EpochResult(1, 0.5, 0.9, 1.0, [0.5]))
    assert "val_loss" not in record and "val_accuracy" not in record
