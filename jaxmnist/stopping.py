"""A clean stop on request: SIGINT or SIGTERM ask training to stop after the current dispatch."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable


class StopFlag:
    """Callable `should_stop` for `fit`: true once a signal came; a second SIGINT aborts at once."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def install(self) -> Callable[[], None]:
        """Catches SIGINT and SIGTERM; returns the function that restores the old handlers."""

        def handler(signum, frame):
            if self.signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.signal = signum
            print(
                f"\n{self.prefix}: stopping after the current step (Ctrl-C again aborts)",
                file=sys.stderr,
                flush=True,
            )

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in previous.items()]

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell reports a process the signal ended (130, 143)."""
        return 128 + (self.signal or signal.SIGINT)
