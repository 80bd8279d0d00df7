"""jaxmnist side by side with Keras (JAX and TensorFlow backends), PyTorch, and the matmul floor.

Each system runs in its own subprocess, interleaved (A B C A B C ...) so that a noisy machine slows
all of them alike; the floor is measured in-process at the start of every round and the best kept.
Writes a Markdown table to stdout, and compare.md, compare.json, compare.png and each run's metrics
and log to --out.

    python -m benchmarks.compare [--repeats 3] [--epochs 5] [--device cpu|gpu] [--systems a,b]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from benchmarks import floor as floor_mod
from benchmarks._chart import compare_chart
from benchmarks._machine import OtherLoad, machine_info
from benchmarks._report import add_ratios, markdown_table, summarise, target_lines
from benchmarks._runner import ROOT, Run, System, run_system

BASELINE = "jaxmnist"
_KERAS, _TORCH = "benchmarks.peers.keras_chapter", "benchmarks.peers.torch_mlp"


def _jaxmnist(name: str, loop: str, precision: str = "float32") -> System:
    """jaxmnist's own CLI, without checkpoints or a progress bar (the peers write neither)."""
    flags = ("--loop", loop, "--precision", precision, "--no-checkpoint", "--quiet", "--seed", "0")
    return System(name, "jaxmnist.train", flags, ("jaxmnist.train",), group=precision)


def all_systems() -> list[System]:
    """Every system the comparison knows, in table order; the bfloat16 row is its own group."""
    return [
        _jaxmnist(BASELINE, "scan"),
        _jaxmnist("jaxmnist-batch", "batch"),
        System("keras-jax", _KERAS, requires=("keras", "jax"), env={"KERAS_BACKEND": "jax"}),
        System(
            "keras-tf",
            _KERAS,
            requires=("keras", "tensorflow"),
            env={"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"},
        ),
        System("torch", _TORCH, requires=("torch",)),
        _jaxmnist("jaxmnist-bf16", "scan", "bfloat16"),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [s.name for s in all_systems()]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__.split("\n\n    python")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each system (3)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run; 1 is untimed (5)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (128)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden layer width (512)")
    parser.add_argument(
        "--train-samples", type=int, default=0, help="train on the first N images (0: all 60000)"
    )
    parser.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="for jaxmnist, peers and floor"
    )
    parser.add_argument(
        "--systems", default=",".join(names), help=f"comma-separated subset of: {', '.join(names)}"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="benchmarks/results"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run before a kill")
    parser.add_argument(
        "--floor-budget", type=float, default=0.3, help="seconds of timing per product and round"
    )
    args = parser.parse_args(argv)
    unknown = set(args.systems.split(",")) - set(names)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {names}")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: epoch 1 includes compilation and is not timed")
    return args


def _common_args(args: argparse.Namespace) -> list[str]:
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    common += ["--hidden", str(args.hidden), "--device", args.device]
    return common + (["--train-samples", str(args.train_samples)] if args.train_samples else [])


def _fetch_data() -> str:
    """Fetches MNIST into the cache before timing anything, so no run pays for the download."""
    try:
        from jaxmnist.data import load_mnist
    except ImportError as error:
        return f"jaxmnist.data unavailable ({error}); systems will load the data themselves"
    load_mnist()
    return ""


def _no_nan(record: dict) -> dict:
    """NaN (a skipped row's missing numbers) as null: strict JSON has no NaN."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}


def _progress(run: Run, repeat: int, repeats: int) -> None:
    epochs = [e["seconds"] for e in run.of("epoch")[1:]]
    detail = run.reason
    if run.status == "ok":
        mean = sum(epochs) / len(epochs) if epochs else float("nan")
        detail = f"{mean:.3f} s/epoch after the first, {run.wall_seconds:.1f} s process"
    print(f"[{repeat + 1}/{repeats}] {run.system}: {run.status} {detail}", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not floor_mod.xla_sees(args.device):
        sys.exit(f"--device {args.device}: JAX sees no such device here (for a GPU: jax[cuda12])")
    chosen = args.systems.split(",")
    systems = [s for s in all_systems() if s.name in chosen]
    runs_dir = args.out / "runs"
    notes = [n for n in [_fetch_data()] if n]
    if (args.epochs - 1) * args.repeats < 3:
        notes.append("fewer than 3 timed epochs per system: medians are indicative only")

    machine, other_load = machine_info(), OtherLoad()
    samples = args.train_samples or floor_mod.TRAIN_SIZE
    floors, runs = [], {s.name: [] for s in systems}
    for repeat in range(args.repeats):
        floors.append(
            floor_mod.measure_floor(
                args.batch_size, args.hidden, samples, args.device, args.floor_budget
            )
        )
        for system in systems:
            if runs[system.name] and runs[system.name][0].status == "skipped":
                continue  # skipped once (not installed, no GPU) means skipped every round
            run = run_system(system, _common_args(args), runs_dir, repeat, args.timeout)
            runs[system.name].append(run)
            _progress(run, repeat, args.repeats)

    floor = floor_mod.best_of(*floors)
    rows = [summarise(s.name, runs[s.name], s.group) for s in systems]
    add_ratios(rows, BASELINE, floor["seconds"])
    targets = target_lines(rows)
    machine["other_load"] = other_load.report()
    notes.append(machine["other_load"]["note"])

    args.out.mkdir(parents=True, exist_ok=True)
    notes.append(compare_chart(rows, floor, args.out / "compare.png"))
    report = "\n\n".join(
        [
            markdown_table(rows, floor),
            floor_mod.markdown(floor),
            "Targets:\n" + "\n".join(targets) if targets else "",
            "\n".join(f"- {n}" for n in notes if n),
        ]
    ).strip()
    print(report)
    (args.out / "compare.md").write_text(report + "\n")
    result = {
        "command": ["python", "-m", "benchmarks.compare", *(argv or sys.argv[1:])],
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine,
        "floor": floor,
        "rows": [_no_nan(asdict(r)) for r in rows],
        "targets": targets,
        "notes": [n for n in notes if n],
        "runs": [_no_nan(asdict(r)) for rs in runs.values() for r in rs],
    }
    (args.out / "compare.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
