"""The chapter's model as pure functions: initialisers, `dense`, `sequential`.

Parameters are a plain pytree, a tuple with one `{"W", "b"}` dict per layer (the chapter's model has
exactly four leaves, as its `assert len(model.weights) == 4`). The activations and sizes are static
structure, kept in a `ModelSpec` beside the parameters, never inside them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Params = tuple[dict[str, jax.Array], ...]
Initializer = Callable[[jax.Array, int, int], dict[str, jax.Array]]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "softmax": jax.nn.softmax,
    "linear": lambda x: x,
}


class ModelSpec(NamedTuple):
    """Static structure of an MLP: input width and one (units, activation) pair per layer."""

    input_size: int
    layers: tuple[tuple[int, str], ...]


def chapter_model(hidden: int = 512) -> ModelSpec:
    """Dense(hidden, relu) -> Dense(10, softmax) on flattened 28x28 images."""
    return ModelSpec(28 * 28, ((hidden, "relu"), (10, "softmax")))


def naive_init(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    """The chapter's NaiveDense: W uniform in [0, 0.1), b zeros."""
    w = jax.random.uniform(key, (fan_in, fan_out), jnp.float32, minval=0.0, maxval=0.1)
    return {"W": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def glorot_init(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    """Keras's Dense default: W Glorot-uniform, limit sqrt(6 / (fan_in + fan_out)), b zeros."""
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    w = jax.random.uniform(key, (fan_in, fan_out), jnp.float32, minval=-limit, maxval=limit)
    return {"W": w, "b": jnp.zeros((fan_out,), jnp.float32)}


INITIALIZERS: dict[str, Initializer] = {"naive": naive_init, "glorot": glorot_init}


def init_params(key: jax.Array, spec: ModelSpec, init: str | Initializer = "glorot") -> Params:
    """One independent key per layer, split up front."""
    initializer = INITIALIZERS[init] if isinstance(init, str) else init
    keys = jax.random.split(key, len(spec.layers))
    sizes = [spec.input_size] + [units for units, _ in spec.layers]
    return tuple(
        initializer(k, fan_in, fan_out)
        for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    )


def dense(params: dict[str, jax.Array], x: jax.Array, activation: str | Callable = "linear"):
    """activation(x @ W + b): the chapter's NaiveDense.__call__ as a pure function."""
    act = ACTIVATIONS[activation] if isinstance(activation, str) else activation
    return act(x @ params["W"] + params["b"])


def sequential(params: Params, x: jax.Array, activations: Sequence[str]) -> jax.Array:
    """Chains `dense` layers: the chapter's NaiveSequential.__call__."""
    for layer, activation in zip(params, activations, strict=True):
        x = dense(layer, x, activation)
    return x


def logits(params: Params, x: jax.Array, spec: ModelSpec, dtype=None) -> jax.Array:
    """The model up to the last activation (its softmax is taken inside the loss, stably).

    With `dtype` (bfloat16) the matrix products take inputs of that dtype, accumulating in float32;
    parameters stay float32.
    """
    activations = [act for _, act in spec.layers]
    *hidden, _ = activations
    for layer, act in zip(params[:-1], hidden, strict=True):
        x = ACTIVATIONS[act](_matmul(x, layer["W"], dtype) + layer["b"])
    return _matmul(x, params[-1]["W"], dtype) + params[-1]["b"]


def predict(params: Params, x: jax.Array, spec: ModelSpec) -> jax.Array:
    """Class probabilities, as the chapter's model(x)."""
    return sequential(params, x, [act for _, act in spec.layers])


# Output layers narrower than this get their weight gradient computed in the transposed layout.
THIN_OUTPUT = 32


def _product(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
    if dtype is None:
        return x @ w
    return jnp.matmul(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
    """x @ w with a hand-written backward pass: the same products autodiff would form, laid out
    so that XLA's CPU backend runs them fast, and in `dtype` (with float32 accumulation) if given.
    """
    return _product(x, w, dtype)


def _matmul_fwd(x, w, dtype):
    return _product(x, w, dtype), (x, w)


def _matmul_bwd(dtype, residuals, grad):
    x, w = residuals
    grad_x = _product(grad, w.T, dtype)
    if w.shape[1] <= THIN_OUTPUT:
        # XLA runs x^T @ grad, a [in, out] result with few columns, as a transposed product some
        # 4x slower than grad^T @ x, which has the same entries as an [out, in] result. The barrier
        # stops the simplifier from folding the transpose back into the product.
        grad_w = lax.optimization_barrier(_product(grad.T, x, dtype)).T
    else:
        grad_w = _product(x.T, grad, dtype)
    return grad_x.astype(x.dtype), grad_w.astype(w.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)
