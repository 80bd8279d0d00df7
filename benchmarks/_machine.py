"""What the numbers were measured on: the CPU, the versions, and how much other work shared it.

The machine may be shared (CI, other jobs): `OtherLoad` measures the CPU time spent by processes
outside this benchmark while it ran, from /proc/stat minus this process's own and its children's.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from importlib import metadata

_PACKAGES = ("jax", "jaxlib", "numpy", "keras", "tensorflow", "tensorflow-cpu", "torch")


def cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_info() -> dict:
    """The CPU model, usable cores, Python and the versions of everything measured."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "cores": cores(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (steal included), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds used by this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class OtherLoad:
    """CPU used by other processes between construction and `report()`, in cores on average."""

    def __init__(self) -> None:
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())

    def report(self) -> dict:
        wall0, busy0, own0 = self._start
        wall, busy = time.perf_counter() - wall0, _busy_seconds()
        if busy is None or busy0 is None or wall <= 0:
            return {"other_cores": None, "note": ""}
        other = max(0.0, (busy - busy0) - (_own_seconds() - own0)) / wall
        note = ""
        if other > 0.1 * cores():
            note = (
                f"other processes used {other:.2f} of {cores()} cores on average during this run: "
                "times are inflated and noisier than on an idle machine"
            )
        return {"other_cores": other, "note": note}
