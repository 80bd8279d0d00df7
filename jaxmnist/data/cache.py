"""The on-disk cache: one canonical `mnist.npz`, written atomically, read back without pickle."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from jaxmnist.data._reason import reason
from jaxmnist.data.arrays import Arrays
from jaxmnist.data.formats import parse_npz
from jaxmnist.errors import DataError

CACHE_NAME = "mnist.npz"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/jaxmnist`, or `~/.cache/jaxmnist`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jaxmnist"


def cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the canonical cached file lives."""
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return directory / CACHE_NAME


def read_cache(path: Path) -> Arrays | None:
    """The cached arrays, or None when there is no cache file yet; DataError if it is unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DataError(
            f"{path}: cannot read the cache ({reason(error)}); check its permissions"
        ) from None
    return parse_npz(data, str(path))


def discard(path: Path, why: str) -> None:
    """Remove a bad cache entry so it is fetched again, saying so on stderr."""
    print(f"jaxmnist: discarding the cached {path} ({why}); fetching it again", file=sys.stderr)
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        raise DataError(
            f"{path}: the cached file is bad and cannot be removed ({reason(error)}); "
            "delete it by hand"
        ) from None


def check_writable(directory: Path) -> None:
    """Fail before a download, not after it, when the cache directory cannot take a file."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise DataError(
            f"{directory}: the cache directory is not writable ({reason(error)}); fix its "
            "permissions, or choose another with --cache-dir / XDG_CACHE_HOME"
        ) from None


def write_cache(path: Path, arrays: Arrays) -> None:
    """Write `arrays` to `path` atomically: a temp file beside it, fsync, then os.replace.

    A crash or Ctrl-C at any moment leaves either the old file or the new one, never a partial
    file under the real name; the temporary name (`.mnist.npz.*.tmp`) never looks complete.
    """
    (x_train, y_train), (x_test, y_test) = arrays
    check_writable(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp makes the file private (0600); the cache holds public data, readable by all.
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as file:
            # Uncompressed: 55 MB reads back in tens of milliseconds.
            np.savez(file, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as error:
        raise DataError(
            f"{path}: cannot write the cache ({reason(error)}); free some space or choose "
            "another directory with --cache-dir / XDG_CACHE_HOME"
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
