"""The GPU measurements of issue 13 in one command, sized for a short lease of a GPU machine.

1. per epoch at batch 128: jaxmnist in float32 and bfloat16 beside PyTorch (`benchmarks.compare`;
   goal: under 10 ms per float32 epoch on an H100 or H200);
2. the speedrun: the fast and keras presets' training times and 10-seed accuracy
   (`benchmarks.speedrun`, the chapter's Keras program too where Keras is installed);
3. seeds per second: `--seeds` trained in this process, vmapped and in turn, for several counts of
   seeds (the keras preset; epoch 1 compiles and is not timed).
Each part writes as it finishes, so a lease that ends early keeps what was done: gpu.md and gpu.json
in --out, compare/ and speedrun/ below it. A part that fails is named there, with its error, and
the others still run (the exit status is then 1). `--parts` reruns only some.

    python -m benchmarks.gpu [--device gpu] [--parts compare,speedrun,seeds] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._machine import machine_info
from benchmarks._runner import ROOT, missing_modules
from benchmarks.speedrun import _finite

PARTS = ("compare", "speedrun", "seeds")
WAYS = ("vmap", "sequential")
EPOCH_GOAL_SECONDS = 0.010


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give seed counts such as 1,10,100") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each seed count must be at least 1")
    return counts


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(text.split(","))
    if unknown := sorted(set(parts) - set(PARTS)):
        raise argparse.ArgumentTypeError(f"unknown parts {unknown}; choose from {list(PARTS)}")
    return parts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu",
        description=__doc__.split("\n\n    python")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default="gpu")
    parser.add_argument("--parts", type=_parts, default=PARTS, help="any of " + ",".join(PARTS))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each system (3)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per compared run (5)")
    parser.add_argument("--seeds", type=int, default=10, help="the speedrun's seeds (10)")
    parser.add_argument(
        "--seed-counts", type=_counts, default=(1, 10, 100), help="seeds per program (1,10,100)"
    )
    parser.add_argument(
        "--seed-epochs", type=int, default=3, help="epochs per seeds program; 1 is untimed (3)"
    )
    parser.add_argument(
        "--train-samples", type=int, default=0, help="train on the first N images (0: all 60000)"
    )
    parser.add_argument(
        "--no-keras",
        action="store_true",
        help="leave the chapter's Keras program out of the speedrun",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run before a kill")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu", help="where to write"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 2 or args.seed_epochs < 2 or args.seeds < 1:
        parser.error("--repeats and --seeds must be at least 1, --epochs and --seed-epochs 2")
    if args.train_samples < 0 or args.timeout <= 0:
        parser.error("--train-samples must be at least 0 and --timeout positive")
    return args


def device_info(device: str) -> dict:
    """The accelerator by name, as jax reports it, beside the host's facts."""
    import jax

    target = jax.devices(device)[0]
    return machine_info() | {
        "device": device,
        "device_kind": target.device_kind,
        "device_count": len(jax.devices(device)),
    }


def seeds_rates(
    counts: tuple[int, ...], device: str, epochs: int, train_samples: int, ways=WAYS
) -> list[dict]:
    """Per way of running seeds and count of seeds: the epoch time after the first (which
    compiles), seed-epochs and images per second, and the seeds' mean test accuracy."""
    import jax

    from jaxmnist.config import PRESETS
    from jaxmnist.data import load_mnist
    from jaxmnist.devices import enable_compile_cache, resolve_device, tune_xla_cpu
    from jaxmnist.seeds import train_and_evaluate_seeds

    tune_xla_cpu()  # as the command line does
    enable_compile_cache()
    config = PRESETS["keras"].replace(epochs=epochs, train_samples=train_samples)
    data = load_mnist()
    samples = train_samples or len(data[0][0])
    target = resolve_device(device)
    rows = []
    for how in ways:
        for count in counts:
            stamps = [time.perf_counter()]

            def on_epoch_end(results, states, stamps=stamps):
                jax.block_until_ready(states)
                stamps.append(time.perf_counter())

            results = train_and_evaluate_seeds(
                config, data, range(count), device=target, on_epoch_end=on_epoch_end, how=how
            )
            timed = np.diff(stamps)[1:]
            median = float(np.median(timed))
            rows.append(
                {
                    "how": how,
                    "seeds": count,
                    "epoch_seconds": timed.tolist(),
                    "median": median,
                    "min": float(timed.min()),
                    "max": float(timed.max()),
                    "seed_epochs_per_second": count / median,
                    "images_per_second": count * samples / median,
                    "test_accuracy": float(np.mean([r.test_accuracy for r in results])),
                }
            )
            print(f"[seeds] {how} {count}: {median:.4f} s/epoch", file=sys.stderr)
    return rows


def _ms(seconds) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.1f}"


