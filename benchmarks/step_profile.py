"""Where a training step's time goes: XLA's own per-operation profile of the epoch program.

Trains a preset through the scan loop, as `python -m jaxmnist.train` does, with XLA's CPU trace
events on (`--xla_cpu_enable_xprof_traceme`), and sums the time of each compiled operation per
step. The five matrix products are named as `benchmarks.floor` names them, with the floor's time
for each beside it; every other operation is put with what it belongs to: the batch (gathering
and converting it), the forward or backward pass, or the optimizer's update of a parameter.
Writes a Markdown table to stdout, and step_profile.md and step_profile.json to --out.

An operation that XLA splits over several threads is timed on the thread that started it. The
rows add up to less than a step: the executor's own time between operations is in none of them,
and a product XLA hands to Eigen asynchronously can end its event before its work is done (on a
Zen 4, `x.T @ dh` showed 406 us here against about 550 us timed around it in a step-like loop).
XLA reads its flags once, so run this as its own process.

    python -m benchmarks.step_profile [--preset keras] [--epochs 2] [--train-samples N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from benchmarks._machine import machine_info
from benchmarks._runner import ROOT
from benchmarks.floor import CLASSES, INPUTS, TRAIN_SIZE

TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"
WARMUP_EPOCHS = 2
PARTS = ("products", "batch", "forward", "backward", "update", "other")


class Instruction(NamedTuple):
    """One HLO instruction of a compiled program, as its text shows it."""

    name: str
    opcode: str
    dims: tuple[int, ...]  # of the (first) result
    op_name: str  # the jax operation it came from, with its transforms: ".../transpose(jvp())/..."


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+) = (?P<rest>.*)$")
_DIMS = re.compile(r"^\(?\w+\[(?P<dims>[\d,]*)\]")
_OP_NAME = re.compile(r'op_name="(?P<op>[^"]*)"')


def hlo_instructions(text: str) -> dict[str, Instruction]:
    """Every instruction of an HLO module's text (`compiled.as_text()`), by name."""
    found = {}
    for line in text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match or "(" not in match["rest"]:
            continue
        shape, call = _split_shape(match["rest"])
        dims = _DIMS.match(shape)
        op = _OP_NAME.search(match["rest"])
        found[match["name"]] = Instruction(
            match["name"],
            call.split("(", 1)[0],
            tuple(int(d) for d in dims["dims"].split(",") if d) if dims else (),
            op["op"] if op else "",
        )
    return found


def _split_shape(rest: str) -> tuple[str, str]:
    """(result shape, "opcode(operands)...") of an instruction: a tuple shape has spaces."""
    depth = 0
    for index, char in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == " " and depth == 0:
            return rest[:index], rest[index + 1 :]
    return rest, ""


def role(instruction: Instruction, batch: int, hidden: int) -> tuple[str, str]:
    """(part, what) for one operation of the step of a (batch, hidden) model.

    Products are told apart by their result's shape and by whether they belong to the backward
    pass (jax names those ops "transpose(jvp(...))"); the hidden width must differ from 784 and 10.
    """
    op, dims = instruction.op_name, instruction.dims
    backward, inside = "transpose(" in op, "jvp(" in op
    if op.endswith("dot_general"):
        if not backward:
            return "products", "logits = h @ W2" if CLASSES in dims else "h = x @ W1"
        if INPUTS in dims:
            return "products", "dW1 = x.T @ dh"
        if CLASSES in dims and sorted(dims) == sorted((hidden, CLASSES)):
            return "products", "dW2 = h.T @ dlogits"
        return "products", "dh = dlogits @ W2.T"
    what = op.rsplit("/", 1)[-1] or instruction.opcode
    if "/gather" in op or dims == (batch, INPUTS):
        return "batch", what
    if not inside:
        parameters = {(INPUTS, hidden): "W1", (hidden,): "b1"}
        parameters |= {(hidden, CLASSES): "W2", (CLASSES,): "b2"}
        if dims in parameters:
            return "update", f"{parameters[dims]}: {what}"
        return "other", what
    return ("backward" if backward else "forward"), what


