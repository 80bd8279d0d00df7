"""The chapter's model as pure functions: initialisers, `dense` and `sequential`.

Parameters are a plain pytree, a tuple with one `{"W", "b"}` dict per layer (the chapter's model has
exactly four leaves, as its `assert len(model.weights) == 4`). The activations and sizes are static
structure, kept in a `ModelSpec` beside the parameters, never inside them. Training and `predict`
both run through `sequential`; training only leaves the output softmax to the loss.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxmnist.config import CHOICES

Params = tuple[dict[str, jax.Array], ...]
Initializer = Callable[[jax.Array, int, int], dict[str, jax.Array]]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "softmax": jax.nn.softmax,
    "linear": lambda x: x,
}
# bfloat16 products take bf16 inputs and accumulate in float32; parameters stay float32.
PRODUCT_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


class ModelSpec(NamedTuple):
    """Static structure of an MLP: input width and one (units, activation) pair per layer."""

    input_size: int
    layers: tuple[tuple[int, str], ...]

    @property
    def activations(self) -> tuple[str, ...]:
        return tuple(activation for _, activation in self.layers)


def chapter_model(hidden: int = 512) -> ModelSpec:
    """Dense(hidden, relu) -> Dense(10, softmax) on flattened 28x28 images."""
    return ModelSpec(28 * 28, ((hidden, "relu"), (10, "softmax")))


def _uniform_layer(key: jax.Array, fan_in: int, fan_out: int, low: float, high: float):
    """W uniform in [low, high), b zeros: every initialiser here is one of these."""
    w = jax.random.uniform(key, (fan_in, fan_out), jnp.float32, minval=low, maxval=high)
    return {"W": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def naive_init(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    """The 2nd edition's NaiveDense: W uniform in [0, 0.1), b zeros."""
    return _uniform_layer(key, fan_in, fan_out, 0.0, 0.1)


def uniform_init(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    """The 3rd edition's NaiveDense, Keras 3's "uniform" initializer: W uniform in
    [-0.05, 0.05), b zeros."""
    return _uniform_layer(key, fan_in, fan_out, -0.05, 0.05)


def glorot_init(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    """Keras's Dense default: W Glorot-uniform, limit sqrt(6 / (fan_in + fan_out)), b zeros."""
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return _uniform_layer(key, fan_in, fan_out, -limit, limit)


INITIALIZERS: dict[str, Initializer] = {
    "glorot": glorot_init,
    "naive": naive_init,
    "uniform": uniform_init,
}
assert tuple(INITIALIZERS) == CHOICES["init"], "config.CHOICES['init'] names these initialisers"


def init_params(key: jax.Array, spec: ModelSpec, init: str | Initializer = "glorot") -> Params:
    """One independent key per layer, split up front."""
    initializer = INITIALIZERS[init] if isinstance(init, str) else init
    keys = jax.random.split(key, len(spec.layers))
    sizes = [spec.input_size] + [units for units, _ in spec.layers]
    return tuple(
        initializer(k, fan_in, fan_out)
        for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    )


def dense(
    params: dict[str, jax.Array],
    x: jax.Array,
    activation: str | Callable = "linear",
    precision: str = "float32",
) -> jax.Array:
    """activation(x @ W + b): the chapter's NaiveDense.__call__ as a pure function.

    `precision` "bfloat16" runs the product on bf16 inputs with float32 accumulation.
    """
    act = ACTIVATIONS[activation] if isinstance(activation, str) else activation
    return act(_matmul(x, params["W"], PRODUCT_DTYPES[precision]) + params["b"])


def sequential(
    params: Params, x: jax.Array, activations: Sequence[str], precision: str = "float32"
) -> jax.Array:
    """Chains `dense` layers: the chapter's NaiveSequential.__call__."""
    for layer, activation in zip(params, activations, strict=True):
        x = dense(layer, x, activation, precision)
    return x


def logits(params: Params, x: jax.Array, spec: ModelSpec, precision: str = "float32") -> jax.Array:
    """The model without its output activation: the loss takes the softmax itself, stably."""
    *hidden, _ = spec.activations
    return sequential(params, x, (*hidden, "linear"), precision)


def predict(params: Params, x: jax.Array, spec: ModelSpec) -> jax.Array:
    """Class probabilities [B, 10] of float [B, 784] inputs, as the chapter's model(x)."""
    return sequential(params, x, spec.activations)


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
