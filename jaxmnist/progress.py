"""What a run prints while it trains: Keras's progress bar, or the chapter's own loss lines.

On a terminal the Keras bar is redrawn in place after every dispatch; in a log (not a TTY) each
epoch ends in one finished line, the same line Keras prints:
    469/469 ━━━━━━━━━━━━━━━━━━━━ 2s 4ms/step - accuracy: 0.9236 - loss: 0.2626
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

import numpy as np

from jaxmnist.callbacks import Callback, EpochResult
from jaxmnist.config import TrainConfig

if TYPE_CHECKING:
    from jaxmnist.step import TrainState

BAR_WIDTH = 20
# The hand-built programs' epoch line, per edition (the rest print Keras's bar).
CHAPTER_HEADERS = {"naive": "epoch {}", "naive3": "Epoch {}"}


def format_bar(
    done: int,
    steps: int,
    seconds: float,
    accuracy: float,
    loss: float,
    validation: tuple[float, float] | None = None,
) -> str:
    """One Keras 3 progress line; `validation` (val_loss, val_accuracy) ends an epoch's."""
    filled = BAR_WIDTH * done // steps
    bar = "━" * filled + " " * (BAR_WIDTH - filled)
    per_step = seconds / max(done, 1)
    rate = f"{per_step * 1e3:.0f}ms/step" if per_step >= 1e-3 else f"{per_step * 1e6:.0f}us/step"
    width = len(str(steps))
    line = (
        f"{done:>{width}}/{steps} {bar} {seconds:.0f}s {rate} "
        f"- accuracy: {accuracy:.4f} - loss: {loss:.4f}"
    )
    if validation is not None:
        val_loss, val_accuracy = validation
        line += f" - val_accuracy: {val_accuracy:.4f} - val_loss: {val_loss:.4f}"
    return line


class KerasProgress(Callback):
    """`Epoch 1/5` then the bar, live on a terminal and one finished line per epoch in a log."""

    def __init__(self, epochs: int, stream: TextIO | None = None, live: bool | None = None):
        self.epochs = epochs
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.start = 0.0
        self.steps = 0

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        print(f"Epoch {epoch}/{self.epochs}", file=self.stream, flush=True)
        self.start, self.steps = time.perf_counter(), steps

    def on_batches(self, epoch, first_step, batch_losses, done, loss, accuracy) -> None:
        if self.live and done < self.steps:
            line = format_bar(done, self.steps, time.perf_counter() - self.start, accuracy, loss)
            print("\r" + line, end="", file=self.stream, flush=True)

    def on_epoch_end(self, result: EpochResult, state: TrainState) -> None:
        validation = None
        if result.val_loss is not None:
            validation = (result.val_loss, result.val_accuracy)
        line = format_bar(
            self.steps, self.steps, result.seconds, result.accuracy, result.loss, validation
        )
        print(("\r" if self.live else "") + line, file=self.stream, flush=True)


class ChapterLog(Callback):
    """The chapter's printout: `epoch 0` (`header`, None for none), then `loss at batch 0: 4.74`
    every `every` batches. The 2nd edition prints `epoch N`, the 3rd `Epoch N`, both from 0."""

    def __init__(
        self, every: int = 100, stream: TextIO | None = None, header: str | None = "epoch {}"
    ):
        self.every, self.header = every, header
        self.stream = stream or sys.stdout

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        if self.header:
            print(self.header.format(epoch - 1), file=self.stream, flush=True)

    def on_batches(self, epoch, first_step, batch_losses: np.ndarray, done, loss, accuracy):
        if not self.every:  # 0: the epoch headers only
            return
        for offset, value in enumerate(batch_losses):
            if (first_step + offset) % self.every == 0:
                print(f"loss at batch {first_step + offset}: {value:.2f}", file=self.stream)
        self.stream.flush()


def run_output(
    config: TrainConfig, *, live: bool, log_every: int | None = None, stream: TextIO | None = None
) -> list[Callback]:
    """The callbacks that print a run as the book does: the naive presets' `loss at batch N`
    lines (every 100 batches unless `log_every` says otherwise), Keras's bar for the others."""
    if config.preset in CHAPTER_HEADERS:
        every = 100 if log_every is None else log_every
        return [ChapterLog(every, stream, header=CHAPTER_HEADERS[config.preset])]
    printers: list[Callback] = [KerasProgress(config.epochs, stream, live)]
    if log_every:
        printers.append(ChapterLog(log_every, stream, header=None))
    return printers


def seeds_line(results: list[EpochResult], epochs: int) -> str:
    """One epoch of several seeds: the mean, spread and range of each figure over the seeds."""
    parts = [f"Epoch {results[0].epoch}/{epochs} - {len(results)} seeds"]
    seconds = sum(result.seconds for result in results)
    parts.append(f"{seconds:.0f}s")
    names = ["accuracy", "loss"]
    if results[0].val_loss is not None:
        names += ["val_accuracy", "val_loss"]
    for name in names:
        values = np.array([getattr(result, name) for result in results])
        parts.append(f"{name}: {spread(values)}")
    return " - ".join(parts)


def spread(values) -> str:
    """mean ± standard deviation (min-max) of several seeds' figure."""
    values = np.asarray(values, np.float64)
    return f"{values.mean():.4f} ± {values.std():.4f} ({values.min():.4f}-{values.max():.4f})"
