"""Interrupting and resuming real training processes: exact resume, NaN guard, mismatches."""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxmnist.checkpoint import load_checkpoint

RUNNER = str(Path(__file__).with_name("_synthetic_run.py"))
FLAGS = ["--no-compile-cache", "--batch-size", "32", "--hidden", "64"]
INTERRUPTIBLE = 8192  # images: enough one-step dispatches that a signal lands mid-epoch


def _train(checkpoint_dir, *flags, train_size=2048):
    return subprocess.run(
        [
            sys.executable,
            RUNNER,
            str(train_size),
            *FLAGS,
            "--checkpoint-dir",
            str(checkpoint_dir),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _final_arrays(checkpoint_dir):
    arrays, meta = load_checkpoint(checkpoint_dir)
    return arrays, meta


def _assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_then_resumed_run_equals_uninterrupted_run(tmp_path, signum):
    flags = ["--epochs", "3", "--seed", "3", "--steps-per-dispatch", "1"]
    whole = _train(tmp_path / "whole", *flags, train_size=INTERRUPTIBLE)
    assert whole.returncode == 0, whole.stderr

    process = subprocess.Popen(
        [
            sys.executable,
            "-u",
            RUNNER,
            str(INTERRUPTIBLE),
            *FLAGS,
            "--checkpoint-dir",
            str(tmp_path / "cut"),
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:
        if line.startswith("Epoch 2/"):
            process.send_signal(signum)
            break
    _, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, err
    assert "--resume" in err and "Traceback" not in err
    _, meta = load_checkpoint(tmp_path / "cut")
    assert meta["epoch"] == 1  # the interrupted epoch 2 restarts from its beginning

    resumed = _train(tmp_path / "cut", *flags, "--resume", train_size=INTERRUPTIBLE)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    whole_arrays, whole_meta = _final_arrays(tmp_path / "whole")
    cut_arrays, cut_meta = _final_arrays(tmp_path / "cut")
    _assert_bitwise_equal(whole_arrays, cut_arrays)
    assert [e["batch_losses"] for e in whole_meta["history"]] == [
        e["batch_losses"] for e in cut_meta["history"]
    ]


def test_resume_with_more_epochs_continues(tmp_path):
    first = _train(tmp_path, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    more = _train(tmp_path, "--epochs", "2", "--resume")
    assert more.returncode == 0, more.stderr
    assert "Epoch 2/2" in more.stdout and "Epoch 1/2" not in more.stdout
    assert _final_arrays(tmp_path)[1]["epoch"] == 2


def test_resume_with_a_different_setup_names_the_mismatch(tmp_path):
    assert _train(tmp_path, "--epochs", "1").returncode == 0
    before = _final_arrays(tmp_path)[0]
    for flags in (["--hidden", "32"], ["--optimizer", "adam"], ["--seed", "9"]):
        mismatch = _train(tmp_path, "--epochs", "2", "--resume", *flags)
        assert mismatch.returncode == 1
        assert mismatch.stderr.count("\n") == 1 and flags[0] in mismatch.stderr, mismatch.stderr
    _assert_bitwise_equal(before, _final_arrays(tmp_path)[0])


def test_resume_with_other_data_is_refused(tmp_path):
    assert _train(tmp_path, "--epochs", "1").returncode == 0
    other = _train(tmp_path, "--epochs", "2", "--resume", train_size=1024)
    assert other.returncode == 1 and "fingerprint" in other.stderr, other.stderr


def test_resume_from_an_edited_checkpoint_fails_without_starting_over(tmp_path):
    assert _train(tmp_path, "--epochs", "1").returncode == 0
    latest = sorted(p for p in tmp_path.iterdir() if p.name.startswith("ckpt-"))[-1]
    arrays = latest / "arrays.npz"
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    resumed = _train(tmp_path, "--epochs", "2", "--resume")
    assert resumed.returncode == 1
    assert "arrays.npz" in resumed.stderr and "Traceback" not in resumed.stderr
    assert "Epoch" not in resumed.stdout


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    result = _train(tmp_path / "empty", "--epochs", "1", "--resume")
    assert result.returncode == 1
    assert "no checkpoint" in result.stderr and result.stderr.count("\n") == 1


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    diverged = _train(tmp_path, "--epochs", "2", "--optimizer", "sgd", "--learning-rate", "1e30")
    assert diverged.returncode == 1
    assert diverged.stderr.count("\n") == 1 and "Traceback" not in diverged.stderr
    assert "loss became nan in epoch 1 at step" in diverged.stderr
    assert str(tmp_path) in diverged.stderr
    arrays, meta = _final_arrays(tmp_path)
    assert (
        meta["epoch"] == 0
    )  # the NaN epoch was never saved; the initial state is the last good one
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
