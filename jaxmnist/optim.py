"""Optimizers behind one interface, so the training step never branches on which one it has.

`sgd` is the chapter's hand-written `update_weights` (w -= lr * g for each weight); the others are
optax transformations with Keras 3's update rules and default settings. Each takes a fixed
learning rate or a schedule (step -> rate, counted from 0 for the first update).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxmnist.config import CHOICES, TrainConfig

OptState = Any
LearningRate = float | optax.Schedule
# The warmup-linear schedule's share of steps spent rising to the peak rate. Measured for the fast
# preset on held-out training images: 5% and 20% did no better than 10% (docs/speedrun.md).
WARMUP_FRACTION = 0.1


class Optimizer(NamedTuple):
    """init(params) -> state; apply(params, grads, state) -> (params, state). Both pure."""

    init: Callable[[Any], OptState]
    apply: Callable[[Any, Any, OptState], tuple[Any, OptState]]


def manual_sgd(learning_rate: LearningRate) -> Optimizer:
    """Learning rule (stochastic gradient descent): p - lr * g over the pytree, no state.

    A schedule needs a step count, which the chapter's rule does not keep: optax's sgd does.
    """
    if callable(learning_rate):
        return from_optax(optax.sgd(learning_rate))

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


def keras_rmsprop(learning_rate: LearningRate = 1e-3) -> optax.GradientTransformation:
    """Keras 3's RMSprop: v = 0.9 v + 0.1 g^2 from v = 0; p -= lr * g / sqrt(v + 1e-7)."""
    return optax.rmsprop(learning_rate, decay=0.9, eps=1e-7, initial_scale=0.0, eps_in_sqrt=True)


class KerasAdamState(NamedTuple):
    count: jax.Array  # steps taken, int32
    mu: Any  # first moment, like params
    nu: Any  # second moment, like params


def keras_adam(
    learning_rate: LearningRate = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7
) -> optax.GradientTransformation:
    """Keras 3's Adam, update for update: p -= alpha * m / (sqrt(v) + eps), alpha = lr *
    sqrt(1 - b2^t) / (1 - b1^t).

    optax.adam divides the bias-corrected m_hat by sqrt(v_hat) + eps instead; the two differ
    wherever sqrt(v) is near eps (small or vanishing gradients), so optax.adam is not Keras's.
    """

    def init(params):
        # Two separate trees: the step donates its state, and one buffer cannot be donated twice.
        mu, nu = (jax.tree.map(jnp.zeros_like, params) for _ in range(2))
        return KerasAdamState(jnp.zeros([], jnp.int32), mu, nu)

    def update(grads, state, params=None):
        del params
        rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
        count = state.count + 1
        step = count.astype(jnp.float32)
        alpha = rate * jnp.sqrt(1 - b2**step) / (1 - b1**step)
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), state.mu, grads)
        nu = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - b2), state.nu, grads)
        updates = jax.tree.map(lambda m, v: -(m * alpha) / (jnp.sqrt(v) + eps), mu, nu)
        return updates, KerasAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


OPTIMIZERS: dict[str, Callable[[LearningRate], Optimizer]] = {
    "sgd": manual_sgd,
    "optax-sgd": lambda lr: from_optax(optax.sgd(lr)),
    "rmsprop": lambda lr: from_optax(keras_rmsprop(lr)),
    "adam": lambda lr: from_optax(keras_adam(lr)),
}
assert tuple(OPTIMIZERS) == CHOICES["optimizer"], "config.CHOICES['optimizer'] names these"


def warmup_linear(peak: float, total_steps: int) -> optax.Schedule:
    """The rate of update k (from 0): rising linearly from 0 (the first update's) to `peak` over
    the first WARMUP_FRACTION of `total_steps`, then falling linearly towards 0, which it reaches
    at k = total_steps, just after the last update (that one runs at peak / decay steps)."""
    warmup = max(1, round(total_steps * WARMUP_FRACTION))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, warmup),
            optax.linear_schedule(peak, 0.0, max(1, total_steps - warmup)),
        ],
        [warmup],
    )


SCHEDULES: dict[str, Callable[[float, int], LearningRate]] = {
    "constant": lambda rate, total_steps: rate,
    "warmup-linear": warmup_linear,
}
assert tuple(SCHEDULES) == CHOICES["schedule"], "config.CHOICES['schedule'] names these"


def make_optimizer(
    name: str, learning_rate: float, schedule: str = "constant", total_steps: int = 1
) -> Optimizer:
    """The optimizer called `name` (one of OPTIMIZERS) at `learning_rate`, held or varied over
    `total_steps` updates as `schedule` (one of SCHEDULES) says."""
    return OPTIMIZERS[name](SCHEDULES[schedule](learning_rate, total_steps))


def optimizer_for(config: TrainConfig, steps_per_epoch: int = 1) -> Optimizer:
    """The optimizer `config` names, its schedule spanning all its epochs. (The state's structure
    does not depend on `steps_per_epoch`: initial states may be built with the default.)"""
    return make_optimizer(
        config.optimizer,
        config.learning_rate,
        config.schedule,
        config.epochs * steps_per_epoch,
    )
