"""Tests for jaxmnist.data.arrays: fingerprint, preprocess, structural checks."""

import hashlib

import numpy as np
import pytest

from jaxmnist.data import MNIST_FINGERPRINT, class_counts, fingerprint, preprocess
from jaxmnist.data.arrays import checked_split, fingerprint_of, verify
from jaxmnist.errors import DataError


def test_fingerprint_is_sha256_of_the_four_arrays_in_order(tiny_mnist):
    (x_train, y_train), (x_test, y_test) = tiny_mnist
    joined = b"".join(a.tobytes() for a in (x_train, y_train, x_test, y_test))
    assert fingerprint(x_train, y_train, x_test, y_test) == hashlib.sha256(joined).hexdigest()
    assert fingerprint(x_test, y_test, x_train, y_train) != fingerprint_of(tiny_mnist)


def test_fingerprint_ignores_memory_layout(tiny_mnist):
    (x_train, y_train), (x_test, y_test) = tiny_mnist
    strided = np.asfortranarray(x_train)
    assert fingerprint(strided, y_train, x_test, y_test) == fingerprint_of(tiny_mnist)


def test_preprocess_is_the_chapters():
    images = np.array([[[0, 255], [51, 102]]], np.uint8).repeat(3, axis=0)
    out = preprocess(images)
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], np.array([0, 1, 0.2, 0.4], np.float32))


def test_verify_names_the_source_and_both_fingerprints(tiny_mnist):
    with pytest.raises(DataError, match=r"somewhere: fingerprint mismatch.*expected 06b0d1f1"):
        verify(tiny_mnist, "somewhere")
    assert verify(tiny_mnist, "x", fingerprint_of(tiny_mnist)) == fingerprint_of(tiny_mnist)
    assert len(MNIST_FINGERPRINT) == 64


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 28, 28), np.float32), np.zeros(2, np.uint8), "dtype float32, expected uint8"),
        (np.zeros((2, 28, 27), np.uint8), np.zeros(2, np.uint8), r"shape \(2, 28, 27\)"),
        (np.zeros((2, 28, 28), np.uint8), np.array([0, 10]), "outside 0..9"),
        (np.zeros((2, 28, 28), np.uint8), np.array([0, -1]), "outside 0..9"),
        (np.zeros((2, 28, 28), np.uint8), np.zeros(3, np.uint8), "2 images but 3 labels"),
        (np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.float64), "integer array"),
        (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), "0 images"),
    ],
)
def test_checked_split_refuses_bad_arrays(images, labels, message):
    with pytest.raises(DataError, match=message) as caught:
        checked_split(images, labels, "file.npz", "train")
    assert str(caught.value).startswith("file.npz: ") and "\n" not in str(caught.value)


def test_checked_split_accepts_flat_images_and_wide_labels():
    x, y = checked_split(np.zeros((2, 784), np.uint8), np.array([3, 9], np.int64), "f", "train")
    assert x.shape == (2, 28, 28) and y.dtype == np.uint8 and y.tolist() == [3, 9]


def test_class_counts():
    assert class_counts(np.array([0, 0, 9], np.uint8)) == [2, 0, 0, 0, 0, 0, 0, 0, 0, 1]
