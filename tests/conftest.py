"""Shared fixtures: tiny MNIST-shaped arrays, and writers for each MNIST file format."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + np.ascontiguousarray(array, np.uint8).tobytes()


def _write_idx_dir(directory: Path, arrays, *, gz: bool = True) -> Path:
    """The four IDX files of `arrays` in `directory`, gzipped or raw."""
    (x_train, y_train), (x_test, y_test) = arrays
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(IDX_STEMS, (x_train, y_train, x_test, y_test), strict=True):
        data = _idx_bytes(array)
        (directory / (stem + ".gz" if gz else stem)).write_bytes(
            gzip.compress(data) if gz else data
        )
    return directory


def _npz_bytes(arrays) -> bytes:
    (x_train, y_train), (x_test, y_test) = arrays
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return buffer.getvalue()


def _classic_pickle_bytes(arrays, protocol: int = 2) -> bytes:
    """Like the classic mnist.pkl.gz: float32 byte/256, int64 labels, train split in train+valid."""
    (x_train, y_train), (x_test, y_test) = arrays
    cut = len(x_train) * 2 // 3

    def split(x, y):
        return (x.reshape(len(x), 784).astype(np.float32) / 256, y.astype(np.int64))

    splits = (split(x_train[:cut], y_train[:cut]), split(x_train[cut:], y_train[cut:]))
    return gzip.compress(pickle.dumps((*splits, split(x_test, y_test)), protocol=protocol))


@pytest.fixture
def tiny_mnist():
    """((x_train, y_train), (x_test, y_test)): 12 + 5 random uint8 images, labels 0..9."""
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (12, 28, 28), np.uint8), rng.integers(0, 10, 12, np.uint8))
    test = (rng.integers(0, 256, (5, 28, 28), np.uint8), rng.integers(0, 10, 5, np.uint8))
    return train, test


@pytest.fixture
def mnist_files():
    """Writers for tiny MNIST files: idx_bytes, idx_dir, npz_bytes, classic_pickle_bytes."""
    return SimpleNamespace(
        idx_bytes=_idx_bytes,
        idx_dir=_write_idx_dir,
        npz_bytes=_npz_bytes,
        classic_pickle_bytes=_classic_pickle_bytes,
    )
