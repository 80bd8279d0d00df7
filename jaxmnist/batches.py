"""Batches of MNIST: the chapter's BatchGenerator as an iterator that feeds the device ahead of use.

Both training loops draw an epoch's order from `epoch_order`, so the per-batch path and the
on-device scan path see the same samples in the same batches for the same key.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist.config import training_size

_RADIX_LIMIT = 1 << 16  # positions must fit in the low 16 bits of a packed sort key


class Batch(NamedTuple):
    images: jax.Array  # [B, 784] uint8, normalised inside the step
    labels: jax.Array  # [B] int32


def hold_out(
    images: np.ndarray, labels: np.ndarray, fraction: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """(train, validation): the last `fraction` of the arrays held out, before any shuffling,
    as Keras's `validation_split`; validation is None for a fraction of 0."""
    if not fraction:
        return (images, labels), None
    split_at = training_size(len(images), fraction)
    return (images[:split_at], labels[:split_at]), (images[split_at:], labels[split_at:])


def num_batches(num_samples: int, batch_size: int) -> int:
    """ceil(N / B): the last batch is smaller when B does not divide N (469 for 60000 / 128)."""
    return math.ceil(num_samples / batch_size)


def epoch_key(data_key: jax.Array, epoch: int) -> jax.Array:
    """The key of epoch `epoch` (0-based): derived, not carried, so a resumed run gets it back."""
    return jax.random.fold_in(data_key, epoch)


def epoch_order(key: jax.Array | None, num_samples: int) -> jax.Array:
    """A permutation of range(N) drawn from `key`, or range(N) itself when `key` is None.

    The permutation is exactly `jax.random.permutation(key, N)`, computed faster for N <= 65536.
    """
    if key is None:
        return jnp.arange(num_samples, dtype=jnp.int32)
    if num_samples > _RADIX_LIMIT:
        return jax.random.permutation(key, num_samples).astype(jnp.int32)
    return _permutation(key, num_samples)


@functools.partial(jax.jit, static_argnums=1)
def _permutation(key: jax.Array, num_samples: int) -> jax.Array:
    # jax.random.permutation's algorithm: rounds of a stable sort of the values by fresh random
    # 32-bit keys. Its sort of (key, value) pairs is slow on XLA's CPU backend (23 ms for 60000,
    # 7% of an epoch); the same stable order from two sorts of single uint32 arrays takes 6 ms.
    rounds = math.ceil(3 * math.log(max(1, num_samples)) / math.log(2**32 - 1))
    values = jnp.arange(num_samples, dtype=jnp.int32)
    for _ in range(rounds):
        key, round_key = jax.random.split(key)
        values = values[stable_argsort_u32(jax.random.bits(round_key, (num_samples,), jnp.uint32))]
    return values


def stable_argsort_u32(sort_keys: jax.Array) -> jax.Array:
    """argsort(sort_keys, stable=True) for uint32 keys of at most 65536 elements.

    Least-significant-digit radix sort with two 16-bit digits: each pass sorts one uint32 array
    holding (digit << 16 | position), whose order is the stable order by that digit.
    """
    positions = jnp.arange(sort_keys.shape[0], dtype=jnp.uint32)
    by_low = jnp.sort(((sort_keys & 0xFFFF) << 16) | positions) & 0xFFFF
    by_high = jnp.sort(((sort_keys[by_low] >> 16) << 16) | positions) & 0xFFFF
    return by_low[by_high].astype(jnp.int32)


def batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 128,
    *,
    key: jax.Array | None = None,
    device: jax.Device | None = None,
    prefetch: int = 2,
) -> Iterator[Batch]:
    """Yields ceil(N / batch_size) batches covering each sample exactly once.

    In order without a key (the chapter's BatchGenerator), shuffled by `key` otherwise. Up to
    `prefetch` batches are already on their way to `device` while the caller uses the current one:
    device_put is asynchronous, so the host slices the next batch while the device computes.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    images = np.asarray(images).reshape(len(images), -1)
    labels = np.asarray(labels)
    order = None if key is None else np.asarray(epoch_order(key, len(images)))
    pending: collections.deque[Batch] = collections.deque()
    for start in range(0, len(images), batch_size):
        index = (
            slice(start, start + batch_size) if order is None else order[start : start + batch_size]
        )
        pending.append(
            Batch(
                jax.device_put(images[index], device),
                jax.device_put(labels[index].astype(np.int32), device),
            )
        )
        if len(pending) > prefetch:
            yield pending.popleft()
    yield from pending
