"""Tests for the MNIST read that runs beside jax's import: it reads only, and never decides."""

import threading

import pytest

import jaxmnist.data
from jaxmnist._session import CachedData, _checked_data
from jaxmnist.config import PRESETS
from jaxmnist.data.cache import cache_path
from jaxmnist.errors import DataError
from tests._synthetic import synthetic_mnist


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXMNIST_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_nothing_cached_is_none_and_nothing_written():
    assert CachedData(None).arrays() is None
    assert not cache_path().parent.exists()


def test_a_corrupt_cache_is_none_and_left_for_the_real_load(tmp_path):
    cache_path().parent.mkdir(parents=True)
    cache_path().write_bytes(b"not an npz")
    assert CachedData(None).arrays() is None
    assert cache_path().read_bytes() == b"not an npz"


def test_reads_through_whatever_load_mnist_is_now_without_downloading(monkeypatch):
    data, seen = synthetic_mnist(), []

    def load_mnist(path=None, **kwargs):
        seen.append((path, kwargs, threading.current_thread() is threading.main_thread()))
        return data

    monkeypatch.setattr(jaxmnist.data, "load_mnist", load_mnist)
    cached = CachedData("some/dir")
    assert cached.arrays() is data and cached.arrays() is data
    assert seen == [("some/dir", {"download": False, "progress": False}, False)]


def test_a_failed_read_falls_back_to_the_full_load(monkeypatch):
    data, seen = synthetic_mnist(), []

    def load_mnist(path=None, *, download=True, **kwargs):
        seen.append(download)
        if not download:
            raise DataError("no MNIST data cached")
        return data

    monkeypatch.setattr(jaxmnist.data, "load_mnist", load_mnist)
    assert _checked_data(CachedData(None), None, PRESETS["keras"]) is data
    assert seen == [False, True]


def test_the_full_load_reports_what_the_quiet_read_swallowed(monkeypatch, capsys):
    cache_path().parent.mkdir(parents=True)
    cache_path().write_bytes(b"not an npz")
    monkeypatch.setattr(jaxmnist.data.loader, "load", _no_download(jaxmnist.data.loader.load))
    with pytest.raises(DataError, match="could not get MNIST from any source"):
        _checked_data(CachedData(None), None, PRESETS["keras"])
    assert "discarding the cached" in capsys.readouterr().err


def _no_download(load):
    """`load` with the network refused, so a discarded cache cannot be fetched again."""

    def offline(*args, **kwargs):
        kwargs.setdefault("sources", [])
        return load(*args, **kwargs)

    return offline
