"""The training loop: `fit` runs epochs of `train_step` through one of two loops, with callbacks.

Both loops run the same step and yield the per-step metrics of each dispatch:
- "scan" (the fast path): the training set lives on the device as uint8; each dispatch is one
  jitted `lax.scan` over many steps that gathers its batches on the device from the epoch's order
  (drawn on the host, `batches.epoch_order`).
  The ragged last batch is padded to the full batch size and masked, so every step has one shape
  and nothing recompiles from epoch to epoch.
- "batch": the chapter's loop, one jitted call per batch from the `batches` iterator; the smaller
  last batch compiles once more (first epoch only).
The host reads metrics from the device once per dispatch, never per step.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmnist import executables
from jaxmnist.batches import (
    as_words,
    batches,
    epoch_key,
    epoch_order,
    gather_rows,
    hold_out,
    num_batches,
)
from jaxmnist.callbacks import Callback, EpochResult
from jaxmnist.config import TrainConfig
from jaxmnist.errors import Interrupted, TrainingDiverged, UsageError
from jaxmnist.model import chapter_model
from jaxmnist.optim import optimizer_for
from jaxmnist.step import (
    StepMetrics,
    TrainState,
    fetch,
    global_array,
    make_evaluate,
    make_train_step,
    place_for_evaluation,
    replicate,
)

Dispatches = Iterator[tuple[TrainState, StepMetrics]]


class ScanLoop:
    """Epochs as jitted lax.scan dispatches over the training set held on the device.

    With `seeds`, the state and the epoch key carry a leading seed axis: each seed has its own
    order and takes its own step, vmapped (see `jaxmnist.seeds`)."""

    def __init__(
        self, train_step, images, labels, config: TrainConfig, device, mesh=None, seeds=False
    ):
        n, batch_size = len(images), config.batch_size
        self.steps = num_batches(n, batch_size)
        padded = self.steps * batch_size
        images = as_words(images)
        if mesh is None:
            self.data = jax.device_put((images, labels), device)
            rows, split = batch_size, lambda x: x
        else:
            # Every device holds the whole (uint8) training set; each step's batch is split
            # over the "data" axis, padded to a multiple of the device count and masked, so
            # `batch_size` stays the global batch and every count trains the same model.
            self.data = tuple(global_array(x, NamedSharding(mesh, P())) for x in (images, labels))
            rows = -(-batch_size // mesh.size) * mesh.size
            by_row = NamedSharding(mesh, P("data"))
            split = functools.partial(lax.with_sharding_constraint, shardings=by_row)

        self.put_order = functools.partial(jax.device_put, device=device)
        if mesh is not None:
            self.put_order = functools.partial(global_array, sharding=NamedSharding(mesh, P()))
        self.num_samples, self.padded, self.shuffle = n, padded, config.shuffle

        if seeds:  # [S, ...] states, [S, B] batches, one mask for all
            train_step = jax.vmap(train_step, in_axes=(0, 0, 0, None))

        def run_fn(state, images, labels, order, first_step, num_steps):
            def body(state, step):
                index = lax.dynamic_slice_in_dim(order, step * batch_size, batch_size, axis=-1)
                valid = step * batch_size + jnp.arange(batch_size) < n
                if rows != batch_size:
                    index = jnp.pad(index, (0, rows - batch_size))
                    valid = jnp.pad(valid, (0, rows - batch_size))
                batch = split((gather_rows(images, index), labels[index], valid))
                return train_step(state, *batch)

            return lax.scan(body, state, first_step + jnp.arange(num_steps, dtype=jnp.int32))

        # The state is donated: its buffers are reused for the new state, not copied.
        self.run_fn = executables.jit(run_fn, static_argnames="num_steps", donate_argnums=0)

    def order(self, data_key: jax.Array, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s order, padded to whole batches (the padding rows are masked), drawn
        on the host: [N'] int32, or [S, N'] for a leading seed axis on `data_key`."""
        order = epoch_order(data_key if self.shuffle else None, epoch, self.num_samples)
        order = np.broadcast_to(order, (*data_key.shape, order.shape[-1]))
        return np.pad(order, [(0, 0)] * (order.ndim - 1) + [(0, self.padded - self.num_samples)])

    def epoch(
        self, state: TrainState, data_key: jax.Array, epoch: int, per_dispatch: int
    ) -> Dispatches:
        """The dispatches of epoch `epoch` (0-based), its order drawn from `data_key`."""
        order = self.put_order(self.order(data_key, epoch))
        for first in range(0, self.steps, per_dispatch):
            num_steps = min(per_dispatch, self.steps - first)
            state, metrics = self.run_fn(state, *self.data, order, first, num_steps=num_steps)
            yield state, metrics


class _BatchLoop:
    """Epochs as one jitted call per batch from the chapter's batch iterator (one device)."""

    def __init__(self, train_step, images, labels, config: TrainConfig, device, mesh=None):
        if mesh is not None and mesh.size > 1:
            raise UsageError("`loop` batch runs on one device: use `loop` scan to train on several")
        self.images, self.labels, self.device = images, labels, device
        self.batch_size, self.shuffle = config.batch_size, config.shuffle
        self.steps = num_batches(len(images), config.batch_size)
        self.step_fn = jax.jit(train_step, donate_argnums=0)

    def epoch(
        self, state: TrainState, data_key: jax.Array, epoch: int, per_dispatch: int
    ) -> Dispatches:
        pending: list[StepMetrics] = []
        order_key = epoch_key(data_key, epoch) if self.shuffle else None
        for batch in batches(
            self.images, self.labels, self.batch_size, key=order_key, device=self.device
        ):
            state, metrics = self.step_fn(state, batch.images, batch.labels)
            pending.append(metrics)
            if len(pending) == per_dispatch:
                yield state, _stacked(pending)
                pending = []
        if pending:
            yield state, _stacked(pending)


