"""`python -m jaxmnist.train` in-process and offline: output formats, metrics, and bad flags."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from _synthetic import synthetic_mnist

import jaxmnist.data
from jaxmnist import checkpoint, train
from jaxmnist.config import CHOICES, PRESETS

# 512 training images: 4 batches of 128. Label noise keeps accuracies below 1.0000.
DATA = synthetic_mnist(512, 256, label_noise=0.1)
FAST = ["--hidden", "32", "--no-compile-cache"]
KERAS_BAR = re.compile(r"^\d+/\d+ ━+ \d+s \d+(ms|us)/step - accuracy: 0\.\d{4} - loss: \d+\.\d{4}$")
TEST_LINE = re.compile(r"^test accuracy: [01]\.\d{4} - test loss: \d+\.\d{4}$")


@pytest.fixture(autouse=True)
def _synthetic_data(monkeypatch):
    """train.py imports load_mnist from jaxmnist.data at run time: patch it there.

    Records (path, may download) per call: a run first reads the cache quietly while jax imports.
    """
    calls = []

    def fake_load_mnist(path=None, *, download=True, **kwargs):
        calls.append((path, download))
        return DATA

    monkeypatch.setattr(jaxmnist.data, "load_mnist", fake_load_mnist)
    return calls


def _main(argv):
    """(exit code, stdout, stderr) of train.main(argv), SystemExit included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = train.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def _assert_one_line_error(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory):
    """One keras-preset run of 2 epochs with metrics and checkpoints, shared by several tests."""
    return _keras_run(tmp_path_factory.mktemp("keras-a"))


