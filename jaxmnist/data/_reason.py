"""One-line descriptions of low-level errors, so every DataError message stays on one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from jaxmnist.errors import DataError


def reason(error: BaseException) -> str:
    """`Type: message` on a single line, shortened so one failure cannot flood the terminal."""
    text = " ".join(str(error).split()) or "no details"
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(error).__name__}: {text}"


@contextmanager
def guarded(where: str, what: str, fix: str) -> Iterator[None]:
    """Turn any unexpected exception into `DataError("{where}: {what} (reason); {fix}")`.

    Parsers of hostile bytes can raise almost any type (numpy, zipfile, pickle, zlib); callers
    are promised DataError and nothing else.
    """
    try:
        yield
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{where}: {what} ({reason(error)}); {fix}") from None
