"""Checkpoint defects as a user meets them: real training processes, one line, files intact."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jaxmnist import checkpoint

RUNNER = str(Path(__file__).with_name("_synthetic_run.py"))
FLAGS = ["--no-compile-cache", "--batch-size", "32", "--hidden", "16"]


def _train(checkpoint_dir, *flags):
    return subprocess.run(
        [sys.executable, RUNNER, "256", *FLAGS, "--checkpoint-dir", str(checkpoint_dir), *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_one_line_failure(result, *phrases):
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert "Epoch" not in result.stdout  # refused before training, not after


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run's checkpoint directory after one epoch, with the user's own files beside it."""
    directory = tmp_path_factory.mktemp("trained")
    (directory / ".tmp-notes.txt").write_text("important\n")
    (directory / ".tmp-build").mkdir()
    result = _train(directory, "--epochs", "1")
    assert result.returncode == 0, result.stderr
    return directory


def test_a_run_keeps_the_users_files_in_its_checkpoint_dir(trained):
    assert (trained / ".tmp-notes.txt").read_text() == "important\n"
    assert (trained / ".tmp-build").is_dir()
    assert checkpoint.load_checkpoint(trained)[1]["epoch"] == 1


def test_checkpoint_dir_that_is_a_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("important\n")
    _assert_one_line_failure(
        _train(notes, "--epochs", "1"), "is a file", "--checkpoint-dir must name a directory"
    )
    assert notes.read_text() == "important\n"


def _copy(trained, tmp_path):
    directory = tmp_path / "run"
    shutil.copytree(trained, directory)
    return directory


@pytest.mark.parametrize("epoch", ["1", 1.0, -1, True], ids=["string", "float", "negative", "true"])
def test_resume_from_resigned_meta_with_a_bad_epoch(trained, tmp_path, epoch):
    directory = _copy(trained, tmp_path)
    version = checkpoint.latest_checkpoint(directory)
    doc = json.loads((version / "meta.json").read_text())
    meta = {**doc["meta"], "epoch": epoch}
    (version / "meta.json").write_bytes(checkpoint.format.meta_bytes(meta, doc["arrays_sha256"]))
    before = (version / "meta.json").read_bytes()
    _assert_one_line_failure(_train(directory, "--epochs", "2", "--resume"), "meta.json", "'epoch'")
    assert (version / "meta.json").read_bytes() == before


def test_resume_with_latest_naming_too_long_a_name(trained, tmp_path):
    directory = _copy(trained, tmp_path)
    (directory / "LATEST").write_text("ckpt-" + "0" * 300 + "3\n")
    _assert_one_line_failure(_train(directory, "--epochs", "2", "--resume"), "LATEST is corrupt")


@pytest.mark.parametrize("field", ["config", "data_fingerprint"])
def test_resume_from_resigned_meta_without_what_proves_it_is_the_same_run(trained, tmp_path, field):
    directory = _copy(trained, tmp_path)
    version = checkpoint.latest_checkpoint(directory)
    doc = json.loads((version / "meta.json").read_text())
    meta = {k: v for k, v in doc["meta"].items() if k != field}
    (version / "meta.json").write_bytes(checkpoint.format.meta_bytes(meta, doc["arrays_sha256"]))
    result = _train(directory, "--epochs", "2", "--resume")
    _assert_one_line_failure(result, f"has no {field}", "another --checkpoint-dir")


def _resume_read_only(directory, epochs):
    """Resumes `directory` with --epochs `epochs` in a process where writing there is refused as
    on a read-only disk (simulated: root ignores permissions)."""
    probe = [
        "import os, runpy, sys",
        "real = os.open",
        "def refuse(path, flags, *args):",
        "    if '.jaxmnist-probe.' in str(path):",
        "        raise OSError(30, 'Read-only file system', str(path))",
        "    return real(path, flags, *args)",
        "os.open = refuse",
        f"sys.path.insert(0, {str(Path(RUNNER).parent)!r})  # as `python {RUNNER}` would",
        f"sys.argv = [{RUNNER!r}, '256', *sys.argv[1:]]",
        f"runpy.run_path({RUNNER!r}, run_name='__main__')",
    ]
    return subprocess.run(
        [sys.executable, "-c", "\n".join(probe), *FLAGS, "--checkpoint-dir", str(directory)]
        + ["--epochs", str(epochs), "--resume", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_resume_on_an_unwritable_directory_fails_before_training(trained, tmp_path):
    directory = _copy(trained, tmp_path)
    result = _resume_read_only(directory, epochs=2)
    _assert_one_line_failure(result, "Read-only file system", f"holding a copy of {directory}")
    assert checkpoint.load_checkpoint(directory)[1]["epoch"] == 1


def test_resume_of_a_finished_run_on_an_unwritable_directory_evaluates(trained, tmp_path):
    # Nothing is left to train, so nothing will be written: a read-only copy is enough.
    result = _resume_read_only(_copy(trained, tmp_path), epochs=1)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test accuracy: ")
