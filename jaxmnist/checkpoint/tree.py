"""Pytrees as flat host arrays keyed by leaf path, and back by a template's structure."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist.errors import CheckpointError


def flatten_tree(tree: Any) -> dict[str, np.ndarray]:
    """Host copies of a pytree's leaves, keyed by their paths ("params/0/W", "opt_state/0/mu")."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = _key(path)
        if key in flat:
            raise ValueError(f"two leaves of the pytree share the checkpoint key {key!r}")
        # A copy, not a view: on CPU a view could alias a buffer the next step donates.
        flat[key] = np.array(_raw(leaf), copy=True)
    return flat


def restore_tree(
    template: Any, arrays: Mapping[str, np.ndarray], *, source: str | os.PathLike = "checkpoint"
) -> Any:
    """`template`'s structure with leaves from `arrays`; keys, shapes and dtypes must all match."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    restored = []
    for path, leaf in leaves:
        key, want = _key(path), _raw(leaf)
        if not hasattr(want, "dtype"):
            want = np.asarray(want)  # a Python scalar, stored as NumPy would store it
        shape, dtype = tuple(want.shape), np.dtype(want.dtype)
        if key not in arrays:
            raise CheckpointError(f"{source}: has no {key}, this run expects {dtype}{list(shape)}")
        got = arrays[key]
        if got.shape != shape:
            raise CheckpointError(
                f"{source}: {key} has shape {got.shape}, this run expects {shape}"
            )
        if got.dtype != dtype:
            raise CheckpointError(
                f"{source}: {key} has dtype {got.dtype}, this run expects {dtype}"
            )
        restored.append(_like(leaf, got))
    extra = sorted(set(arrays) - {_key(path) for path, _ in leaves})
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{source}: has {extra[0]}{more}, which this run does not expect")
    return jax.tree_util.tree_unflatten(treedef, restored)


def _key(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _is_prng_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _raw(leaf: Any) -> Any:
    # Typed PRNG keys have no NumPy dtype; their uint32 key data is what gets stored.
    return jax.random.key_data(leaf) if _is_prng_key(leaf) else leaf


def _like(template: Any, array: np.ndarray) -> Any:
    """`array` as `template`'s kind of leaf: a jax array, a typed key, a NumPy or Python scalar."""
    if _is_prng_key(template):
        return jax.random.wrap_key_data(array, impl=jax.random.key_impl(template))
    if isinstance(template, jax.Array):
        return jnp.asarray(array)
    if isinstance(template, np.generic):
        return array[()]
    if isinstance(template, bool | int | float | complex):
        return array.item()
    return array
