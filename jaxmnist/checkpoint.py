"""Atomic checkpoints without pickle: arrays in an .npz, everything else in JSON.

Layout of a checkpoint directory (one writer at a time):

    LATEST              "ckpt-000007\\n": the one committed checkpoint
    ckpt-000006/        the previous one, kept until the next save has committed
    ckpt-000007/
        arrays.npz      one .npy entry per pytree leaf, keyed by path ("params/0/W")
        meta.json       {"format", "arrays_sha256", "meta", "sha256" (of the rest)}
    .tmp-*              debris of a killed writer: never read, removed by the next save

A save is complete before it becomes visible: files are fsynced in a `.tmp-` directory, renamed to
`ckpt-N`, and only then does `LATEST` switch to it with an atomic `os.replace`. A process killed at
any moment therefore leaves `LATEST` naming either the old or the new checkpoint, both complete.
The pytree structure is never read from the file: `restore_tree` rebuilds it from a template.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
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
_VERSION = re.compile(r"ckpt-([0-9]{6,})")
_TMP = ".tmp-"


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
    tmp = pointer = final = None
    committed = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        versions = _versions(root)
        final = root / f"ckpt-{(versions[-1][0] if versions else 0) + 1:06d}"
        tmp = root / f"{_TMP}{final.name}-{secrets.token_hex(4)}"
        tmp.mkdir()
        _write_synced(tmp / ARRAYS, npz)
        _write_synced(tmp / META, doc)
        _fsync_dir(tmp)
        tmp.rename(final)
        tmp = final  # complete, but not yet committed: still ours to remove on failure
        _fsync_dir(root)
        pointer = root / f"{_TMP}{LATEST}-{secrets.token_hex(4)}"
        _write_synced(pointer, f"{final.name}\n".encode())
        os.replace(pointer, root / LATEST)
        committed = True
        _fsync_dir(root)
    except OSError as error:
        reason = error.strerror or str(error)
        raise CheckpointError(f"cannot save checkpoint in {root}: {reason}") from error
    finally:
        # Also on KeyboardInterrupt: unless LATEST already names the new checkpoint (the
        # interrupt may land between os.replace and the flag), it is not committed: drop it.
        if not committed and not _latest_names(root, final):
            for path in (tmp, pointer):
                if path is not None:
                    _remove(path)
    try:
        for _, old in _versions(root)[:-keep]:
            _remove(old)
    except (OSError, CheckpointError):
        pass  # pruning is housekeeping; the new checkpoint is already committed
    return final


def _latest_names(root: Path, version: Path | None) -> bool:
    try:
        return version is not None and (root / LATEST).read_text().strip() == version.name
    except (OSError, UnicodeDecodeError):
        return False


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The committed checkpoint directory, or None if nothing was ever committed here."""
    root = Path(directory)
    pointer = root / LATEST
    try:
        raw = pointer.read_bytes()
    except FileNotFoundError:
        versions = _versions(root) if root.is_dir() else []
        if versions:
            # Not None: `--resume` must never quietly start over beside real checkpoints.
            raise CheckpointError(
                f"{pointer} is missing though {root} holds {versions[-1][1].name}; "
                f"remove {root} to start over"
            ) from None
        return None
    except OSError as error:
        raise CheckpointError(f"{pointer}: cannot read ({error.strerror})") from error
    name = raw.decode("ascii", errors="replace").strip()
    if not _VERSION.fullmatch(name):
        raise CheckpointError(f"{pointer} is corrupt: expected a name like ckpt-000001")
    if not (root / name).is_dir():
        raise CheckpointError(f"{pointer} names {name}, which does not exist in {root}")
    return root / name


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and meta of the latest committed checkpoint, verified against their hashes."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"no checkpoint in {root}: the directory does not exist")
    path = latest_checkpoint(root)
    if path is None:
        raise CheckpointError(f"no checkpoint in {root} (it has no {LATEST} file)")
    return _read_version(path)


def _read_version(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    doc = _read_meta(path / META)
    data = _read_file(path / ARRAYS)
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
        if not isinstance(doc.get(field), kind):
            raise CheckpointError(f"{path} has no valid {field!r} field")
    if doc["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {doc['format']}; this jaxmnist reads {FORMAT}")
    if doc.pop("sha256") != _digest(doc):
        raise CheckpointError(f"{path} was edited or is corrupt (its sha256 does not match)")
    return doc


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror})") from error


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


def _versions(root: Path) -> list[tuple[int, Path]]:
    try:
        found = [(_VERSION.fullmatch(p.name), p) for p in root.iterdir() if p.is_dir()]
    except OSError as error:
        raise CheckpointError(f"{root}: cannot list ({error.strerror})") from error
    return sorted((int(match[1]), p) for match, p in found if match)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the entries (new files, a rename) durable, not just the files' contents.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_leftovers(root: Path) -> None:
    for path in root.iterdir():
        if path.name.startswith(_TMP):
            _remove(path)


def _remove(path: Path) -> None:
    """Best effort; a directory is renamed to .tmp- first, so it never lingers half-deleted."""
    try:
        if path.is_dir() and not path.name.startswith(_TMP):
            path = path.rename(path.with_name(f"{_TMP}old-{path.name}-{secrets.token_hex(4)}"))
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
