"""XLA's CPU settings: which flags training adds, that a user's own are kept, and that the copy
flag changes no result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jaxmnist import devices
from tests._synthetic import train_figures

REGION = "--xla_cpu_copy_insertion_use_region_analysis=true"
WIDTH = "--xla_cpu_prefer_vector_width=512"


def _user_xla_flags(monkeypatch, flags: str | None) -> None:
    if flags is None:
        monkeypatch.delenv("XLA_FLAGS", raising=False)
    else:
        monkeypatch.setenv("XLA_FLAGS", flags)


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
    monkeypatch.setattr(devices, "_cpu_vendor", lambda: "AuthenticAMD")
    _user_xla_flags(monkeypatch, before)
    devices.tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == after
    devices.tune_xla_cpu()  # a second call adds nothing
    assert os.environ["XLA_FLAGS"] == after


EIGEN = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"


@pytest.mark.parametrize(
    ("jaxlib", "before", "after"),
    [
        ((0, 10, 2), None, f"{REGION} {EIGEN}"),
        ((0, 10, 7), None, f"{REGION} {EIGEN}"),
        # a jaxlib whose XLA may not know the flag: it would stop the process
        ((0, 11, 0), None, REGION),
        ((0, 9, 0), None, REGION),
        ((), None, REGION),
        # the user's own choice stays
        (
            (0, 10, 2),
            "--xla_cpu_experimental_ynn_fusion_type=default",
            f"--xla_cpu_experimental_ynn_fusion_type=default {REGION}",
        ),
    ],
)
def test_on_intel_single_products_go_to_eigen_with_the_jaxlib_measured(
    monkeypatch, jaxlib, before, after
):
    monkeypatch.setattr(devices, "_cpu_has", lambda feature: False)
    monkeypatch.setattr(devices, "_cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setattr(devices, "_jaxlib_release", lambda: jaxlib)
    _user_xla_flags(monkeypatch, before)
    devices.tune_xla_cpu()
    assert os.environ["XLA_FLAGS"] == after


def test_the_cpu_fields_are_read_from_proc_cpuinfo():
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    vendor = next((line for line in text.splitlines() if line.startswith("vendor_id")), None)
    if vendor is None:
        pytest.skip("no vendor_id in /proc/cpuinfo (not x86)")
    assert devices._cpu_vendor() == vendor.split(":", 1)[1].strip()
    import jaxlib.version

    release = devices._jaxlib_release()
    assert len(release) == 3
    assert jaxlib.version.__version__.startswith(".".join(map(str, release)))


def _train(metrics: Path, xla_flags: str) -> list[dict]:
    flags = ["--epochs", "2", "--no-checkpoint", "--no-compile-cache", "--quiet"]
    return train_figures(metrics, *flags, env={"XLA_FLAGS": xla_flags})


def test_region_copy_insertion_trains_bit_for_bit_the_same(tmp_path):
    with_copies = _train(
        tmp_path / "with-copies.jsonl", "--xla_cpu_copy_insertion_use_region_analysis=false"
    )
    without = _train(tmp_path / "without.jsonl", REGION)
    assert len(with_copies) == 3 and with_copies == without
