"""How the jaxmnist fast path scales: samples/s and peak memory against batch size and hidden width.

One axis at a time, the other held at the chapter's value (batch 128, hidden 512). Each point is a
short run in its own subprocess (`--train-samples`, a few epochs): its speed is the median of the
epochs after the first, its memory the child's peak RSS (and, on a GPU, the device's peak bytes).
Writes a Markdown table to stdout, and sweep.md, sweep.json and sweep.png to --out.

    python -m benchmarks.sweep [--batch-sizes 32,64,...] [--hiddens 512,...] [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from benchmarks._chart import sweep_chart
from benchmarks._machine import OtherLoad, machine_info
from benchmarks._runner import ROOT, System, run_system
from benchmarks.floor import TRAIN_SIZE, epoch_flops, xla_sees

BATCH_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
HIDDENS = (512, 1024, 2048, 4096)
_FLAGS = ("--loop", "scan", "--no-checkpoint", "--quiet", "--seed", "0")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sweep",
        description=__doc__.split("\n\n    python")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sizes, widths = ",".join(map(str, BATCH_SIZES)), ",".join(map(str, HIDDENS))
    parser.add_argument("--batch-sizes", type=_ints, default=list(BATCH_SIZES), help=sizes)
    parser.add_argument("--hiddens", type=_ints, default=list(HIDDENS), help=widths)
    parser.add_argument("--train-samples", type=int, default=16384, help="images per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per point; 1 is untimed (4)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="benchmarks/results"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run before a kill")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: epoch 1 includes compilation and is not timed")
    return args


def measure_point(args: argparse.Namespace, batch: int, hidden: int) -> dict:
    """One short run at (batch, hidden): its median timed epoch, throughput and peak memory."""
    flags = ["--epochs", str(args.epochs), "--batch-size", str(batch), "--hidden", str(hidden)]
    flags += ["--train-samples", str(args.train_samples), "--device", args.device]
    flags += ["--precision", args.precision]
    name = f"sweep-b{batch}-h{hidden}"
    system = System(name, "benchmarks._device_memory", _FLAGS, ("jaxmnist.train",))
    run = run_system(system, flags, args.out / "runs", timeout=args.timeout)
    row = {"batch_size": batch, "hidden": hidden, "status": run.status, "reason": run.reason}
    if run.status != "ok":
        return row
    timed = [e["seconds"] for e in run.of("epoch") if e["epoch"] >= 2]
    seconds = statistics.median(timed)
    samples = args.train_samples or TRAIN_SIZE
    peak = next((e["device_peak_bytes"] for e in run.of("memory")), None)
    return row | {
        "epoch_seconds": seconds,
        "first_epoch": run.of("epoch")[0]["seconds"],
        "samples_per_second": samples / seconds,
        "gflops_per_second": epoch_flops(samples, hidden) / seconds / 1e9,
        "max_rss_mib": run.max_rss_bytes / 2**20,
        "device_peak_mib": peak / 2**20 if peak else None,
        "test_accuracy": run.of("test")[-1]["accuracy"] if run.of("test") else math.nan,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| axis | batch | hidden | s/epoch | samples/s | GFLOP/s | first epoch s | peak RSS MiB "
        "| device peak MiB | test acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r['axis']} | {r['batch_size']} | {r['hidden']} "
        if r["status"] != "ok":
            lines.append(head + f"| {r['status']}: {r['reason']} |" + " |" * 6)
            continue
        device = f"{r['device_peak_mib']:.0f}" if r["device_peak_mib"] else "-"
        lines.append(
            head + f"| {r['epoch_seconds']:.3f} | {r['samples_per_second']:,.0f} "
            f"| {r['gflops_per_second']:.0f} | {r['first_epoch']:.2f} | {r['max_rss_mib']:.0f} "
            f"| {device} | {r['test_accuracy']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if not xla_sees(args.device):
        sys.exit(f"--device {args.device}: JAX sees no such device here (for a GPU: jax[cuda12])")
    points = [("batch_size", b, 512) for b in args.batch_sizes]
    points += [("hidden", 128, h) for h in args.hiddens]
    other_load = OtherLoad()
    measured: dict[tuple[int, int], dict] = {}  # (128, 512) lies on both axes: run it once
    rows = []
    for axis, batch, hidden in points:
        if (batch, hidden) not in measured:
            measured[batch, hidden] = measure_point(args, batch, hidden)
            r = measured[batch, hidden]
            print(f"batch {batch} hidden {hidden}: {r['status']}", file=sys.stderr)
        rows.append({"axis": axis, **measured[batch, hidden]})

    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info() | {"other_load": other_load.report()}
    notes = [machine["other_load"]["note"], sweep_chart(rows, args.out / "sweep.png")]
    report = markdown(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes if n)
    print(report)
    (args.out / "sweep.md").write_text(report + "\n")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {"settings": settings, "machine": machine, "rows": rows}
    (args.out / "sweep.json").write_text(json.dumps(result, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
