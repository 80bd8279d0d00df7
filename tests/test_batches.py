"""The batch iterator: counts, sizes, coverage and order, for any N and batch size (hypothesis)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmnist.batches import (
    Batch,
    batches,
    epoch_key,
    epoch_order,
    num_batches,
    permutation,
)

# Each new N compiles jax's permutation for the comparison, so the shuffled case draws fewer.
SETTINGS = settings(max_examples=40, deadline=None)
SHUFFLED_SETTINGS = settings(max_examples=15, deadline=None)


def _indexed(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixels spell out their own index, and labels equal to the index."""
    index = np.arange(n)
    images = np.stack([index % 256, index // 256], axis=1).astype(np.uint8)
    return images, index


def _indices(batch: Batch) -> np.ndarray:
    images = np.asarray(batch.images).astype(np.int64)
    from_pixels = images[:, 0] + 256 * images[:, 1]
    labels = np.asarray(batch.labels)
    np.testing.assert_array_equal(from_pixels, labels)  # images and labels stay paired
    return labels


@SETTINGS
@given(
    n=st.integers(1, 600),
    batch_size=st.integers(1, 700),
    prefetch=st.integers(0, 3),
)
def test_in_order_batches(n, batch_size, prefetch):
    images, labels = _indexed(n)
    out = list(batches(images, labels, batch_size, prefetch=prefetch))
    expected_count = math.ceil(n / batch_size)
    assert len(out) == expected_count == num_batches(n, batch_size)
    sizes = [len(b.labels) for b in out]
    assert sizes[:-1] == [batch_size] * (expected_count - 1)
    assert sizes[-1] == n - (expected_count - 1) * batch_size
    # In order without a key: the chapter's BatchGenerator.
    np.testing.assert_array_equal(np.concatenate([_indices(b) for b in out]), np.arange(n))


@SHUFFLED_SETTINGS
@given(n=st.integers(1, 600), batch_size=st.integers(1, 700), seed=st.integers(0, 2**31 - 1))
def test_shuffled_batches(n, batch_size, seed):
    images, labels = _indexed(n)
    key = jax.random.key(seed)
    out = list(batches(images, labels, batch_size, key=key))
    assert len(out) == math.ceil(n / batch_size)
    assert [len(b.labels) for b in out[:-1]] == [batch_size] * (len(out) - 1)
    seen = np.concatenate([_indices(b) for b in out])
    # Each sample exactly once per epoch, in the order jax.random.permutation draws.
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    np.testing.assert_array_equal(seen, np.asarray(jax.random.permutation(key, n)))
    again = np.concatenate([_indices(b) for b in batches(images, labels, batch_size, key=key)])
    np.testing.assert_array_equal(seen, again)


def test_shuffle_really_shuffles_and_keys_differ():
    images, labels = _indexed(1000)
    first = np.concatenate(
        [_indices(b) for b in batches(images, labels, 100, key=jax.random.key(0))]
    )
    other = np.concatenate(
        [_indices(b) for b in batches(images, labels, 100, key=jax.random.key(1))]
    )
    assert not np.array_equal(first, np.arange(1000))
    assert not np.array_equal(first, other)
    # Not merely rotated or reversed: few samples keep their place.
    assert np.mean(first == np.arange(1000)) < 0.05


def test_epoch_order_without_key_is_range():
    np.testing.assert_array_equal(epoch_order(None, 3, 7), np.arange(7))
    assert epoch_order(None, 3, 7).dtype == np.int32
    assert epoch_order(jax.random.key(0), 3, 7).dtype == np.int32


def test_epoch_orders_differ_per_epoch_and_are_reproducible():
    data_key = jax.random.key(42)
    orders = [epoch_order(data_key, e, 50) for e in range(3)]
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    np.testing.assert_array_equal(orders[1], epoch_order(data_key, 1, 50))
    # The same order the per-batch loop draws from the epoch's key.
    np.testing.assert_array_equal(orders[1], permutation(epoch_key(data_key, 1), 50))


def test_epoch_order_per_seed_key():
    keys = jax.vmap(jax.random.key)(np.arange(3))
    stacked = epoch_order(keys, 2, 40)
    assert stacked.shape == (3, 40) and stacked.dtype == np.int32
    for seed in range(3):
        np.testing.assert_array_equal(stacked[seed], epoch_order(jax.random.key(seed), 2, 40))


def test_the_chapters_469th_batch_has_96_images():
    assert num_batches(60_000, 128) == 469
    images = np.zeros((60_000, 28, 28), np.uint8)
    labels = np.zeros(60_000, np.uint8)
    out = list(batches(images, labels, 128))
    assert len(out) == 469
    assert len(out[-1].labels) == 96 == 60_000 - 468 * 128
    assert out[0].images.shape == (128, 784)  # flattened as the chapter's reshape


def test_dtypes_and_device():
    images = np.full((10, 28, 28), 255, np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    cpu = jax.devices("cpu")[0]
    batch = next(batches(images, labels, 4, device=cpu))
    assert batch.images.dtype == np.uint8  # normalised later, inside the step
    assert batch.labels.dtype == np.int32
    assert batch.images.devices() == {cpu} and batch.labels.devices() == {cpu}


def test_mismatched_lengths_and_bad_batch_size():
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        list(batches(np.zeros((5, 2)), np.zeros(4), 2))
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(np.zeros((5, 2)), np.zeros(5), 0))


@pytest.mark.parametrize("num_samples", [1, 2, 7, 128, 1000, 60000, 65536, 65537])
def test_epoch_order_is_exactly_jax_random_permutation(num_samples):
    for seed in range(3):
        data_key = jax.random.key(seed)
        expected = jax.random.permutation(jax.random.fold_in(data_key, 5), num_samples)
        np.testing.assert_array_equal(epoch_order(data_key, 5, num_samples), np.asarray(expected))


def test_another_prng_is_drawn_by_jax_itself():
    # jaxmnist.shuffle reproduces threefry only: any other key is shuffled by jax.random.
    key = jax.random.key(3, impl="rbg")
    expected = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), 300))
    np.testing.assert_array_equal(epoch_order(key, 1, 300), expected)
    keys = jax.random.split(key, 2)
    np.testing.assert_array_equal(permutation(keys, 20)[1], jax.random.permutation(keys[1], 20))
