"""jaxmnist: the MNIST example of 'Deep Learning with Python', chapter 2, in functional JAX.

    from jaxmnist import load_mnist, PRESETS, train_and_evaluate
    data = load_mnist()
    result = train_and_evaluate(PRESETS["keras"], data)
    print(result.test_accuracy)

The names below load their module on first use, so `python -m jaxmnist.train --help` and the
data tools start without importing jax; editors and type checkers see them through the imports
under TYPE_CHECKING.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jaxmnist.batches import (
        batches,
    )
    from jaxmnist.callbacks import Callback, EpochResult
    from jaxmnist.checkpoint import (
        flatten_tree,
        latest_checkpoint,
        load_checkpoint,
        restore_tree,
        save_checkpoint,
    )
    from jaxmnist.config import (
        PRESETS,
        TrainConfig,
        validate,
    )
    from jaxmnist.data import (
        load_mnist,
        preprocess,
    )
    from jaxmnist.engine import (
        fit,
    )
    from jaxmnist.losses import (
        accuracy,
        softmax_cross_entropy,
        sparse_categorical_crossentropy,
    )
    from jaxmnist.model import (
        ModelSpec,
        chapter_model,
        dense,
        init_params,
        sequential,
    )
    from jaxmnist.optim import (
        Optimizer,
        make_optimizer,
    )
    from jaxmnist.runner import (
        RunResult,
        train_and_evaluate,
    )
    from jaxmnist.step import (
        TrainState,
        evaluate,
        init_state,
        make_train_step,
    )

_EXPORTS = {
    "batches": "jaxmnist.batches",
    "flatten_tree": "jaxmnist.checkpoint",
    "latest_checkpoint": "jaxmnist.checkpoint",
    "load_checkpoint": "jaxmnist.checkpoint",
    "restore_tree": "jaxmnist.checkpoint",
    "save_checkpoint": "jaxmnist.checkpoint",
    "PRESETS": "jaxmnist.config",
    "TrainConfig": "jaxmnist.config",
    "validate": "jaxmnist.config",
    "load_mnist": "jaxmnist.data",
    "preprocess": "jaxmnist.data",
    "Callback": "jaxmnist.callbacks",
    "EpochResult": "jaxmnist.callbacks",
    "fit": "jaxmnist.engine",
    "accuracy": "jaxmnist.losses",
    "softmax_cross_entropy": "jaxmnist.losses",
    "sparse_categorical_crossentropy": "jaxmnist.losses",
    "ModelSpec": "jaxmnist.model",
    "chapter_model": "jaxmnist.model",
    "dense": "jaxmnist.model",
    "init_params": "jaxmnist.model",
    "sequential": "jaxmnist.model",
    "Optimizer": "jaxmnist.optim",
    "make_optimizer": "jaxmnist.optim",
    "RunResult": "jaxmnist.runner",
    "train_and_evaluate": "jaxmnist.runner",
    "TrainState": "jaxmnist.step",
    "evaluate": "jaxmnist.step",
    "init_state": "jaxmnist.step",
    "make_train_step": "jaxmnist.step",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxmnist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
