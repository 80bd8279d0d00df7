"""Failures every process of a multi-process run agrees on: the same line, the same exit status.

Left to jax, a process that leaves on an error makes the others wait for it in their next
collective until the shutdown timeout (300 s), then abort with a C++ trace. So:
- problems one process meets (a signal, a failed save, bad data) are agreed on at fixed points
  that every process reaches in the same order (`agree`, `agreed`, `AgreedStop`), before any
  process raises;
- a process failing anywhere else leaves its line in the coordinator's key-value store
  (`leave_last_words`) before it exits; the others' next collective fails, and they repeat that
  line or name the process that vanished (`lost_peer`);
- every process then exits at once (`leave_if_several`), not through jax's shutdown barrier.
One process: every function here reduces to raising its own problem, or to nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import numpy as np

from jaxmnist import errors
from jaxmnist.cluster import Cluster
from jaxmnist.errors import ClusterError, Interrupted, JaxmnistError, one_line

_PAYLOAD_BYTES = 4096  # one process's part of an exchange: JSON, utf-8, zero-padded
_LAST_WORDS = "jaxmnist/last_words/"
_LEFT = "jaxmnist/left/"
_lost: set[int] = set()  # processes found lost, which will not say they left
LEAVE_SECONDS = 10  # how long process 0 waits for the others to leave before it does


def agree(cluster: Cluster, problem: BaseException | None = None) -> None:
    """A point every process reaches in the same order: if any arrived with a problem, every
    process raises the first one (lowest process index), with the same message and exit status.
    One process: raises its own problem, if any."""
    if problem is not None and not isinstance(problem, JaxmnistError | Interrupted):
        raise TypeError(f"agree takes jaxmnist's errors, not {type(problem).__name__}")
    if cluster.count == 1:
        if problem is not None:
            raise problem
        return
    mine = None if problem is None else _describe(problem)
    for index, theirs in enumerate(exchange(cluster, mine)):
        if theirs is not None:
            raise _rebuilt(theirs, index, cluster)


def agreed(cluster: Cluster, work):
    """`work()` at a point every process reaches: a jaxmnist error it raises in any process is
    raised in all (see `agree`); otherwise its result."""
    try:
        result = work()
    except JaxmnistError as error:
        agree(cluster, error)
        raise  # one process: agree raised it already; several: it raised the first one's
    agree(cluster, None)
    return result


def check_same_run(cluster: Cluster, run: dict) -> None:
    """ClusterError unless every process describes the same run (`run`: its configuration under
    "config", its data's fingerprint under "data"...), naming the first difference and the fix."""
    theirs = exchange(cluster, run)
    for index, other in enumerate(theirs[1:], start=1):
        for key in run:
            if other.get(key) != theirs[0].get(key):
                raise ClusterError(
                    f"process {index} differs from process 0 in "
                    f"{_difference(key, other, theirs[0])}"
                )


def _difference(key: str, other: dict, first: dict) -> str:
    if key == "config":
        name = next(k for k in first[key] if first[key][k] != other[key].get(k))
        return (
            f"`{name}` ({other[key].get(name)!r}, not {first[key][name]!r}): give every process "
            "the same flags"
        )
    if key == "data":
        return "its MNIST data (another fingerprint): give every process the same data files"
    return f"{key} ({other.get(key)!r}, not {first.get(key)!r}): give every process the same"


def exchange(cluster: Cluster, value) -> list:
    """Every process's JSON-able `value`, in process order (a collective: all must call it)."""
    if cluster.count == 1:
        return [value]
    from jax.experimental import multihost_utils

    text = json.dumps(value).encode()
    if len(text) > _PAYLOAD_BYTES:
        text = json.dumps({"kind": "ClusterError", "message": one_line(text.decode(), 900)})
        text = text.encode()
    buffer = np.zeros(_PAYLOAD_BYTES, np.uint8)
    buffer[: len(text)] = np.frombuffer(text, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buffer))
    return [json.loads(bytes(row).rstrip(b"\0")) for row in rows]


