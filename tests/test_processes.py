"""Several processes on 127.0.0.1 (jax.distributed): one run, and every failure one line in each.

Each process is a real `python -m jaxmnist.train` on synthetic data (tests/_cluster_run.py), on
one simulated CPU device, talking to the others through a free local port only. Every wait is
bounded; a process still running at the end of a test is killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxmnist import checkpoint

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "_cluster_run.py"
SMALL = ["--hidden", "64", "--no-compile-cache", "--coordinator-timeout", "60"]
LONG = ["--epochs", "2000", "--steps-per-dispatch", "1", *SMALL]  # stopped long before its end
PREFIX = "jaxmnist.train: "


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Processes:
    """P processes of one run; `finish` waits for all of them (bounded) and returns their ends."""

    def __init__(self, flags_of, count=2, env_of=lambda index: {}, size_of=lambda index: 520):
        port = _free_port()
        self.started = time.monotonic()
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(RUNNER), str(size_of(index)), *flags_of(index)]
                + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count)]
                + ["--process-id", str(index)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **env_of(index)},
            )
            for index in range(count)
        ]

    def finish(self, timeout=120):
        ends = []
        for proc in self.procs:
            try:
                out, err = proc.communicate(timeout=max(1, timeout - self.elapsed()))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"a process was still running after {timeout} s")
            ends.append((proc.returncode, out, err, self.elapsed()))
        return ends

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture
def launch():
    runs = []

    def start(*args, **kwargs):
        runs.append(Processes(*args, **kwargs))
        return runs[-1]

    yield start
    for run in runs:
        run.kill()


def _error_line(err: str) -> str:
    """The one line jaxmnist printed; no traceback or native abort may come with it."""
    assert "Traceback" not in err and "Check failure" not in err and "Fatal" not in err, err
    ours = [line for line in err.splitlines() if line.startswith(PREFIX)]
    ours = [line for line in ours if "stopping after the current step" not in line]  # a signal's
    assert len(ours) == 1, err
    return ours[0]


def _epochs_saved(directory: Path) -> int:
    try:
        return checkpoint.load_checkpoint(directory)[1]["epoch"]
    except Exception:  # noqa: BLE001 (not written yet)
        return 0


def _wait_for_epoch(directory: Path, epoch: int, run: Processes, timeout=120):
    while _epochs_saved(directory) < epoch:
        if any(proc.poll() is not None for proc in run.procs):
            pytest.fail(f"a process ended early: {run.finish()}")
        if run.elapsed() > timeout:
            pytest.fail(f"epoch {epoch} was not saved within {timeout} s")
        time.sleep(0.1)


def _final_arrays(directory: Path) -> dict:
    arrays, meta = checkpoint.load_checkpoint(directory)
    return {name: np.asarray(value) for name, value in arrays.items()}, meta


def test_two_processes_train_as_one_process_on_two_devices(launch, tmp_path):
    def flags(index):
        out = tmp_path / f"p{index}"
        out.mkdir()
        return [
            "--epochs", "2", *SMALL, "--checkpoint-dir", str(out / "run"),
            "--metrics-out", str(out / "metrics.jsonl"),
        ]  # fmt: skip

    ends = launch(flags).finish()
    assert [code for code, *_ in ends] == [0, 0], ends
    (_, out0, _, _), (_, out1, _, _) = ends
    assert out0.splitlines()[-1].startswith("test accuracy: ") and out1 == ""
    # Only process 0 writes: its checkpoints and metrics exist, process 1's paths stay empty.
    assert list((tmp_path / "p1").iterdir()) == []
    lines = (tmp_path / "p0/metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0]["processes"] == 2 and records[-1]["event"] == "test"
    together, meta = _final_arrays(tmp_path / "p0/run")
    assert meta["processes"] == 2 and meta["devices"] == 2

    alone = tmp_path / "alone"
    result = subprocess.run(
        [sys.executable, str(RUNNER), "520", "--epochs", "2", *SMALL, "--devices", "2"]
        + ["--checkpoint-dir", str(alone), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    reference, _ = _final_arrays(alone)
    assert together.keys() == reference.keys()
    for name in reference:  # 2 processes x 1 device == 1 process x 2 devices, bitwise
        np.testing.assert_array_equal(together[name], reference[name], err_msg=name)
    assert result.stdout.splitlines()[-1] == out0.splitlines()[-1]


def test_sigterm_to_one_process_stops_every_process_at_the_same_step(launch, tmp_path):
    directory = tmp_path / "run"
    run = launch(lambda index: [*LONG, "--checkpoint-dir", str(directory)])
    _wait_for_epoch(directory, 2, run)
    run.procs[1].send_signal(signal.SIGTERM)
    ends = run.finish()
    assert [code for code, *_ in ends] == [143, 143], ends
    lines = {_error_line(err) for _, _, err, _ in ends}
    assert len(lines) == 1, lines  # the same line in both: the same stopping point
    (line,) = lines
    assert "interrupted" in line and "add --resume to go on" in line
    assert _epochs_saved(directory) >= 2


def test_a_save_failing_on_process_0_ends_every_process_with_its_line(launch, tmp_path):
    directory = tmp_path / "run"
    # Process 0's third checkpoint write fails: epochs 0 and 1 are saved, epoch 2 is not.
    run = launch(
        lambda index: ["--epochs", "4", *SMALL, "--checkpoint-dir", str(directory)],
        env_of=lambda index: {"FAIL_SAVE_AFTER": "2"} if index == 0 else {},
    )
    ends = run.finish()
    assert [code for code, *_ in ends] == [1, 1], ends
    lines = {_error_line(err) for _, _, err, _ in ends}
    assert len(lines) == 1, lines
    (line,) = lines
    assert "process 0 of 2: cannot save checkpoint" in line and "No space left" in line
    assert _epochs_saved(directory) == 1  # the last good checkpoint survives


def test_a_peer_killed_hard_ends_the_others_with_one_line(launch, tmp_path):
    directory = tmp_path / "run"
    run = launch(lambda index: [*LONG, "--checkpoint-dir", str(directory)])
    _wait_for_epoch(directory, 2, run)
    run.procs[1].kill()
    killed = run.elapsed()
    (code, _, err, ended), (lost, *_) = run.finish()
    assert lost == -signal.SIGKILL
    assert code == 1
    line = _error_line(err)
    assert "process 1 of 2 was lost" in line and f"is kept in {directory}" in line
    assert ended - killed < 30  # the heartbeat timeout is 10 s
    assert _epochs_saved(directory) >= 2


def test_processes_with_different_flags_fail_at_start_up_with_the_fix(launch, tmp_path):
    def flags(index):
        batch = ["--batch-size", "64"] if index == 1 else []
        return ["--epochs", "1", *SMALL, "--no-checkpoint", *batch]

    ends = launch(flags).finish()
    assert [code for code, *_ in ends] == [1, 1], ends
    lines = {_error_line(err) for _, _, err, _ in ends}
    assert lines == {
        PREFIX + "error: process 1 differs from process 0 in --batch-size (64, not 128): "
        "give every process the same flags"
    }


def test_processes_with_different_data_fail_at_start_up(launch):
    # Process 1 has a training set of another size: its data's fingerprint differs.
    ends = launch(
        lambda index: ["--epochs", "1", *SMALL, "--no-checkpoint"],
        size_of=lambda index: 520 + 8 * index,
    ).finish()
    assert [code for code, *_ in ends] == [1, 1], ends
    for _, _, err, _ in ends:
        assert "process 1 differs from process 0 in its MNIST data" in _error_line(err)


@pytest.mark.parametrize(
    ("flags", "expected", "status"),
    [
        (["--num-processes", "2", "--process-id", "2"], "--process-id 2 is not below", 2),
        (["--num-processes", "2"], "add --process-id", 2),
        (["--num-processes", "2", "--process-id", "1"], "no coordinator answered", 1),
    ],
)
def test_bad_process_settings_are_one_line(flags, expected, status):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(RUNNER), "520", *SMALL, "--coordinator-timeout", "3"]
        + ["--coordinator", f"127.0.0.1:{_free_port()}", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == status
    assert expected in _error_line(result.stderr)
    assert time.monotonic() - started < 30


def test_a_busy_coordinator_port_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(RUNNER), "520", *SMALL, "--coordinator", f"127.0.0.1:{port}"]
            + ["--num-processes", "2", "--process-id", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "process 0 cannot serve on" in _error_line(result.stderr)


def test_a_process_that_never_joins_ends_the_wait_in_one_line():
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(RUNNER), "520", *SMALL, "--coordinator-timeout", "3"]
        + ["--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2"]
        + ["--process-id", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "not every process joined" in _error_line(result.stderr)
    assert time.monotonic() - started < 30


def test_a_run_of_two_processes_resumes_in_one(launch, tmp_path):
    directory = tmp_path / "run"
    run = launch(lambda index: ["--epochs", "1", *SMALL, "--checkpoint-dir", str(directory)])
    assert [code for code, *_ in run.finish()] == [0, 0]
    result = subprocess.run(
        [sys.executable, str(RUNNER), "520", "--epochs", "2", *SMALL, "--resume"]
        + ["--checkpoint-dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stderr
    _, meta = _final_arrays(directory)
    assert meta["epoch"] == 2 and meta["processes"] == 1