def _keras_run(directory):
    """(directory, exit code, stdout, stderr) of `--epochs 2` writing under `directory`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jaxmnist.data, "load_mnist", lambda *a, **k: DATA)
        code, out, err = _main(
            [
                "--epochs",
                "2",
                *FAST,
                "--checkpoint-dir",
                str(directory / "ckpt"),
                "--metrics-out",
                str(directory / "metrics.jsonl"),
            ]
        )
    return directory, code, out, err


# --- What a run prints ----------------------------------------------------------------------------


def test_keras_preset_output(keras_run):
    _, code, out, err = keras_run
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Epoch 1/2"
    assert KERAS_BAR.match(lines[1]), lines[1]
    assert lines[1].startswith("4/4 ━━━━━━━━━━━━━━━━━━━━ ")
    assert lines[2] == "Epoch 2/2"
    assert KERAS_BAR.match(lines[3]), lines[3]
    assert TEST_LINE.match(lines[4]), lines[4]
    assert len(lines) == 5
    assert "\r" not in out  # not a terminal: finished lines only


def test_metrics_out_is_json_lines(keras_run):
    directory, code, out, _ = keras_run
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "epoch", "epoch", "test"]
    start, first, second, test = records
    assert start["config"] == PRESETS["keras"].replace(epochs=2, hidden=32).to_dict()
    assert start["device"] == "cpu"
    assert [first["epoch"], second["epoch"]] == [1, 2]
    assert first["epochs"] == 2 and first["steps"] == 4
    assert second["loss"] < first["loss"]
    # The printed figures are these, rounded.
    assert f"accuracy: {second['accuracy']:.4f} - loss: {second['loss']:.4f}" in out
    assert f"test accuracy: {test['accuracy']:.4f} - test loss: {test['loss']:.4f}" in out
    assert 0.5 < test["accuracy"] < 1.0


def test_same_seed_runs_are_bitwise_identical(keras_run, tmp_path):
    directory, _, out, _ = keras_run
    _, code, again_out, err = _keras_run(tmp_path)
    assert code == 0, err

    def records(d):
        lines = (d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    assert records(directory) == records(tmp_path)
    # Per-batch losses, as the checkpoint's history keeps them, are bitwise equal too.
    _, meta_a = checkpoint.load_checkpoint(directory / "ckpt")
    _, meta_b = checkpoint.load_checkpoint(tmp_path / "ckpt")
    losses_a = [epoch["batch_losses"] for epoch in meta_a["history"]]
    losses_b = [epoch["batch_losses"] for epoch in meta_b["history"]]
    assert len(losses_a) == 2 and len(losses_a[0]) == 4
    assert losses_a == losses_b


def test_naive_preset_output(tmp_path):
    code, out, err = _main(
        ["--preset", "naive", "--epochs", "2", "--log-every", "2", "--no-checkpoint", *FAST]
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "epoch 0"
    assert re.fullmatch(r"loss at batch 0: \d+\.\d\d", lines[1])
    assert re.fullmatch(r"loss at batch 2: \d+\.\d\d", lines[2])
    assert lines[3] == "epoch 1"
    assert [line.split(":")[0] for line in lines[4:6]] == ["loss at batch 0", "loss at batch 2"]
    assert TEST_LINE.match(lines[6]) and len(lines) == 7
    assert "━" not in out and "Epoch" not in out


def test_naive_preset_logs_every_100_batches_by_default(tmp_path):
    code, out, err = _main(["--preset", "naive", "--epochs", "1", "--no-checkpoint", *FAST])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "epoch 0" and lines[1].startswith("loss at batch 0: ")
    assert len(lines) == 3  # 4 batches: only batch 0 is a multiple of 100


def test_quiet_prints_only_the_test_accuracy(tmp_path):
    code, out, err = _main(["--epochs", "1", "--quiet", "--no-checkpoint", *FAST])
    assert code == 0, err
    assert TEST_LINE.match(out.strip()) and len(out.splitlines()) == 1


def test_data_dir_is_passed_to_the_loader(tmp_path, _synthetic_data):
    code, _, err = _main(
        ["--epochs", "1", "--quiet", "--no-checkpoint", "--data-dir", str(tmp_path), *FAST]
    )
    assert code == 0, err
    assert _synthetic_data == [(str(tmp_path), False)]  # read from the cache, beside jax's import


# --- Bad values: one line on stderr, exit 2 -------------------------------------------------------

BAD_FLAGS = [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-3"], "--epochs"),
    (["--epochs", "abc"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "60001"], "--batch-size"),
    (["--train-samples", "100", "--batch-size", "128"], "--batch-size"),
    (["--learning-rate", "-1"], "--learning-rate"),
    (["--learning-rate", "0"], "--learning-rate"),
    (["--learning-rate", "nan"], "--learning-rate"),
    (["--learning-rate", "inf"], "--learning-rate"),
    (["--learning-rate", "fast"], "--learning-rate"),
    (["--seed", "-1"], "--seed"),
    (["--hidden", "0"], "--hidden"),
    (["--no-such-flag"], "--no-such-flag"),
]


@pytest.mark.parametrize(("argv", "names"), BAD_FLAGS, ids=lambda v: " ".join(v))
def test_bad_values_exit_2_with_one_line(argv, names, _synthetic_data):
    code, out, err = _main([*argv, "--no-checkpoint", "--no-compile-cache"])
    assert code == 2
    line = _assert_one_line_error(err)
    assert names in line
    assert out == ""
    assert _synthetic_data == []  # rejected before any data is loaded


@pytest.mark.parametrize(
    ("flag", "valid"),
    [
        ("--optimizer", CHOICES["optimizer"]),
        ("--device", ("auto", "cpu", "gpu")),
        ("--preset", CHOICES["preset"]),
        ("--init", CHOICES["init"]),
        ("--loss", CHOICES["loss"]),
        ("--loop", CHOICES["loop"]),
        ("--precision", CHOICES["precision"]),
    ],
)
def test_unknown_choice_lists_the_valid_ones(flag, valid):
    code, _, err = _main([flag, "bogus", "--no-checkpoint"])
    assert code == 2
    line = _assert_one_line_error(err)
    assert flag in line and "bogus" in line
    for choice in valid:
        assert choice in line


def test_resume_with_no_checkpoint_is_one_line(tmp_path):
    code, out, err = _main(["--resume", "--checkpoint-dir", str(tmp_path / "none"), *FAST])
    assert code != 0
    line = _assert_one_line_error(err)
    assert "--resume" in line and str(tmp_path / "none") in line


def test_resume_with_no_checkpoint_flag_is_a_usage_error(tmp_path):
    code, _, err = _main(["--resume", "--no-checkpoint", *FAST])
    assert code == 2
    assert "--no-checkpoint" in _assert_one_line_error(err)


def test_metrics_out_into_a_missing_directory(tmp_path):
    target = tmp_path / "missing" / "metrics.jsonl"
    code, _, err = _main(["--metrics-out", str(target), "--no-checkpoint", *FAST])
    assert code == 2
    line = _assert_one_line_error(err)
    assert "--metrics-out" in line and str(target) in line and "create its directory" in line


def test_batch_size_larger_than_a_small_training_set_exits_2(tmp_path):
    code, _, err = _main(["--batch-size", "513", "--no-checkpoint", *FAST])
    assert code == 2
    line = _assert_one_line_error(err)
    assert "512" in line


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_device_gpu_without_a_gpu(_synthetic_data):
    code, out, err = _main(["--device", "gpu", "--no-checkpoint", *FAST])
    assert code == 1
    line = _assert_one_line_error(err)
    assert "gpu" in line.lower()
    assert "pip install -U 'jax[cuda12]'" in line  # how to get jax's CUDA build
    assert out == "" and all(not download for _, download in _synthetic_data)  # nothing fetched


def test_help_exits_0():
    code, out, _ = _main(["--help"])
    assert code == 0
    assert "--preset" in out and "naive" in out


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8589934592 bytes.",
            "--batch-size",
        ),
        ("INTERNAL: CUDA error: an illegal memory access was encountered", "failed while training"),
    ],
)
def test_a_device_failure_while_training_is_one_line(tmp_path, monkeypatch, message, expected):
    from jax.errors import JaxRuntimeError

    import jaxmnist.runner

    def fail(*args, **kwargs):
        raise JaxRuntimeError(message)

    code, _, _ = _main(["--epochs", "1", "--checkpoint-dir", str(tmp_path / "done"), *FAST])
    assert code == 0
    monkeypatch.setattr(jaxmnist.runner, "train_and_evaluate", fail)
    for directory, kept in ((tmp_path / "done", True), (tmp_path / "empty", False)):
        code, _, err = _main(["--checkpoint-dir", str(directory), *FAST])
        assert code == 1
        line = _assert_one_line_error(err)
        assert expected in line
        # The line says a finished epoch is kept only where a checkpoint really is.
        assert (f"kept in {directory}" in line) == kept


def test_metrics_file_is_untouched_when_the_run_is_refused(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("earlier run\n")
    code, _, err = _main(
        [
            "--resume",
            "--checkpoint-dir",
            str(tmp_path / "none"),
            "--metrics-out",
            str(metrics),
            *FAST,
        ]
    )
    assert code == 1
    _assert_one_line_error(err)
    assert metrics.read_text() == "earlier run\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--seed", str(2**32)],
        ["--no-checkpoint", "--checkpoint-dir", "somewhere"],
    ],
)
def test_more_bad_flags_exit_2(argv):
    code, _, err = _main([*argv, *FAST])
    assert code == 2
    _assert_one_line_error(err)


def test_log_every_0_turns_the_naive_loss_lines_off(tmp_path):
    code, out, _ = _main(
        ["--preset", "naive", "--epochs", "1", "--log-every", "0", "--no-checkpoint", *FAST]
    )
    assert code == 0
    assert "epoch 0" in out and "loss at batch" not in out


def test_device_gpu_with_a_gpu_build_but_no_driver_says_check_the_driver(monkeypatch):
    from jax._src import xla_bridge

    monkeypatch.setitem(
        xla_bridge._backend_errors, "cuda", "INTERNAL: no CUDA-capable device is detected"
    )
    code, _, err = _main(["--device", "gpu", "--no-checkpoint", *FAST])
    assert code == 1
    line = _assert_one_line_error(err)
    assert "nvidia-smi" in line and "no CUDA-capable device" in line


# --- --metrics-out: what is at the path, and what a failed run leaves there ---------------------


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_metrics_out_naming_a_directory_is_refused_up_front(tmp_path, _synthetic_data):
    code, out, err = _main(["--metrics-out", str(tmp_path), "--no-checkpoint", *FAST])
    assert code == 2
    line = _assert_one_line_error(err)
    assert "is a directory" in line and str(tmp_path) in line
    assert out == "" and all(not download for _, download in _synthetic_data)  # nothing fetched
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path.parent) == []


@pytest.mark.parametrize("flag", ["--metrics-out", "--checkpoint-dir", "--data-dir"])
def test_an_empty_path_is_a_usage_error(flag, _synthetic_data):
    code, _, err = _main([flag, "", *FAST])
    assert code == 2
    assert flag in _assert_one_line_error(err)
    assert _synthetic_data == []


def test_metrics_out_to_a_device_writes_in_place(tmp_path):
    # A symlink to /dev/null: the records go to the device; neither link nor device is replaced.
    link = tmp_path / "metrics"
    link.symlink_to("/dev/null")
    code, out, _ = _main(["--metrics-out", str(link), "--no-checkpoint", "--quiet", *FAST])
    assert code == 0 and TEST_LINE.match(out.strip())
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert _leftovers(tmp_path) == []


def test_metrics_out_through_a_symlink_writes_its_target(tmp_path):
    target = tmp_path / "runs" / "metrics.jsonl"
    target.parent.mkdir()
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    code, _, _ = _main(["--metrics-out", str(link), "--no-checkpoint", "--quiet", *FAST])
    assert code == 0
    assert link.is_symlink()
    events = [json.loads(line)["event"] for line in target.read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "test"
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []


DIVERGING = ["--optimizer", "sgd", "--learning-rate", "1e30", "--no-checkpoint", *FAST]


def test_a_run_that_fails_while_training_keeps_an_earlier_metrics_file(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("earlier run\n")
    code, _, err = _main(["--metrics-out", str(metrics), *DIVERGING])
    assert code == 1 and "learning-rate" in _assert_one_line_error(err)
    assert metrics.read_text() == "earlier run\n"
    assert _leftovers(tmp_path) == []


def test_a_run_that_fails_while_training_writes_its_records_where_no_file_was(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    code, _, _ = _main(["--metrics-out", str(metrics), *DIVERGING])
    assert code == 1
    events = [json.loads(line)["event"] for line in metrics.read_text().splitlines()]
    assert events == ["start"]  # the epoch that diverged never finished
    assert _leftovers(tmp_path) == []


# --- devices and memory ---------------------------------------------------------------------


def test_out_of_memory_at_start_with_checkpoints_on_is_one_line(tmp_path):
    # 784 x 10**7 float32 weights are 31 GB, over the 16 GiB of address space the child may use:
    # the allocation fails after the call that asked for it returned, and the first read of the
    # weights (the epoch-0 checkpoint) used to abort the process instead of raising.
    runner = str(Path(__file__).with_name("_synthetic_run.py"))
    limited = "\n".join(
        [
            "import resource, runpy, sys",
            "resource.setrlimit(resource.RLIMIT_AS, (16 * 2**30, 16 * 2**30))",
            f"sys.argv = [{runner!r}, *sys.argv[1:]]",
            f"sys.path.insert(0, {str(Path(runner).parent)!r})  # where _synthetic lives",
            f"runpy.run_path({runner!r}, run_name='__main__')",
        ]
    )
    directory = tmp_path / "ckpt"
    result = subprocess.run(
        [sys.executable, "-c", limited, "512", "--hidden", str(10**7), "--no-compile-cache"]
        + ["--checkpoint-dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-500:]
    line = _assert_one_line_error(result.stderr)
    assert "out of memory on cpu" in line and "--hidden" in line
    assert "--device cpu" not in line  # already on the CPU: no advice to move there
    assert "kept" not in line  # no epoch finished, so none is claimed to be kept
    assert checkpoint.latest_checkpoint(directory) is None


def _train_subprocess(argv, **env):
    """(exit code, stdout, stderr) of the CLI in a fresh process: JAX_PLATFORMS is read once."""
    result = subprocess.run(
        [sys.executable, "-m", "jaxmnist.train", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout, result.stderr


def test_jax_platforms_naming_an_unknown_platform_is_one_line():
    code, out, err = _train_subprocess(["--no-checkpoint"], JAX_PLATFORMS="nosuchplatform")
    assert code == 1 and out == ""
    line = _assert_one_line_error(err)
    assert "JAX_PLATFORMS=nosuchplatform" in line and "unset JAX_PLATFORMS" in line


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_device_gpu_with_jax_platforms_cpu_names_the_variable():
    code, out, err = _train_subprocess(["--device", "gpu", "--no-checkpoint"], JAX_PLATFORMS="cpu")
    assert code == 1 and out == ""
    line = _assert_one_line_error(err)
    assert "--device gpu" in line and "JAX_PLATFORMS=cpu" in line


@pytest.mark.parametrize("text", ["1_0", "\u0661", "1e3", "99999999999999999999999"])
def test_epochs_takes_plain_decimal_integers_of_sane_size(text):
    code, _, err = _main(["--epochs", text, *FAST])
    assert code == 2
    assert "--epochs" in _assert_one_line_error(err)


def test_an_interrupted_run_writes_its_records_over_an_earlier_file(tmp_path, monkeypatch):
    # A stop the user asked for is not a failure: the records so far are this run's output.
    import jaxmnist.runner
    from jaxmnist.engine import EpochResult
    from jaxmnist.errors import Interrupted

    def one_epoch_then_stopped(config, data, *, callbacks, **kwargs):
        for callback in callbacks:
            callback.on_epoch_begin(1, 4)
            callback.on_epoch_end(EpochResult(1, 0.5, 0.8, 0.1, [0.5] * 4), None)
        raise Interrupted(2, 1)

    monkeypatch.setattr(jaxmnist.runner, "train_and_evaluate", one_epoch_then_stopped)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("earlier run\n")
    code, _, err = _main(["--metrics-out", str(metrics), "--no-checkpoint", "--quiet", *FAST])
    assert code == 130 and "interrupted in epoch 2" in err
    events = [json.loads(line)["event"] for line in metrics.read_text().splitlines()]
    assert events == ["start", "epoch"]
    assert _leftovers(tmp_path) == []


def test_metrics_out_to_stdout_redirected_to_a_log_appends_to_it(tmp_path):
    # /dev/stdout then names the log itself: replacing or truncating it would lose the log.
    log = tmp_path / "log.txt"
    log.write_text("earlier log\n")
    runner = str(Path(__file__).with_name("_synthetic_run.py"))
    argv = ["512", "--no-checkpoint", "--metrics-out", "/dev/stdout", "--quiet", *FAST]
    with open(log, "a") as stdout:
        result = subprocess.run(
            [sys.executable, runner, *argv], stdout=stdout, stderr=subprocess.PIPE, timeout=300
        )
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier log"
    events = [json.loads(line)["event"] for line in lines[1:-1]]
    assert events[0] == "start" and events[-1] == "test" and "epoch" in events
    assert TEST_LINE.match(lines[-1])
    assert _leftovers(tmp_path) == []


def test_metrics_out_to_a_pipe_nobody_reads_is_refused_not_waited_on(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    runner = str(Path(__file__).with_name("_synthetic_run.py"))
    result = subprocess.run(
        [sys.executable, runner, "512", "--no-checkpoint", "--metrics-out", str(pipe), *FAST],
        capture_output=True,
        text=True,
        timeout=120,  # a regression would block in open() until this kills it
    )
    assert result.returncode == 2 and result.stdout == ""
    line = _assert_one_line_error(result.stderr)
    assert "a pipe that nobody reads" in line and str(pipe) in line


def test_report_needs_checkpoints(tmp_path):
    code, _, err = _main(["--report", "--no-checkpoint", *FAST])
    assert code == 2
    assert _assert_one_line_error(err).endswith("--report needs checkpoints: drop --no-checkpoint")


def test_report_flag_writes_the_report_after_the_run(tmp_path):
    pytest.importorskip("matplotlib")
    directory = tmp_path / "ckpt"
    code, out, err = _main(["--epochs", "1", *FAST, "--checkpoint-dir", str(directory), "--report"])
    assert code == 0, err
    assert out.splitlines()[-1] == f"report: {directory / 'report' / 'report.html'}"
    assert (directory / "report" / "report.html").stat().st_size > 10_000
