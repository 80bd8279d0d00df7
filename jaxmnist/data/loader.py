"""`load_mnist`: an explicit path, else the cache, else the mirror chain; every answer verified."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from jaxmnist.data.arrays import MNIST_FINGERPRINT, Arrays, fingerprint_of, verify
from jaxmnist.data.cache import (
    CorruptCache,
    cache_path,
    check_writable,
    discard,
    read_cache,
    write_cache,
)
from jaxmnist.data.formats import HOW_TO, read_path
from jaxmnist.data.sources import Source, default_sources
from jaxmnist.data.transport import NetTransport, Transport
from jaxmnist.errors import DataError

ENV_VAR = "JAXMNIST_DATA"
# check(arrays, where) -> fingerprint, raising DataError naming `where` on a mismatch.
Check = Callable[[Arrays, str], str]


class Loaded(NamedTuple):
    """The arrays, where they came from, and their fingerprint."""

    arrays: Arrays
    origin: str
    fingerprint: str


def load_mnist(
    path: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = True,
    progress: bool | None = None,
    download: bool = True,
) -> Arrays:
    """MNIST as `keras.datasets.mnist.load_data()` gives it: ((x_train, y_train), (x_test, y_test)).

    uint8 arrays of shape (60000, 28, 28), (60000,), (10000, 28, 28), (10000,). Looks in `path`
    (a file or directory; else $JAXMNIST_DATA), then the cache (`cache_dir`, else
    $XDG_CACHE_HOME/jaxmnist), then downloads through the mirror chain and caches the result.
    `verify` checks the content fingerprint; `progress` (default: stderr is a terminal) shows
    download progress; `download=False` stops at the cache. Every failure is a DataError with one
    line naming the fix.
    """
    return load(
        path, cache_dir=cache_dir, verify=verify, progress=progress, download=download
    ).arrays


def load(
    path: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = True,
    progress: bool | None = None,
    download: bool = True,
    sources: Sequence[Source] | None = None,
    transport: Transport | None = None,
    expected: str = MNIST_FINGERPRINT,
) -> Loaded:
    """`load_mnist` with its seams open: the origin, no-download, fake mirrors, the fingerprint."""
    check = _verifier(verify, expected)
    if path is None and os.environ.get(ENV_VAR):
        path = os.environ[ENV_VAR]
        origin = f"{path} (from ${ENV_VAR})"
    else:
        origin = str(path)
    if path is not None:
        try:
            arrays = read_path(path)
        except DataError as error:
            if origin == str(path):
                raise
            raise DataError(f"{error} (the path came from ${ENV_VAR}; fix or unset it)") from None
        return Loaded(arrays, origin, check(arrays, origin))

    cached = cache_path(cache_dir)
    try:
        loaded = _from_cache(cached, check)
    except CorruptCache as error:
        if not download:  # a look that may not fetch must not delete either
            raise
        # The message's last clause is how a user would fix it; the loader does that itself here.
        discard(cached, str(error).removeprefix(f"{cached}: ").rsplit("; ", 1)[0])
    else:
        if loaded is not None:
            return loaded
    if not download:
        raise DataError(
            f"{cached}: no MNIST data cached; run `python -m jaxmnist.data fetch`, "
            f"or `python -m jaxmnist.data import PATH` ({HOW_TO})"
        )
    check_writable(cached.parent)
    if progress is None:
        progress = sys.stderr.isatty()
    arrays, origin = fetch_first(
        sources if sources is not None else default_sources(),
        transport or NetTransport(progress=progress),
        check,
        cached.parent,
        chatty=progress,
    )
    write_cache(cached, arrays)
    return Loaded(arrays, origin, fingerprint_of(arrays))


def _from_cache(cached: Path, check: Check) -> Loaded | None:
    """The cached copy, None if there is none; CorruptCache only when its content is bad.

    A cache that cannot be read (permissions, I/O, a file where its directory belongs) raises a
    plain DataError, so the loader stops instead of deleting what it never saw.
    """
    arrays = read_cache(cached)
    if arrays is None:
        return None
    try:
        digest = check(arrays, str(cached))
    except DataError as error:
        raise CorruptCache(str(error)) from None
    return Loaded(arrays, str(cached), digest)


def import_to_cache(
    path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    expected: str = MNIST_FINGERPRINT,
) -> Loaded:
    """Read MNIST from `path` (any supported format), verify it, and make it the cached copy.

    Always verified: the cache holds the standard MNIST only, so every later load can trust it.
    """
    arrays = read_path(path)
    digest = verify(arrays, str(path), expected)
    cached = cache_path(cache_dir)
    write_cache(cached, arrays)
    return Loaded(arrays, str(cached), digest)


def fetch_first(
    sources: Sequence[Source],
    transport: Transport,
    check: Check,
    cache_dir: Path,
    *,
    chatty: bool = False,
) -> tuple[Arrays, str]:
    """Try each source once, in order; the first whose arrays pass `check` wins.

    `chatty` (on a terminal) reports each failed source on stderr as the chain moves on.

    When all fail, one DataError lists every source with its reason and how to supply the files.
    """
    failures = []
    for source in sources:
        try:
            arrays = source.fetch(transport)
            check(arrays, source.name)
            return arrays, source.name
        except DataError as error:
            failures.append(f"[{source.name}] {str(error).removeprefix(source.name + ': ')}")
            if chatty:
                print(f"jaxmnist: {failures[-1]}; trying the next source", file=sys.stderr)
    raise DataError(
        f"could not get MNIST from any source; tried: {'; '.join(failures) or 'nothing'}. "
        "To supply the files by hand, put a Keras mnist.npz, the four IDX files (gz or raw) or "
        "the classic mnist.pkl.gz in a directory and run "
        f"`python -m jaxmnist.data import DIR` (copies it into {cache_dir}), "
        f"or set {ENV_VAR}=DIR"
    )


def _verifier(verify_fingerprint: bool, expected: str) -> Check:
    """A check(arrays, where) -> fingerprint; with verification off it computes, never compares."""
    if verify_fingerprint:
        return lambda arrays, where: verify(arrays, where, expected)
    return lambda arrays, where: fingerprint_of(arrays)
