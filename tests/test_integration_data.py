"""Integration: the real MNIST through the project's own chain, into the default cache.

The default cache ($XDG_CACHE_HOME/jaxmnist, else ~/.cache/jaxmnist) is used on purpose: the first
test fetches once on a fresh machine, and every later integration test (here and in other modules)
reuses the verified copy. Deselect with `-m "not integration"`.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxmnist.data import MNIST_FINGERPRINT, class_counts, fingerprint, load_mnist, preprocess
from jaxmnist.data.cache import cache_path
from jaxmnist.data.loader import load

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _through_the_chain(monkeypatch):
    # An explicit JAXMNIST_DATA would bypass the cache-then-download chain under test.
    monkeypatch.delenv("JAXMNIST_DATA", raising=False)


def test_fetch_verifies_and_caches():
    start = time.perf_counter()
    loaded = load()
    print(f"\nMNIST from {loaded.origin} in {time.perf_counter() - start:.1f} s")
    (x_train, y_train), (x_test, y_test) = loaded.arrays
    assert (x_train.shape, y_train.shape) == ((60000, 28, 28), (60000,))
    assert (x_test.shape, y_test.shape) == ((10000, 28, 28), (10000,))
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert fingerprint(x_train, y_train, x_test, y_test) == MNIST_FINGERPRINT
    assert class_counts(y_train)[0] == 5923 and class_counts(y_test)[0] == 980
    assert sum(class_counts(y_train)) == 60000 and cache_path().is_file()


def test_cached_load_is_fast():
    load_mnist()
    start = time.perf_counter()
    (x_train, _), _ = load_mnist()
    assert time.perf_counter() - start < 1.0
    images = preprocess(x_train)
    assert images.shape == (60000, 784) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0


def test_info_prints_the_fingerprint():
    load_mnist()
    env = {k: v for k, v in os.environ.items() if k != "JAXMNIST_DATA"}
    result = subprocess.run(
        [sys.executable, "-m", "jaxmnist.data", "info"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"fingerprint: {MNIST_FINGERPRINT}" in result.stdout and "standard:    yes" in result.stdout
    )
