"""A version directory's two files: arrays.npz and meta.json as bytes, their hashes, and checks."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxmnist import _fs
from jaxmnist.checkpoint.problems import START_OVER, read_problem
from jaxmnist.errors import CheckpointError, one_line

FORMAT = 1
ARRAYS = "arrays.npz"
META = "meta.json"
# Epoch numbers are folded into uint32 PRNG keys to pick each epoch's shuffle.
MAX_EPOCH = 2**32 - 1
# Fields of `meta` other than epoch that a resumed run reads, and the JSON type each must have.
_META_FIELDS = {"config": (dict, "an object"), "data_fingerprint": (str, "a string")}
# The outer document of meta.json: its fields and their types, as `meta_bytes` writes them.
_DOC_FIELDS = [("sha256", str), ("format", int), ("arrays_sha256", str), ("meta", dict)]


def encode(arrays: Mapping[str, np.ndarray | jax.Array], meta: dict) -> tuple[bytes, bytes]:
    """arrays.npz and meta.json for a new version; ValueError for meta that no reader would take."""
    npz = npz_bytes(arrays)
    doc = meta_bytes(meta, hashlib.sha256(npz).hexdigest())
    # Checked as a reader will see it: tuples as lists, numpy scalars as numbers.
    problem = meta_problem(json.loads(doc)["meta"])
    if problem:
        raise ValueError(f"checkpoint meta {problem}")
    return npz, doc


def npz_bytes(arrays: Mapping[str, np.ndarray | jax.Array]) -> bytes:
    """An uncompressed .npz holding one `{key}.npy` entry per array, without pickle."""
    # Written by hand rather than np.savez(**arrays), where keys like "file" would clash.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()


def parse_npz(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of `npz_bytes`'s output; ValueError (or the zip and npy parsers' own) if not."""
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy") or name[:-4] in arrays:
                raise ValueError(f"unexpected entry {name!r}")
            with archive.open(name) as entry:
                arrays[name[:-4]] = np.lib.format.read_array(entry, allow_pickle=False)
    return arrays


def meta_bytes(meta: dict, arrays_sha256: str) -> bytes:
    """meta.json: `meta` with the format and the arrays' hash, signed by a sha256 of the rest."""
    text = json.dumps(
        {"format": FORMAT, "arrays_sha256": arrays_sha256, "meta": meta}, default=_item
    )
    doc = json.loads(text)  # hash what a reader will see: tuples as lists, numpy scalars as numbers
    doc["sha256"] = digest(doc)
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def digest(doc: dict) -> str:
    """The sha256 that meta.json carries of its other fields."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _item(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray | jax.Array) and np.ndim(value) == 0:
        return value.item()
    raise TypeError(f"checkpoint meta holds a {type(value).__name__}, which JSON cannot store")


def meta_problem(meta: dict) -> str | None:
    """What is wrong with the fields of `meta` that a resumed run relies on, or None."""
    if "epoch" not in meta:
        return "has no 'epoch'"
    epoch = meta["epoch"]
    if not _is_a(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        return f"'epoch' is {_shown(epoch)}, not an integer from 0 to {MAX_EPOCH}"
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


def read_file(path: str | os.PathLike, *, limit: int | None = None) -> bytes:
    """The bytes of the regular file `path` (TooLarge past `limit`); OSError as the OS raises it."""
    try:
        return _fs.read_regular(path, limit=limit)
    # Not an OS failure to report as "cannot read": the checkpoint itself is damaged. A directory
    # is refused as IsADirectoryError (naming a descriptor, not the path) before the type check.
    except (_fs.NotRegularFile, IsADirectoryError):
        raise CheckpointError(f"{path} is not a regular file; {START_OVER}") from None


def read_version(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and meta of the version directory `path`, verified against their hashes."""
    try:
        doc = _read_meta(path / META)
        data = read_file(path / ARRAYS)
    except OSError as error:
        raise CheckpointError(read_problem(path, error)) from error
    if hashlib.sha256(data).hexdigest() != doc["arrays_sha256"]:
        raise CheckpointError(
            f"{path / ARRAYS} is truncated or edited ({len(data)} bytes, sha256 does not match)"
        )
    try:
        arrays = parse_npz(data)
    # The bytes passed the hash check, so only a writer bug or deliberate tampering gets here;
    # whatever the zip and npy parsers raise then becomes the one error type callers handle.
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{path / ARRAYS} cannot be read: {one_line(error)}") from error
    return arrays, doc["meta"]


def _read_meta(path: Path) -> dict:
    try:
        doc = json.loads(read_file(path).decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {one_line(error)}") from error
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    for field, kind in _DOC_FIELDS:
        if not _is_a(doc.get(field), kind):
            raise CheckpointError(f"{path} has no valid {field!r} field")
    if doc["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {doc['format']}; this jaxmnist reads {FORMAT}")
    if doc.pop("sha256") != digest(doc):
        raise CheckpointError(f"{path} was edited or is corrupt (its sha256 does not match)")
    # A matching hash proves only that whoever edited the file also recomputed it.
    problem = meta_problem(doc["meta"])
    if problem:
        raise CheckpointError(f"{path}: meta {problem}; {START_OVER}")
    return doc
