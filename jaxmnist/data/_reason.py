"""`guarded`: whatever a parser of hostile bytes raises becomes one DataError line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from jaxmnist.errors import DataError, one_line


@contextmanager
def guarded(where: str, what: str, fix: str) -> Iterator[None]:
    """Turn any unexpected exception into `DataError("{where}: {what} (Type: reason); {fix}")`.

    Parsers of hostile bytes can raise almost any type (numpy, zipfile, pickle, zlib); callers
    are promised DataError and nothing else.
    """
    try:
        yield
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{where}: {what} ({one_line(error, with_type=True)}); {fix}") from None
