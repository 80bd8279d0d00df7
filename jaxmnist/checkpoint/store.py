"""The checkpoint directory: saving and finding ckpt-N versions, LATEST, pruning and debris."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from jaxmnist import _fs
from jaxmnist.checkpoint.format import ARRAYS, META, encode, read_file, read_version
from jaxmnist.checkpoint.problems import (
    ELSEWHERE,
    START_OVER,
    not_a_directory,
    read_problem,
    write_problem,
)
from jaxmnist.errors import CheckpointError

LATEST = "LATEST"
# What the writer names a version, f"ckpt-{n:06d}" for n from 1; nine digits leave room for a
# billion saves while keeping any name that passes far below every file system's name limit.
_VERSION = re.compile(r"ckpt-([0-9]{6,9})")
_MAX_VERSION = 999_999_999
# The writer's pointer is a dozen bytes: a longer LATEST can only be corrupt.
_POINTER_LIMIT = 64
PROBE = "jaxmnist-probe"
# Every temporary name the writer makes: a version being written, a version being removed
# ("old-"), the next LATEST, and ensure_writable's probe, as _fs.temporary_name wraps a name
# (".NAME.<pid>-<nonce>.tmp"); then the same four as jaxmnist named them before it used that
# scheme, so that a save also clears what an older version's killed writer left.
_WHAT = r"(?:(?P<directory>(?:old-)?(?P<version>ckpt-[0-9]{{6,9}}))|(?P<file>LATEST|{probe}))"
_LEFTOVERS = (
    re.compile(r"\." + _WHAT.format(probe=re.escape(PROBE)) + r"\.[0-9]{1,10}-[0-9a-f]{8}\.tmp"),
    re.compile(r"\.jaxmnist-tmp-" + _WHAT.format(probe="probe") + r"-[0-9]{1,10}-[0-9a-f]{8}"),
)


def save_checkpoint(
    directory: str | os.PathLike,
    arrays: Mapping[str, np.ndarray | jax.Array],
    meta: dict,
    *,
    keep: int = 2,
) -> Path:
    """Writes `arrays` and JSON `meta` as a new checkpoint, commits it, keeps the newest `keep`."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    root = Path(directory)
    # Serialised first, so an unsupported array or meta value fails before anything touches disk.
    npz, doc = encode(arrays, meta)
    made = final = None
    committed = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        versions = _versions(root)
        number = (versions[-1][0] if versions else 0) + 1
        if number > _MAX_VERSION:
            raise CheckpointError(
                f"cannot save checkpoint in {root}: it holds {versions[-1][1].name}, the last "
                "number this format allows; start over with another `checkpoint_dir`"
            )
        final = root / f"ckpt-{number:06d}"
        staging = root / _fs.temporary_name(final.name)
        staging.mkdir()
        made = staging  # only once created: a path that mkdir found taken is not ours to remove
        _fs.write_synced(staging / ARRAYS, npz)
        _fs.write_synced(staging / META, doc)
        _fs.fsync_dir(staging)
        staging.rename(final)
        made = final  # complete, but not yet committed: still ours to remove on failure
        _fs.fsync_dir(root)
        # The commit: an atomic rename switches LATEST to the new version.
        _fs.write_atomic(root / LATEST, f"{final.name}\n".encode())
        committed = True
    except OSError as error:
        reason = write_problem(root, error)
        raise CheckpointError(f"cannot save checkpoint in {root}: {reason}") from error
    finally:
        # Also on KeyboardInterrupt: unless LATEST already names the new checkpoint (the rename
        # may have happened before an interrupt or a failed fsync), it is not committed: drop it.
        if made is not None and not committed and not _latest_names(root, final):
            _discard(made)
    # Pruning is housekeeping; the new checkpoint is already committed.
    with contextlib.suppress(OSError, CheckpointError):
        for _, old in _versions(root)[:-keep]:
            _retire(old)
    return final


