"""Training and evaluation: the jit-compiled step, the two epoch loops, `fit` and `evaluate`.

Two loops run the same `train_step`:
- "scan" (the fast path): the training set lives on the device as uint8; each dispatch is one
  jitted `lax.scan` over many steps that gathers its batches on the device from the epoch's order.
  The ragged last batch is padded to the full batch size and masked, so every step has one shape
  and nothing recompiles from epoch to epoch.
- "batch": the chapter's loop, one jitted call per batch from the `batches` iterator; the smaller
  last batch compiles once more (first epoch only).
Both fetch metrics from the device only once per dispatch (scan) or per report (batch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmnist import losses
from jaxmnist.batches import batches, epoch_key, epoch_order, num_batches
from jaxmnist.config import TrainConfig
from jaxmnist.errors import Interrupted, TrainingDiverged
from jaxmnist.model import ModelSpec, Params, chapter_model, init_params, logits
from jaxmnist.optim import Optimizer, make_optimizer

_PRODUCT_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


class TrainState(NamedTuple):
    params: Params
    opt_state: Any


class StepMetrics(NamedTuple):
    loss: jax.Array  # mean loss over the batch's real samples
    correct: jax.Array  # number of real samples classified right
    count: jax.Array  # number of real samples (smaller than B only in a padded last batch)


@dataclass
class EpochResult:
    """One epoch as Keras reports it: sample-weighted means over the epoch's batches."""

    epoch: int  # 1-based, as printed
    loss: float
    accuracy: float
    seconds: float
    batch_losses: list[float] = field(repr=False)


class Callback:
    """Hooks `fit` calls; each sees host values only, so none forces an extra device sync."""

    def on_epoch_begin(self, epoch: int, steps: int) -> None: ...

    def on_batches(
        self,
        epoch: int,
        first_step: int,
        batch_losses: np.ndarray,
        done: int,
        loss: float,
        accuracy: float,
    ) -> None: ...

    def on_epoch_end(self, result: EpochResult, state: TrainState) -> None: ...


def normalize(images: jax.Array) -> jax.Array:
    """uint8 [B, 28, 28] or [B, 784] -> float32 [B, 784] / 255: images become floats only here."""
    return images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0


def _per_sample_loss(z: jax.Array, labels: jax.Array, loss: str) -> jax.Array:
    """ "probs": Keras's clipped loss on the softmax (the chapter's); "logits": its stable form."""
    if loss == "probs":
        return losses.sparse_categorical_crossentropy(jax.nn.softmax(z), labels)
    return losses.softmax_cross_entropy(z, labels)


def make_train_step(
    spec: ModelSpec, optimizer: Optimizer, loss: str = "logits", precision: str = "float32"
):
    """(state, images, labels, valid=None) -> (state, StepMetrics): gradient, update and metrics."""
    dtype = _PRODUCT_DTYPES[precision]

    def loss_fn(params, images, labels, valid):
        z = logits(params, normalize(images), spec, dtype)
        per_sample = _per_sample_loss(z, labels, loss)
        hits = losses.correct(z, labels)
        if valid is None:
            return jnp.mean(per_sample), (jnp.sum(hits), jnp.float32(per_sample.shape[0]))
        weight = valid.astype(jnp.float32)
        count = jnp.sum(weight)
        return jnp.sum(per_sample * weight) / count, (jnp.sum(hits * weight), count)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, images, labels, valid=None):
        (mean_loss, (n_correct, count)), grads = grad_fn(state.params, images, labels, valid)
        params, opt_state = optimizer.apply(state.params, grads, state.opt_state)
        return TrainState(params, opt_state), StepMetrics(mean_loss, n_correct, count)

    return train_step


def make_evaluate(spec: ModelSpec, loss: str = "logits", precision: str = "float32"):
    """A jitted (params, images, labels) -> (mean loss, accuracy) over the whole set at once."""
    dtype = _PRODUCT_DTYPES[precision]

    @jax.jit
    def evaluate(params, images, labels):
        z = logits(params, normalize(images), spec, dtype)
        return jnp.mean(_per_sample_loss(z, labels, loss)), losses.accuracy(z, labels)

    return evaluate


def evaluate(
    params: Params,
    images,
    labels,
    spec: ModelSpec,
    loss: str = "logits",
    precision: str = "float32",
    device: jax.Device | None = None,
) -> tuple[float, float]:
    """Test loss and accuracy of `params` on uint8 images, as the chapter's evaluation."""
    run = make_evaluate(spec, loss, precision)
    images, labels = jax.device_put((np.asarray(images), np.asarray(labels, np.int32)), device)
    mean_loss, acc = run(params, images, labels)
    return float(mean_loss), float(acc)


def _scan_loop(train_step, num_samples: int, batch_size: int, shuffle: bool):
    """Jitted (order_fn, run_fn) for the on-device epoch."""
    padded = num_batches(num_samples, batch_size) * batch_size

    @jax.jit
    def order_fn(key):
        order = epoch_order(key if shuffle else None, num_samples)
        return jnp.pad(order, (0, padded - num_samples))  # padding rows are masked out below

    def run_fn(state, images, labels, order, first_step, num_steps):
        def body(state, step):
            index = lax.dynamic_slice_in_dim(order, step * batch_size, batch_size)
            valid = step * batch_size + jnp.arange(batch_size) < num_samples
            return train_step(state, images[index], labels[index], valid)

        return lax.scan(body, state, first_step + jnp.arange(num_steps, dtype=jnp.int32))

    # The state is donated: its buffers are reused for the new state, not copied.
    return order_fn, jax.jit(run_fn, static_argnames="num_steps", donate_argnums=0)


