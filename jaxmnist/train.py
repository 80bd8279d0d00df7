"""`python -m jaxmnist.train`: flags -> TrainConfig -> train_and_evaluate -> report.

Every failure a user can cause (flags, data, checkpoints, devices) ends in one line on stderr and
a non-zero exit: 2 for usage, 1 for the rest, 130 (SIGINT) or 143 (SIGTERM) for a stop.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import NoReturn

from jaxmnist._cli import (
    OneLineParser,
    as_flags,
    device_count,
    integer,
    number,
    path,
    run_main,
    seed_list,
)
from jaxmnist.cluster import detected_cluster
from jaxmnist.config import CHOICES, PRESETS, TrainConfig, validate
from jaxmnist.devices import DEVICE_CHOICES
from jaxmnist.errors import Interrupted, UsageError
from jaxmnist.stopping import StopFlag

PREFIX = "jaxmnist.train"
DESCRIPTION = """\
Train the MLP of 'Deep Learning with Python', chapter 2, on MNIST with JAX. Presets, as the
book's 2nd (keras, naive) and 3rd edition (keras3, naive3) have them; flags override each setting:
  keras   Dense(512, relu) -> Dense(10, softmax), Glorot init, RMSprop (Keras 3's, lr 1e-3),
          shuffled batches of 128, 5 epochs. Prints Keras's progress bar. (default)
  keras3  The same model compiled with Keras 3's Adam (lr 1e-3).
  naive   The hand-built model: W uniform in [0, 0.1), manual SGD at lr 1e-3, batches in
          order, 10 epochs. Prints 'epoch N' and 'loss at batch N' lines.
  naive3  The same with Keras 3's "uniform" initializer, W in [-0.05, 0.05); prints 'Epoch N'.
  fast    Not the book's: the same kind of model to 98% test accuracy in the least time:
          Dense(256, relu), Adam at a peak lr 1e-2 (warmup-linear), label smoothing 0.1,
          2 epochs of 128 (docs/speedrun.md: why each value).

The data is fetched, verified and cached on first use (see `python -m jaxmnist.data --help`).
A checkpoint is written after every epoch; Ctrl-C stops cleanly and --resume continues.
"""
# Flags that set the TrainConfig field of the same name: (type, choices or action, help).
CONFIG_FLAGS = {
    "epochs": (integer, "passes over the training set"),
    "batch_size": (integer, "images per step (keras: 128)"),
    "optimizer": (CHOICES["optimizer"], "sgd is the chapter's manual update; the others are optax"),
    "learning_rate": (number, "step size, the peak of a schedule (book presets: 1e-3)"),
    "schedule": (
        CHOICES["schedule"],
        "learning rate over the run: constant (the book's), or warmup-linear: up from 0 to the "
        "peak over the first 10%% of steps, then down towards 0 at the end",
    ),  # fmt: skip
    "init": (CHOICES["init"], "weight initialiser"),
    "loss": (CHOICES["loss"], "logits: stable log-softmax; probs: Keras's clipped loss on softmax"),
    "label_smoothing": (number, "train towards (1 - S) on the label and S/10 on each class (0)"),
    "shuffle": (bool, "reshuffle the training set every epoch"),
    "seed": (integer, "root PRNG seed (default 0)"),
    "hidden": (integer, "width of the hidden layer (512)"),
    "train_samples": (integer, "train on the first N images only (0: all 60000)"),
    "validation_split": (
        number,
        "hold out the last fraction F of the training images (before shuffling), as Keras "
        "does, and report val_loss / val_accuracy after every epoch (default 0: none)",
    ),  # fmt: skip
}
EXECUTION_FLAGS = {
    "device": (DEVICE_CHOICES, "where to train (default auto: a GPU if jax sees one)"),
    "devices": (
        device_count,
        "train data-parallel on N local devices of --device, or all (default 1); the batch "
        "stays the global batch. On a CPU, N simulated devices: for trying it, not for speed",
    ),  # fmt: skip
    "loop": (CHOICES["loop"], "scan: epochs run on the device (fast); batch: one call per batch"),
    "precision": (CHOICES["precision"], "bfloat16: bf16 matrix products, float32 accumulation"),
    "steps_per_dispatch": (integer, "steps per device call in the scan loop (0: auto)"),
    "seeds": (
        seed_list,
        "train one model per seed at once, e.g. 0-9 or 0,3,7: each seed exactly its --seed run, "
        "its checkpoints in CHECKPOINT_DIR/seed-K; prints each and the mean and spread",
    ),  # fmt: skip
    "no_compile_cache": (
        None,
        "do not use the persistent XLA compilation cache, nor the executables kept in "
        "~/.cache/jaxmnist/executables",
    ),
}
OUTPUT_FLAGS = {
    "data_dir": (
        path,
        "MNIST file or directory (npz, IDX, mnist.pkl.gz); default: "
        "$JAXMNIST_DATA, then the cache, then download",
    ),  # fmt: skip
    "checkpoint_dir": (path, "where checkpoints go (default: runs/<preset>-seed<seed>)"),
    "no_checkpoint": (None, "write no checkpoints"),
    "resume": (None, "continue from the latest checkpoint in --checkpoint-dir"),
    "log_every": (integer, "print the loss of every Nth batch (naive: 100, keras: 0 = off)"),
    "quiet": (None, "print only the test accuracy and loss"),
    "metrics_out": (path, "write JSON-lines metrics to FILE"),
    "report": (
        None,
        "after the run, write figures and report.html into CHECKPOINT_DIR/report "
        "(needs matplotlib: pip install 'jaxmnist[plots]')",
    ),  # fmt: skip
}
PROCESS_FLAGS = {
    "coordinator": (path, "HOST:PORT of process 0, which serves there; every process gives it"),
    "num_processes": (integer, "how many processes train together (one per host, usually)"),
    "process_id": (integer, "this process's number, 0 to --num-processes - 1"),
    "coordinator_timeout": (integer, "seconds to wait for every process to join (default 120)"),
}
PROCESS_TITLE = """several processes (jax.distributed; without these flags, SLURM's srun and
Open MPI's mpirun are detected). Only process 0 prints and writes checkpoints and metrics"""
METAVARS = {
    "metrics_out": "FILE",
    "validation_split": "F",
    "label_smoothing": "S",
    "coordinator": "HOST:PORT",
    "num_processes": "P",
    "process_id": "I",
    "coordinator_timeout": "S",
    "seeds": "SEEDS",
}
RUN_FIELDS = ("loop", "precision", "steps_per_dispatch")  # execution flags kept in TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prefix=PREFIX,
        prog="python -m jaxmnist.train",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset_help = "the chapter's program to reproduce (default: keras)"
    parser.add_argument("--preset", choices=tuple(PRESETS), default="keras", help=preset_help)
    for title, flags in [
        ("training (defaults come from the preset)", CONFIG_FLAGS),
        ("execution", EXECUTION_FLAGS),
        ("data, checkpoints and output", OUTPUT_FLAGS),
        (PROCESS_TITLE, PROCESS_FLAGS),
    ]:
        group = parser.add_argument_group(title)
        for name, (kind, text) in flags.items():
            flag = "--" + name.replace("_", "-")
            if kind is None:
                group.add_argument(flag, action="store_true", help=text)
            elif kind is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
            elif isinstance(kind, tuple):
                group.add_argument(flag, choices=kind, help=text)
            else:
                metavar = METAVARS.get(name)
                group.add_argument(flag, type=kind, metavar=metavar, help=text)
    return parser


def config_from_args(args: argparse.Namespace, live: bool = False) -> TrainConfig:
    """The preset's TrainConfig with every flag the user gave applied over it, validated."""
    changes = {name: getattr(args, name) for name in (*CONFIG_FLAGS, *RUN_FIELDS)}
    config = PRESETS[args.preset].replace(**{k: v for k, v in changes.items() if v is not None})
    needs = next((n for n in ("resume", "checkpoint_dir", "report") if getattr(args, n)), None)
    if args.no_checkpoint and needs:
        raise UsageError(f"`{needs}` needs checkpoints: drop `no_checkpoint`")
    if live and not config.steps_per_dispatch:
        config = config.replace(steps_per_dispatch=25)  # a live bar moves every 25 steps
    return validate(config)


def train(args: argparse.Namespace, stop: StopFlag) -> int:
    """One run as the flags describe it, in this process of however many; returns its status."""
    from jaxmnist import _session

    seeds = _session.seeds_from_args(args)
    # Several processes must dispatch alike (each dispatch ends in a collective): none is live.
    several = args.coordinator is not None or detected_cluster()
    config = config_from_args(args, live=sys.stdout.isatty() and not args.quiet and not several)
    if args.report:  # a missing matplotlib must fail before the training, not after it
        from jaxmnist.figures import require_matplotlib

        require_matplotlib()
    checkpoint_dir = None
    if not args.no_checkpoint:
        name = f"seeds{_session.compact(seeds)}" if seeds else f"seed{config.seed}"
        checkpoint_dir = Path(args.checkpoint_dir or f"runs/{config.preset}-{name}")
    try:
        results, data, leader = _session.run(args, config, checkpoint_dir, stop, seeds)
    except Interrupted as interruption:
        from jaxmnist.resume import resume_hint

        where = checkpoint_dir / f"seed-{seeds[0]}" if seeds and checkpoint_dir else checkpoint_dir
        hint = resume_hint(where).replace(str(where), str(checkpoint_dir))
        print(f"\n{PREFIX}: {interruption}; {as_flags(hint)}", file=sys.stderr)
        return stop.exit_code
    if not leader:
        return 0
    _session.print_results(results, seeds)
    if args.report:
        from jaxmnist.report import write_report

        print(f"report: {write_report(checkpoint_dir, data)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    stop = StopFlag(PREFIX)
    restore_signals = stop.install()  # from here on, Ctrl-C asks for a clean stop
    try:
        code = run_main(PREFIX, lambda: train(args, stop))
    finally:
        restore_signals()
    from jaxmnist.agreement import leave_if_several

    leave_if_several(code)
    return code


def cli() -> NoReturn:
    """`python -m jaxmnist.train` and `jaxmnist-train`: `main`, then the process ends at once.

    Every file is written and closed when `main` returns; what a normal exit still does, tearing
    down jax's runtime and every module, took 0.2 s of a 3 s fast-preset run (measured).
    """
    # Python's cyclic collector ran 266 times in a fast-preset process, 0.10-0.12 s in all, walking
    # the objects of jax's import and of tracing, which hold few cycles. Collecting the youngest
    # objects every 100,000 allocations rather than every 700 leaves one run (measured: a whole
    # process 0.1 s shorter on a 2-core Xeon); garbage stays bounded in a long run all the same.
    gc.set_threshold(100_000, *gc.get_threshold()[1:])
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    cli()
