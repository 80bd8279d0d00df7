"""The shortest time to 98% test accuracy: the fast preset against the keras preset and the
chapter's Keras program on JAX, on one machine in one run.

Two phases, so that nothing else runs while the timed processes do:
1. timing: each system as a whole `python -m` process, interleaved (A B C A B C ...), after one
   untimed warm-up run of each jaxmnist preset (a user's second run: data cached, programs
   compiled into the persistent cache). Training time is the sum of a run's epoch times.
2. accuracy: each preset trained with `--seeds` (`seeds.train_and_evaluate_seeds`), the test set
   evaluated after every epoch, for the mean over seeds and the first epoch it reaches 98%.
Writes a Markdown table to stdout and speedrun.md and speedrun.json to --out.

    python -m benchmarks.speedrun [--repeats 5] [--seeds 10] [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

from benchmarks._machine import OtherLoad, machine_info
from benchmarks._runner import ROOT, System, run_system

TARGET = 0.98  # mean test accuracy over the seeds
LOWEST = 0.977  # no seed below this
GOAL_TRAINING, GOAL_PROCESS = 0.25, 0.5  # fast / keras preset, at most

PRESETS = ("fast", "keras")
KERAS_JAX = System(
    "keras-jax",
    "benchmarks.peers.keras_chapter",
    requires=("keras", "jax"),
    env={"KERAS_BACKEND": "jax"},
)


def _preset(name: str) -> System:
    """A whole `python -m jaxmnist.train --preset NAME` process, as a user runs it, less the
    progress bar and checkpoints (the chapter's Keras program writes neither)."""
    flags = ("--preset", name, "--no-checkpoint", "--quiet", "--seed", "0")
    return System(name, "jaxmnist.train", flags, ("jaxmnist.train",))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speedrun",
        description=__doc__.split("\n\n    python")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each system (5)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 for accuracy (10)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--train-samples", type=int, default=0, help="train on the first N images (0: all 60000)"
    )
    parser.add_argument(
        "--no-keras", action="store_true", help="leave out the chapter's Keras program"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="benchmarks/results"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run before a kill")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.seeds < 1:
        parser.error("--repeats and --seeds must be at least 1")
    if args.timeout <= 0 or args.train_samples < 0:
        parser.error("--timeout must be positive and --train-samples at least 0")
    return args


def spread(values: list[float]) -> dict:
    """Median, min and max (NaN for none)."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def first_reaching(curve: list[float], threshold: float = TARGET) -> int | None:
    """The 1-based epoch at which `curve` (one value per epoch) first reaches `threshold`."""
    return next((epoch for epoch, value in enumerate(curve, 1) if value >= threshold), None)


def timing_row(name: str, runs: list) -> dict:
    """Training time (sum of epochs), whole-process time and per-epoch medians of `runs`."""
    bad = [r for r in runs if r.status != "ok"]
    if bad or not runs:
        reason = bad[0].reason if bad else "not run"
        return {"name": name, "status": bad[0].status if bad else "skipped", "reason": reason}
    epochs = [[e["seconds"] for e in r.of("epoch")] for r in runs]
    per_epoch = [statistics.median(column) for column in zip(*epochs, strict=False)]
    tests = [r.of("test")[-1]["accuracy"] for r in runs if r.of("test")]
    return {
        "name": name,
        "status": "ok",
        "training": spread([sum(e) for e in epochs]),
        "process": spread([r.wall_seconds for r in runs]),
        "epoch_seconds": per_epoch,  # median over the runs, epoch by epoch
        "test_accuracy": statistics.median(tests) if tests else math.nan,
    }


def accuracy_summary(curves: list[list[float]]) -> dict:
    """Per-seed test accuracy after every epoch -> final mean, std, min, max, and when the mean
    over seeds first reached TARGET."""
    final = [curve[-1] for curve in curves]
    mean_curve = [statistics.fmean(column) for column in zip(*curves, strict=True)]
    return {
        "seeds": len(curves),
        "mean": statistics.fmean(final),
        "std": statistics.pstdev(final),
        "min": min(final),
        "max": max(final),
        "mean_by_epoch": mean_curve,
        "epoch_reaching": first_reaching(mean_curve),
        "seeds_reaching": sum(first_reaching(curve) is not None for curve in curves),
    }


def time_to_target(row: dict) -> float:
    """Seconds of training until the epoch at which the mean accuracy first reached TARGET."""
    epoch = row.get("accuracy", {}).get("epoch_reaching")
    if row.get("status") != "ok" or epoch is None:
        return math.nan
    return sum(row["epoch_seconds"][:epoch])


def seed_curves(preset: str, seeds: int, train_samples: int, device: str) -> list[list[float]]:
    """Each seed's test accuracy after each epoch of `preset`, trained as `--seeds` trains."""
    from jaxmnist.config import PRESETS as CONFIGS
    from jaxmnist.data import load_mnist
    from jaxmnist.devices import enable_compile_cache, resolve_device, tune_xla_cpu
    from jaxmnist.model import chapter_model
    from jaxmnist.seeds import train_and_evaluate_seeds
    from jaxmnist.step import evaluate

    tune_xla_cpu()  # as the command line does, so these are the numbers `--seeds` prints
    enable_compile_cache()
    config = CONFIGS[preset].replace(train_samples=train_samples)
    data = load_mnist()
    target = resolve_device(device)
    spec = chapter_model(config.hidden)
    curves: list[list[float]] = [[] for _ in range(seeds)]

    def on_epoch_end(results, states):
        for curve, state in zip(curves, states, strict=True):
            curve.append(evaluate(state.params, *data[1], spec, device=target)[1])
        print(f"  {preset}: epoch {results[0].epoch} of {seeds} seeds", file=sys.stderr)

    train_and_evaluate_seeds(config, data, range(seeds), device=target, on_epoch_end=on_epoch_end)
    return curves


def _num(value: float, fmt: str = ".3f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


def markdown(rows: list[dict], machine: dict, device: str) -> str:
    """The table, then the goals, then what it ran on."""
    lines = [
        "| run | training s, median (min-max) | whole process s | test accuracy, mean ± std "
        "(min-max) | mean reaches 98% | time to 98% s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | {row['status']}: {row['reason']} | | | | |")
            continue
        t, p, acc = row["training"], row["process"], row.get("accuracy")
        if acc:
            accuracy = (
                f"{acc['mean']:.4f} ± {acc['std']:.4f} ({acc['min']:.4f}-{acc['max']:.4f}), "
                f"{acc['seeds']} seeds"
            )
            reach = acc["epoch_reaching"]
            reaches = f"epoch {reach}" if reach else f"no ({acc['mean_by_epoch'][-1]:.4f} at last)"
        else:
            accuracy, reaches = f"{_num(row['test_accuracy'], '.4f')}, 1 run", "-"
        lines.append(
            f"| {row['name']} | {_num(t['median'])} ({_num(t['min'])}-{_num(t['max'])}) | "
            f"{_num(p['median'], '.2f')} ({_num(p['min'], '.2f')}-{_num(p['max'], '.2f')}) | "
            f"{accuracy} | {reaches} | {_num(time_to_target(row))} |"
        )
    lines += ["", *goal_lines(rows), ""]
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    where = f"{machine.get('cpu')} ({machine.get('cores')} cores), {device}"
    lines.append(f"Measured on {where}; {versions}.")
    return "\n".join(lines)


def goal_lines(rows: list[dict]) -> list[str]:
    """The issue's goals, each with the measured ratio and whether it is met."""
    by_name = {row["name"]: row for row in rows if row["status"] == "ok"}
    fast, keras = by_name.get("fast"), by_name.get("keras")
    if not (fast and keras):
        return ["Goals: not measured (the fast or keras preset did not run)."]
    lines = []
    for label, key, goal in (
        ("training time", "training", GOAL_TRAINING),
        ("whole process", "process", GOAL_PROCESS),
    ):
        ratio = fast[key]["median"] / keras[key]["median"]
        met = "met" if ratio <= goal else "NOT met"
        lines.append(f"- fast / keras preset, {label}: {ratio:.2f}x (goal <= {goal}x): {met}")
    if acc := fast.get("accuracy"):
        ok = acc["mean"] >= TARGET and acc["min"] >= LOWEST
        lines.append(
            f"- fast preset over {acc['seeds']} seeds: mean {acc['mean']:.4f}, lowest "
            f"{acc['min']:.4f} (goal: mean >= {TARGET}, none below {LOWEST}): "
            f"{'met' if ok else 'NOT met'}"
        )
    return lines


def _finite(value):
    """`value` with every NaN or infinite float, however deep, as None: strict JSON has neither."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    from benchmarks.compare import _fetch_data

    _fetch_data()
    common = ["--device", args.device]
    if args.train_samples:
        common += ["--train-samples", str(args.train_samples)]
    systems = [_preset(name) for name in PRESETS] + ([] if args.no_keras else [KERAS_JAX])
    runs_dir = args.out / "speedrun-runs"
    machine, load = machine_info(), OtherLoad()
    for system in systems[: len(PRESETS)]:  # warm the data and compilation caches, untimed
        warm = run_system(system, common, runs_dir, repeat=-1, timeout=args.timeout)
        if warm.status != "ok":
            print(f"[warm-up] {system.name}: {warm.status} {warm.reason}", file=sys.stderr)
    runs: dict[str, list] = {system.name: [] for system in systems}
    for repeat in range(args.repeats):
        for system in systems:
            if runs[system.name] and runs[system.name][0].status == "skipped":
                continue
            run = run_system(system, common, runs_dir, repeat, args.timeout)
            runs[system.name].append(run)
            detail = f"{run.wall_seconds:.2f} s process" if run.status == "ok" else run.reason
            print(f"[{repeat + 1}/{args.repeats}] {system.name}: {detail}", file=sys.stderr)
    rows = [timing_row(system.name, runs[system.name]) for system in systems]
    machine["other_load"] = load.report()
    for row in rows[: len(PRESETS)]:
        if row["status"] == "ok":
            curves = seed_curves(row["name"], args.seeds, args.train_samples, args.device)
            row["accuracy"] = accuracy_summary(curves) | {"curves": curves}
    report = markdown(rows, machine, args.device)
    if note := machine["other_load"].get("note"):
        report += f"\n\n- {note}"
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speedrun.md").write_text(report + "\n")
    result = {"command": ["python", "-m", "benchmarks.speedrun", *(argv or sys.argv[1:])]}
    result.update(machine=machine, settings=vars(args) | {"out": str(args.out)}, rows=rows)
    text = json.dumps(_finite(result), indent=1, default=str, allow_nan=False)
    (args.out / "speedrun.json").write_text(text + "\n")
    return rows


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
