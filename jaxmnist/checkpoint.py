"""Atomic checkpoints without pickle: arrays in an .npz, everything else in JSON.

Layout of a checkpoint directory (one writer at a time):

    LATEST              "ckpt-000007\\n": the one committed checkpoint
    ckpt-000006/        the previous one, kept until the next save has committed
    ckpt-000007/
        arrays.npz      one .npy entry per pytree leaf, keyed by path ("params/0/W")
        meta.json       {"format", "arrays_sha256", "meta", "sha256" (of the rest)}
    .jaxmnist-tmp-*     debris of a killed writer: never read, removed by the next save

A save is complete before it becomes visible: files are fsynced in a temporary directory, renamed
to `ckpt-N`, and only then does `LATEST` switch to it with an atomic `os.replace`. A process killed
at any moment therefore leaves `LATEST` naming either the old or the new checkpoint, both complete.
The pytree structure is never read from the file: `restore_tree` rebuilds it from a template.

The directory may be shared with the user's own files: a save removes only names that this
module's writer makes, matched in full (`.jaxmnist-tmp-<what>-<pid>-<8 hex digits>`), and
`ckpt-N` directories older than the ones it keeps.

`meta` is JSON with an `epoch` (an integer from 0, the epochs the arrays have trained) and, when
present, a `config` object, a `data_fingerprint` string and a `history` list of objects: a resumed
run trusts these, so both saving and loading check them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmnist.errors import CheckpointError

FORMAT = 1
LATEST = "LATEST"
ARRAYS = "arrays.npz"
META = "meta.json"
# What the writer names a version, f"ckpt-{n:06d}" for n from 1; nine digits leave room for a
# billion saves while keeping any name that passes far below every file system's name limit.
_VERSION = re.compile(r"ckpt-([0-9]{6,9})")
_MAX_VERSION = 999_999_999
_TMP = ".jaxmnist-tmp-"
# Every temporary name the writer makes: a version being written, a version being removed
# ("old-"), the next LATEST, and ensure_writable's probe; each ends in the writer's pid and a nonce.
_LEFTOVER = re.compile(
    re.escape(_TMP)
    + r"(?:(?P<directory>(?:old-)?(?P<version>ckpt-[0-9]{6,9}))|(?P<file>LATEST|probe))"
    + r"-[0-9]{1,10}-[0-9a-f]{8}"
)
# Epoch numbers are folded into uint32 PRNG keys to pick each epoch's shuffle.
_MAX_EPOCH = 2**32 - 1
# Fields of `meta` other than epoch that a resumed run reads, and the JSON type each must have.
_META_FIELDS = {"config": (dict, "an object"), "data_fingerprint": (str, "a string")}
_START_OVER = "restore the checkpoint or start over with another --checkpoint-dir"


def flatten_tree(tree: Any) -> dict[str, np.ndarray]:
    """Host copies of a pytree's leaves, keyed by their paths ("params/0/W", "opt_state/0/mu")."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = _key(path)
        if key in flat:
            raise ValueError(f"two leaves of the pytree share the checkpoint key {key!r}")
        # A copy, not a view: on CPU a view could alias a buffer the next step donates.
        flat[key] = np.array(_raw(leaf), copy=True)
    return flat


