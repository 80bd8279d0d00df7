"""What `python -m jaxmnist.train` does between its flags and its last line, in this process of
however many: devices and processes started, data checked, the run, failures as one line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from pathlib import Path

from jaxmnist import agreement, cluster
from jaxmnist._cli import as_flags
from jaxmnist.config import TrainConfig, validate
from jaxmnist.errors import Interrupted, JaxmnistError, UsageError
from jaxmnist.metrics import EpochRecords, MetricsFile
from jaxmnist.stopping import StopFlag


def run(
    args: argparse.Namespace,
    config: TrainConfig,
    checkpoint_dir: Path | None,
    stop: StopFlag,
    seeds: tuple[int, ...] = (),
):
    """(results, data, leader): a RunResult per seed of `seeds` (one, without them), the data
    they were evaluated on, and whether this process is the one that reports (process 0).
    Raises Interrupted on a stop, agreed by all processes."""
    group, metrics, records, failed = cluster.SINGLE, MetricsFile(None), None, True
    if args.coordinator or cluster.detected_cluster():
        cluster.quiet_native_logs()
    cached = CachedData(args.data_dir)
    try:
        from jaxmnist import devices

        device, mesh, group = devices.prepare(
            args.device or "auto",
            compile_cache=not args.no_compile_cache,
            count=args.devices or 1,
            start_processes=lambda: cluster.start(
                args.coordinator,
                args.num_processes,
                args.process_id,
                args.coordinator_timeout or 120,
                give_up=_give_up,
            ),
        )

        from jax.errors import JaxRuntimeError

        from jaxmnist.data.arrays import fingerprint
        from jaxmnist.progress import run_output
        from jaxmnist.resume import kept_note
        from jaxmnist.runner import train_and_evaluate

        # Only process 0 writes the metrics file and prints the run; every process checks its
        # data and all must agree that each one could start.
        leader = group.leader
        metrics = agreement.agreed(group, lambda: MetricsFile(args.metrics_out if leader else None))
        data = agreement.agreed(group, lambda: _checked_data(cached, args.data_dir, config))
        data_id = fingerprint(*data[0], *data[1]) if group.count > 1 else None
        agreement.check_same_run(group, {"config": config.to_dict(), "data": data_id})
        metrics.write(
            event="start",
            system="jaxmnist",
            device=device.platform,
            devices=mesh.size if mesh else 1,
            processes=group.count,
            config=config.to_dict(),
        )
        records = EpochRecords(metrics, config.epochs)
        quiet = args.quiet or not leader
        live = sys.stdout.isatty() and not quiet and group.count == 1
        printers = [] if quiet else run_output(config, live=live, log_every=args.log_every)
        try:
            if seeds:
                results = _train_seeds(args, config, data, seeds, checkpoint_dir, stop, records)
            else:
                one = train_and_evaluate(
                    config,
                    data,
                    fingerprint=data_id,
                    device=device,
                    checkpoint_dir=checkpoint_dir,
                    resume=args.resume,
                    callbacks=[records, *printers],
                    should_stop=stop if group.count == 1 else agreement.AgreedStop(group, stop),
                    mesh=mesh,
                    cluster=group,
                    on_resume=lambda epoch: (
                        quiet
                        or print(
                            f"resumed from {checkpoint_dir} after epoch {epoch}", file=sys.stderr
                        )
                    ),
                )
                results = [one]
        except (JaxRuntimeError, ValueError) as error:
            # gloo's failed collectives (a peer gone) come as ValueError, the rest as raised
            if not isinstance(error, JaxRuntimeError) and "gloo" not in str(error).lower():
                raise
            lost = agreement.lost_peer(group) if group.count > 1 else None
            failure = lost or devices.device_failure(error, device)
            raise type(failure)(f"{failure}{kept_note(checkpoint_dir)}") from None
        for seed, result in zip(seeds or [None], results, strict=True):
            labels = {} if seed is None else {"seed": seed}
            metrics.write(
                event="test", loss=result.test_loss, accuracy=result.test_accuracy, **labels
            )
        failed = False
    except Interrupted:
        failed = False  # a stop the user asked for: its records are the run's so far
        raise
    except JaxmnistError as error:
        agreement.leave_last_words(group, error)  # for the peers, whose next collective fails
        raise
    finally:
        metrics.finish(failed, started=records is not None and records.started)
    return results, data, leader


def _train_seeds(args, config, data, seeds, checkpoint_dir, stop, records):
    """Every seed of `seeds` at once (see jaxmnist.seeds): an epoch record per seed, and one
    progress line per epoch for all of them."""
    from jaxmnist.callbacks import epoch_record
    from jaxmnist.progress import seeds_line
    from jaxmnist.seeds import train_and_evaluate_seeds

    def on_epoch_end(results, states):
        records.started = True
        for seed, result in zip(seeds, results, strict=True):
            steps = len(result.batch_losses)
            records.metrics.write(
                event="epoch", seed=seed, epochs=config.epochs, steps=steps, **epoch_record(result)
            )
        if not args.quiet:
            print(seeds_line(results, config.epochs), flush=True)

    return train_and_evaluate_seeds(
        config,
        data,
        seeds,
        checkpoint_dir=checkpoint_dir,
        resume=args.resume,
        on_epoch_end=on_epoch_end,
        should_stop=stop,
    )


def _give_up(error: JaxmnistError) -> None:
    from jaxmnist.train import PREFIX

    print(f"{PREFIX}: error: {as_flags(str(error))}", file=sys.stderr, flush=True)
    os._exit(error.exit_code)  # jax is still waiting in another thread: nothing else ends it


class CachedData:
    """MNIST read from disk in a thread while jax is imported.

    Importing jax is 0.3 s of Python that holds the GIL; reading the 55 MB file and hashing it
    release it, so on two or more cores the data costs no wall time (0.06-0.2 s before, measured
    on a 2-core Zen 5). Only data already on disk is read here: a download, with its progress and
    Ctrl-C, and every failure are left to `arrays`' caller, which loads again as before.
    """

    def __init__(self, data_dir: str | None):
        import jaxmnist.data

        self._arrays = None
        # Looked up now, not imported by name, so that whoever replaced `load_mnist` (a test's
        # synthetic data) is the one read here too.
        self._thread = threading.Thread(
            target=self._read,
            args=(jaxmnist.data.load_mnist, data_dir),
            name="jaxmnist-data",
            daemon=True,
        )
        self._thread.start()

    def _read(self, load_mnist, data_dir: str | None) -> None:
        # Any failure leaves None: the caller's own load meets it again and reports it as ever.
        with contextlib.suppress(Exception):
            self._arrays = load_mnist(data_dir, download=False, progress=False)

    def arrays(self):
        """The arrays, or None when they could not be read without help."""
        self._thread.join()
        return self._arrays


def _checked_data(cached: CachedData, data_dir: str | None, config: TrainConfig):
    data = cached.arrays()
    if data is None:
        import jaxmnist.data

        data = jaxmnist.data.load_mnist(data_dir)
    validate(config, train_size=len(data[0][0]))
    return data


def compact(seeds: tuple[int, ...]) -> str:
    """0,1,2,3,7 -> "0-3_7", for a directory name."""
    runs, start = [], seeds[0]
    for previous, seed in zip(seeds, [*seeds[1:], None], strict=True):
        if seed is None or seed != previous + 1:
            runs.append(f"{start}-{previous}" if previous != start else str(start))
            start = seed
    return "_".join(runs)


def seeds_from_args(args: argparse.Namespace) -> tuple[int, ...]:
    """The seeds of `--seeds` (none without it), checked against the flags they exclude."""
    if args.seeds is None:
        return ()
    if args.seed is not None:
        raise UsageError("`seed` and `seeds` together: give one of them")
    if args.devices not in (None, 1) or args.coordinator is not None:
        raise UsageError("`seeds` trains on one device in one process: drop `devices`")
    if args.loop == "batch":
        raise UsageError("`seeds` runs in the scan loop: drop `loop` batch")
    if args.report:
        raise UsageError(
            "`report` takes one run: drop it, then run python -m jaxmnist.report on a seed's "
            "directory (CHECKPOINT_DIR/seed-K)"
        )
    return args.seeds


def print_results(results, seeds: tuple[int, ...]) -> None:
    """The run's last lines: test accuracy and loss (Keras's evaluate returns both; its bar
    names accuracy first, as here), per seed and their spread for several seeds."""
    for seed, result in zip(seeds or [None], results, strict=True):
        label = "" if seed is None else f"seed {seed}: "
        print(
            f"{label}test accuracy: {result.test_accuracy:.4f} - test loss: {result.test_loss:.4f}"
        )
    if seeds:
        from jaxmnist.progress import spread

        accuracy = spread([r.test_accuracy for r in results])
        loss = spread([r.test_loss for r in results])
        print(f"{len(seeds)} seeds: test accuracy: {accuracy} - test loss: {loss}")
