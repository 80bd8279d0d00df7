"""PNG charts for the comparison and the sweep; without matplotlib, a note instead."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks._report import Summary


def _pyplot():
    """matplotlib.pyplot on the file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed; must precede the pyplot import
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def compare_chart(rows: Sequence[Summary], floor: dict | None, path: Path) -> str:
    """Bars of s/epoch (min-max whiskers) and whole-process time; returns a note for the report."""
    plt = _pyplot()
    if plt is None:
        return "chart skipped: matplotlib is not installed"
    ok = [r for r in rows if r.status == "ok"][::-1]  # first row on top
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.55 * len(ok) + 1.8), sharey=True)
    names = [r.name for r in ok]
    medians = [r.epoch_median for r in ok]
    # One stalled epoch (a busy machine) must not squash all bars: clip the axis, label the outlier.
    limit = 1.6 * max(medians, default=1.0)
    whiskers = [
        [m - r.epoch_min for m, r in zip(medians, ok, strict=True)],
        [min(r.epoch_max, limit) - m for m, r in zip(medians, ok, strict=True)],
    ]
    left.barh(names, medians, xerr=whiskers, color="tab:blue", capsize=3)
    for y, row in enumerate(ok):
        clipped = f" (max {row.epoch_max:.2f})" if row.epoch_max > limit else ""
        end = min(row.epoch_max, limit)
        left.annotate(f" {row.epoch_median:.3f}{clipped}", (end, y), va="center", fontsize=8)
    left.set_xlim(0, limit * 1.25)
    if floor:
        left.axvline(floor["seconds"], color="tab:red", linestyle="--", label="floor")
        left.legend(loc="lower right")
    left.set_xlabel("seconds per epoch (median of epochs 2..N, min-max)")
    right.barh(names, [r.wall_median for r in ok], color="tab:gray")
    right.set_xlabel("whole process, seconds (imports, compile, train, test)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"chart: {path}"


def sweep_chart(rows: Sequence[dict], path: Path) -> str:
    """Samples/s and peak memory against batch size and hidden width, one column per axis."""
    plt = _pyplot()
    if plt is None:
        return "chart skipped: matplotlib is not installed"
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for column, (axis, fixed) in enumerate((("batch_size", "hidden"), ("hidden", "batch_size"))):
        points = sorted(
            (r for r in rows if r["axis"] == axis and r["status"] == "ok"), key=lambda r: r[axis]
        )
        speed, memory = axes[0][column], axes[1][column]
        if not points:  # every run on this axis failed or was skipped: leave the panels empty
            continue
        x = [r[axis] for r in points]
        title = f"{fixed} = {points[0][fixed]}"
        speed.plot(x, [r["samples_per_second"] for r in points], "o-")
        speed.set_ylabel("training samples / s")
        speed.set_ylim(bottom=0)
        memory.plot(x, [r["max_rss_mib"] for r in points], "o-", label="host peak RSS")
        if any(r.get("device_peak_mib") for r in points):
            memory.plot(
                x, [r.get("device_peak_mib") or 0 for r in points], "s--", label="device peak"
            )
        memory.set_ylabel("MiB")
        memory.legend()
        memory.set_ylim(bottom=0)
        for ax in (speed, memory):
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [str(v) for v in x])
            ax.set_xlabel(axis)
            ax.set_title(title)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"chart: {path}"
