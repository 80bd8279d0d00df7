"""XLA's CPU settings: which flags training adds, that a user's own are kept, and that the copy
flag changes no result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxmnist import devices

REGION = "--xla_cpu_copy_insertion_use_region_analysis=true"
WIDTH = "--xla_cpu_prefer_vector_width=512"


@pytest.mark.parametrize(
    ("avx512", "before", "after"),
    [
        (True, None, f"{REGION} {WIDTH}"),
        (False, None, REGION),
        (True, "--xla_dump_to=/tmp/d", f"--xla_dump_to=/tmp/d {REGION} {WIDTH}"),
        # the user's own value of either flag stays, whatever it is
        (True, "--xla_cpu_prefer_vector_width=256", f"--xla_cpu_prefer_vector_width=256 {REGION}"),
        (
            False,
            "--xla_cpu_copy_insertion_use_region_analysis=false",
            "--xla_cpu_copy_insertion_use_region_analysis=false",
        ),
    ],
)
def test_tune_xla_cpu_adds_what_this_cpu_needs_and_keeps_the_users_flags(
    monkeypatch, avx512, before, after
):
    monkeypatch.setattr(devices, "_cpu_has", lambda feature: avx512 and feature == "avx512f")
    if before is None:
        monkeypatch.delenv("XLA_FLAGS", raising=False)
    else:
        monkeypatch.setenv("XLA_FLAGS", before)
    devices.tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == after
    devices.tune_xla_cpu()  # a second call adds nothing
    assert os.environ["XLA_FLAGS"] == after


def _train(metrics: Path, xla_flags: str) -> list[dict]:
    runner = Path(__file__).with_name("_synthetic_run.py")
    flags = ["--epochs", "2", "--no-checkpoint", "--no-compile-cache", "--quiet"]
    env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
    subprocess.run(
        [sys.executable, str(runner), "600", *flags, "--metrics-out", str(metrics)],
        env=env,
        check=True,
        capture_output=True,
    )
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [
        {k: e.get(k) for k in ("event", "loss", "accuracy", "batch_losses")}
        for e in events
        if e["event"] in ("epoch", "test")
    ]


def test_region_copy_insertion_trains_bit_for_bit_the_same(tmp_path):
    with_copies = _train(
        tmp_path / "with-copies.jsonl", "--xla_cpu_copy_insertion_use_region_analysis=false"
    )
    without = _train(tmp_path / "without.jsonl", REGION)
    assert len(with_copies) == 3 and with_copies == without
