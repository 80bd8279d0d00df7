"""Statistics over runs, ratios, and the Markdown table: pure functions of the metrics, no timing.

Per system, the epoch time is the median over epochs 2..N of all repeats (epoch 1 carries the
compilation and is reported on its own), with the min-max range of the same epochs beside it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks._runner import Run


@dataclass
class Summary:
    """One row of the comparison."""

    name: str
    group: str = "float32"
    status: str = "ok"
    reason: str = ""
    repeats: int = 0
    timed_epochs: int = 0
    epoch_median: float = math.nan
    epoch_min: float = math.nan
    epoch_max: float = math.nan
    first_epoch: float = math.nan
    wall_median: float = math.nan
    wall_min: float = math.nan
    wall_max: float = math.nan
    train_accuracy: float = math.nan
    test_accuracy: float = math.nan
    max_rss_mib: float = math.nan
    vs_baseline: float = math.nan  # epoch_median / the baseline's: 2.0 means twice as slow
    vs_floor: float = math.nan  # epoch_median / floor epoch time
    wall_vs_baseline: float = math.nan


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def summarise(name: str, runs: Sequence[Run], group: str = "float32") -> Summary:
    """Pools a system's runs; any failed run marks the row failed, a skip marks it skipped."""
    row = Summary(name, group)
    for status in ("failed", "skipped"):
        if bad := [r for r in runs if r.status == status]:
            row.status, row.reason = status, bad[0].reason
            return row
    if not runs:
        row.status, row.reason = "skipped", "not run"
        return row
    epochs = [e for r in runs for e in r.of("epoch")]
    timed = [e["seconds"] for e in epochs if e["epoch"] >= 2]
    walls = [r.wall_seconds for r in runs]
    row.repeats, row.timed_epochs = len(runs), len(timed)
    if timed:
        row.epoch_median, row.epoch_min, row.epoch_max = _median(timed), min(timed), max(timed)
    row.first_epoch = _median([e["seconds"] for e in epochs if e["epoch"] == 1])
    row.wall_median, row.wall_min, row.wall_max = _median(walls), min(walls), max(walls)
    row.train_accuracy = _median([r.of("epoch")[-1]["accuracy"] for r in runs if r.of("epoch")])
    row.test_accuracy = _median([r.of("test")[-1]["accuracy"] for r in runs if r.of("test")])
    row.max_rss_mib = max(r.max_rss_bytes for r in runs) / 2**20
    return row


def add_ratios(rows: Sequence[Summary], baseline: str, floor_seconds: float) -> None:
    """Fills each row's ratios to the baseline row and to the floor (NaN where one is missing)."""
    base = next((r for r in rows if r.name == baseline and r.status == "ok"), None)
    for row in rows:
        if base is not None:
            row.vs_baseline = row.epoch_median / base.epoch_median
            row.wall_vs_baseline = row.wall_median / base.wall_median
        if floor_seconds > 0:
            row.vs_floor = row.epoch_median / floor_seconds


def _num(value: float, fmt: str = ".3f") -> str:
    return "-" if math.isnan(value) else format(value, fmt)


HEADER = (
    "| system | s/epoch median | min-max | first epoch s | process s | train acc | test acc "
    "| x jaxmnist | x floor | process x jaxmnist | peak RSS MiB |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def table_row(row: Summary) -> str:
    if row.status != "ok":
        return f"| {row.name} | {row.status}: {row.reason} |" + " |" * 9
    return (
        f"| {row.name} | {_num(row.epoch_median)} | {_num(row.epoch_min, '.2f')}-"
        f"{_num(row.epoch_max, '.2f')} | {_num(row.first_epoch, '.2f')} "
        f"| {_num(row.wall_median, '.1f')} | {_num(row.train_accuracy, '.4f')} "
        f"| {_num(row.test_accuracy, '.4f')} | {_num(row.vs_baseline, '.2f')} "
        f"| {_num(row.vs_floor, '.2f')} | {_num(row.wall_vs_baseline, '.2f')} "
        f"| {_num(row.max_rss_mib, '.0f')} |"
    )


def markdown_table(rows: Sequence[Summary], floor: dict | None = None) -> str:
    """The comparison: float32 rows with the floor rows, then each other group in its own table."""
    groups = list(dict.fromkeys(r.group for r in rows))
    parts = []
    for group in groups:
        title = f"**{group}**" + ("" if group == "float32" else _APART)
        lines = [title, "", HEADER] + [table_row(r) for r in rows if r.group == group]
        if floor and group == "float32":
            lines += [_floor_row(floor, label, key) for label, key in _FLOOR_ROWS]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


_APART = " (apart from the float32 rows; its ratios are to the float32 jaxmnist row and floor)"
_FLOOR_ROWS = (
    ("floor: best of numpy/XLA per product", "seconds"),
    ("floor: numpy only", "numpy_seconds"),
    ("floor: XLA only", "xla_seconds"),
)


def _floor_row(floor: dict, label: str, key: str) -> str:
    vs_floor = floor[key] / floor["seconds"]
    return f"| {label} | {floor[key]:.3f} | | | | | | | {vs_floor:.2f} | | |"


# The issue's CPU targets: (row, "epoch" or "process", comparison, bound). For the floor row the
# ratio is jaxmnist / floor; for peers it is peer / jaxmnist (how many times faster jaxmnist is).
# Issue 13's goals, on every CPU: per epoch at most 1.2x the floor and 1.5x, 2x, 3x faster than
# Keras on JAX, PyTorch and Keras on TensorFlow; a whole run at most 0.4x Keras on JAX's (2.5x).
TARGETS = (
    ("jaxmnist", "floor", "<=", 1.2),
    ("keras-jax", "epoch", ">=", 1.5),
    ("torch", "epoch", ">=", 2.0),
    ("keras-tf", "epoch", ">=", 3.0),
    ("keras-jax", "process", ">=", 2.5),
)


def target_lines(rows: Sequence[Summary]) -> list[str]:
    """One line per target that this run can judge: the measured ratio and whether it is met."""
    by_name = {r.name: r for r in rows if r.status == "ok"}
    lines = []
    for name, kind, op, bound in TARGETS:
        if name not in by_name:
            continue
        row = by_name[name]
        ratio = {"floor": row.vs_floor, "epoch": row.vs_baseline, "process": row.wall_vs_baseline}
        value = ratio[kind]
        if math.isnan(value):
            continue
        met = value <= bound if op == "<=" else value >= bound
        what = {"floor": "jaxmnist s/epoch / floor", "epoch": f"{name} / jaxmnist s/epoch"}
        label = what.get(kind, f"{name} / jaxmnist whole process")
        lines.append(
            f"- {label} = {value:.2f} (target {op} {bound}): {'met' if met else 'NOT met'}"
        )
    return lines
