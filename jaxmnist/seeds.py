"""Many seeds in one program: one model per seed, each the run `seed` alone would make.

Every seed has its own initial state, shuffle and checkpoint directory (`seed-K` below the run's),
so a seed's checkpoints are exactly those of a run with that seed (report, predict and resume
read them as such). Two ways to run them side by side, the same training either way:
- "vmap": one program whose step is vmapped over a leading seed axis: what fills a GPU;
- "sequential": each epoch runs every seed's epoch in turn through the one compiled program,
  bitwise the separate runs. On a CPU this is the faster of the two (vmapped, XLA's batched
  products are slower than its plain ones: measured 10% per step), and it is the default there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist.batches import hold_out, num_batches
from jaxmnist.callbacks import EpochResult
from jaxmnist.config import TrainConfig
from jaxmnist.engine import EpochTracker, ScanLoop
from jaxmnist.errors import CheckpointError, Interrupted, TrainingDiverged, UsageError
from jaxmnist.model import chapter_model
from jaxmnist.optim import optimizer_for
from jaxmnist.runner import RunResult, diverged, start_run, training_data
from jaxmnist.step import TrainState, evaluate, fetch, make_evaluate, make_train_step

EpochEnd = Callable[[list[EpochResult], list[TrainState]], None]


def seed_axis(device: jax.Device | None) -> str:
    """How to run the seeds on `device` (see the module's docstring)."""
    platform = (device or jax.devices()[0]).platform
    return "sequential" if platform == "cpu" else "vmap"


def fit_seeds(
    states: Sequence[TrainState],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    config: TrainConfig,
    data_keys: Sequence[jax.Array],
    device: jax.Device | None = None,
    start_epoch: int = 0,
    on_epoch_end: EpochEnd = lambda results, states: None,
    should_stop: Callable[[], bool] = lambda: False,
    how: str = "sequential",
) -> list[TrainState]:
    """`engine.fit` for several seeds at once: seed k trains states[k] on its own batches from
    data_keys[k]. After every epoch, `on_epoch_end` gets each seed's result and state."""
    if how not in ("vmap", "sequential"):
        raise UsageError(f"how {how!r}: choose vmap or sequential")
    spec = chapter_model(config.hidden)
    images = np.asarray(images).reshape(len(images), -1)
    (images, labels), held_out = hold_out(
        images, np.asarray(labels, np.int32), config.validation_split
    )
    optimizer = optimizer_for(config, num_batches(len(images), config.batch_size))
    step = make_train_step(spec, optimizer, config.loss, config.precision, config.label_smoothing)
    vmapped = how == "vmap"
    loop = ScanLoop(step, images, labels, config, device, seeds=vmapped)
    validation = None
    if held_out is not None:
        validation = jax.device_put(held_out, device)
        evaluate_fn = make_evaluate(spec, config.loss, config.precision, config.label_smoothing)
    per_dispatch = min(config.steps_per_dispatch or loop.steps, loop.steps)
    states = [jax.device_put(state, device) for state in states]
    keys = jnp.stack(list(data_keys))
    for epoch in range(start_epoch, config.epochs):
        if should_stop():
            raise Interrupted(epoch + 1, 0)
        trackers = [EpochTracker(epoch + 1, ()) for _ in states]
        if vmapped:
            states = _vmapped_epoch(loop, states, keys, epoch, trackers, per_dispatch, should_stop)
        else:
            for k, tracker in enumerate(trackers):
                tracker.start = time.perf_counter()  # a seed's epoch time is its own
                dispatches = loop.epoch(states[k], keys[k], epoch, per_dispatch)
                for new_state, metrics in dispatches:
                    states[k] = new_state  # the old one was donated to the dispatch
                    _add(tracker, metrics, k)
                if k < len(states) - 1 and should_stop():
                    raise Interrupted(epoch + 1, 0)
        results = [tracker.result() for tracker in trackers]
        if validation is not None:
            for result, state in zip(results, states, strict=True):
                val_loss, val_accuracy = fetch(evaluate_fn(state.params, *validation))
                result.val_loss, result.val_accuracy = float(val_loss), float(val_accuracy)
        on_epoch_end(results, states)
    return states


def _vmapped_epoch(loop, states, keys, epoch, trackers, per_dispatch, should_stop):
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    for new_stacked, metrics in loop.epoch(stacked, keys, epoch, per_dispatch):
        stacked = new_stacked
        by_seed = fetch(metrics)  # [steps, seeds] each
        for k, tracker in enumerate(trackers):
            _add(tracker, jax.tree.map(lambda column, k=k: column[:, k], by_seed), k)
        if trackers[0].done < loop.steps and should_stop():
            raise Interrupted(epoch + 1, trackers[0].done)
    return [jax.tree.map(lambda leaf, k=k: leaf[k], stacked) for k in range(len(states))]


def _add(tracker: EpochTracker, metrics, seed: int) -> None:
    try:
        tracker.add(metrics)
    except TrainingDiverged as error:
        raise TrainingDiverged(f"seed {seed}: {error}") from None


def train_and_evaluate_seeds(
    config: TrainConfig,
    data: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    seeds: Sequence[int],
    *,
    fingerprint: str | None = None,
    device: jax.Device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch_end: EpochEnd = lambda results, states: None,
    should_stop: Callable[[], bool] = lambda: False,
    how: str | None = None,
) -> list[RunResult]:
    """`runner.train_and_evaluate` for every seed in `seeds` at once (`config.seed` unused);
    seed K's checkpoints go to `checkpoint_dir`/seed-K. Results in the order of `seeds`."""
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    (x_train, y_train), (x_test, y_test), fingerprint = training_data(
        config, data, root, fingerprint
    )
    configs = [config.replace(seed=seed) for seed in seeds]
    starts = [
        start_run(c, None if root is None else root / f"seed-{c.seed}", resume, fingerprint)
        for c in configs
    ]
    recorders = [recorder for _, recorder in starts]
    done = {len(recorder.history) for recorder in recorders}
    if len(done) > 1:
        raise CheckpointError(
            f"the seeds' checkpoints in {root} are at different epochs ({sorted(done)}): resume "
            "the seeds separately, or start anew with another `checkpoint_dir`"
        )

    def record(results, states):
        for recorder, result, state in zip(recorders, results, states, strict=True):
            recorder.on_epoch_end(result, state)
        on_epoch_end(results, states)

    try:
        states = fit_seeds(
            [state for state, _ in starts],
            x_train,
            y_train,
            config=config,
            data_keys=[recorder.data_key for recorder in recorders],
            device=device,
            start_epoch=done.pop(),
            on_epoch_end=record,
            should_stop=should_stop,
            how=how or seed_axis(device),
        )
    except TrainingDiverged as error:
        raise diverged(error, root, len(recorders[0].history)) from None
    spec = chapter_model(config.hidden)
    results = []
    for state, recorder in zip(states, recorders, strict=True):
        loss, accuracy = evaluate(
            state.params,
            x_test,
            y_test,
            spec,
            config.loss,
            config.precision,
            device,
            label_smoothing=config.label_smoothing,
        )
        results.append(RunResult(state, recorder.history, loss, accuracy))
    return results
