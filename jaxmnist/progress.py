"""What a run prints: Keras's progress bar, or the chapter's own loss lines.

On a terminal the Keras bar is redrawn in place after every dispatch; in a log (not a TTY) each
epoch ends in one finished line, the same line Keras prints:
    469/469 ━━━━━━━━━━━━━━━━━━━━ 2s 4ms/step - accuracy: 0.9236 - loss: 0.2626
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

from jaxmnist.engine import Callback, EpochResult, TrainState

BAR_WIDTH = 20


def format_bar(done: int, steps: int, seconds: float, accuracy: float, loss: float) -> str:
    """One Keras 3 progress line."""
    filled = BAR_WIDTH * done // steps
    bar = "━" * filled + " " * (BAR_WIDTH - filled)
    per_step = seconds / max(done, 1)
    rate = f"{per_step * 1e3:.0f}ms/step" if per_step >= 1e-3 else f"{per_step * 1e6:.0f}us/step"
    width = len(str(steps))
    return (
        f"{done:>{width}}/{steps} {bar} {seconds:.0f}s {rate} "
        f"- accuracy: {accuracy:.4f} - loss: {loss:.4f}"
    )


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
        line = format_bar(self.steps, self.steps, result.seconds, result.accuracy, result.loss)
        print(("\r" if self.live else "") + line, file=self.stream, flush=True)


class ChapterLog(Callback):
    """The chapter's printout: `epoch 0`, then `loss at batch 0: 4.74` every `every` batches."""

    def __init__(self, every: int = 100, stream: TextIO | None = None, header: bool = True):
        self.every, self.header = every, header
        self.stream = stream or sys.stdout

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        if self.header:
            print(f"epoch {epoch - 1}", file=self.stream, flush=True)  # the chapter counts from 0

    def on_batches(self, epoch, first_step, batch_losses: np.ndarray, done, loss, accuracy):
        if not self.every:  # 0: the epoch headers only
            return
        for offset, value in enumerate(batch_losses):
            if (first_step + offset) % self.every == 0:
                print(f"loss at batch {first_step + offset}: {value:.2f}", file=self.stream)
        self.stream.flush()