def _stacked(metrics: list[StepMetrics]) -> StepMetrics:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)


_LOOPS = {"scan": ScanLoop, "batch": _BatchLoop}


def fit(
    state: TrainState,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    config: TrainConfig,
    data_key: jax.Array,
    device: jax.Device | None = None,
    start_epoch: int = 0,
    callbacks: Sequence[Callback] = (),
    should_stop: Callable[[], bool] = lambda: False,
    mesh: Mesh | None = None,
) -> tuple[TrainState, list[EpochResult]]:
    """Trains epochs start_epoch+1 .. config.epochs; returns the final state and their results.

    The model and optimizer are the ones `config` names; `state` must match them. Epoch e's
    batches come from `fold_in(data_key, e)`, so a resumed run sees the batches it would have.

    With `config.validation_split`, the last part of `images` is held out (`batches.hold_out`)
    and evaluated on the device after every epoch: `val_loss` and `val_accuracy` in its result.

    With a `mesh` (one "data" axis), each step's batch is split over its devices and the
    state is replicated on all of them (synchronous data parallelism); `device` is then unused.

    Raises TrainingDiverged at the end of the dispatch whose loss was NaN or Inf, and Interrupted
    when `should_stop()` turns true (checked before each epoch and after each dispatch but an
    epoch's last, so every finished epoch reaches `on_epoch_end` and its checkpoint).
    """
    spec = chapter_model(config.hidden)
    images = np.asarray(images).reshape(len(images), -1)  # [N, 784] uint8
    (images, labels), held_out = hold_out(
        images, np.asarray(labels, np.int32), config.validation_split
    )
    optimizer = optimizer_for(config, num_batches(len(images), config.batch_size))
    train_step = make_train_step(
        spec, optimizer, config.loss, config.precision, config.label_smoothing
    )
    loop = _LOOPS[config.loop](train_step, images, labels, config, device, mesh)
    validation = None
    if held_out is not None:
        # Held on the device once; each epoch's evaluation is one dispatch and one read.
        validation = place_for_evaluation(*held_out, device, mesh)
        evaluate_fn = make_evaluate(spec, config.loss, config.precision, config.label_smoothing)
    per_dispatch = min(config.steps_per_dispatch or loop.steps, loop.steps)
    state = jax.device_put(state, device) if mesh is None else replicate(state, mesh)

    results = []
    for epoch in range(start_epoch, config.epochs):
        if should_stop():
            raise Interrupted(epoch + 1, 0)
        for callback in callbacks:
            callback.on_epoch_begin(epoch + 1, loop.steps)
        tracker = EpochTracker(epoch + 1, callbacks)
        for new_state, metrics in loop.epoch(state, data_key, epoch, per_dispatch):
            state = new_state  # the old one was donated to the dispatch
            tracker.add(metrics)
            if tracker.done < loop.steps and should_stop():
                raise Interrupted(epoch + 1, tracker.done)
        result = tracker.result()
        if validation is not None:
            val_loss, val_accuracy = fetch(evaluate_fn(state.params, *validation))
            result.val_loss, result.val_accuracy = float(val_loss), float(val_accuracy)
        results.append(result)
        for callback in callbacks:
            callback.on_epoch_end(result, state)
    return state, results


class EpochTracker:
    """Running, sample-weighted epoch metrics from per-step device arrays, fetched once per add."""

    def __init__(self, epoch: int, callbacks: Sequence[Callback]):
        self.epoch, self.callbacks = epoch, callbacks
        self.start = time.perf_counter()
        self.done = 0
        self.loss_sum = self.correct_sum = self.count_sum = 0.0
        self.batch_losses: list[float] = []

    def add(self, metrics: StepMetrics) -> None:
        loss, correct, count = (np.asarray(x, np.float64) for x in fetch(metrics))
        bad = np.flatnonzero(~np.isfinite(loss))
        if bad.size:
            step = self.done + int(bad[0])
            raise TrainingDiverged(
                f"loss became {loss[bad[0]]} in epoch {self.epoch} at step {step}: "
                "lower `learning_rate`"
            )
        first = self.done
        self.done += len(loss)
        self.loss_sum += float(np.sum(loss * count))
        self.correct_sum += float(np.sum(correct))
        self.count_sum += float(np.sum(count))
        self.batch_losses.extend(loss.tolist())
        mean_loss, accuracy = self.loss_sum / self.count_sum, self.correct_sum / self.count_sum
        for callback in self.callbacks:
            callback.on_batches(self.epoch, first, loss, self.done, mean_loss, accuracy)

    def result(self) -> EpochResult:
        return EpochResult(
            epoch=self.epoch,
            loss=self.loss_sum / self.count_sum,
            accuracy=self.correct_sum / self.count_sum,
            seconds=time.perf_counter() - self.start,
            batch_losses=self.batch_losses,
        )
