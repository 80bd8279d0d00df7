"""jax.random's threefry key derivation and `permutation`, bit for bit, in NumPy on the host.

Drawn inside the jitted epoch, the order made that program twice as long to lower and to load
from the compilation cache (threefry's 20 rounds are unrolled, and the shuffle is two sorts):
tracing, lowering and loading the first epoch took 0.16-0.20 s, against 0.10-0.11 s for the
steps alone (fast preset, fresh processes, 2-core Zen 4). Here an order of 60000 takes 7 ms on one
thread, 3.7 ms with its two sorts on two.
The tests compare every function with jax.random's own for many keys and sizes.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key-schedule constant


def _rotate_left(x: np.ndarray, bits: int) -> np.ndarray:
    return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry2x32(key: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Threefry-2x32 hash (20 rounds) of the counter pairs (x1, x2) under `key` (uint32 [2])."""
    k1, k2 = (np.uint32(k) for k in key)
    schedule = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1 = np.asarray(x1, np.uint32) + schedule[0]
    x2 = np.asarray(x2, np.uint32) + schedule[1]
    for block in range(5):
        for bits in _ROTATIONS[block % 2]:
            x1 += x2
            x2 = _rotate_left(x2, bits)
            x2 ^= x1
        x1 += schedule[(block + 1) % 3]
        x2 += schedule[(block + 2) % 3]
        x2 += np.uint32(block + 1)
    return x1, x2


def fold_in(key: np.ndarray, data: int) -> np.ndarray:
    """jax.random.fold_in: the key hashed with the counter pair (0, data)."""
    y1, y2 = threefry2x32(key, np.zeros(1, np.uint32), np.array([data], np.uint32))
    return np.concatenate([y1, y2])


def split(key: np.ndarray, num: int = 2) -> np.ndarray:
    """jax.random.split (partitionable threefry): key i is the hash of the counter (0, i)."""
    y1, y2 = threefry2x32(key, np.zeros(num, np.uint32), np.arange(num, dtype=np.uint32))
    return np.stack([y1, y2], axis=1)


def bits32(key: np.ndarray, size: int) -> np.ndarray:
    """jax.random.bits(key, (size,), uint32) (partitionable threefry): the two halves of the
    hash of the counters (0, i), xor-ed."""
    y1, y2 = threefry2x32(key, np.zeros(size, np.uint32), np.arange(size, dtype=np.uint32))
    return y1 ^ y2


def permutation(key: np.ndarray, size: int) -> np.ndarray:
    """jax.random.permutation(key, size) as int32: rounds of a stable sort of the values by fresh
    random 32-bit keys, as many rounds as jax takes for this size."""
    return permutations(np.asarray(key, np.uint32)[None], size)[0]


def permutations(keys: np.ndarray, size: int) -> np.ndarray:
    """`permutation` for each key of uint32 [K, 2]: int32 [K, size].

    A round's sort depends only on its own key, not on the order the rounds before it made, so
    every round of every key is sorted at once on a few threads (NumPy lets go of the GIL while
    it hashes and sorts); only applying the sorted orders one after another is sequential.
    """
    rounds = int(np.ceil(3 * np.log(max(1, size)) / np.log(np.iinfo(np.uint32).max)))
    keys = np.asarray(keys, np.uint32).reshape(-1, 2)
    round_keys = []
    for key in keys:
        for _ in range(rounds):
            key, round_key = split(key)
            round_keys.append(round_key)
    sorted_rounds = iter(_map(functools.partial(_round_order, size=size), round_keys))
    out = np.tile(np.arange(size, dtype=np.int32), (len(keys), 1))
    for values in out:
        for _ in range(rounds):
            values[:] = values[next(sorted_rounds)]
    return out


def _round_order(round_key: np.ndarray, size: int) -> np.ndarray:
    """One round's stable argsort of fresh random keys: sorting (key << 32 | position) puts
    equal keys in position order."""
    positions = np.arange(size, dtype=np.uint64)
    packed = (bits32(round_key, size).astype(np.uint64) << np.uint64(32)) | positions
    return (np.sort(packed) & np.uint64(0xFFFFFFFF)).astype(np.intp)


def _map(fn, items: list) -> list:
    """fn over items, on the shared threads when there is more than one item and one core."""
    if len(items) < 2 or _threads() < 2:
        return [fn(item) for item in items]
    return list(_pool().map(fn, items))


def _threads() -> int:
    return min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_threads(), thread_name_prefix="jaxmnist-shuffle")


def host_key(key: jax.Array) -> np.ndarray | None:
    """A typed jax key's threefry words as uint32 [..., 2], or None where this module would not
    reproduce jax.random (another PRNG implementation, or jax's older threefry counters)."""
    if str(jax.random.key_impl(key)) != "threefry2x32":
        return None
    if not jax.config.jax_threefry_partitionable:
        return None
    return np.asarray(jax.random.key_data(key), np.uint32)