def op_seconds(trace_file: str | os.PathLike, names: set[str]) -> dict[str, tuple[float, int]]:
    """Total seconds and count of the trace events named after an operation in `names`."""
    from jax.profiler import ProfileData

    totals: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for plane in ProfileData.from_file(str(trace_file)).planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in names:
                    totals[event.name][0] += event.duration_ns / 1e9
                    totals[event.name][1] += 1
    return {name: (seconds, count) for name, (seconds, count) in totals.items()}


def profile(preset: str, epochs: int, train_samples: int) -> dict:
    """Trains WARMUP_EPOCHS epochs, one timed, then `epochs` traced ones: the per-op sums."""
    import jax
    import numpy as np

    from jaxmnist.batches import num_batches
    from jaxmnist.config import PRESETS
    from jaxmnist.data import load_mnist
    from jaxmnist.engine import ScanLoop
    from jaxmnist.model import chapter_model
    from jaxmnist.optim import optimizer_for
    from jaxmnist.step import init_state, make_train_step

    config = PRESETS[preset]
    (images, labels), _ = load_mnist(progress=False)
    n = train_samples or len(images)
    images, labels = images[:n].reshape(n, -1), np.asarray(labels[:n], np.int32)
    spec = chapter_model(config.hidden)
    optimizer = optimizer_for(config, num_batches(n, config.batch_size))
    train_step = make_train_step(
        spec, optimizer, config.loss, config.precision, config.label_smoothing
    )
    loop = ScanLoop(train_step, images, labels, config, jax.devices("cpu")[0])
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    state = init_state(init_key, spec, config.init, optimizer)

    def epoch(state, index):
        for new_state, metrics in loop.epoch(state, data_key, index, loop.steps):
            jax.block_until_ready(metrics)
            state = new_state  # the old one was donated to the dispatch
        return state

    # Runs settle by the third epoch: the first compiles (or loads) the program, and the second
    # is still 10-20% slower than the rest (more so without the compilation cache).
    for index in range(WARMUP_EPOCHS):
        state = epoch(state, index)
    start = time.perf_counter()
    state = epoch(state, WARMUP_EPOCHS)
    untraced = time.perf_counter() - start
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0  # Python's calls are not what is measured, and cost time
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, profiler_options=options):
            start = time.perf_counter()
            for index in range(WARMUP_EPOCHS + 1, WARMUP_EPOCHS + 1 + epochs):
                state = epoch(state, index)
            seconds = time.perf_counter() - start
        trace_file = next(Path(trace_dir).rglob("*.xplane.pb"))
        program = loop.run_fn.lower(
            state, *loop.data, loop.order(data_key, 0), 0, num_steps=loop.steps
        ).compile()
        instructions = hlo_instructions(program.as_text())
        timed = op_seconds(trace_file, set(instructions))
    if not timed:
        raise SystemExit(
            "step_profile: XLA recorded no per-operation events (jax had started before "
            f"{TRACE_FLAG} was set): run it as its own process, `python -m benchmarks.step_profile`"
        )
    steps = epochs * loop.steps
    ops = []
    for name, (total, count) in timed.items():
        part, what = role(instructions[name], config.batch_size, config.hidden)
        ops.append(
            {
                "name": name,
                "part": part,
                "what": what,
                "opcode": instructions[name].opcode,
                "dims": list(instructions[name].dims),
                "us_per_step": total / steps * 1e6,
                "calls_per_step": count / steps,
            }
        )
    ops.sort(key=lambda op: -op["us_per_step"])
    return {
        "preset": preset,
        "batch_size": config.batch_size,
        "hidden": config.hidden,
        "samples": n,
        "steps": steps,
        "step_us": untraced / loop.steps * 1e6,
        "traced_step_us": seconds / steps * 1e6,
        "ops": ops,
    }


