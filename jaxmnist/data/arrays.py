"""The MNIST arrays themselves: structural checks, the content fingerprint, class counts and the
chapter's preprocessing."""

from __future__ import annotations

import hashlib

import numpy as np

from jaxmnist.errors import DataError

# sha256 over x_train, y_train, x_test, y_test (C order, uint8), in that order.
MNIST_FINGERPRINT = "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"

# ((x_train, y_train), (x_test, y_test)), as keras.datasets.mnist.load_data() returns them.
Split = tuple[np.ndarray, np.ndarray]
Arrays = tuple[Split, Split]


def fingerprint(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> str:
    """The hex sha256 of the four arrays' bytes, in order (C order)."""
    digest = hashlib.sha256()
    for array in (x_train, y_train, x_test, y_test):
        # A memoryview of a contiguous array hashes without copying 47 MB.
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def fingerprint_of(arrays: Arrays) -> str:
    """`fingerprint` of a ((x_train, y_train), (x_test, y_test)) pair."""
    (x_train, y_train), (x_test, y_test) = arrays
    return fingerprint(x_train, y_train, x_test, y_test)


def preprocess(images: np.ndarray) -> np.ndarray:
    """The chapter's preprocessing: (N, 28, 28) uint8 -> (N, 784) float32 in [0, 1].

    Written with array methods only, so the same function serves numpy arrays on the host and
    traced jax arrays inside the jitted train step (one definition of the normalisation).
    """
    if not hasattr(images, "reshape"):
        images = np.asarray(images)
    return images.reshape((images.shape[0], -1)).astype(np.float32) / 255


def checked_labels(labels: object, where: str, name: str) -> np.ndarray:
    """Labels as a 1-D uint8 array, or DataError if they are not integers in 0..9."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{where}: {name} has shape {labels.shape} and dtype {labels.dtype}, expected a 1-D "
            "integer array; supply a genuine MNIST file"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(
            f"{where}: {name} holds labels outside 0..9 (min {labels.min()}, max {labels.max()}); "
            "the file is corrupt, supply a genuine MNIST file"
        )
    return labels.astype(np.uint8, copy=False)


def checked_images(images: object, where: str, name: str) -> np.ndarray:
    """Images as an (N, 28, 28) uint8 array, or DataError naming the failed check."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(
            f"{where}: {name} has dtype {images.dtype}, expected uint8; supply a genuine MNIST file"
        )
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape((-1, 28, 28))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{where}: {name} has shape {images.shape}, expected (N, 28, 28); "
            "supply a genuine MNIST file"
        )
    return np.ascontiguousarray(images)


def checked_split(images: object, labels: object, where: str, name: str) -> Split:
    """One (x, y) split, checked: uint8 images (N, 28, 28) and N labels in 0..9."""
    x = checked_images(images, where, f"x_{name}")
    y = checked_labels(labels, where, f"y_{name}")
    if len(x) != len(y) or len(x) == 0:
        raise DataError(
            f"{where}: the {name} split has {len(x)} images but {len(y)} labels; "
            "supply a genuine MNIST file"
        )
    return x, y


def verify(arrays: Arrays, where: str, expected: str = MNIST_FINGERPRINT) -> str:
    """Check the content fingerprint; return it, or raise DataError saying what differs."""
    actual = fingerprint_of(arrays)
    if actual != expected:
        (x_train, _), (x_test, _) = arrays
        raise DataError(
            f"{where}: fingerprint mismatch: got {actual[:16]}... for {len(x_train)}+{len(x_test)} "
            f"images, expected {expected[:16]}... (the standard 60000+10000 MNIST); supply the "
            "genuine files"
        )
    return actual


def class_counts(labels: np.ndarray) -> list[int]:
    """How many examples of each digit 0..9."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=10).tolist()
