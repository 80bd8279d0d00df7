"""Batches of MNIST: the chapter's BatchGenerator as an iterator that feeds the device ahead of use.

Both training loops draw an epoch's order from `epoch_order`, so the per-batch path and the
on-device scan path see the same samples in the same batches for the same key.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from typing import NamedTuple

import jax
import numpy as np


class Batch(NamedTuple):
    images: jax.Array  # [B, 784] uint8, normalised inside the step
    labels: jax.Array  # [B] int32


def num_batches(num_samples: int, batch_size: int) -> int:
    """ceil(N / B): the last batch is smaller when B does not divide N (469 for 60000 / 128)."""
    return math.ceil(num_samples / batch_size)


def epoch_key(data_key: jax.Array, epoch: int) -> jax.Array:
    """The key of epoch `epoch` (0-based): derived, not carried, so a resumed run gets it back."""
    return jax.random.fold_in(data_key, epoch)


def epoch_order(key: jax.Array | None, num_samples: int) -> jax.Array:
    """A permutation of range(N) drawn from `key`, or range(N) itself when `key` is None."""
    if key is None:
        return jax.numpy.arange(num_samples, dtype=jax.numpy.int32)
    return jax.random.permutation(key, num_samples).astype(jax.numpy.int32)


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