def restore_tree(
    template: Any, arrays: Mapping[str, np.ndarray], *, source: str | os.PathLike = "checkpoint"
) -> Any:
    """`template`'s structure with leaves from `arrays`; keys, shapes and dtypes must all match."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    restored = []
    for path, leaf in leaves:
        key, want = _key(path), _raw(leaf)
        if not hasattr(want, "dtype"):
            want = np.asarray(want)  # a Python scalar, stored as NumPy would store it
        shape, dtype = tuple(want.shape), np.dtype(want.dtype)
        if key not in arrays:
            raise CheckpointError(f"{source}: has no {key}, this run expects {dtype}{list(shape)}")
        got = arrays[key]
        if got.shape != shape:
            raise CheckpointError(
                f"{source}: {key} has shape {got.shape}, this run expects {shape}"
            )
        if got.dtype != dtype:
            raise CheckpointError(
                f"{source}: {key} has dtype {got.dtype}, this run expects {dtype}"
            )
        restored.append(_like(leaf, got))
    extra = sorted(set(arrays) - {_key(path) for path, _ in leaves})
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{source}: has {extra[0]}{more}, which this run does not expect")
    return jax.tree_util.tree_unflatten(treedef, restored)


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
    # Serialise first, so an unsupported array or meta value fails before anything touches disk.
    npz = _npz_bytes(arrays)
    doc = _meta_bytes(meta, hashlib.sha256(npz).hexdigest())
    problem = _meta_problem(json.loads(doc)["meta"])
    if problem:
        raise ValueError(f"checkpoint meta {problem}")
    tmp = pointer = final = None
    committed = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        versions = _versions(root)
        number = (versions[-1][0] if versions else 0) + 1
        if number > _MAX_VERSION:
            raise CheckpointError(
                f"cannot save checkpoint in {root}: it holds {versions[-1][1].name}, the last "
                "number this format allows; start over with another --checkpoint-dir"
            )
        final = root / f"ckpt-{number:06d}"
        staging = root / _temporary_name(final.name)
        staging.mkdir()
        tmp = staging  # only once created: a path that mkdir found taken is not ours to remove
        _write_synced(tmp / ARRAYS, npz)
        _write_synced(tmp / META, doc)
        _fsync_dir(tmp)
        tmp.rename(final)
        tmp = final  # complete, but not yet committed: still ours to remove on failure
        _fsync_dir(root)
        staging = root / _temporary_name(LATEST)
        _write_synced(staging, f"{final.name}\n".encode())
        pointer = staging
        os.replace(pointer, root / LATEST)
        committed = True
        _fsync_dir(root)
    except OSError as error:
        reason = _write_problem(root, error)
        raise CheckpointError(f"cannot save checkpoint in {root}: {reason}") from error
    finally:
        # Also on KeyboardInterrupt: unless LATEST already names the new checkpoint (the
        # interrupt may land between os.replace and the flag), it is not committed: drop it.
        if not committed and not _latest_names(root, final):
            for path in (tmp, pointer):
                if path is not None:
                    _discard(path)
    try:
        for _, old in _versions(root)[:-keep]:
            _retire(old)
    except (OSError, CheckpointError):
        pass  # pruning is housekeeping; the new checkpoint is already committed
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
        probe = root / _temporary_name("probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # Gone already means a save here cleaned it up, which it may: the write itself succeeded.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)
    except OSError as error:
        reason = _write_problem(root, error)
        raise CheckpointError(f"cannot write checkpoints in {root}: {reason}") from error


def _latest_names(root: Path, version: Path | None) -> bool:
    try:
        raw = _read_file(root / LATEST, limit=64)
    except (OSError, CheckpointError):
        return False
    return version is not None and raw.strip() == version.name.encode()


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The committed checkpoint directory, or None if nothing was ever committed here."""
    root = Path(directory)
    try:
        return _latest(root)
    except OSError as error:
        raise CheckpointError(_read_problem(root, error)) from error


