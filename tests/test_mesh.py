"""Data-parallel training on a mesh: the same model as one device, and the work really split.

The multi-device runs happen in a child process (tests/_mesh_run.py) with 4 simulated CPU devices,
so this process keeps one device and the rest of the suite its numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh")
    result = subprocess.run(
        [sys.executable, str(HERE / "_mesh_run.py"), str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=HERE,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_one_device_mesh_is_bitwise_no_mesh(report):
    assert report["params_1"] == 0.0 and report["losses_1"] == 0.0


@pytest.mark.parametrize("devices", [2, 3, 4])
def test_several_devices_match_one_within_float_reduction_order(report, devices):
    # 3 devices: the batch of 128 is padded to 129 and the padding masked.
    assert report[f"params_{devices}"] < 1e-6
    assert report[f"losses_{devices}"] < 1e-6


def test_the_same_device_count_twice_is_bitwise(report):
    assert report["repeat_4"] == 0.0


def test_the_compiled_step_splits_the_batch_and_sums_the_gradients(report):
    # A replicated computation would show the whole [128, 784] batch and no gradient all-reduce.
    assert report["gradient_all_reduce"]
    assert report["per_device_product"] and not report["whole_batch_product"]


def test_evaluation_on_the_mesh_gives_the_same_test_accuracy(report):
    assert report["test_4"] == report["test_1"]


@pytest.mark.parametrize(("first", "second"), [(1, 4), (4, 1)])
def test_resume_on_another_device_count(report, first, second):
    assert report[f"resume_{first}_{second}_epochs"] == [1, 2]
    assert report[f"resume_{first}_{second}"] < 1e-6


def test_cli_devices_trains_on_simulated_cpu_devices_and_records_the_count(tmp_path):
    directory = tmp_path / "ckpt"
    result = subprocess.run(
        [sys.executable, str(HERE / "_synthetic_run.py"), "512", "--devices", "3", "--epochs", "1"]
        + ["--hidden", "32", "--no-compile-cache", "--checkpoint-dir", str(directory)]
        + ["--metrics-out", str(tmp_path / "m.jsonl"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HERE,
    )
    assert result.returncode == 0, result.stderr
    start = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert (start["device"], start["devices"]) == ("cpu", 3)
    from jaxmnist.checkpoint import load_checkpoint

    assert load_checkpoint(directory)[1]["devices"] == 3


def test_cli_devices_on_a_missing_gpu_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(HERE / "_synthetic_run.py"), "512", "--devices", "2", "--device"]
        + ["gpu", "--no-checkpoint"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HERE,
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_more_devices_than_jax_sees_names_how_many_there_are(report):
    assert report["too_many"] == (
        "`devices` 5: jax sees 4 cpu device(s) here: pass `devices` 4 or fewer, or `devices` all"
    )
