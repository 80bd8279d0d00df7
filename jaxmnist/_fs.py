"""Files on disk: atomic writes, durable creation, safe reads, and OS errors in the user's words.

The data cache, the checkpoints and the metrics file all write here, so a crash or Ctrl-C at any
moment leaves either the old file or the new one, never a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO


def cache_home() -> Path:
    """The user's cache directory: `$XDG_CACHE_HOME`, else `~/.cache`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()


def describe(mode: int) -> str:
    """What a stat mode is, in words: 'a file', 'a directory', 'a FIFO (named pipe)', ..."""
    kinds = (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


class NotRegularFile(OSError):
    """A path to read names a directory, a device, a FIFO or a socket rather than a file."""

    def __init__(self, path: str | os.PathLike, mode: int):
        super().__init__(errno.EINVAL, f"is {describe(mode)}, not a regular file", str(path))
        self.mode = mode

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


class TooLarge(OSError):
    """A file to read holds more than the reader's limit (`size` None: found while reading)."""

    def __init__(self, path: str | os.PathLike, size: int | None, limit: int):
        super().__init__(errno.EFBIG, "file too large", str(path))
        self.size, self.limit = size, limit


_CHUNK = 1 << 20


def read_regular(path: str | os.PathLike, *, limit: int | None = None) -> bytes:
    """All the bytes of the regular file `path`; at most `limit` of them, else TooLarge.

    Anything but a regular file is refused before it is read (NotRegularFile), so /dev/zero or a
    FIFO can neither fill memory nor hang the reader. The OS's own errors come out as OSError.
    """
    # O_NONBLOCK: a FIFO in the file's place must not wait for a writer; fstat then refuses it.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        # Checked on the descriptor before wrapping it: open() itself refuses a directory with
        # an error that names the descriptor, not the path.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(path, info.st_mode)
        file = open(fd, "rb", buffering=0)  # noqa: SIM115 (closed by the with below)
    except BaseException:
        os.close(fd)
        raise
    with file:
        if limit is not None and info.st_size > limit:
            raise TooLarge(path, info.st_size, limit)
        # The first read asks for the whole file and one byte more (usually all of it, no copy);
        # a file that grows after the fstat still stops at `limit`.
        chunks, size, want = [], 0, info.st_size + 1
        while chunk := file.read(want):
            size += len(chunk)
            if limit is not None and size > limit:
                raise TooLarge(path, None, limit)
            chunks.append(chunk)
            want = _CHUNK
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def fsync_dir(path: str | os.PathLike) -> None:
    """Makes a directory's entries (new files, a rename) durable, not just the files' contents."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: str | os.PathLike, data: bytes) -> None:
    """Creates `path` (which must not exist) holding `data`, durably; on failure leaves nothing."""
    file = open(path, "xb")  # noqa: SIM115 (a failure here created nothing, so nothing to remove)
    try:
        with file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)  # "xb" created it, so it is ours
        raise


def temporary_name(name: str) -> str:
    """A name beside `name` that never looks complete: `.NAME.<pid>-<8 hex digits>.tmp`."""
    return f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


class AtomicFile:
    """A file that appears at `path` complete or not at all.

    Written under a temporary name beside `path` (`temporary`, or one from `temporary_name`);
    `commit` fsyncs it and renames it over `path`, `discard` removes it. As a context manager it
    commits when the block ends normally and discards on any exception, Ctrl-C included.
    """

    def __init__(self, path: str | os.PathLike, *, temporary: str | None = None, mode=0o644):
        self.path = Path(path)
        self.temporary = self.path.with_name(temporary or temporary_name(self.path.name))
        self.file: BinaryIO = open(self.temporary, "xb")  # noqa: SIM115 (closed by commit/discard)
        try:
            os.chmod(self.temporary, mode)
        except BaseException:
            self.discard()
            raise

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self) -> Path:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.temporary, self.path)
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temporary)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_atomic(path: str | os.PathLike, data: bytes, *, mode: int = 0o644) -> Path:
    """Replaces (or creates) `path` with `data` so that readers see the old bytes or the new."""
    with AtomicFile(path, mode=mode) as file:
        file.write(data)
    return Path(path)


def blocking_file(path: str | os.PathLike) -> tuple[Path, int] | None:
    """The nearest of `path` and its parents that exists, with its mode, when it is no directory.

    A file where a directory belongs makes every open below it fail with ENOTDIR or EEXIST, which
    reads like a permission problem; this finds what is really in the way.
    """
    path = Path(path)
    for candidate in (path, *path.parents):
        try:
            mode = os.stat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None  # cannot look (EACCES, ...): the caller's own operation reports it
        return None if stat.S_ISDIR(mode) else (candidate, mode)
    return None


def os_problem(error: OSError, *, elsewhere: str, writing: bool = True) -> str:
    """The system's reason, then the fix: "Read-only file system; remount it read-write, or ...".

    `elsewhere` is the caller's way around the problem ("pass another `checkpoint_dir`").
    """
    reason = error.strerror or str(error)
    code = error.errno
    if code == errno.EROFS:
        fix = f"remount it read-write, or {elsewhere}"
    elif code in (errno.EACCES, errno.EPERM):
        verb = "write there" if writing else "read it"
        fix = f"let this user {verb} (chmod/chown), or {elsewhere}"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free some space there, or {elsewhere}"
    elif code == errno.ENAMETOOLONG:
        fix = f"use a shorter path, or {elsewhere}"
    elif code == errno.ENXIO:
        reason, fix = "a pipe that nobody reads", f"start its reader first, or {elsewhere}"
    elif code in (errno.ENOENT, errno.ENOTDIR) and writing:
        fix = f"create its directory first, or {elsewhere}"
    else:
        fix = f"check the disk, or {elsewhere}"
    return f"{reason}; {fix}"
