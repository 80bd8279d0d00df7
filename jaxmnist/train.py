"""`python -m jaxmnist.train`: flags -> TrainConfig -> train_and_evaluate -> report.

Every failure a user can cause (flags, data, checkpoints, devices) ends in one line on stderr and
a non-zero exit: 2 for usage, 1 for the rest, 130 for an interruption.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import math
import os
import re
import signal
import stat
import sys
from pathlib import Path

from jaxmnist._cli import OneLineParser, path

# The preset and choice tables import nothing heavy, so `--help` and flag errors stay fast.
CHOICES = {
    "preset": ("keras", "naive"),
    "optimizer": ("sgd", "optax-sgd", "rmsprop", "adam"),
    "init": ("glorot", "naive"),
    "loss": ("logits", "probs"),
    "precision": ("float32", "bfloat16"),
    "loop": ("scan", "batch"),
    "device": ("auto", "cpu", "gpu"),
}

DESCRIPTION = """\
Train the MLP of 'Deep Learning with Python', chapter 2, on MNIST with JAX.

Presets (every setting can be overridden by its flag):
  keras  Dense(512, relu) -> Dense(10, softmax), Glorot init, RMSprop (Keras 3 settings, lr 1e-3),
         shuffled batches of 128, 5 epochs. Prints Keras's progress bar. (default)
  naive  The chapter's hand-built model: W uniform in [0, 0.1), manual SGD at lr 1e-3, batches
         in order, 10 epochs. Prints the chapter's 'loss at batch N' lines.

The data is fetched, verified and cached on first use (see `python -m jaxmnist.data --help`).
A checkpoint is written after every epoch; Ctrl-C stops cleanly and --resume continues.
"""


MAX_SEED = 2**32 - 1  # jax.random.key takes a 32-bit seed without wrapping


def _integer_in(minimum: int, maximum: int | None, meaning: str):
    """An argparse type for plain decimal integers in [minimum, maximum], whose error says
    `meaning` (int() alone would also take '1_0' and non-ASCII digits)."""

    def parse(text: str) -> int:
        value = int(text) if re.fullmatch(r"\s*\+?[0-9]+\s*", text, re.ASCII) else None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {meaning}, got {text!r}")
        return value

    return parse


_positive_int = _integer_in(1, None, "a positive integer")
_count = _integer_in(0, None, "an integer >= 0")
# Bounds only to catch typos, far past any real run: a million epochs of MNIST is months of CPU
# time, and a hidden layer of 2**24 units needs 50 GB of weights alone.
MAX_EPOCHS = 1_000_000
MAX_SIZE = 2**24
_epochs = _integer_in(1, MAX_EPOCHS, f"a positive integer up to {MAX_EPOCHS}")
_size = _integer_in(1, MAX_SIZE, f"a positive integer up to {MAX_SIZE}")


_seed = _integer_in(0, MAX_SEED, f"an integer in 0..{MAX_SEED}")


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prefix="jaxmnist.train",
        prog="python -m jaxmnist.train",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=CHOICES["preset"],
        default="keras",
        help="the chapter's program to reproduce (default: keras)",
    )
    run = p.add_argument_group("training (defaults come from the preset)")
    run.add_argument("--epochs", type=_epochs, help="passes over the training set")
    run.add_argument("--batch-size", type=_size, help="images per step (keras: 128)")
    run.add_argument(
        "--optimizer",
        choices=CHOICES["optimizer"],
        help="sgd is the chapter's manual update; the others are optax",
    )
    run.add_argument("--learning-rate", type=_learning_rate, help="step size (both: 1e-3)")
    run.add_argument("--init", choices=CHOICES["init"], help="weight initialiser")
    run.add_argument(
        "--loss",
        choices=CHOICES["loss"],
        help="logits: stable log-softmax; probs: Keras's clipped loss on softmax",
    )
    run.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        help="reshuffle the training set every epoch",
    )
    run.add_argument("--seed", type=_seed, help="root PRNG seed (default 0)")
    run.add_argument("--hidden", type=_size, help="width of the hidden layer (512)")
    run.add_argument(
        "--train-samples", type=_count, help="train on the first N images only (0: all 60000)"
    )
    fast = p.add_argument_group("execution")
    fast.add_argument(
        "--device",
        choices=CHOICES["device"],
        default="auto",
        help="where to train (auto: a GPU if jax sees one)",
    )
    fast.add_argument(
        "--loop",
        choices=CHOICES["loop"],
        help="scan: epochs run on the device (fast); batch: one call per batch",
    )
    fast.add_argument(
        "--precision",
        choices=CHOICES["precision"],
        help="bfloat16: bf16 matrix products with float32 accumulation",
    )
    fast.add_argument(
        "--steps-per-dispatch", type=_count, help="steps per device call in the scan loop (0: auto)"
    )
    fast.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use the persistent XLA compilation cache",
    )
    out = p.add_argument_group("data, checkpoints and output")
    out.add_argument(
        "--data-dir",
        type=path,
        help="MNIST file or directory (npz, IDX, mnist.pkl.gz); "
        "default: $JAXMNIST_DATA, then the cache, then download",
    )
    out.add_argument(
        "--checkpoint-dir",
        type=path,
        help="where checkpoints go (default: runs/<preset>-seed<seed>)",
    )
    out.add_argument("--no-checkpoint", action="store_true", help="write no checkpoints")
    out.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in --checkpoint-dir",
    )
    out.add_argument(
        "--log-every",
        type=_count,
        help="print the loss of every Nth batch (naive: 100, keras: 0 = off)",
    )
    out.add_argument("--quiet", action="store_true", help="print only the test accuracy")
    out.add_argument(
        "--metrics-out", type=path, metavar="FILE", help="write JSON-lines metrics to FILE"
    )
    return p


def config_from_args(args: argparse.Namespace):
    """The preset's TrainConfig with every flag the user gave applied over it."""
    from jaxmnist.config import PRESETS, validate

    names = (
        "epochs",
        "batch_size",
        "optimizer",
        "learning_rate",
        "init",
        "loss",
        "shuffle",
        "seed",
        "hidden",
        "train_samples",
        "loop",
        "precision",
        "steps_per_dispatch",
    )
    changes = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return validate(PRESETS[args.preset].replace(**changes))