def _describe(problem: BaseException) -> dict:
    if isinstance(problem, Interrupted):
        return {"kind": "Interrupted", "epoch": problem.epoch, "step": problem.step}
    return {"kind": type(problem).__name__, "message": one_line(problem, 1000)}


def _rebuilt(description: dict, index: int, cluster: Cluster) -> BaseException:
    if description["kind"] == "Interrupted":
        return Interrupted(description["epoch"], description["step"])
    kind = getattr(errors, description["kind"], ClusterError)
    if not (isinstance(kind, type) and issubclass(kind, JaxmnistError)):
        kind = ClusterError
    return kind(f"process {index} of {cluster.count}: {description['message']}")


class AgreedStop:
    """`should_stop` for `fit` in a multi-process run: true in every process at the same step
    once any process's `flag` (a `stopping.StopFlag`) has caught a signal; the flag of a process
    that caught none then carries the first one, so every process exits with the same status."""

    def __init__(self, cluster: Cluster, flag):
        self.cluster, self.flag = cluster, flag

    def __call__(self) -> bool:
        signals = exchange(self.cluster, self.flag.signal)
        first = next((s for s in signals if s is not None), None)
        if first is not None and self.flag.signal is None:
            self.flag.signal = first
        return first is not None


def _client():
    """jax's coordination-service client: the one way to the key-value store the coordinator
    keeps for all processes. jax reaches it the same way for the same purpose
    (jax.experimental.multihost_utils.live_devices) and offers no public handle."""
    from jax._src import distributed

    return distributed.global_state.client


def leave_last_words(cluster: Cluster, error: JaxmnistError) -> None:
    """Before a process leaves on an error the others did not agree on: its line, for them."""
    if cluster.count == 1:
        return
    description = {"kind": type(error).__name__, "message": one_line(error, 1000)}
    # The coordinator itself may be gone; then the peers name this process as lost.
    with contextlib.suppress(Exception):
        _client().key_value_set(_LAST_WORDS + str(cluster.index), json.dumps(description), True)


def lost_peer(cluster: Cluster) -> JaxmnistError | None:
    """After a device error in a multi-process run: a peer's last words if it left some, else
    which process was lost (jax's heartbeat finds it within HEARTBEAT_SECONDS); None when every
    process is alive and silent, so the failure was this process's own."""
    client = _client()
    try:
        words = client.key_value_dir_get(_LAST_WORDS)
    except Exception:  # noqa: BLE001 (the coordinator, process 0, may be the one lost)
        words = []
    if words:
        key, text = min(words, key=lambda item: int(item[0].rsplit("/", 1)[1]))
        return _rebuilt(json.loads(text), int(key.rsplit("/", 1)[1]), cluster)
    try:
        alive = client.get_live_nodes(list(range(cluster.count)))
        lost = sorted(set(range(cluster.count)) - set(alive))
    except Exception:  # noqa: BLE001
        lost = [0]  # no answer from the coordinator: process 0, which serves it, is gone
    if not lost:
        return None
    _lost.update(lost)
    names = ", ".join(str(index) for index in lost)
    return ClusterError(
        f"process {names} of {cluster.count} was lost (it stopped answering): see its own "
        "output for why"
    )


def leave_if_several(code: int) -> None:
    """Ends a multi-process run's process at once with `code` (a single process: returns).

    jax's exit handler would wait in a shutdown barrier for peers that may be gone, up to the
    shutdown timeout, and then abort; every process has finished its part when this is called.
    """
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(Exception):  # a coordinator already gone: nothing to wait for
        _leave_in_order(jax.process_index(), jax.process_count())
    os._exit(code)


def _leave_in_order(index: int, count: int) -> None:
    """Process 0 leaves last: it serves the coordinator, and a process that finds it gone
    before it has left is aborted by jax with a fatal error."""
    client = _client()
    if index != 0:
        client.key_value_set(f"{_LEFT}{index}", "", True)
        return
    deadline = time.monotonic() + LEAVE_SECONDS
    expected = count - 1 - len(_lost)
    while len(client.key_value_dir_get(_LEFT)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # from saying it leaves to having left
