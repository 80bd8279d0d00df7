"""`--metrics-out`: the run's records as JSON lines (start, one per epoch, test).

A regular file (a symlink's target, for a symlink) is written under a temporary name beside it and
moved onto it when the run ends, or stops on request; a run that fails moves its records there
only if it began training and no file was there before: an earlier file is never replaced by a
failed run's records. Anything else is written in place, as the records come: this process's own
stdout or stderr (however redirected, so a log is appended to, never truncated or replaced), a
device, or a pipe.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys

from jaxmnist._fs import AtomicFile, os_problem
from jaxmnist.callbacks import Callback, EpochResult, epoch_record
from jaxmnist.errors import JaxmnistError, UsageError

_ELSEWHERE = "name a file in a directory you can write"


class MetricsFile:
    """JSON-lines records for `path` (None: a run without a metrics file, every call a no-op)."""

    def __init__(self, path: str | None):
        self.path, self.stream, self.atomic = path, None, None
        if path is None:
            return
        try:
            mode = os.stat(path).st_mode  # follows symlinks
        except FileNotFoundError:
            mode = None
        except OSError as error:
            raise UsageError(f"`metrics_out` {path}: {error.strerror}") from None
        self.existed = mode is not None
        if mode is not None and stat.S_ISDIR(mode):
            raise UsageError(f"`metrics_out` {path} is a directory: name a file in it")
        try:
            standard = _standard_stream(path)
            if standard is not None:
                self.stream = os.fdopen(os.dup(standard.fileno()), "wb")
            elif mode is not None and not stat.S_ISREG(mode):
                # Non-blocking, so a FIFO nobody reads is refused instead of hanging here.
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
                self.stream = os.fdopen(fd, "wb")
            else:
                self.atomic = AtomicFile(os.path.realpath(path))
                self.stream = self.atomic.file
        except OSError as error:
            problem = os_problem(error, elsewhere=_ELSEWHERE)
            raise UsageError(f"`metrics_out` {path}: {problem}") from None

    def write(self, **record) -> None:
        if self.stream is None:
            return
        try:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()  # whatever was printed before this record stays before it
            self.stream.write((json.dumps(record) + "\n").encode())
            self.stream.flush()
        except OSError as error:
            raise JaxmnistError(f"`metrics_out` {self.path}: {error.strerror}") from None

    def finish(self, failed: bool, started: bool) -> None:
        """Closes the file, moving the records onto it as the module says."""
        if self.stream is None:
            return
        try:
            if self.atomic is None:
                self.stream.close()
            elif not failed or (started and not self.existed):
                self.atomic.commit()
            else:
                self.atomic.discard()
        except OSError as error:
            raise JaxmnistError(f"`metrics_out` {self.path}: {error.strerror}") from None
        finally:
            self.stream = None


class EpochRecords(Callback):
    """Writes one `epoch` record per finished epoch; `started` says whether training began."""

    def __init__(self, metrics: MetricsFile, epochs: int):
        self.metrics, self.epochs, self.started = metrics, epochs, False

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        self.started = True

    def on_epoch_end(self, result: EpochResult, state) -> None:
        record = epoch_record(result)
        self.metrics.write(
            event="epoch", epochs=self.epochs, steps=len(result.batch_losses), **record
        )


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