def seeds_table(rows: list[dict]) -> str:
    in_turn = {r["seeds"]: r["median"] for r in rows if r["how"] == "sequential"}
    lines = [
        "| seeds | how | ms/epoch median (min-max) | seed-epochs/s | images/s | × in turn "
        "| test acc |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        faster = in_turn.get(r["seeds"], math.nan) / r["median"]
        lines.append(
            f"| {r['seeds']} | {r['how']} | {_ms(r['median'])} ({_ms(r['min'])}-{_ms(r['max'])}) "
            f"| {r['seed_epochs_per_second']:.1f} | {r['images_per_second']:,.0f} "
            f"| {'-' if math.isnan(faster) else f'{faster:.2f}'} | {r['test_accuracy']:.4f} |"
        )
    return "\n".join(lines)


def epoch_goal_line(compare: dict) -> str:
    """Whether the float32 epoch is under the issue's 10 ms (it is set for an H100 or H200)."""
    row = next((r for r in compare["rows"] if r["name"] == "jaxmnist"), None)
    if row is None or row["status"] != "ok":
        return "jaxmnist float32 did not run: no epoch time"
    median = row["epoch_median"]
    verdict = "met" if median < EPOCH_GOAL_SECONDS else "not met"
    return f"jaxmnist float32: {_ms(median)} ms an epoch at batch 128 (goal under 10 ms: {verdict})"


def write(out: Path, result: dict) -> None:
    """gpu.md and gpu.json from what has been measured so far."""
    machine = result["machine"]
    sections = [f"# benchmarks.gpu on {machine['device_kind']} ({machine['device']})"]
    if "compare" in result:
        sections += ["## Per epoch", result["compare_md"], epoch_goal_line(result["compare"])]
    if "speedrun" in result:
        sections += ["## Speedrun", result["speedrun_md"]]
    if "seeds" in result:
        sections += ["## Seeds per second (keras preset)", seeds_table(result["seeds"])]
    if errors := result.get("errors"):
        sections += ["## Failed", "\n".join(f"- {part}: {line}" for part, line in errors.items())]
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.md").write_text("\n\n".join(sections) + "\n")
    saved = _finite({k: v for k, v in result.items() if not k.endswith("_md")})
    (out / "gpu.json").write_text(json.dumps(saved, indent=1, default=str, allow_nan=False) + "\n")


def _compare(args: argparse.Namespace, sample: list[str]) -> tuple[dict, str]:
    from benchmarks import compare

    systems = ["jaxmnist", "jaxmnist-bf16"] + ([] if missing_modules(("torch",)) else ["torch"])
    result = compare.main(
        [
            *("--device", args.device, "--systems", ",".join(systems)),
            *("--repeats", str(args.repeats), "--epochs", str(args.epochs)),
            *("--timeout", str(args.timeout), "--out", str(args.out / "compare"), *sample),
        ]
    )
    return result, (args.out / "compare" / "compare.md").read_text()


def _speedrun(args: argparse.Namespace, sample: list[str]) -> tuple[list, str]:
    from benchmarks import speedrun

    keras = ["--no-keras"] if args.no_keras or missing_modules(("keras",)) else []
    rows = speedrun.main(
        [
            *("--device", args.device, "--repeats", str(args.repeats)),
            *("--seeds", str(args.seeds), "--timeout", str(args.timeout)),
            *("--out", str(args.out / "speedrun"), *sample, *keras),
        ]
    )
    return rows, (args.out / "speedrun" / "speedrun.md").read_text()


def _seeds(args: argparse.Namespace, sample: list[str]) -> tuple[list, str]:
    rows = seeds_rates(args.seed_counts, args.device, args.seed_epochs, args.train_samples)
    return rows, ""


_RUNNERS = {"compare": _compare, "speedrun": _speedrun, "seeds": _seeds}


def main(argv: list[str] | None = None) -> dict:
    """Runs the chosen parts; the result has an "errors" entry for each part that failed."""
    args = parse_args(argv)
    from benchmarks import floor

    if not floor.xla_sees(args.device):
        sys.exit(f"--device {args.device}: JAX sees no such device here (for a GPU: jax[cuda12])")
    sample = ["--train-samples", str(args.train_samples)] if args.train_samples else []
    result: dict = {
        "command": ["python", "-m", "benchmarks.gpu", *(sys.argv[1:] if argv is None else argv)],
        "machine": device_info(args.device),
    }
    for part in PARTS:
        if part not in args.parts:
            continue
        try:
            result[part], result[f"{part}_md"] = _RUNNERS[part](args, sample)
        except Exception as error:  # a lease is short: one part's failure must not cost the rest
            line = " ".join(f"{type(error).__name__}: {error}".split())[:500]
            result.setdefault("errors", {})[part] = line
            print(f"[{part}] failed: {line}", file=sys.stderr)
        write(args.out, result)
    print((args.out / "gpu.md").read_text())
    return result


if __name__ == "__main__":
    sys.exit(1 if main().get("errors") else 0)
