"""The on-disk cache: one canonical `mnist.npz`, written atomically, read back without pickle."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np

from jaxmnist._fs import AtomicFile, blocking_file, cache_home, describe, os_problem
from jaxmnist.data.arrays import Arrays
from jaxmnist.data.formats import Oversized, parse_npz, read_data
from jaxmnist.errors import DataError, one_line

CACHE_NAME = "mnist.npz"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/jaxmnist`, or `~/.cache/jaxmnist`."""
    return cache_home() / "jaxmnist"


def cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the canonical cached file lives."""
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return directory / CACHE_NAME


class CorruptCache(DataError):
    """The cached file is there and readable but its content is bad: safe to delete and refetch.

    Every other DataError from the cache (permissions, I/O, something not a file in the way)
    leaves the file alone: deleting what could not be read would not fix the cause.
    """


def relocate_hint(directory: Path) -> str:
    """How to move the cache, worded to be true for every entry point.

    The default cache is the only one `python -m jaxmnist.train` knows, and it has no
    --cache-dir: only XDG_CACHE_HOME moves it there. An explicit directory came from the caller.
    """
    if directory == default_cache_dir():
        return "set XDG_CACHE_HOME to another directory"
    return "choose another cache directory"


def check_directory(directory: Path) -> None:
    """DataError if `directory`, or the nearest existing path above it, is not a directory.

    A file where the cache directory belongs makes every open fail with ENOTDIR, which reads as
    a permission problem; say what is actually in the way.
    """
    blocker = blocking_file(directory)
    if blocker is not None:
        candidate, mode = blocker
        raise DataError(
            f"{candidate}: is {describe(mode)}, not a directory, and the MNIST cache needs a "
            f"directory there; move it away or {relocate_hint(directory)}"
        )


def read_cache(path: Path) -> Arrays | None:
    """The cached arrays, or None when there is no cache file yet.

    CorruptCache when the content is bad; DataError, leaving the file alone, when it cannot be
    read at all.
    """
    check_directory(path.parent)
    try:
        data = read_data(path, "move it away, and the next load fetches MNIST again")
    except FileNotFoundError:
        return None
    except Oversized as error:
        raise CorruptCache(str(error)) from None
    except OSError as error:
        problem = os_problem(error, elsewhere="delete it to fetch MNIST again", writing=False)
        raise DataError(f"{path}: cannot read the cache: {problem}") from None
    try:
        return parse_npz(data, str(path))
    except DataError as error:
        raise CorruptCache(str(error)) from None


def discard(path: Path, why: str) -> None:
    """Remove a bad cache entry so it is fetched again, saying so on stderr."""
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        # One line, and no "discarding" notice before it: the file is still there.
        why_not = one_line(error, with_type=True)
        raise DataError(
            f"{path}: the cached file is bad and cannot be removed ({why_not}); delete it by hand"
        ) from None
    print(f"jaxmnist: discarding the cached {path} ({why}); fetching it again", file=sys.stderr)


def check_writable(directory: Path) -> None:
    """Fail before a download, not after it, when the cache directory cannot take a file."""
    check_directory(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise _write_error(
            directory, directory, "the cache directory is not writable", error
        ) from None


def _write_error(where: Path, directory: Path, what: str, error: OSError) -> DataError:
    """One line for a failed write into `directory`: the system's reason, then the fix."""
    return DataError(f"{where}: {what}: {os_problem(error, elsewhere=relocate_hint(directory))}")


def write_cache(path: Path, arrays: Arrays) -> None:
    """Write `arrays` to `path` atomically (readable by all: the cache holds public data).

    A crash or Ctrl-C at any moment leaves either the old file or the new one, never a partial
    file under the real name.
    """
    (x_train, y_train), (x_test, y_test) = arrays
    check_writable(path.parent)
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = None  # nothing there yet (the usual case), or the write below reports it
    if mode is not None and not stat.S_ISREG(mode):
        # os.replace would fail on it with a message naming our temporary file instead.
        raise DataError(
            f"{path}: is {describe(mode)}, not a regular file, where the cache file belongs; "
            f"move it away or {relocate_hint(path.parent)}"
        )
    try:
        with AtomicFile(path, mode=0o644) as atomic:
            # Uncompressed: 55 MB reads back in tens of milliseconds.
            np.savez(atomic.file, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    except OSError as error:
        raise _write_error(path, path.parent, "cannot write the cache", error) from None
