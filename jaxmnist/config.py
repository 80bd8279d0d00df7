"""The run configuration: one typed object whose defaults are the book's, its presets and checks.

This module imports no jax, so the command line's `--help` and flag errors stay instant.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from jaxmnist.errors import UsageError

TRAIN_SIZE = 60_000
# Bounds only to catch typos, far past any real run: a million epochs of MNIST is months of CPU
# time, and a hidden layer of 2**24 units needs 50 GB of weights alone.
MAX_EPOCHS = 1_000_000
MAX_SIZE = 2**24
MAX_SEED = 2**32 - 1  # jax.random.key takes a 32-bit seed without wrapping


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (not where its output goes)."""

    preset: str = "keras"
    epochs: int = 5
    batch_size: int = 128
    hidden: int = 512
    optimizer: str = "rmsprop"
    learning_rate: float = 1e-3
    # "constant": the book's; "warmup-linear" (the fast preset's): up from 0 (the first update's
    # rate) to the peak over the first 10% of all steps, then down towards 0, which it reaches
    # just after the last step.
    schedule: str = "constant"
    init: str = "glorot"
    # "logits": stable log-softmax cross-entropy; "probs": Keras's clipped loss on probabilities.
    loss: str = "logits"
    # Targets (1 - s) on the label and s / 10 on every class, as Keras's label_smoothing.
    label_smoothing: float = 0.0
    shuffle: bool = True
    seed: int = 0
    precision: str = "float32"
    # "scan": epochs run on the device as lax.scan dispatches; "batch": one jit call per batch.
    loop: str = "scan"
    # Steps per dispatch of the scan loop; 0 picks a whole epoch (or a live-bar size on a terminal).
    steps_per_dispatch: int = 0
    # Train on the first N images only (0: all 60000), for quick runs and benchmarks.
    train_samples: int = 0
    # Keras's validation_split: the last fraction of the training images, before any shuffle,
    # is held out and evaluated after every epoch (0: none, the chapter's run).
    validation_split: float = 0.0

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_NAIVE = dict(epochs=10, optimizer="sgd", loss="probs", shuffle=False)
PRESETS: dict[str, TrainConfig] = {
    # The book's 2nd edition (the chapter these notes follow), then its 3rd (Keras 3).
    # The Keras program: Glorot init, rmsprop, shuffled, 5 epochs of 128.
    "keras": TrainConfig(),
    # The hand-built program: uniform [0, 0.1) init, manual SGD, batches in order.
    "naive": TrainConfig(preset="naive", init="naive", **_NAIVE),
    # 3rd edition: the same Keras model compiled with "adam".
    "keras3": TrainConfig(preset="keras3", optimizer="adam"),
    # 3rd edition: NaiveDense with Keras 3's "uniform" initializer, [-0.05, 0.05).
    "naive3": TrainConfig(preset="naive3", init="uniform", **_NAIVE),
    # Not the book's: the same model family (one hidden ReLU layer on the 784 pixels) trained to
    # 98% test accuracy in the least time; docs/speedrun.md gives the measurement behind each value.
    "fast": TrainConfig(
        preset="fast",
        epochs=3,
        hidden=128,
        optimizer="adam",
        learning_rate=1e-2,
        schedule="warmup-linear",
        label_smoothing=0.1,
    ),
}

# The one table of named choices. model.INITIALIZERS and optim.OPTIMIZERS implement exactly these
# names (each checks so when imported); the command line offers them without importing jax.
CHOICES: dict[str, tuple[str, ...]] = {
    "preset": tuple(PRESETS),
    "optimizer": ("sgd", "optax-sgd", "rmsprop", "adam"),
    "init": ("glorot", "naive", "uniform"),
    "schedule": ("constant", "warmup-linear"),
    "loss": ("logits", "probs"),
    "precision": ("float32", "bfloat16"),
    "loop": ("scan", "batch"),
}

# Settings a resumed run may change without changing what the finished run computes.
# (A lower learning rate is how one continues from the last good checkpoint after a NaN.)
RESUMABLE_CHANGES = frozenset({"epochs", "steps_per_dispatch", "learning_rate"})

_RANGES = {  # name: (lowest, highest) for the integer settings
    "epochs": (1, MAX_EPOCHS),
    "batch_size": (1, MAX_SIZE),
    "hidden": (1, MAX_SIZE),
    "seed": (0, MAX_SEED),
    "train_samples": (0, TRAIN_SIZE),
    "steps_per_dispatch": (0, None),
}


def training_size(samples: int, validation_split: float) -> int:
    """How many of `samples` images stay for training: Keras's floor(N * (1 - split))."""
    return math.floor(samples * (1.0 - validation_split))


def validate(config: TrainConfig, train_size: int = TRAIN_SIZE) -> TrainConfig:
    """`config` if every setting can work on `train_size` training images, else UsageError.

    The error (exit status 2) names the first bad setting in backticks, as the argument is
    called here; the command line shows it as its flag.
    """
    for name, valid in CHOICES.items():
        value = getattr(config, name)
        if value not in valid:
            raise UsageError(f"`{name}` {value!r} is not one of: {', '.join(valid)}")
    for name, (lowest, highest) in _RANGES.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"`{name}` must be an integer, got {value!r}")
        if value < lowest or (highest is not None and value > highest):
            bounds = f"{lowest}..{highest}" if highest is not None else f">= {lowest}"
            raise UsageError(f"`{name}` must be in {bounds}, got {value}")
    samples = min(config.train_samples or train_size, train_size)
    fraction = config.validation_split
    number = isinstance(fraction, int | float) and not isinstance(fraction, bool)
    if not (number and 0 <= fraction < 1):
        raise UsageError(f"`validation_split` must be in [0, 1), got {fraction!r}")
    if fraction:
        kept = training_size(samples, fraction)
        if kept == 0 or kept == samples:
            raise UsageError(
                f"`validation_split` {fraction} of {samples} training images leaves "
                f"{kept} to train on and {samples - kept} to validate: choose a fraction "
                "that leaves some of each"
            )
        samples = kept
    if config.batch_size > samples:
        raise UsageError(
            f"`batch_size` {config.batch_size} is larger than the {samples} training images"
        )
    smoothing = config.label_smoothing
    number = isinstance(smoothing, int | float) and not isinstance(smoothing, bool)
    if not (number and 0 <= smoothing < 1):
        raise UsageError(f"`label_smoothing` must be in [0, 1), got {smoothing!r}")
    rate = config.learning_rate
    number = isinstance(rate, int | float) and not isinstance(rate, bool)
    if not (number and math.isfinite(rate) and rate > 0):
        raise UsageError(f"`learning_rate` must be a positive finite number, got {rate!r}")
    if not isinstance(config.shuffle, bool):
        raise UsageError(f"`shuffle` must be True or False, got {config.shuffle!r}")
    return config
