"""Runs in checkpoints: what one holds, whether a run may continue it, and loading it back."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from jaxmnist import checkpoint as ckpt
from jaxmnist.config import RESUMABLE_CHANGES, TrainConfig, validate
from jaxmnist.errors import CheckpointError, UsageError, one_line
from jaxmnist.model import chapter_model
from jaxmnist.optim import optimizer_for
from jaxmnist.step import TrainState, init_state

CHECKPOINT_FORMAT = 1


class Resumed(NamedTuple):
    state: TrainState
    data_key: jax.Array
    epoch: int  # epochs the restored state has trained
    history: list[dict]  # their records


def checkpoint_tree(state: TrainState, data_key: jax.Array) -> dict:
    """What a checkpoint holds besides its meta: the state and the data key, as host arrays."""
    return {"state": state, "data_key": np.asarray(jax.random.key_data(data_key))}


def checkpoint_meta(epoch: int, config: TrainConfig, fingerprint: str, history: list) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": config.to_dict(),
        "data_fingerprint": fingerprint,
        "history": history,
    }


def restore(
    directory: Path, config: TrainConfig, fingerprint: str, template: TrainState
) -> Resumed:
    """The latest checkpoint in `directory`, checked to continue `config` on the same data.

    `template` (a freshly initialised state) gives the structure, shapes and dtypes to expect.
    """
    if ckpt.latest_checkpoint(directory) is None:
        raise no_checkpoint(directory)
    arrays, meta = ckpt.load_checkpoint(directory)
    check_compatible(meta, config, fingerprint, directory)
    if meta["epoch"] < config.epochs:
        # A fresh run fails at once on an unwritable directory (it saves epoch 0 first); a
        # resumed one would only find out after training its next epoch. A finished run only
        # evaluates, which a read-only copy allows.
        try:
            ckpt.ensure_writable(directory)
        except CheckpointError as error:
            raise CheckpointError(f"{error} holding a copy of {directory}") from None
    dummy_key = jax.random.key(0)
    restored = ckpt.restore_tree(checkpoint_tree(template, dummy_key), arrays)
    data_key = jax.random.wrap_key_data(restored["data_key"])
    # Leaves come back as the template's kinds: jax arrays.
    return Resumed(restored["state"], data_key, meta["epoch"], list(meta.get("history", [])))


class Run(NamedTuple):
    config: TrainConfig
    state: TrainState
    epoch: int
    history: list[dict]
    meta: dict


def load_run(directory: str | Path) -> Run:
    """The latest checkpoint of the run in `directory`, rebuilt as the run's own config and
    state: what `report` and `predict` read. CheckpointError when there is none or it does not
    describe a run of this version."""
    directory = Path(directory)
    if ckpt.latest_checkpoint(directory) is None:
        raise CheckpointError(
            f"no checkpoint in {directory}: pass the `checkpoint_dir` of a run "
            "(train one with python -m jaxmnist.train)"
        )
    arrays, meta = ckpt.load_checkpoint(directory)
    try:
        config = validate(TrainConfig(**{**TrainConfig().to_dict(), **meta["config"]}))
    except (KeyError, TypeError, UsageError) as error:
        raise CheckpointError(
            f"checkpoint {directory} does not record a run this version can rebuild "
            f"({one_line(error)}): train it again"
        ) from None
    optimizer = optimizer_for(config)
    template = init_state(jax.random.key(0), chapter_model(config.hidden), config.init, optimizer)
    restored = ckpt.restore_tree(checkpoint_tree(template, jax.random.key(0)), arrays)
    return Run(config, restored["state"], meta["epoch"], list(meta.get("history", [])), meta)


def no_checkpoint(directory: Path | None) -> CheckpointError:
    return CheckpointError(
        f"`resume`: no checkpoint in {directory}: check `checkpoint_dir` (and `preset`, "
        "`seed`, which pick the default directory), or run without `resume`"
    )


def check_compatible(meta: dict, config: TrainConfig, fingerprint: str, where: Path) -> None:
    """CheckpointError unless `meta` records the same training as `config` on the same data."""
    missing = [key for key in ("config", "data_fingerprint") if key not in meta]
    if missing:
        raise CheckpointError(
            f"checkpoint {where} has no {' or '.join(missing)} in its meta.json, so this run "
            "cannot check it is the same training: start anew with another `checkpoint_dir`"
        )
    # A setting added after the checkpoint was written is missing there: it had the default.
    saved = {**TrainConfig().to_dict(), **meta["config"]}
    # A schedule spans all the epochs, so more of them would change the steps already taken.
    # (Which schedule is the checkpoint's: a different one is refused as any other setting.)
    fixed = {"epochs"} if saved.get("schedule", "constant") != "constant" else set()
    for name, value in config.to_dict().items():
        if (name in RESUMABLE_CHANGES and name not in fixed) or saved.get(name) == value:
            continue
        if name in fixed:
            raise CheckpointError(
                f"checkpoint {where} was made with `epochs` {saved.get(name)!r}, and its "
                f"`schedule` {saved.get('schedule')} spans them all: resume with `epochs` "
                f"{saved.get(name)!r}, or start anew with another `checkpoint_dir`"
            )
        raise CheckpointError(
            f"checkpoint {where} was made with `{name}` {saved.get(name)!r}, this run asks for "
            f"{value!r}: use the same setting to resume, or another `checkpoint_dir` to start anew"
        )
    if meta.get("data_fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {where} was trained on data with fingerprint "
            f"{str(meta.get('data_fingerprint'))[:12]}…, this data is {fingerprint[:12]}…: "
            "resume with the same data set"
        )
    if meta["epoch"] > config.epochs:
        raise CheckpointError(
            f"checkpoint {where} is at epoch {meta['epoch']}, past `epochs` {config.epochs}: "
            f"pass `epochs` {meta['epoch']} or more"
        )


def finished_epochs(directory: Path | None) -> int:
    """The epoch of the checkpoint in `directory`: 0 for none, or only the initial state."""
    if directory is None:
        return 0
    try:
        return ckpt.load_checkpoint(directory)[1]["epoch"]
    except CheckpointError:
        return 0


def kept_note(directory: Path | None) -> str:
    """ "; epoch N, the last finished, is kept in DIR" for a failed run's message, or ""."""
    epochs = finished_epochs(directory)
    return f"; epoch {epochs}, the last finished, is kept in {directory}" if epochs else ""


def resume_hint(directory: Path | None) -> str:
    """What a stopped run leaves to resume from, as the end of its one-line message."""
    if directory is None:
        return "no checkpoints were written (`no_checkpoint`)"
    epochs = finished_epochs(directory)
    if epochs:
        return f"epoch {epochs}, the last finished, is in {directory}: add `resume` to go on"
    return "no epoch finished yet"