def resolve_device(name: str):
    """The jax device for --device, or DeviceError saying how to get one."""
    import jax

    from jaxmnist.errors import DeviceError

    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    try:
        jax.devices()  # starts the backends; JAX_PLATFORMS naming one that cannot start fails here
    except (RuntimeError, AssertionError) as error:
        if platforms:
            raise DeviceError(
                f"JAX_PLATFORMS={platforms} names a platform jax cannot start here "
                f"({_first_line(error, 100)}): unset JAX_PLATFORMS, or set it to cpu"
            ) from None
        raise DeviceError(
            f"jax cannot start any device ({_first_line(error)}): reinstall jax and jaxlib"
        ) from None
    if name == "auto":
        return jax.devices()[0]
    try:
        return jax.devices(name)[0]
    except RuntimeError as error:
        if platforms:
            raise DeviceError(
                f"--device {name}: JAX_PLATFORMS={platforms} leaves it out: unset JAX_PLATFORMS, "
                f"or drop --device"
            ) from None
        if name == "cpu":  # jax always has a CPU backend unless told otherwise
            raise DeviceError(f"--device cpu: {_first_line(error)}") from None
        failure = _gpu_backend_failure()
        if failure is None and "failed to initialize" in str(error).lower():
            failure = str(error)
        if failure:
            raise DeviceError(
                "--device gpu: jax's GPU backend is installed but failed to start "
                f"({_first_line(failure)}); check the NVIDIA driver with nvidia-smi, or use "
                "--device cpu"
            ) from None
        raise DeviceError(
            "--device gpu: jax sees no GPU (this jaxlib is CPU-only or no NVIDIA GPU is present); "
            "install jax's CUDA build with: pip install -U 'jax[cuda12]', or use --device cpu"
        ) from None


def _first_line(error: BaseException | str, limit: int = 200) -> str:
    text = str(error).strip() or type(error).__name__
    line = text.splitlines()[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _gpu_backend_failure() -> str | None:
    """Why an installed CUDA/ROCm plugin did not start, as jax recorded it (None if none did)."""
    from jax._src import xla_bridge  # jax keeps these errors only here; degrade if it moves

    errors = getattr(xla_bridge, "_backend_errors", None) or {}
    for platform in ("cuda", "rocm"):
        if platform in errors:
            return f"{platform}: {errors[platform]}"
    return None


def tune_xla_cpu() -> None:
    """On AVX-512 CPUs, let XLA emit 512-bit vector code: measured 3-4% off an epoch here.

    XLA reads XLA_FLAGS once, when jax first starts a backend, so this runs before that; a
    vector-width flag the user set is left alone.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_prefer_vector_width" in flags or not _cpu_has("avx512f"):
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_prefer_vector_width=512".strip()


def _cpu_has(feature: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and feature in line.split() for line in cpuinfo)
    except OSError:
        return False


def enable_compile_cache() -> None:
    """Persist compiled programs, so a second run of the same shapes compiles nothing."""
    import jax

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "jaxmnist", "xla")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return  # an unwritable cache only costs compile time; training goes on without it
    if not os.access(directory, os.W_OK):
        return
    jax.config.update("jax_compilation_cache_dir", directory)
    # Our programs compile in well under JAX's default 1 s threshold; cache them all the same.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current dispatch; a second SIGINT aborts."""

    def __init__(self):
        self.signal = None

    def __call__(self) -> bool:
        return self.signal is not None

    def install(self):
        def handler(signum, frame):
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.signal = signum
            print(
                "\njaxmnist.train: stopping after the current step (Ctrl-C again aborts)",
                file=sys.stderr,
                flush=True,
            )

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in previous.items()]