def ensure_writable(directory: str | os.PathLike) -> None:
    """Checks now that checkpoints can be written in `directory`, so a run fails before training.

    Creates `directory` (and its parents) if missing, then creates and removes one uniquely named
    probe file in it; the probe's name is one that `save_checkpoint` removes as debris, should this
    process die in between. Nothing else in the directory is created, changed or removed.

    Raises CheckpointError with one line naming the path and the fix when the path (or a parent)
    is a file rather than a directory, the file system is read-only, this user lacks permission,
    or the system refuses for another reason (a full disk, a name too long). Passing is a check
    of this moment only: a later save can still fail, and then raises CheckpointError itself.
    """
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / _fs.temporary_name(PROBE)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # Gone already means a save here cleaned it up, which it may: the write itself succeeded.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)
    except OSError as error:
        reason = write_problem(root, error)
        raise CheckpointError(f"cannot write checkpoints in {root}: {reason}") from error


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The committed checkpoint directory, or None if nothing was ever committed here."""
    root = Path(directory)
    try:
        return _latest(root)
    except OSError as error:
        raise CheckpointError(read_problem(root, error)) from error


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and meta of the latest committed checkpoint, verified against their hashes."""
    root = Path(directory)
    try:
        if _file_type(root) is None:
            raise CheckpointError(f"no checkpoint in {root}: the directory does not exist")
    except OSError as error:
        raise CheckpointError(read_problem(root, error)) from error
    path = latest_checkpoint(root)
    if path is None:
        raise CheckpointError(f"no checkpoint in {root} (it has no {LATEST} file)")
    return read_version(path)


def leftover(name: str) -> re.Match | None:
    """`name` matched as a temporary name of the writer's, or None: then it is not ours."""
    return next(filter(None, (pattern.fullmatch(name) for pattern in _LEFTOVERS)), None)


def _latest(root: Path) -> Path | None:
    mode = _file_type(root)
    if mode is None:
        return None
    if not stat.S_ISDIR(mode):
        raise CheckpointError(not_a_directory(root, mode))
    pointer = root / LATEST
    try:
        name = read_file(pointer, limit=_POINTER_LIMIT).decode("ascii", "replace").strip()
    except FileNotFoundError:
        versions = _versions(root)
        if versions:
            # Not None: `resume` must never quietly start over beside real checkpoints.
            raise CheckpointError(
                f"{pointer} is missing though {root} holds {versions[-1][1].name}; "
                f"remove {root} to start over"
            ) from None
        return None
    except _fs.TooLarge:
        name = ""  # longer than any the writer makes: corrupt, as below
    # Checked before the name is joined to any path: LATEST is input like any other file.
    if _version_number(name) is None:
        raise CheckpointError(
            f"{pointer} is corrupt: it must hold a checkpoint directory's name like ckpt-000001; "
            "write the newest one's name into it, or start over with another `checkpoint_dir`"
        )
    if not (root / name).is_dir():
        raise CheckpointError(
            f"{pointer} names {name}, which does not exist in {root}; {START_OVER}"
        )
    return root / name


def _latest_names(root: Path, version: Path | None) -> bool:
    """Whether LATEST in `root` names `version`, which is then committed whatever else failed."""
    try:
        raw = _fs.read_regular(root / LATEST, limit=_POINTER_LIMIT)
    except OSError:
        return False
    return version is not None and raw.strip() == version.name.encode()


def _version_number(name: str) -> int | None:
    """n for the writer's own f"ckpt-{n:06d}" (1 <= n <= _MAX_VERSION), else None."""
    match = _VERSION.fullmatch(name)
    if match is None:
        return None
    number = int(match[1])
    return number if number >= 1 and name == f"ckpt-{number:06d}" else None


def _versions(root: Path) -> list[tuple[int, Path]]:
    try:
        found = [(_version_number(p.name), p) for p in root.iterdir() if p.is_dir()]
    except OSError as error:
        reason = _fs.os_problem(error, elsewhere=ELSEWHERE, writing=False)
        raise CheckpointError(f"{root}: cannot list ({reason})") from error
    return sorted((number, p) for number, p in found if number is not None)


def _remove_leftovers(root: Path) -> None:
    for path in root.iterdir():
        match = leftover(path.name)
        if match is None or (match["version"] and _version_number(match["version"]) is None):
            continue  # not a name this module makes: the user's, and left alone
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        # A name of ours on the wrong kind of entry was not made by the writer either.
        if stat.S_ISDIR(mode) if match["directory"] else stat.S_ISREG(mode):
            _discard(path)


def _retire(version: Path) -> None:
    """Removes a ckpt-N directory; renamed first, so it never lingers half-deleted as ckpt-N."""
    try:
        doomed = version.rename(version.with_name(_fs.temporary_name(f"old-{version.name}")))
    except OSError:
        return
    _discard(doomed)


def _discard(path: Path) -> None:
    """Best effort removal of an entry the writer made."""
    try:
        if path.is_dir() and not path.is_symlink():
            if _version_number(path.name) is not None:
                _retire(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _file_type(path: Path) -> int | None:
    """`path`'s st_mode, None if it does not exist; OSError for other failures."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None