def _latest(root: Path) -> Path | None:
    kind = _file_type(root)
    if kind is None:
        return None
    if not stat.S_ISDIR(kind):
        raise CheckpointError(_not_a_directory(root, kind))
    pointer = root / LATEST
    try:
        # The writer's pointer is a dozen bytes: reading more could only find it corrupt.
        raw = _read_file(pointer, limit=64)
    except FileNotFoundError:
        versions = _versions(root)
        if versions:
            # Not None: `--resume` must never quietly start over beside real checkpoints.
            raise CheckpointError(
                f"{pointer} is missing though {root} holds {versions[-1][1].name}; "
                f"remove {root} to start over"
            ) from None
        return None
    try:
        name = raw.decode("ascii").strip() if len(raw) <= 64 else ""
    except UnicodeDecodeError:
        name = ""
    # Checked before the name is joined to any path: LATEST is input like any other file.
    if _version_number(name) is None:
        raise CheckpointError(
            f"{pointer} is corrupt: it must hold a checkpoint directory's name like ckpt-000001; "
            "write the newest one's name into it, or start over with another --checkpoint-dir"
        )
    if not (root / name).is_dir():
        raise CheckpointError(
            f"{pointer} names {name}, which does not exist in {root}; {_START_OVER}"
        )
    return root / name


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and meta of the latest committed checkpoint, verified against their hashes."""
    root = Path(directory)
    try:
        if _file_type(root) is None:
            raise CheckpointError(f"no checkpoint in {root}: the directory does not exist")
    except OSError as error:
        raise CheckpointError(_read_problem(root, error)) from error
    path = latest_checkpoint(root)
    if path is None:
        raise CheckpointError(f"no checkpoint in {root} (it has no {LATEST} file)")
    return _read_version(path)


def _read_version(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        doc = _read_meta(path / META)
        data = _read_file(path / ARRAYS)
    except OSError as error:
        raise CheckpointError(_read_problem(path, error)) from error
    if hashlib.sha256(data).hexdigest() != doc["arrays_sha256"]:
        raise CheckpointError(
            f"{path / ARRAYS} is truncated or edited ({len(data)} bytes, sha256 does not match)"
        )
    try:
        arrays = _parse_npz(data)
    # The bytes passed the hash check, so only a writer bug or deliberate tampering gets here;
    # whatever the zip and npy parsers raise then becomes the one error type callers handle.
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{path / ARRAYS} cannot be read: {_one_line(error)}") from error
    return arrays, doc["meta"]


def _read_meta(path: Path) -> dict:
    try:
        doc = json.loads(_read_file(path).decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {_one_line(error)}") from error
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    for field, kind in [("sha256", str), ("format", int), ("arrays_sha256", str), ("meta", dict)]:
        if not _is_a(doc.get(field), kind):
            raise CheckpointError(f"{path} has no valid {field!r} field")
    if doc["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {doc['format']}; this jaxmnist reads {FORMAT}")
    if doc.pop("sha256") != _digest(doc):
        raise CheckpointError(f"{path} was edited or is corrupt (its sha256 does not match)")
    # A matching hash proves only that whoever edited the file also recomputed it.
    problem = _meta_problem(doc["meta"])
    if problem:
        raise CheckpointError(f"{path}: meta {problem}; {_START_OVER}")
    return doc


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with the fields of `meta` that a resumed run relies on, or None."""
    if "epoch" not in meta:
        return "has no 'epoch'"
    epoch = meta["epoch"]
    if not _is_a(epoch, int) or not 0 <= epoch <= _MAX_EPOCH:
        return f"'epoch' is {_shown(epoch)}, not an integer from 0 to {_MAX_EPOCH}"
    for field, (kind, described) in _META_FIELDS.items():
        if field in meta and not isinstance(meta[field], kind):
            return f"'{field}' is {_shown(meta[field])}, not {described}"
    history = meta.get("history", [])
    if not isinstance(history, list):
        return f"'history' is {_shown(history)}, not a list"
    for index, entry in enumerate(history):
        if not isinstance(entry, dict):
            return f"'history' entry {index} is {_shown(entry)}, not an object"
    return None


def _is_a(value: Any, kind: type) -> bool:
    # JSON's true and false load as bool, a subclass of int, yet are no count of anything.
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_file(path: Path, *, limit: int | None = None) -> bytes:
    """The bytes of regular file `path` (past `limit`, one more at most); OSError as raised."""
    # Non-blocking, so a FIFO in a checkpoint's place fails the type check instead of hanging.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path} is not a regular file; {_START_OVER}")
        with os.fdopen(fd, "rb") as file:
            fd = None  # closed by the file object
            return file.read() if limit is None else file.read(limit + 1)
    finally:
        if fd is not None:
            os.close(fd)


def _npz_bytes(arrays: Mapping[str, np.ndarray | jax.Array]) -> bytes:
    # Written by hand rather than np.savez(**arrays), where keys like "file" would clash.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()


def _parse_npz(data: bytes) -> dict[str, np.ndarray]:
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy") or name[:-4] in arrays:
                raise ValueError(f"unexpected entry {name!r}")
            with archive.open(name) as entry:
                arrays[name[:-4]] = np.lib.format.read_array(entry, allow_pickle=False)
    return arrays


