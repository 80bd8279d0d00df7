"""Optimizers behind one interface, so the training step never branches on which one it has.

`sgd` is the chapter's hand-written `update_weights` (w -= lr * g for each weight); the others are
optax transformations with Keras 3's default settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

OptState = Any


class Optimizer(NamedTuple):
    """init(params) -> state; apply(params, grads, state) -> (params, state). Both pure."""

    init: Callable[[Any], OptState]
    apply: Callable[[Any, Any, OptState], tuple[Any, OptState]]


def manual_sgd(learning_rate: float) -> Optimizer:
    """Learning rule (stochastic gradient descent): p - lr * g over the pytree, no state."""

    def init(params):
        del params
        return ()

    def apply(params, grads, state):
        return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), state

    return Optimizer(init, apply)


def from_optax(transformation: optax.GradientTransformation) -> Optimizer:
    """Wraps any optax transformation in the same interface."""

    def apply(params, grads, state):
        updates, state = transformation.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return Optimizer(transformation.init, apply)


def keras_rmsprop(learning_rate: float = 1e-3) -> optax.GradientTransformation:
    """Keras 3's RMSprop: v = 0.9 v + 0.1 g^2 from v = 0; p -= lr * g / sqrt(v + 1e-7)."""
    return optax.rmsprop(learning_rate, decay=0.9, eps=1e-7, initial_scale=0.0, eps_in_sqrt=True)


def keras_adam(learning_rate: float = 1e-3) -> optax.GradientTransformation:
    """Adam with Keras's epsilon (1e-7); betas 0.9 / 0.999 as both libraries default."""
    return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-7)


OPTIMIZERS: dict[str, Callable[[float], Optimizer]] = {
    "sgd": manual_sgd,
    "optax-sgd": lambda lr: from_optax(optax.sgd(lr)),
    "rmsprop": lambda lr: from_optax(keras_rmsprop(lr)),
    "adam": lambda lr: from_optax(keras_adam(lr)),
}


def make_optimizer(name: str, learning_rate: float) -> Optimizer:
    """The optimizer called `name` (one of OPTIMIZERS) at `learning_rate`."""
    return OPTIMIZERS[name](learning_rate)
