"""A whole run: initial or resumed state, `fit` with a checkpoint per epoch, then the test set.

Randomness: one root key from the seed, split once into an init key and a data key; epoch e's
shuffle comes from fold_in(data key, e). The data key is saved with each checkpoint, so a resumed
run reshuffles exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from jaxmnist import checkpoint as ckpt
from jaxmnist import executables
from jaxmnist import resume as resuming
from jaxmnist.agreement import agreed
from jaxmnist.callbacks import Callback, EpochResult, epoch_record
from jaxmnist.cluster import SINGLE, Cluster
from jaxmnist.config import TrainConfig, validate
from jaxmnist.data.arrays import fingerprint as data_fingerprint
from jaxmnist.engine import fit
from jaxmnist.errors import TrainingDiverged
from jaxmnist.model import chapter_model
from jaxmnist.optim import optimizer_for
from jaxmnist.step import TrainState, evaluate, fetch, init_state


@dataclass
class RunResult:
    state: TrainState
    history: list[dict] = field(default_factory=list)  # one dict per epoch, resumed ones included
    test_loss: float = float("nan")
    test_accuracy: float = float("nan")


class _History(Callback):
    """Records every finished epoch and, with a checkpoint directory, saves the state after it:
    the state a resumed run restarts the next epoch from. Of several processes, process 0 saves
    and all of them learn whether it could."""

    def __init__(self, history: list, directory: Path | None, config, data_key, fingerprint):
        self.history, self.directory = history, directory
        self.config, self.data_key, self.fingerprint = config, data_key, fingerprint
        self.devices, self.cluster = 1, SINGLE

    def save(self, state: TrainState, epoch: int) -> None:
        if self.directory is not None:
            agreed(self.cluster, lambda: self.cluster.leader and self._write(state, epoch))

    def _write(self, state: TrainState, epoch: int) -> None:
        arrays = ckpt.flatten_tree(resuming.checkpoint_tree(fetch(state), self.data_key))
        meta = resuming.checkpoint_meta(epoch, self.config, self.fingerprint, self.history)
        meta.update(devices=self.devices, processes=self.cluster.count)
        ckpt.save_checkpoint(self.directory, arrays, meta)

    def on_epoch_end(self, result: EpochResult, state: TrainState) -> None:
        self.history.append(epoch_record(result))
        self.save(state, result.epoch)


def training_data(config: TrainConfig, data, directory: Path | None, fingerprint: str | None):
    """(train, test, fingerprint): `data` checked against `config`, its training arrays cut to
    `train_samples`, and its fingerprint, computed when checkpoints need one and none was given."""
    (x_train, y_train), (x_test, y_test) = data
    validate(config, train_size=len(x_train))
    if fingerprint is None and directory is not None:
        fingerprint = data_fingerprint(x_train, y_train, x_test, y_test)
    if config.train_samples:
        x_train, y_train = x_train[: config.train_samples], y_train[: config.train_samples]
    return (x_train, y_train), (x_test, y_test), fingerprint


def _initial(seed, spec, init, optimizer) -> tuple[TrainState, jax.Array]:
    """The initial state and the data key from the root key of `seed` (see the module's doc)."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    return init_state(init_key, spec, init, optimizer), data_key


def start_run(
    config: TrainConfig,
    directory: Path | None,
    resume: bool,
    fingerprint: str | None,
    on_resume: Callable[[int], None] = lambda epoch: None,
    cluster: Cluster = SINGLE,
    devices: int = 1,
) -> tuple[TrainState, _History]:
    """The state a run trains from (new from `config.seed`, or its latest checkpoint when
    `resume`) and the recorder that keeps its history and saves it after every epoch."""
    spec = chapter_model(config.hidden)
    initial = functools.partial(
        _initial, spec=spec, init=config.init, optimizer=optimizer_for(config)
    )
    # One compiled program rather than an op at a time: 0.1 s less at start-up, the same bits.
    # Allocation is asynchronous: wait for it here, so running out of memory raises now, as an
    # error, rather than later inside a checkpoint save that reads a buffer that never came to be.
    state, data_key = jax.block_until_ready(executables.jit(initial)(np.uint32(config.seed)))
    start_epoch, history = 0, []
    if resume:

        def restored():
            if directory is None:
                raise resuming.no_checkpoint(directory)
            return resuming.restore(directory, config, fingerprint, state)

        state, data_key, start_epoch, history = agreed(cluster, restored)
        on_resume(start_epoch)
    recorder = _History(history, directory, config, data_key, fingerprint)
    recorder.cluster, recorder.devices = cluster, devices
    if not resume:
        recorder.save(state, 0)  # so that an interruption in epoch 1 is resumable too
    return state, recorder


def diverged(error: TrainingDiverged, directory: Path | None, epochs: int) -> TrainingDiverged:
    """A NaN's message, with where to resume from when there are checkpoints."""
    if directory is None:
        return error
    return TrainingDiverged(
        f"{error}, then add `resume` to continue from the last good checkpoint "
        f"(epoch {epochs}) in {directory}"
    )


def train_and_evaluate(
    config: TrainConfig,
    data: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    *,
    fingerprint: str | None = None,  # of `data`; computed when checkpoints need it
    device: jax.Device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    should_stop: Callable[[], bool] = lambda: False,
    on_resume: Callable[[int], None] = lambda epoch: None,
    mesh=None,
    cluster: Cluster = SINGLE,
) -> RunResult:
    """Trains `config` on data[0] (from a checkpoint when `resume`), then evaluates on data[1].

    With a `mesh` (see `devices.data_mesh`), training and the evaluation run data-parallel on
    its devices; the checkpoints record how many, and resume on any count. With several
    processes (`cluster`, from `cluster.start`), each calls this with the same arguments; only
    process 0 writes checkpoints, and a problem any of them meets at start-up or in a save is
    raised in all.
    """
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    (x_train, y_train), (x_test, y_test), fingerprint = training_data(
        config, data, directory, fingerprint
    )
    spec = chapter_model(config.hidden)
    devices = 1 if mesh is None else mesh.size
    state, recorder = start_run(config, directory, resume, fingerprint, on_resume, cluster, devices)
    data_key, history = recorder.data_key, recorder.history
    try:
        state, _ = fit(
            state,
            x_train,
            y_train,
            config=config,
            data_key=data_key,
            device=device,
            start_epoch=len(history),
            callbacks=[*callbacks, recorder],
            should_stop=should_stop,
            mesh=mesh,
        )
    except TrainingDiverged as error:
        raise diverged(error, directory, len(history)) from None
    test_loss, test_accuracy = evaluate(
        state.params,
        x_test,
        y_test,
        spec,
        config.loss,
        config.precision,
        device,
        mesh,
        label_smoothing=config.label_smoothing,
    )
    return RunResult(state, history, test_loss, test_accuracy)
