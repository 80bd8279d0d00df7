"""jaxmnist.shuffle against jax.random itself: every function, bit for bit."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmnist import shuffle

SEEDS = st.integers(0, 2**32 - 1)


def _words(key: jax.Array) -> np.ndarray:
    return np.asarray(jax.random.key_data(key))


def test_threefry_known_answer():
    # The Random123 reference vector for Threefry-2x32, 20 rounds: key and counter all ones bits.
    ones = np.uint32(0xFFFFFFFF)
    y1, y2 = shuffle.threefry2x32(np.array([ones, ones]), np.array([ones]), np.array([ones]))
    assert (int(y1[0]), int(y2[0])) == (0x1CB996FC, 0xBB002BE7)


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, data=SEEDS)
def test_fold_in_and_split(seed, data):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(
        shuffle.fold_in(_words(key), data), _words(jax.random.fold_in(key, data))
    )
    np.testing.assert_array_equal(shuffle.split(_words(key), 3), _words(jax.random.split(key, 3)))


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS, size=st.integers(1, 3000))
def test_bits_and_permutation(seed, size):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(
        shuffle.bits32(_words(key), size), np.asarray(jax.random.bits(key, (size,), np.uint32))
    )
    np.testing.assert_array_equal(
        shuffle.permutation(_words(key), size), np.asarray(jax.random.permutation(key, size))
    )


def test_permutation_keeps_jax_order_where_sort_keys_tie():
    # 60000 random 32-bit sort keys hold a pair of equal ones about a third of the time: the
    # stable sort must then keep the earlier position first, as jax's sort does.
    for seed in range(50):
        words = shuffle.split(_words(jax.random.key(seed)))[1]
        if len(np.unique(shuffle.bits32(words, 60000))) < 60000:
            break
    else:
        pytest.fail("no seed in 0..49 gives tied sort keys")
    key = jax.random.key(seed)
    expected = np.asarray(jax.random.permutation(key, 60000))
    np.testing.assert_array_equal(shuffle.permutation(_words(key), 60000), expected)


def test_host_key():
    key = jax.random.key(7)
    np.testing.assert_array_equal(shuffle.host_key(key), [0, 7])
    assert shuffle.host_key(jax.vmap(jax.random.key)(np.arange(4))).shape == (4, 2)
    assert shuffle.host_key(jax.random.key(7, impl="rbg")) is None
    with jax.threefry_partitionable(False):  # jax's older counters: not reproduced here
        assert shuffle.host_key(key) is None


@pytest.mark.parametrize("size", [0, 1, 2, 60000])
def test_permutations_of_many_keys_match_jax_key_by_key(size):
    # Every round of every key is sorted on the shared threads: the orders must come back
    # to the key they belong to, each exactly jax.random.permutation's.
    keys = jax.random.split(jax.random.key(3), 5)
    expected = np.stack([np.asarray(jax.random.permutation(k, size)) for k in keys])
    got = shuffle.permutations(_words(keys), size)
    assert got.dtype == np.int32 and got.shape == (5, size)
    np.testing.assert_array_equal(got, expected)


def test_permutations_on_one_thread_match_many(monkeypatch):
    keys = _words(jax.random.split(jax.random.key(4), 3))
    threaded = shuffle.permutations(keys, 1000)
    monkeypatch.setattr(shuffle, "_threads", lambda: 1)
    np.testing.assert_array_equal(shuffle.permutations(keys, 1000), threaded)
