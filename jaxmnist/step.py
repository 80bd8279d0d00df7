"""The jit-compiled pieces of training: the initial state, the training step and evaluation."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmnist import executables, losses
from jaxmnist.data.arrays import preprocess
from jaxmnist.model import ModelSpec, Params, init_params, logits
from jaxmnist.optim import Optimizer


class TrainState(NamedTuple):
    params: Params
    opt_state: Any


class StepMetrics(NamedTuple):
    loss: jax.Array  # mean loss over the batch's real samples
    correct: jax.Array  # number of real samples classified right
    count: jax.Array  # number of real samples (smaller than B only in a padded last batch)


def init_state(key: jax.Array, spec: ModelSpec, init: str, optimizer: Optimizer) -> TrainState:
    """Initial parameters from `key` and the optimizer's initial state."""
    params = init_params(key, spec, init)
    return TrainState(params, optimizer.init(params))


def make_train_step(
    spec: ModelSpec,
    optimizer: Optimizer,
    loss: str = "logits",
    precision: str = "float32",
    label_smoothing: float = 0.0,
):
    """(state, images, labels, valid=None) -> (state, StepMetrics): gradient, update and metrics.

    `images` are uint8 [B, 784]; `valid` (bool [B]) masks the padding of a ragged last batch.
    """

    def loss_fn(params, images, labels, valid):
        z = logits(params, preprocess(images), spec, precision)  # [B, 10]
        per_sample = losses.per_sample_loss(z, labels, loss, label_smoothing)
        hits = losses.correct(z, labels)
        if valid is None:
            return jnp.mean(per_sample), (jnp.sum(hits), jnp.float32(per_sample.shape[0]))
        weight = valid.astype(jnp.float32)
        count = jnp.sum(weight)
        return jnp.sum(per_sample * weight) / count, (jnp.sum(hits * weight), count)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, images, labels, valid=None):
        (mean_loss, (n_correct, count)), grads = grad_fn(state.params, images, labels, valid)
        params, opt_state = optimizer.apply(state.params, grads, state.opt_state)
        return TrainState(params, opt_state), StepMetrics(mean_loss, n_correct, count)

    return train_step


def make_evaluate(
    spec: ModelSpec, loss: str = "logits", precision: str = "float32", label_smoothing: float = 0.0
):
    """A jitted (params, images, labels[, valid]) -> (mean loss, accuracy) over a whole set.

    Cached, so evaluating after every epoch or once per run compiles once per shape. `valid`
    masks the rows that pad a set split over several devices. The loss is the training loss,
    label smoothing included, as Keras's `evaluate` reports it.
    """
    # One cache key however the settings were passed (positionally, by name, or left out).
    return _evaluate_program(spec, loss, precision, float(label_smoothing))


@functools.lru_cache(maxsize=16)
def _evaluate_program(spec: ModelSpec, loss: str, precision: str, label_smoothing: float):
    @executables.jit
    def run(params, images, labels, valid=None):
        z = logits(params, preprocess(images), spec, precision)
        per_sample = losses.per_sample_loss(z, labels, loss, label_smoothing)
        if valid is None:
            return jnp.mean(per_sample), losses.accuracy(z, labels)
        weight = valid.astype(jnp.float32)
        right = losses.correct(z, labels).astype(jnp.float32)
        return jnp.sum(per_sample * weight) / jnp.sum(weight), jnp.sum(right * weight) / jnp.sum(
            weight
        )

    return run


def place_for_evaluation(images, labels, device=None, mesh=None) -> tuple:
    """uint8 images and labels on `device`, or split over `mesh`'s "data" axis: padded to a
    multiple of its size, with the `valid` mask that `make_evaluate`'s function then takes."""
    images = np.asarray(images).reshape(len(images), -1)
    labels = np.asarray(labels, np.int32)
    if mesh is None:
        return jax.device_put((images, labels), device)
    n = len(images)
    rows = -(-n // mesh.size) * mesh.size
    valid = np.arange(rows) < n
    images, labels = (
        np.pad(x, [(0, rows - n)] + [(0, 0)] * (x.ndim - 1)) for x in (images, labels)
    )
    return tuple(global_array(x, NamedSharding(mesh, P("data"))) for x in (images, labels, valid))


def global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """`host` laid out as `sharding` says, each process filling its own devices from its own
    copy (which every process has): unlike device_put, no cross-process check of the values."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree, mesh):
    """A pytree of arrays with a copy on every device of `mesh` (already so: left as is)."""
    everywhere = NamedSharding(mesh, P())

    def put(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == everywhere:
            return leaf
        return global_array(fetch(leaf), everywhere)

    return jax.tree.map(put, tree)


def fetch(tree):
    """A pytree of arrays as NumPy arrays. Replicated arrays that span other processes' devices
    (which jax.device_get refuses) are read from this process's own copy."""

    def local(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(leaf.addressable_data(0))
        return leaf

    return jax.device_get(jax.tree.map(local, tree))


def evaluate(
    params: Params,
    images,
    labels,
    spec: ModelSpec,
    loss: str = "logits",
    precision: str = "float32",
    device: jax.Device | None = None,
    mesh=None,
    label_smoothing: float = 0.0,
) -> tuple[float, float]:
    """Loss and accuracy of `params` on uint8 images, as the chapter's `model.evaluate`; with a
    `mesh`, computed with the images split over its devices."""
    run = make_evaluate(spec, loss, precision, label_smoothing)
    mean_loss, acc = fetch(run(params, *place_for_evaluation(images, labels, device, mesh)))
    return float(mean_loss), float(acc)
