"""What `fit` reports after each dispatch and epoch, and the hooks it reports through.

Kept free of jax so the command line's writers (progress, metrics) load without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from jaxmnist.step import TrainState


@dataclass
class EpochResult:
    """One epoch as Keras reports it: sample-weighted means over the epoch's batches."""

    epoch: int  # 1-based, as printed
    loss: float
    accuracy: float
    seconds: float
    batch_losses: list[float] = field(repr=False)
    # On the held-out images (`validation_split`), after the epoch; None without them.
    val_loss: float | None = None
    val_accuracy: float | None = None


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


def epoch_record(result: EpochResult) -> dict:
    """An epoch as the history, the checkpoints and `--metrics-out` keep it (Keras's History
    names; `val_loss` and `val_accuracy` only when images were held out)."""
    record = {
        "epoch": result.epoch,
        "loss": result.loss,
        "accuracy": result.accuracy,
        "seconds": result.seconds,
        "batch_losses": result.batch_losses,
    }
    if result.val_loss is not None:
        record.update(val_loss=result.val_loss, val_accuracy=result.val_accuracy)
    return record
