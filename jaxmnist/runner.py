"""A whole run: initial or resumed state, `fit` with a checkpoint per epoch, then the test set.

Randomness: one root key from the seed, split once into an init key and a data key; epoch e's
shuffle comes from fold_in(data key, e). The data key is saved with each checkpoint, so a resumed
run reshuffles exactly as the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from jaxmnist import checkpoint as ckpt
from jaxmnist.config import RESUMABLE_CHANGES, TrainConfig
from jaxmnist.data import fingerprint as data_fingerprint
from jaxmnist.engine import Callback, EpochResult, TrainState, evaluate, fit, init_state
from jaxmnist.errors import CheckpointError, TrainingDiverged
from jaxmnist.model import chapter_model
from jaxmnist.optim import make_optimizer

CHECKPOINT_FORMAT = 1


@dataclass
class RunResult:
    state: TrainState
    history: list[dict] = field(default_factory=list)  # one dict per epoch, resumed ones included
    test_loss: float = float("nan")
    test_accuracy: float = float("nan")


def _epoch_record(result: EpochResult) -> dict:
    return {
        "epoch": result.epoch,
        "loss": result.loss,
        "accuracy": result.accuracy,
        "seconds": result.seconds,
        "batch_losses": result.batch_losses,
    }


class _CheckpointSaver(Callback):
    """Saves the state after every epoch: the state a resumed run restarts the next epoch from."""

    def __init__(self, directory: Path, config: TrainConfig, data_key, fingerprint, history):
        self.directory, self.config, self.fingerprint = directory, config, fingerprint
        self.data_key = np.asarray(jax.random.key_data(data_key))
        self.history = history

    def save(self, state: TrainState, epoch: int) -> None:
        arrays = ckpt.flatten_tree({"state": state, "data_key": self.data_key})
        meta = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "config": self.config.to_dict(),
            "data_fingerprint": self.fingerprint,
            "history": self.history,
        }
        ckpt.save_checkpoint(self.directory, arrays, meta)

    def on_epoch_end(self, result: EpochResult, state: TrainState) -> None:
        self.history.append(_epoch_record(result))
        self.save(state, result.epoch)


def _check_compatible(meta: dict, config: TrainConfig, fingerprint: str, where: Path) -> None:
    missing = [key for key in ("config", "data_fingerprint") if key not in meta]
    if missing:
        raise CheckpointError(
            f"checkpoint {where} has no {' or '.join(missing)} in its meta.json, so this run "
            "cannot check it is the same training: start anew with another --checkpoint-dir"
        )
    saved = meta["config"]
    for name, value in config.to_dict().items():
        if name in RESUMABLE_CHANGES or saved.get(name) == value:
            continue
        flag = "--" + name.replace("_", "-")
        raise CheckpointError(
            f"checkpoint {where} was made with {flag} {saved.get(name)!r}, this run asks for "
            f"{value!r}: use the same setting to resume, or another --checkpoint-dir to start anew"
        )
    if meta.get("data_fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {where} was trained on data with fingerprint "
            f"{str(meta.get('data_fingerprint'))[:12]}…, this data is {fingerprint[:12]}…: "
            "resume with the same data set"
        )
    if meta["epoch"] > config.epochs:
        raise CheckpointError(
            f"checkpoint {where} is at epoch {meta['epoch']}, past --epochs {config.epochs}: "
            f"pass --epochs {meta['epoch']} or more"
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
    steps_per_dispatch: int | None = None,
    on_resume: Callable[[int], None] = lambda epoch: None,
) -> RunResult:
    """Trains `config` on data[0] (from a checkpoint when `resume`), then evaluates on data[1]."""
    (x_train, y_train), (x_test, y_test) = data
    if fingerprint is None and checkpoint_dir is not None:
        fingerprint = data_fingerprint(x_train, y_train, x_test, y_test)
    if config.train_samples:
        x_train, y_train = x_train[: config.train_samples], y_train[: config.train_samples]
    spec = chapter_model(config.hidden)
    optimizer = make_optimizer(config.optimizer, config.learning_rate)
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    # Allocation is asynchronous: wait for it here, so running out of memory raises now, as an
    # error, rather than later inside a checkpoint save that reads a buffer that never came to be.
    state = jax.block_until_ready(init_state(init_key, spec, config.init, optimizer))
    start_epoch, history = 0, []

    if resume:
        directory = Path(checkpoint_dir) if checkpoint_dir else None
        if directory is None or ckpt.latest_checkpoint(directory) is None:
            raise CheckpointError(
                f"--resume: no checkpoint in {directory}: check --checkpoint-dir (and --preset, "
                "--seed, which pick the default directory), or run without --resume"
            )
        arrays, meta = ckpt.load_checkpoint(directory)
        _check_compatible(meta, config, fingerprint, directory)
        if meta["epoch"] < config.epochs:
            # A fresh run fails at once on an unwritable directory (it saves epoch 0 first); a
            # resumed one would only find out after training its next epoch. A finished run only
            # evaluates, which a read-only copy allows.
            try:
                ckpt.ensure_writable(directory)
            except CheckpointError as error:
                raise CheckpointError(f"{error} holding a copy of {directory}") from None
        template = {"state": state, "data_key": np.asarray(jax.random.key_data(data_key))}
        restored = ckpt.restore_tree(template, arrays)
        state = restored["state"]  # leaves come back as the template's kinds: jax arrays
        data_key = jax.random.wrap_key_data(restored["data_key"])
        start_epoch, history = meta["epoch"], list(meta.get("history", []))
        on_resume(start_epoch)

    saver = None
    if checkpoint_dir is not None:
        saver = _CheckpointSaver(Path(checkpoint_dir), config, data_key, fingerprint, history)
        if not resume:
            saver.save(state, 0)  # so that an interruption in epoch 1 is resumable too
    all_callbacks = [*callbacks, saver or _HistoryRecorder(history)]

    try:
        state, _ = fit(
            state,
            x_train,
            y_train,
            config=config,
            spec=spec,
            optimizer=optimizer,
            data_key=data_key,
            device=device,
            start_epoch=start_epoch,
            steps_per_dispatch=steps_per_dispatch,
            callbacks=all_callbacks,
            should_stop=should_stop,
        )
    except TrainingDiverged as error:
        if saver is None:
            raise
        raise TrainingDiverged(
            f"{error}, then add --resume to continue from the last good checkpoint "
            f"(epoch {len(history)}) in {checkpoint_dir}"
        ) from None
    test_loss, test_accuracy = evaluate(
        state.params, x_test, y_test, spec, config.loss, config.precision, device
    )
    return RunResult(state, history, test_loss, test_accuracy)


class _HistoryRecorder(Callback):
    def __init__(self, history: list):
        self.history = history

    def on_epoch_end(self, result: EpochResult, state: TrainState) -> None:
        self.history.append(_epoch_record(result))