def _meta_bytes(meta: dict, arrays_sha256: str) -> bytes:
    text = json.dumps(
        {"format": FORMAT, "arrays_sha256": arrays_sha256, "meta": meta}, default=_item
    )
    doc = json.loads(text)  # hash what a reader will see: tuples as lists, numpy scalars as numbers
    doc["sha256"] = _digest(doc)
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _digest(doc: dict) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _item(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray | jax.Array) and np.ndim(value) == 0:
        return value.item()
    raise TypeError(f"checkpoint meta holds a {type(value).__name__}, which JSON cannot store")


def _key(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _is_prng_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _raw(leaf: Any) -> Any:
    # Typed PRNG keys have no NumPy dtype; their uint32 key data is what gets stored.
    return jax.random.key_data(leaf) if _is_prng_key(leaf) else leaf


def _like(template: Any, array: np.ndarray) -> Any:
    if _is_prng_key(template):
        return jax.random.wrap_key_data(array, impl=jax.random.key_impl(template))
    if isinstance(template, jax.Array):
        return jnp.asarray(array)
    if isinstance(template, np.generic):
        return array[()]
    if isinstance(template, bool | int | float | complex):
        return array.item()
    return array


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
        raise CheckpointError(f"{root}: cannot list ({_reason(error)})") from error
    return sorted((number, p) for number, p in found if number is not None)


def _temporary_name(what: str) -> str:
    # The pid says which process left debris; the nonce keeps two names of one process apart.
    return f"{_TMP}{what}-{os.getpid()}-{secrets.token_hex(4)}"


def _write_synced(path: Path, data: bytes) -> None:
    """Creates `path` with `data`, durably; on failure leaves no file behind."""
    file = open(path, "xb")  # noqa: SIM115 (a failure here created nothing, so nothing to remove)
    try:
        with file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()  # "xb" created it, so it is ours
        raise


def _fsync_dir(path: Path) -> None:
    # Makes the entries (new files, a rename) durable, not just the files' contents.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_leftovers(root: Path) -> None:
    for path in root.iterdir():
        match = _LEFTOVER.fullmatch(path.name)
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
        doomed = version.rename(version.with_name(_temporary_name(f"old-{version.name}")))
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


def _blocking_file(root: Path) -> tuple[Path, int] | None:
    """The nearest of `root` and its parents that exists, with its mode, if not a directory."""
    for path in (root, *root.parents):
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None
        return None if stat.S_ISDIR(mode) else (path, mode)
    return None


def _not_a_directory(path: Path, mode: int, *, subject: str | None = None) -> str:
    kind = "a file, not a directory" if stat.S_ISREG(mode) else "not a directory"
    return f"{subject or path} is {kind}: --checkpoint-dir must name a directory"


def _write_problem(root: Path, error: OSError) -> str:
    """Why a write under `root` failed, then the fix: what follows "cannot save ... in {root}: "."""
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = _blocking_file(root)
        if blocker is not None:
            path, mode = blocker
            return _not_a_directory(path, mode, subject="it" if path == root else None)
    return _reason(error, writing=True)


def _read_problem(root: Path, error: OSError) -> str:
    """A whole message for a failure to read the checkpoint at `root` (or a file in it)."""
    if error.errno == errno.ENOTDIR:
        blocker = _blocking_file(root)
        if blocker is not None:
            return _not_a_directory(*blocker)
    return f"{error.filename or root}: cannot read ({_reason(error)})"


def _reason(error: OSError, *, writing: bool = False) -> str:
    """The system's reason, then the fix: "Read-only file system; remount it ..."."""
    code = error.errno
    if code == errno.EROFS:
        fix = "remount it read-write, or pass a --checkpoint-dir on a writable disk"
    elif code in (errno.EACCES, errno.EPERM):
        verb = "write there" if writing else "read it"
        fix = f"let this user {verb} (chmod/chown), or pass another --checkpoint-dir"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space there, or pass a --checkpoint-dir on another disk"
    elif code == errno.ENAMETOOLONG:
        fix = "pass a shorter --checkpoint-dir"
    elif code == errno.ENOENT and not writing:
        fix = f"the checkpoint is incomplete: {_START_OVER}"
    else:
        fix = "check the disk, or pass another --checkpoint-dir"
    return f"{error.strerror or _one_line(error)}; {fix}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
