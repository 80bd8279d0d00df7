"""Data-parallel scaling of `python -m jaxmnist.train`: 1, 2, 4 ... devices, and 2 processes.

Every configuration trains the same model on the same global batch. Per configuration: the
epoch time (median of epochs 2..N over the repeats, with its range), samples per second, the
speed-up over one device, and the communication share: 1 - (per-device compute) / (epoch time),
where the per-device compute is a one-device run on the per-device shapes (batch B/D over N/D
images: the same steps, each as large as one device's part) with no collective at all.

On a CPU, jax's "devices" are simulated and share the same cores: the table then measures the
overhead of splitting the work (collectives, padding, dispatch), not a speed-up.

    python -m benchmarks.scaling [--devices 1,2,4] [--processes 2] [--epochs 3] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._machine import OtherLoad, machine_info
from benchmarks._runner import ROOT, read_events

TRAIN_SIZE = 60_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling",
        description=__doc__.split("\n\n    python")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", default="1,2,4", help="device counts, one process (1,2,4)")
    parser.add_argument(
        "--processes", type=int, default=2, help="also P processes x 1 device on 127.0.0.1 (2)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; 1 is untimed (3)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each configuration (1)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (128)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden layer width (512)")
    parser.add_argument("--train-samples", type=int, default=0, help="first N images (0: all)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="platform (cpu)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="benchmarks/results"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run (900)")
    args = parser.parse_args(argv)
    try:
        args.device_counts = [int(n) for n in args.devices.split(",")]
    except ValueError:
        parser.error(f"--devices {args.devices!r}: expected counts like 1,2,4")
    if not args.device_counts or min(args.device_counts) < 1:
        parser.error("--devices: every count must be at least 1")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: epoch 1 includes compilation and is not timed")
    if args.processes == 1 or args.processes < 0:
        parser.error("--processes must be 0 (none) or at least 2")
    return args


def _command(args, metrics: Path, devices=1, batch=None, samples=None) -> list[str]:
    samples = samples if samples is not None else args.train_samples
    command = [sys.executable, "-m", "jaxmnist.train", "--epochs", str(args.epochs)]
    command += ["--batch-size", str(batch or args.batch_size), "--hidden", str(args.hidden)]
    command += ["--device", args.device, "--devices", str(devices), "--no-checkpoint"]
    command += ["--quiet", "--seed", "0", "--metrics-out", str(metrics)]
    return command + (["--train-samples", str(samples)] if samples else [])


def _run(commands: list[list[str]], metrics: Path, timeout: float) -> dict:
    """Starts the processes of one run, waits for all (killing them at `timeout`), and reads
    process 0's metrics."""
    metrics.unlink(missing_ok=True)
    started = time.perf_counter()
    logs = [metrics.with_suffix(f".{index}.log") for index in range(len(commands))]
    procs = [
        subprocess.Popen(c, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
        for c, log in zip(commands, logs, strict=True)
    ]
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1, timeout - (time.perf_counter() - started))))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            codes.append("timeout")
    wall = time.perf_counter() - started
    epochs = [e["seconds"] for e in read_events(metrics) if e.get("event") == "epoch"]
    if any(code != 0 for code in codes) or len(epochs) < 2:
        tail = (logs[0].read_text().strip().splitlines() or ["no output"])[-1]
        return {"status": "failed", "reason": f"exit {codes}: {tail[:200]} (see {logs[0]})"}
    return {"status": "ok", "epochs": epochs[1:], "wall": wall}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def configurations(args) -> list[dict]:
    """What to run: each device count, then the processes, each with its compute-only twin."""
    samples = args.train_samples or TRAIN_SIZE
    rows = []
    for devices in args.device_counts:
        rows.append({"name": f"1 process x {devices} device(s)", "devices": devices, "procs": 1})
    if args.processes:
        rows.append(
            {
                "name": f"{args.processes} processes x 1 device",
                "devices": 1,
                "procs": args.processes,
            }
        )
    for row in rows:
        parts = row["devices"] * row["procs"]
        row["parts"] = parts
        # One device's share of each step, run alone: B/D images per step, the same step count.
        row["twin"] = (-(-args.batch_size // parts), -(-samples // parts)) if parts > 1 else None
    return rows


def _commands(args, row: dict, metrics: Path) -> list[list[str]]:
    if row["procs"] == 1:
        return [_command(args, metrics, row["devices"])]
    port = _free_port()
    return [
        _command(args, metrics if index == 0 else metrics.with_suffix(f".p{index}.jsonl"))
        + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(row["procs"])]
        + ["--process-id", str(index), "--coordinator-timeout", "60"]
        for index in range(row["procs"])
    ]


def _summary(row: dict, runs: list[dict], twins: list[dict], samples: int) -> dict:
    failed = [r for r in runs + twins if r["status"] != "ok"]
    if failed:
        return {"name": row["name"], "status": "failed", "reason": failed[0]["reason"]}
    epochs = [s for r in runs for s in r["epochs"]]
    median = statistics.median(epochs)
    result = {
        "name": row["name"],
        "status": "ok",
        "parts": row["parts"],
        "epoch_median": median,
        "epoch_min": min(epochs),
        "epoch_max": max(epochs),
        "samples_per_second": samples / median,
        "wall_median": statistics.median(r["wall"] for r in runs),
        "compute_median": math.nan,
        "communication_share": math.nan,
    }
    if twins:
        compute = statistics.median(s for r in twins for s in r["epochs"])
        result["compute_median"] = compute
        result["communication_share"] = max(0.0, 1 - compute / median)
    return result


def markdown(rows: list[dict], machine: dict, device: str) -> str:
    base = next((r["epoch_median"] for r in rows if r.get("parts") == 1), math.nan)
    lines = [
        f"Scaling on {machine['cpu']} ({machine['cores']} cores), jax "
        f"{machine['versions'].get('jax', '?')}, --device {device}",
        "",
        "| configuration | s/epoch (median, range) | samples/s | speed-up | communication share |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['status']}: {r['reason']} | | | |")
            continue
        share = r["communication_share"]
        lines.append(
            f"| {r['name']} | {r['epoch_median']:.3f} ({r['epoch_min']:.3f}-"
            f"{r['epoch_max']:.3f}) | {r['samples_per_second']:,.0f} | "
            f"{base / r['epoch_median']:.2f}x | {'-' if math.isnan(share) else f'{share:.0%}'} |"
        )
    if device == "cpu":
        lines += [
            "",
            "CPU devices here are simulated and share the same cores: these rows measure the "
            "overhead of splitting the work, not a speed-up.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    from benchmarks.compare import _fetch_data

    _fetch_data()
    runs_dir = args.out / "scaling-runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    machine, load = machine_info(), OtherLoad()
    samples = args.train_samples or TRAIN_SIZE
    rows = []
    for number, row in enumerate(configurations(args)):
        runs, twins = [], []
        for repeat in range(args.repeats):
            metrics = runs_dir / f"{number}-{repeat}.jsonl"
            runs.append(_run(_commands(args, row, metrics), metrics, args.timeout))
            if row["twin"]:
                batch, part = row["twin"]
                twin = runs_dir / f"{number}-{repeat}-compute.jsonl"
                twins.append(_run([_command(args, twin, 1, batch, part)], twin, args.timeout))
        rows.append(_summary(row, runs, twins, samples))
        done = rows[-1]
        detail = f"{done['epoch_median']:.3f} s/epoch" if done["status"] == "ok" else done["reason"]
        print(f"[{number + 1}] {row['name']}: {detail}", file=sys.stderr, flush=True)
    machine["other_load"] = load.report()
    report = markdown(rows, machine, args.device)
    if machine["other_load"]["note"]:
        report += f"\n\n- {machine['other_load']['note']}"
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.md").write_text(report + "\n")
    clean = [{k: None if v != v else v for k, v in r.items()} for r in rows]  # NaN -> null
    result = {"command": ["python", "-m", "benchmarks.scaling", *(argv or sys.argv[1:])]}
    result.update(machine=machine, rows=clean, settings={"epochs": args.epochs})
    (args.out / "scaling.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return rows


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
