"""Several processes as one run: starting jax.distributed with settings that fail in one line.

Each process (one per host, or several on one machine) drives its local devices, and one mesh
spans all of them. jax.distributed's own failures at start-up are C++ aborts after its timeout
(an unreachable or busy coordinator, a process that never joins); here each is one line, in
bounded time. How the processes then agree on failures is `agreement`'s job.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from jaxmnist.errors import ClusterError, JaxmnistError, UsageError, one_line

HEARTBEAT_SECONDS = 10  # a peer silent this long is lost
SHUTDOWN_SECONDS = 10


@dataclass(frozen=True)
class Cluster:
    """Which process this is, of how many (one, unless jax.distributed was started)."""

    index: int = 0
    count: int = 1

    @property
    def leader(self) -> bool:
        """Process 0: the one that prints, writes checkpoints and metrics."""
        return self.index == 0


SINGLE = Cluster()


def parse_coordinator(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) -> (host, port), or UsageError."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):([0-9]{1,5})", text)
    if not match or not 0 < int(match[2]) < 65536:
        raise UsageError(
            f"`coordinator` {text!r} is not HOST:PORT: give process 0's address and a free "
            "port, e.g. `coordinator` 10.0.0.1:1234"
        )
    return match[1].strip("[]"), int(match[2])


def detected_cluster() -> bool:
    """Whether the environment is one of jax's multi-process launchers with several tasks:
    SLURM (srun) or Open MPI (mpirun). jax's own detection then supplies every setting."""
    for variable in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(variable, "")
        if value.isdigit() and int(value) > 1:
            return True
    return False


def quiet_native_logs() -> None:
    """Keeps jax's C++ warnings (among them: "experimental recoverable task feature", on every
    multi-process start) off stderr; errors still show. Only effective before jax is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _give_up(error: JaxmnistError) -> None:
    print(f"error: {error}", file=sys.stderr, flush=True)
    os._exit(error.exit_code)


def start(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout: int = 120,
    give_up: Callable[[JaxmnistError], None] = _give_up,
) -> Cluster:
    """Starts jax.distributed (before jax starts a backend) and returns this process's place.

    With no settings and no launcher detected, a single process: nothing is started. `timeout`
    bounds the wait for every process to join; past it, `give_up` is called (from another
    thread, while jax still waits) with the error, and must end the process.
    """
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    missing = [f"`{name}`" for name, value in given.items() if value is None]
    if len(missing) == 3 and not detected_cluster():
        return SINGLE
    if 0 < len(missing) < 3:
        raise UsageError(
            f"several processes need `coordinator`, `num_processes` and `process_id` together: "
            f"add {', '.join(missing)}"
        )
    if timeout < 1:
        raise UsageError(f"`coordinator_timeout` {timeout} must be at least 1 (seconds)")
    settings = {}
    if coordinator is not None:
        host, port = parse_coordinator(coordinator)
        if num_processes < 1:
            raise UsageError(f"`num_processes` {num_processes} must be at least 1")
        if not 0 <= process_id < num_processes:
            raise UsageError(
                f"`process_id` {process_id} is not below `num_processes` {num_processes}: number "
                f"the processes 0 to {num_processes - 1}, with 0 on the coordinator's host"
            )
        if num_processes == 1:
            return SINGLE
        if process_id == 0:
            _check_free(host, port, coordinator)
        else:
            _wait_for_coordinator(host, port, coordinator, time.monotonic() + timeout)
        settings = dict(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            # Process 0 serves on the address given, not on every interface (jax's default).
            coordinator_bind_address=coordinator if process_id == 0 else None,
        )
    return _initialize(settings, coordinator or "the launcher's coordinator", timeout, give_up)


def _initialize(settings: dict, where: str, timeout: int, give_up) -> Cluster:
    import jax

    # A lost peer becomes an error the survivors can report, not a fatal one jax raises for
    # them (see `agreement`).
    jax.config.update("jax_enable_recoverability", True)
    # jax gives up on a process that never joins with a C++ abort: ours comes first.
    joined = threading.Event()
    late = ClusterError(
        f"not every process joined through {where} within {timeout} s: start each "
        "`process_id` from 0 to `num_processes`-1 exactly once, all with the same "
        "`coordinator` and `num_processes` (or raise `coordinator_timeout`)"
    )
    watchdog = threading.Timer(timeout, lambda: joined.is_set() or give_up(late))
    watchdog.daemon = True
    watchdog.start()
    # jax's preemption notifier takes SIGTERM over; a stop is agreed on by `AgreedStop`, so the
    # handler the command line installed gets it back.
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        jax.distributed.initialize(
            **settings,
            initialization_timeout=timeout + 30,
            heartbeat_timeout_seconds=HEARTBEAT_SECONDS,
            shutdown_timeout_seconds=SHUTDOWN_SECONDS,
        )
    except Exception as error:  # noqa: BLE001 (jax raises several kinds here)
        raise ClusterError(
            f"jax.distributed did not start through {where}: {one_line(error)}"
        ) from None
    finally:
        joined.set()
        watchdog.cancel()
        if on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)
    cluster = Cluster(jax.process_index(), jax.process_count())
    _connect_devices(cluster)
    return cluster


def _connect_devices(cluster: Cluster) -> None:
    """The first collective, which connects the processes' devices."""
    from jaxmnist.agreement import exchange

    _native_stdout_to_stderr()
    try:
        exchange(cluster, None)
    except Exception as error:  # noqa: BLE001 (a JaxRuntimeError, or gloo's ValueError)
        raise ClusterError(
            f"the processes could not connect their devices ({one_line(error, 120)}): is "
            "every `process_id` given exactly once?"
        ) from None


def _native_stdout_to_stderr() -> None:
    """gloo (the CPU's collectives) announces every new group of devices on stdout, which is
    the run's output: file descriptor 1 goes to stderr from here on, and Python's own stdout
    keeps the original."""
    sys.stdout.flush()
    original = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(  # noqa: SIM115 (it is the process's stdout from now on)
        original,
        "w",
        encoding=sys.stdout.encoding,
        errors=sys.stdout.errors,
        buffering=1 if sys.stdout.line_buffering else -1,
    )


def _check_free(host: str, port: int, coordinator: str) -> None:
    """ClusterError unless process 0 can serve on host:port (jax would abort after its timeout)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ClusterError(
                f"process 0 cannot serve on {coordinator} ({error.strerror}): give every "
                "process a free port of this host in `coordinator`"
            ) from None


def _wait_for_coordinator(host: str, port: int, coordinator: str, deadline: float) -> None:
    """Returns once something listens at host:port, or ClusterError at the deadline."""
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as error:
            problem = error.strerror or one_line(error)
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"no coordinator answered at {coordinator} ({problem}): start process 0 "
                "(`process_id` 0) on that host with the same `coordinator`, or raise "
                "`coordinator_timeout`"
            )
        time.sleep(0.5)
