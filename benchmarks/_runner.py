"""Running one system once: a subprocess timed from outside, its metrics file read back.

A system is a Python module that speaks the metrics protocol (see `peers/_common.py`). It is
skipped, never faked, when a module it needs is missing or it reports that it cannot run here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class System:
    """A program to benchmark: `python -m module *args`, what it needs, how it is grouped."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # Rows are compared within a group: the float32 systems with each other, bfloat16 apart.
    group: str = "float32"


@dataclass
class Run:
    """One run of a system: "ok", "skipped" or "failed", with what was measured from outside."""

    system: str
    repeat: int
    status: str
    reason: str = ""
    wall_seconds: float = float("nan")
    max_rss_bytes: int = 0
    events: list[dict] = field(default_factory=list)

    def of(self, event: str) -> list[dict]:
        return [e for e in self.events if e.get("event") == event]


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules that cannot be imported here (found without importing the module itself)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a missing parent package
            found = False
        if not found:
            missing.append(name)
    return missing


def read_events(path: Path) -> list[dict]:
    """The JSON lines of a metrics file; a torn last line (a killed run) is ignored."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def _wait(process: subprocess.Popen, timeout: float | None) -> tuple[int, int]:
    """Waits for the child; returns its exit code and its own peak RSS in bytes."""
    timer = threading.Timer(timeout, process.kill) if timeout else None
    if timer:
        timer.start()
    try:
        # os.wait4 gives this child's rusage; RUSAGE_CHILDREN would be the max over all children.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        return process.returncode, usage.ru_maxrss * 1024  # Linux reports KiB
    except ChildProcessError:  # reaped by the timer's kill() racing a normal exit
        return process.returncode or 0, 0
    finally:
        if timer:
            timer.cancel()


def run_system(
    system: System,
    args: list[str],
    out_dir: Path,
    repeat: int = 0,
    timeout: float | None = None,
) -> Run:
    """Runs `system` once with the shared `args` and returns what it reported."""
    if missing := missing_modules(system.requires):
        return Run(system.name, repeat, "skipped", f"not installed: {', '.join(missing)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / f"{system.name}-{repeat}.jsonl"
    log_path = metrics_path.with_suffix(".log")
    metrics_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", system.module, *args, *system.args]
    command += ["--metrics-out", str(metrics_path)]
    env = {**os.environ, **system.env}
    with open(log_path, "w") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        code, rss = _wait(process, timeout)
        wall = time.perf_counter() - start

    run = Run(system.name, repeat, "ok", "", wall, rss, read_events(metrics_path))
    if skips := run.of("skip"):
        run.status, run.reason = "skipped", skips[-1].get("reason", "")
    elif code != 0 or not run.of("epoch"):
        tail = log_path.read_text().strip().splitlines()[-1:] or ["no output"]
        run.status, run.reason = "failed", f"exit {code}: {tail[0][:200]} (see {log_path})"
    return run