def fit(
    state: TrainState,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    config: TrainConfig,
    data_key: jax.Array,
    spec: ModelSpec | None = None,
    optimizer: Optimizer | None = None,
    device: jax.Device | None = None,
    start_epoch: int = 0,
    steps_per_dispatch: int | None = None,
    callbacks: Sequence[Callback] = (),
    should_stop=lambda: False,
) -> tuple[TrainState, list[EpochResult]]:
    """Trains epochs start_epoch+1 .. config.epochs; returns the final state and their results.

    The model and optimizer come from `config` unless `spec` / `optimizer` are given (the state
    must match them).

    Raises TrainingDiverged at the end of the dispatch whose loss was NaN or Inf, and Interrupted
    when `should_stop()` turns true (checked before each epoch and after each dispatch but an
    epoch's last, so every finished epoch reaches `on_epoch_end` and its checkpoint).
    """
    spec = spec or chapter_model(config.hidden)
    optimizer = optimizer or make_optimizer(config.optimizer, config.learning_rate)
    images = np.asarray(images).reshape(len(images), -1)
    labels = np.asarray(labels, np.int32)
    n, batch_size = len(images), config.batch_size
    steps = num_batches(n, batch_size)
    per_dispatch = min(steps_per_dispatch or config.steps_per_dispatch or steps, steps)
    train_step = make_train_step(spec, optimizer, config.loss, config.precision)
    if config.loop == "scan":
        order_fn, run_fn = _scan_loop(train_step, n, batch_size, config.shuffle)
        images_on_device, labels_on_device = jax.device_put((images, labels), device)
    else:
        step_fn = jax.jit(train_step, donate_argnums=0)
    state = jax.device_put(state, device)

    results = []
    for epoch in range(start_epoch, config.epochs):
        if should_stop():
            raise Interrupted(epoch + 1, 0)
        for callback in callbacks:
            callback.on_epoch_begin(epoch + 1, steps)
        key = epoch_key(data_key, epoch)
        tracker = _EpochTracker(epoch + 1, steps, callbacks)
        if config.loop == "scan":
            order = order_fn(key)
            for first in range(0, steps, per_dispatch):
                state, metrics = run_fn(
                    state,
                    images_on_device,
                    labels_on_device,
                    order,
                    first,
                    num_steps=min(per_dispatch, steps - first),
                )
                tracker.add(metrics)
                if tracker.done < steps and should_stop():
                    raise Interrupted(epoch + 1, tracker.done)
        else:
            pending = []
            order_key = key if config.shuffle else None
            for batch in batches(images, labels, batch_size, key=order_key, device=device):
                state, metrics = step_fn(state, batch.images, batch.labels)
                pending.append(metrics)
                if len(pending) == per_dispatch:
                    tracker.add(jax.tree.map(lambda *xs: jnp.stack(xs), *pending))
                    pending = []
                    if tracker.done < steps and should_stop():
                        raise Interrupted(epoch + 1, tracker.done)
            if pending:
                tracker.add(jax.tree.map(lambda *xs: jnp.stack(xs), *pending))
        result = tracker.result()
        results.append(result)
        for callback in callbacks:
            callback.on_epoch_end(result, state)
    return state, results


class _EpochTracker:
    """Running, sample-weighted epoch metrics from per-step device arrays, fetched once per add."""

    def __init__(self, epoch: int, steps: int, callbacks: Sequence[Callback]):
        self.epoch, self.steps, self.callbacks = epoch, steps, callbacks
        self.start = time.perf_counter()
        self.done = 0
        self.loss_sum = self.correct_sum = self.count_sum = 0.0
        self.batch_losses: list[float] = []

    def add(self, metrics: StepMetrics) -> None:
        loss, correct, count = (np.asarray(x, np.float64) for x in jax.device_get(metrics))
        bad = np.flatnonzero(~np.isfinite(loss))
        if bad.size:
            step = self.done + int(bad[0])
            raise TrainingDiverged(
                f"loss became {loss[bad[0]]} in epoch {self.epoch} at step {step}: "
                "lower --learning-rate"
            )
        first = self.done
        self.done += len(loss)
        self.loss_sum += float(np.sum(loss * count))
        self.correct_sum += float(np.sum(correct))
        self.count_sum += float(np.sum(count))
        self.batch_losses.extend(loss.tolist())
        for callback in self.callbacks:
            callback.on_batches(
                self.epoch,
                first,
                loss,
                self.done,
                self.loss_sum / self.count_sum,
                self.correct_sum / self.count_sum,
            )

    def result(self) -> EpochResult:
        return EpochResult(
            epoch=self.epoch,
            loss=self.loss_sum / self.count_sum,
            accuracy=self.correct_sum / self.count_sum,
            seconds=time.perf_counter() - self.start,
            batch_losses=self.batch_losses,
        )


def init_state(key: jax.Array, spec: ModelSpec, init: str, optimizer: Optimizer) -> TrainState:
    """Initial parameters from `key` and the optimizer's initial state."""
    params = init_params(key, spec, init)
    return TrainState(params, optimizer.init(params))