def parts(ops: list[dict]) -> dict[str, float]:
    """Microseconds per step of each part, in PARTS order."""
    totals = dict.fromkeys(PARTS, 0.0)
    for op in ops:
        totals[op["part"]] += op["us_per_step"]
    return totals


def markdown(result: dict, floor: dict | None, top: int) -> str:
    """The parts, then the `top` costliest operations, products with their floor beside them."""
    floor_us = {}
    if floor:
        floor_us = {r["name"]: r["best_seconds"] * 1e6 for r in floor["products"]}
    step, totals = result["step_us"], parts(result["ops"])
    lines = [
        f"`{result['preset']}` preset (batch {result['batch_size']}, hidden {result['hidden']}, "
        f"{result['samples']} images): {step:.0f} us per step untraced, "
        f"{result['traced_step_us']:.0f} traced ({result['steps']} steps), of which XLA's "
        f"operations {sum(totals.values()):.0f}.",
        "",
        "| part | us/step | share of a traced step |",
        "|---|---:|---:|",
    ]
    traced = result["traced_step_us"]
    lines += [f"| {p} | {us:.1f} | {us / traced:.1%} |" for p, us in totals.items() if us]
    if floor_us:
        lines.append(f"| (the floor's five products) | {sum(floor_us.values()):.1f} | |")
    lines += ["", "| operation | part | what | us/step | floor us |", "|---|---|---|---:|---:|"]
    for op in result["ops"][:top]:
        beside = floor_us.get(op["what"]) if op["part"] == "products" else None
        lines.append(
            f"| `{op['name']}` | {op['part']} | {op['what']} | {op['us_per_step']:.1f} "
            f"| {'' if beside is None else f'{beside:.1f}'} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from jaxmnist.config import PRESETS

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_profile",
        description=__doc__.split("\n\n    python")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=tuple(PRESETS), default="keras")
    untraced = WARMUP_EPOCHS + 1
    parser.add_argument(
        "--epochs", type=int, default=2, help=f"epochs traced (2), after {untraced} untraced"
    )
    parser.add_argument(
        "--train-samples", type=int, default=0, help="train on the first N images (0: all)"
    )
    parser.add_argument(
        "--floor-budget", type=float, default=0.2, help="seconds per product for the floor; 0: none"
    )
    parser.add_argument("--top", type=int, default=20, help="operations listed (20)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="benchmarks/results"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.top < 1 or args.floor_budget < 0:
        parser.error("--epochs and --top must be at least 1, --floor-budget at least 0")
    if not 0 <= args.train_samples <= TRAIN_SIZE:
        parser.error(f"--train-samples must be between 0 and {TRAIN_SIZE}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from jaxmnist.devices import enable_compile_cache, tune_xla_cpu

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_xprof_traceme" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {TRACE_FLAG}".strip()
    tune_xla_cpu()  # the settings training runs with on this CPU
    enable_compile_cache()

    result = profile(args.preset, args.epochs, args.train_samples)
    floor = None
    if args.floor_budget:
        from benchmarks.floor import measure_floor

        floor = measure_floor(
            result["batch_size"], result["hidden"], result["samples"], "cpu", args.floor_budget
        )
    report = markdown(result, floor, args.top)
    print(report)
    result.update(
        machine=machine_info(),
        settings=vars(args) | {"out": str(args.out)},
        parts=parts(result["ops"]),
        floor=floor,
        xla_flags=os.environ["XLA_FLAGS"],
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_profile.md").write_text(report + "\n")
    (args.out / "step_profile.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


if __name__ == "__main__":
    from jaxmnist._cli import run_main

    # A data or device failure (no network for the first download, a damaged cache) as one line.
    raise SystemExit(run_main("python -m benchmarks.step_profile", lambda: main() and 0))
