"""The run configuration: one typed object whose defaults are the book's, and the two presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from jaxmnist.errors import UsageError
from jaxmnist.model import INITIALIZERS
from jaxmnist.optim import OPTIMIZERS

TRAIN_SIZE = 60_000
LOSSES = ("logits", "probs")
PRECISIONS = ("float32", "bfloat16")
LOOPS = ("scan", "batch")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (not where its output goes)."""

    preset: str = "keras"
    epochs: int = 5
    batch_size: int = 128
    hidden: int = 512
    optimizer: str = "rmsprop"
    learning_rate: float = 1e-3
    init: str = "glorot"
    # "logits": stable log-softmax cross-entropy; "probs": Keras's clipped loss on probabilities.
    loss: str = "logits"
    shuffle: bool = True
    seed: int = 0
    precision: str = "float32"
    # "scan": epochs run on the device as lax.scan dispatches; "batch": one jit call per batch.
    loop: str = "scan"
    # Steps per dispatch of the scan loop; 0 picks a whole epoch (or a live-bar size on a terminal).
    steps_per_dispatch: int = 0
    # Train on the first N images only (0: all 60000), for quick runs and benchmarks.
    train_samples: int = 0

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, TrainConfig] = {
    # The chapter's Keras program: Glorot init, rmsprop, shuffled, 5 epochs of 128.
    "keras": TrainConfig(),
    # The chapter's hand-built program: uniform [0, 0.1) init, manual SGD, batches in order.
    "naive": TrainConfig(
        preset="naive", epochs=10, optimizer="sgd", init="naive", loss="probs", shuffle=False
    ),
}

# Settings a resumed run may change without changing what the finished run computes.
# (A lower learning rate is how one continues from the last good checkpoint after a NaN.)
RESUMABLE_CHANGES = frozenset({"epochs", "steps_per_dispatch", "learning_rate"})


def validate(config: TrainConfig) -> TrainConfig:
    """Raises UsageError (one line, exit 2) for the first setting that cannot work."""
    choices = {
        "preset": tuple(PRESETS),
        "optimizer": tuple(OPTIMIZERS),
        "init": tuple(INITIALIZERS),
        "loss": LOSSES,
        "precision": PRECISIONS,
        "loop": LOOPS,
    }
    for name, valid in choices.items():
        value = getattr(config, name)
        if value not in valid:
            raise UsageError(f"--{name} {value!r} is not one of: {', '.join(valid)}")
    positive = {"epochs": config.epochs, "batch_size": config.batch_size, "hidden": config.hidden}
    for name, value in positive.items():
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if not 0 <= config.train_samples <= TRAIN_SIZE:
        raise UsageError(f"--train-samples must be in 0..{TRAIN_SIZE}, got {config.train_samples}")
    samples = config.train_samples or TRAIN_SIZE
    if config.batch_size > samples:
        raise UsageError(
            f"--batch-size {config.batch_size} is larger than the {samples} training images"
        )
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise UsageError(
            f"--learning-rate must be a positive finite number, got {config.learning_rate}"
        )
    if not 0 <= config.seed < 2**32:
        raise UsageError(f"--seed must be in 0..{2**32 - 1}, got {config.seed}")
    if config.steps_per_dispatch < 0:
        raise UsageError("--steps-per-dispatch must be >= 0 (0 picks automatically)")
    return config
