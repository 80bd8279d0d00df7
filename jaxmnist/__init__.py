"""jaxmnist: the MNIST example of 'Deep Learning with Python', chapter 2, in functional JAX.

    from jaxmnist import load_mnist, PRESETS, train_and_evaluate
    data = load_mnist()
    result = train_and_evaluate(PRESETS["keras"], data)
    print(result.test_accuracy)

The names below load their module on first use, so `python -m jaxmnist.train --help` and the
data tools start without importing jax.
"""

import importlib

_EXPORTS = {
    "load_mnist": "jaxmnist.data",
    "preprocess": "jaxmnist.data",
    "ModelSpec": "jaxmnist.model",
    "chapter_model": "jaxmnist.model",
    "dense": "jaxmnist.model",
    "sequential": "jaxmnist.model",
    "init_params": "jaxmnist.model",
    "predict": "jaxmnist.model",
    "sparse_categorical_crossentropy": "jaxmnist.losses",
    "softmax_cross_entropy": "jaxmnist.losses",
    "accuracy": "jaxmnist.losses",
    "Optimizer": "jaxmnist.optim",
    "make_optimizer": "jaxmnist.optim",
    "batches": "jaxmnist.batches",
    "TrainConfig": "jaxmnist.config",
    "PRESETS": "jaxmnist.config",
    "TrainState": "jaxmnist.engine",
    "make_train_step": "jaxmnist.engine",
    "fit": "jaxmnist.engine",
    "evaluate": "jaxmnist.engine",
    "train_and_evaluate": "jaxmnist.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxmnist' has no attribute {name!r}")