class _MetricsFile:
    """JSON lines (start, one per epoch, test: the benchmark's protocol) for --metrics-out FILE.

    A regular FILE (a symlink's target, for a symlink) is written through a temporary file beside
    it and moved onto it when the run ends, or stops on request; a run that fails moves its records
    there only if it began training and no file was there before: an earlier file is never
    replaced by a failed run's records. Anything else is written in place, as the records come:
    this process's own stdout or stderr (however redirected, so a log is appended to, never
    truncated or replaced), a device, or a pipe.
    """

    def __init__(self, path: str | None):
        from jaxmnist.errors import JaxmnistError, UsageError

        self._error = JaxmnistError
        self.file = self.temporary = None
        if path is None:
            return
        self.path = path
        try:
            mode = os.stat(path).st_mode  # follows symlinks
        except FileNotFoundError:
            mode = None
        except OSError as error:
            raise UsageError(f"--metrics-out {path}: {error.strerror}") from None
        self.existed = mode is not None
        try:
            if mode is not None and stat.S_ISDIR(mode):
                raise UsageError(f"--metrics-out {path} is a directory: name a file in it")
            stream = _standard_stream(path)
            if stream is not None:
                self.file = os.fdopen(os.dup(stream.fileno()), "w", encoding="utf-8")
            elif mode is not None and not stat.S_ISREG(mode):
                # Non-blocking, so a FIFO nobody reads is refused instead of hanging here.
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
                self.file = os.fdopen(fd, "w", encoding="utf-8")
            else:
                target = Path(os.path.realpath(path))
                self.target = target
                self.temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
                self.file = open(self.temporary, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as error:
            raise UsageError(f"--metrics-out {path}: {_open_problem(error)}") from None

    def write(self, **record) -> None:
        if self.file:
            try:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()  # whatever was printed before this record stays before it
                self.file.write(json.dumps(record) + "\n")
                self.file.flush()
            except OSError as error:
                raise self._error(f"--metrics-out {self.path}: {error.strerror}") from None

    def finish(self, failed: bool, started: bool) -> None:
        """Closes FILE, moving the records onto it as the class says."""
        if not self.file:
            return
        self.file.close()
        if self.temporary is None:
            return
        try:
            if not failed or (started and not self.existed):
                os.replace(self.temporary, self.target)
            else:
                os.unlink(self.temporary)
        except OSError as error:
            raise self._error(f"--metrics-out {self.path}: {error.strerror}") from None


def _standard_stream(path: str):
    """sys.stdout or sys.stderr if `path` is the file behind it (/dev/stdout, a redirect's file)."""
    try:
        named = os.stat(path)
    except OSError:
        return None
    for stream in (sys.stdout, sys.stderr):
        try:
            behind = os.fstat(stream.fileno())
        except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
            continue  # replaced by an object without a file descriptor (a test's StringIO)
        if (behind.st_dev, behind.st_ino) == (named.st_dev, named.st_ino):
            return stream
    return None


def _open_problem(error: OSError) -> str:
    if error.errno == errno.ENXIO:
        return "a pipe that nobody reads; start its reader first"
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"{error.strerror}; create its directory first, or name a file in an existing one"
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        return f"{error.strerror}; name a file in a directory you can write"
    return error.strerror or str(error)


def _checkpoint_dir(args: argparse.Namespace, config) -> Path | None:
    if args.no_checkpoint:
        return None
    return Path(args.checkpoint_dir or f"runs/{config.preset}-seed{config.seed}")


def _run(args: argparse.Namespace, stop: _StopFlag) -> int:
    from jaxmnist.errors import Interrupted, UsageError

    config = config_from_args(args)
    if args.no_checkpoint and (args.resume or args.checkpoint_dir):
        flag = "--resume" if args.resume else "--checkpoint-dir"
        raise UsageError(f"{flag} needs checkpoints: drop --no-checkpoint")
    checkpoint_dir = _checkpoint_dir(args, config)
    metrics = _MetricsFile(args.metrics_out)
    started_training, failed = False, True  # failed until it finishes or is stopped on request
    try:
        tune_xla_cpu()
        if not args.no_compile_cache:
            enable_compile_cache()
        device = resolve_device(args.device)

        from jax.errors import JaxRuntimeError

        from jaxmnist.data import load_mnist
        from jaxmnist.engine import Callback
        from jaxmnist.progress import ChapterLog, KerasProgress
        from jaxmnist.runner import train_and_evaluate

        data = load_mnist(args.data_dir)
        train_size = len(data[0][0])
        if train_size < config.batch_size:
            raise UsageError(
                f"--batch-size {config.batch_size} is larger than the {train_size} training images"
            )
        metrics.write(
            event="start", system="jaxmnist", device=device.platform, config=config.to_dict()
        )

        class _EpochMetrics(Callback):
            def on_epoch_begin(self, epoch, steps):
                nonlocal started_training
                started_training = True

            def on_epoch_end(self, result, state):
                metrics.write(
                    event="epoch",
                    epoch=result.epoch,
                    epochs=config.epochs,
                    steps=len(result.batch_losses),
                    seconds=result.seconds,
                    loss=result.loss,
                    accuracy=result.accuracy,
                    batch_losses=result.batch_losses,
                )

        default_log_every = 100 if config.preset == "naive" else 0
        log_every = default_log_every if args.log_every is None else args.log_every
        callbacks: list = [_EpochMetrics()]
        live = sys.stdout.isatty() and not args.quiet
        if not args.quiet:
            if config.preset == "naive":
                callbacks.append(ChapterLog(log_every))
            else:
                callbacks.append(KerasProgress(config.epochs, live=live))
                if log_every:
                    callbacks.append(ChapterLog(log_every, header=False))
        steps_per_dispatch = None
        if live and not config.steps_per_dispatch:
            steps_per_dispatch = 25  # a live bar moves every 25 steps; in a log, one call an epoch

        try:
            result = train_and_evaluate(
                config,
                data,
                device=device,
                checkpoint_dir=checkpoint_dir,
                resume=args.resume,
                callbacks=callbacks,
                should_stop=stop,
                steps_per_dispatch=steps_per_dispatch,
                on_resume=lambda epoch: print(
                    f"resumed from {checkpoint_dir} after epoch {epoch}", file=sys.stderr
                ),
            )
        except JaxRuntimeError as error:
            raise _device_failure(error, device, checkpoint_dir) from None
        metrics.write(event="test", loss=result.test_loss, accuracy=result.test_accuracy)
        failed = False
    except Interrupted as interruption:
        failed = False  # a stop the user asked for: its records are the run's so far
        print(f"\njaxmnist.train: {interruption}; {_resume_hint(checkpoint_dir)}", file=sys.stderr)
        return 128 + (stop.signal or signal.SIGINT)
    finally:
        metrics.finish(failed, started_training)
    print(f"test accuracy: {result.test_accuracy:.4f}")
    return 0


def _finished_epochs(checkpoint_dir: Path | None) -> int:
    """The epoch of the checkpoint in `checkpoint_dir`: 0 for none, or only the initial state."""
    from jaxmnist.checkpoint import load_checkpoint
    from jaxmnist.errors import CheckpointError

    if checkpoint_dir is None:
        return 0
    try:
        return load_checkpoint(checkpoint_dir)[1]["epoch"]
    except CheckpointError:
        return 0


def _resume_hint(checkpoint_dir: Path | None) -> str:
    if checkpoint_dir is None:
        return "no checkpoints were written (--no-checkpoint)"
    epochs = _finished_epochs(checkpoint_dir)
    if epochs:
        return f"epoch {epochs}, the last finished, is in {checkpoint_dir}: add --resume to go on"
    return "no epoch finished yet"


def _device_failure(error: Exception, device, checkpoint_dir) -> Exception:
    """One line for an error the device raised while training."""
    from jaxmnist.errors import DeviceError

    first_line = _first_line(error)
    epochs = _finished_epochs(checkpoint_dir)
    kept = f"; epoch {epochs}, the last finished, is kept in {checkpoint_dir}" if epochs else ""
    if "RESOURCE_EXHAUSTED" in first_line or "out of memory" in first_line.lower():
        elsewhere = "" if device.platform == "cpu" else ", or use --device cpu"
        return DeviceError(
            f"out of memory on {device.platform} ({_first_line(error, 120)}): "
            f"lower --batch-size or --hidden{elsewhere}{kept}"
        )
    return DeviceError(f"{device.platform} failed while training: {first_line}{kept}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    from jaxmnist.errors import JaxmnistError

    stop = _StopFlag()
    restore_signals = stop.install()  # from here on, Ctrl-C asks for a clean stop
    try:
        return _run(args, stop)
    except JaxmnistError as error:
        print(f"jaxmnist.train: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        print("\njaxmnist.train: aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout went away (`| head`): nobody is left to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        restore_signals()


if __name__ == "__main__":
    sys.exit(main())
