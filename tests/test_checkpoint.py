"""Checkpoints: exact round trips, clear mismatch errors, corruption, write failures, SIGKILL."""

import builtins
import errno
import functools
import hashlib
import importlib.util
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxmnist import _fs, checkpoint
from jaxmnist.checkpoint import (
    flatten_tree,
    latest_checkpoint,
    load_checkpoint,
    restore_tree,
    save_checkpoint,
)
from jaxmnist.errors import CheckpointError

WRITER = Path(__file__).with_name("_checkpoint_writer.py")
DEBRIS = ".*.tmp"  # what the writer's temporary names look like: .NAME.<pid>-<nonce>.tmp


def _writer_module():
    # Loaded by path so the test does not depend on tests/ being importable as a package.
    spec = importlib.util.spec_from_file_location("_checkpoint_writer", WRITER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TrainState(NamedTuple):
    params: tuple
    opt_state: Any
    key: jax.Array  # uint32[2], the raw key data
    step: jax.Array  # int32 scalar


@functools.cache  # jax arrays are immutable, so tests may share one
def _train_state(sizes=(784, 64, 10), seed=0):
    """A realistic state: dense layers, a stepped optimizer, a raw PRNG key, a step counter."""
    rng = np.random.default_rng(seed)
    params = tuple(
        {"W": jnp.asarray(rng.standard_normal((m, n), np.float32)), "b": jnp.full((n,), 0.1 * i)}
        for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=False))
    )
    # Jitted, because eager optax compiles one small program per op and shape: seconds in all.
    optimizer = optax.rmsprop(1e-3)
    opt_state = jax.jit(optimizer.init)(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = jax.jit(optimizer.update)(grads, opt_state, params)
    key = jax.random.key_data(jax.random.key(seed))
    return TrainState(params, opt_state, key, jnp.asarray(1407, jnp.int32))


def _assert_bitwise_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes())


def _assert_arrays_equal(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key


def _tampered(directory, npz: bytes):
    """Replaces arrays.npz with `npz` and re-signs meta.json, as a deliberate forger would."""
    version = latest_checkpoint(directory)
    meta = json.loads((version / "meta.json").read_text())["meta"]
    (version / "arrays.npz").write_bytes(npz)
    digest = hashlib.sha256(npz).hexdigest()
    (version / "meta.json").write_bytes(checkpoint.format.meta_bytes(meta, digest))


# Round trips


def test_train_state_round_trip_is_bitwise(tmp_path):
    state = _train_state()
    meta = {
        "epoch": 3,
        "step": 1407,
        "config": {"lr": 1e-3},
        "history": [{"loss": 0.5}, {"loss": 0.25}, {"loss": float("nan")}],
    }
    saved = save_checkpoint(tmp_path, flatten_tree(state), meta)
    assert latest_checkpoint(tmp_path) == saved
    arrays, loaded_meta = load_checkpoint(tmp_path)
    assert {"params/0/W", "params/1/b", "opt_state/0/nu/0/W", "key", "step"} <= arrays.keys()
    assert loaded_meta["epoch"] == 3 and np.isnan(loaded_meta["history"][2]["loss"])
    restored = restore_tree(_train_state(seed=1), arrays)  # the template's values are ignored
    _assert_bitwise_equal(restored, state)
    assert isinstance(restored.params[0]["W"], jax.Array)


def test_adam_state_typed_key_and_host_leaves_round_trip(tmp_path):
    params = ({"W": jnp.ones((3, 2)), "b": jnp.zeros(2)},)
    state = {
        "opt": optax.adam(1e-3).init(params),  # count: int32 scalar
        "empty": (optax.EmptyState(), ()),  # no leaves at all
        "typed_key": jax.random.key(42),
        "epoch": 7,
        "mean": np.float32(0.25),
        "host": np.arange(4, dtype=np.uint8),
    }
    meta = {"epoch": np.int64(7), "numpy_scalar": np.float32(0.5)}
    save_checkpoint(tmp_path, flatten_tree(state), meta)
    arrays, meta = load_checkpoint(tmp_path)
    restored = restore_tree(state, arrays)
    assert meta == {"epoch": 7, "numpy_scalar": 0.5}
    assert restored["epoch"] == 7 and type(restored["epoch"]) is int
    assert type(restored["mean"]) is np.float32
    assert jax.random.key_impl(restored["typed_key"]) == jax.random.key_impl(state["typed_key"])
    assert jnp.array_equal(
        jax.random.key_data(restored["typed_key"]), jax.random.key_data(state["typed_key"])
    )
    _assert_bitwise_equal(restored["opt"], state["opt"])
    assert restored["empty"] == (optax.EmptyState(), ())


def test_keeps_two_versions_and_ignores_then_removes_debris(tmp_path):
    for epoch in range(1, 6):
        save_checkpoint(tmp_path, {"x": np.full(3, epoch)}, {"epoch": epoch})
    # One of each name the writer makes, as a writer killed at the wrong moment leaves them...
    (tmp_path / ".ckpt-000009.4242-deadbeef.tmp").mkdir()
    (tmp_path / ".ckpt-000009.4242-deadbeef.tmp" / "arrays.npz").write_bytes(b"x")
    (tmp_path / ".old-ckpt-000002.4242-0123abcd.tmp").mkdir()
    (tmp_path / ".LATEST.4242-deadbeef.tmp").write_text("ckpt-000009\n")
    (tmp_path / ".jaxmnist-probe.4242-89abcdef.tmp").touch()
    # ...and of each name an earlier jaxmnist's writer made.
    (tmp_path / ".jaxmnist-tmp-ckpt-000009-4242-deadbeef").mkdir()
    (tmp_path / ".jaxmnist-tmp-ckpt-000009-4242-deadbeef" / "arrays.npz").write_bytes(b"x")
    (tmp_path / ".jaxmnist-tmp-old-ckpt-000002-4242-0123abcd").mkdir()
    (tmp_path / ".jaxmnist-tmp-LATEST-4242-deadbeef").write_text("ckpt-000009\n")
    (tmp_path / ".jaxmnist-tmp-probe-4242-89abcdef").touch()
    arrays, meta = load_checkpoint(tmp_path)
    assert meta["epoch"] == 5 and arrays["x"].tolist() == [5, 5, 5]
    save_checkpoint(tmp_path, {"x": np.full(3, 6)}, {"epoch": 6})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "ckpt-000005", "ckpt-000006"]


USER_DIRECTORIES = [
    ".tmp-build",
    ".jaxmnist-tmp-LATEST-4242-deadbeef",  # directories where the writer makes a file
    ".LATEST.4242-deadbeef.tmp",
    "ckpt-0000001",
    "ckpt-000000",
]


def test_saves_leave_user_files_that_only_resemble_debris(tmp_path):
    lookalikes = {
        ".tmp-notes.txt": "important",  # what the writer's old ".tmp-" cleanup deleted
        ".jaxmnist-tmp-notes": "mine",
        ".jaxmnist-tmp-ckpt-000009-dead": "no pid or nonce",
        ".jaxmnist-tmp-ckpt-000009-4242-deadbeef.bak": "a suffix",
        ".jaxmnist-tmp-ckpt-0000009-4242-deadbeef": "not a version the writer numbers",
        ".jaxmnist-tmp-ckpt-000009-4242-deadbeef": "a file where the writer makes a directory",
        ".ckpt-000009.4242-dead.tmp": "no full nonce",
        ".ckpt-000009.4242-deadbeef.tmp.bak": "a suffix",
        ".ckpt-0000009.4242-deadbeef.tmp": "not a version the writer numbers",
        ".ckpt-000009.4242-deadbeef.tmp": "a file where the writer makes a directory",
        ".metrics.jsonl.4242-deadbeef.tmp": "another writer's temporary file",
        ".probe.4242-deadbeef.tmp": "not the writer's probe",
        "ckpt-000001.txt": "not a version directory",
    }
    for name, text in lookalikes.items():
        (tmp_path / name).write_text(text)
    for name in USER_DIRECTORIES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "work.txt").write_text(name)
    for epoch in range(1, 5):  # enough saves that pruning runs too
        save_checkpoint(tmp_path, {"x": np.full(3, epoch)}, {"epoch": epoch})
    for name, text in lookalikes.items():
        assert (tmp_path / name).read_text() == text, name
    for name in USER_DIRECTORIES:
        assert (tmp_path / name / "work.txt").read_text() == name
    assert sorted(p.name for p in tmp_path.glob("ckpt-00000[1-9]")) == [
        "ckpt-000003",
        "ckpt-000004",
    ]
    assert load_checkpoint(tmp_path)[1] == {"epoch": 4}


def test_every_temporary_name_the_writer_makes_is_one_its_cleanup_removes(tmp_path, monkeypatch):
    listed, named = [], []
    real_fsync, real_name = os.fsync, _fs.temporary_name

    def listing_fsync(fd):
        # Every step of a save ends in an fsync: what exists then is all the writer has made.
        listed.extend(p.name for p in tmp_path.glob(DEBRIS))
        return real_fsync(fd)

    def naming(name):
        named.append(real_name(name))
        return named[-1]

    for epoch in range(1, 4):
        save_checkpoint(tmp_path, {"x": np.full(3, epoch)}, {"epoch": epoch})
    monkeypatch.setattr(os, "fsync", listing_fsync)
    monkeypatch.setattr(_fs, "temporary_name", naming)
    save_checkpoint(tmp_path, {"x": np.full(3, 4)}, {"epoch": 4})
    checkpoint.ensure_writable(tmp_path)
    monkeypatch.undo()
    assert {name.split(".")[1].split("-")[0] for name in listed} == {"ckpt", "LATEST"}, listed
    # The pruned version's and the probe's names exist too briefly to list, but are named too:
    # the new version, LATEST, the pruned version and the probe.
    assert set(listed) <= set(named) and len(named) == 4, named
    for name in named:
        assert checkpoint.store.leftover(name), name
        path = tmp_path / name
        path.mkdir() if "ckpt" in name else path.touch()
    save_checkpoint(tmp_path, {"x": np.full(3, 5)}, {"epoch": 5})
    assert not list(tmp_path.glob(DEBRIS))


def test_flatten_rejects_colliding_keys():
    with pytest.raises(ValueError, match="a/b"):
        flatten_tree({"a/b": 1, "a": {"b": 2}})


# Structure mismatches


MISMATCHES = {
    "shape": (
        lambda: _train_state(sizes=(784, 32, 10)),
        r"params/0/W has shape \(784, 64\), this run expects \(784, 32\)",
    ),
    "missing key": (
        lambda: {"state": _train_state(), "extra": jnp.zeros(2)},
        r"has no extra, this run expects float32\[2\]",
    ),
    "extra keys": (
        lambda: _train_state()._replace(opt_state=()),
        r"has opt_state/0/nu/0/W \(and 3 more\), which this run does not expect",
    ),
    "dtype": (
        lambda: jax.tree.map(lambda x: x.astype(jnp.float16), _train_state()),
        r"params/0/W has dtype float32, this run expects float16",
    ),
}


@pytest.mark.parametrize("template, message", MISMATCHES.values(), ids=MISMATCHES.keys())
def test_restore_names_the_first_mismatch(tmp_path, template, message):
    save_checkpoint(tmp_path, flatten_tree(_train_state()), {"epoch": 0})
    arrays, _ = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=message) as error:
        restore_tree(template(), arrays, source=latest_checkpoint(tmp_path))
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


# Corrupt or missing files


def _saved(directory):
    save_checkpoint(directory, {"x": np.arange(100.0)}, {"epoch": 1})
    return latest_checkpoint(directory)


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _resigned_doc(version, **changes):
    """meta.json's outer document with `changes`, its sha256 recomputed to match them."""
    doc = json.loads((version / "meta.json").read_text())
    doc.pop("sha256")
    doc.update(changes)
    return {**doc, "sha256": checkpoint.format.digest(doc)}


CORRUPTIONS = {
    "truncated npz": (
        lambda v: (v / "arrays.npz").write_bytes((v / "arrays.npz").read_bytes()[:99]),
        r"arrays\.npz is truncated or edited",
    ),
    "flipped npz byte": (
        lambda v: _flip_byte(v / "arrays.npz", 300),
        r"arrays\.npz is truncated or edited",
    ),
    "edited json value": (
        lambda v: (v / "meta.json").write_text(
            (v / "meta.json").read_text().replace('"epoch": 1', '"epoch": 2')
        ),
        r"meta\.json was edited",
    ),
    "truncated json": (
        lambda v: (v / "meta.json").write_bytes((v / "meta.json").read_bytes()[:20]),
        r"meta\.json is not valid JSON",
    ),
    "json missing field": (
        lambda v: (v / "meta.json").write_text(
            json.dumps(
                {k: x for k, x in json.loads((v / "meta.json").read_text()).items() if k != "meta"}
            )
        ),
        r"meta\.json has no valid 'meta' field",
    ),
    "format true, re-signed": (
        lambda v: (v / "meta.json").write_text(json.dumps(_resigned_doc(v, format=True))),
        r"meta\.json has no valid 'format' field",
    ),
    "deleted npz": (
        lambda v: (v / "arrays.npz").unlink(),
        r"arrays\.npz: cannot read \(No such file or directory; the checkpoint is incomplete",
    ),
    "garbage LATEST": (
        lambda v: (v.parent / "LATEST").write_bytes(b"\x00\xffrm -rf /\n"),
        r"LATEST is corrupt",
    ),
    "LATEST names a missing version": (
        lambda v: (v.parent / "LATEST").write_text("ckpt-000042\n"),
        r"LATEST names ckpt-000042, which does not exist",
    ),
    "LATEST deleted": (lambda v: (v.parent / "LATEST").unlink(), r"LATEST is missing though"),
    "pickled array, re-signed": (
        lambda v: _tampered(v.parent, _object_npz()),
        r"arrays\.npz cannot be read",
    ),
    "raw npy, re-signed": (
        lambda v: _tampered(v.parent, b"\x93NUMPY garbage"),
        r"arrays\.npz cannot be read",
    ),
}


def _object_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"code": "runs?"}], dtype=object))  # needs pickle to read back
    return buffer.getvalue()


@pytest.mark.parametrize("corrupt, message", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corruption_is_one_line_naming_the_file(tmp_path, corrupt, message):
    corrupt(_saved(tmp_path))
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(tmp_path)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


def test_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="no checkpoint in .*absent: the directory does not"):
        load_checkpoint(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path)


# Hand-edited meta, re-signed so that it passes the integrity check

RUN_META = {
    "format": 1,
    "epoch": 2,
    "config": {"hidden": 512, "seed": 0},
    "data_fingerprint": "06b0d1f1",
    "history": [{"loss": 0.5}, {"loss": 0.25}],
}
MISSING = object()
BAD_META = {
    "epoch missing": ("epoch", MISSING, r"has no 'epoch'"),
    "epoch a string": ("epoch", "1", r"'epoch' is \"1\", not an integer"),
    "epoch a float": ("epoch", 1.0, r"'epoch' is 1\.0, not an integer"),
    "epoch negative": ("epoch", -1, r"'epoch' is -1, not an integer from 0"),
    "epoch past uint32": ("epoch", 2**32, r"'epoch' is 4294967296, not an integer from 0"),
    "epoch true": ("epoch", True, r"'epoch' is true, not an integer"),
    "epoch null": ("epoch", None, r"'epoch' is null"),
    "config null": ("config", None, r"'config' is null, not an object"),
    "config a list": ("config", [], r"'config' is \[\], not an object"),
    "fingerprint a number": ("data_fingerprint", 5, r"'data_fingerprint' is 5, not a string"),
    "history null": ("history", None, r"'history' is null, not a list"),
    "history a string": ("history", "ab", r"'history' is \"ab\", not a list"),
    "history of numbers": ("history", [{}, 1], r"'history' entry 1 is 1, not an object"),
}


def _edited(meta, field, value):
    meta = {k: v for k, v in meta.items() if k != field}
    if value is not MISSING:
        meta[field] = value
    return meta


def _resign_meta(version, edit):
    """Rewrites meta.json's `meta` with `edit` and its hashes, as a careful hand would."""
    doc = json.loads((version / "meta.json").read_text())
    (version / "meta.json").write_bytes(
        checkpoint.format.meta_bytes(edit(doc["meta"]), doc["arrays_sha256"])
    )


@pytest.mark.parametrize("field, value, message", BAD_META.values(), ids=BAD_META.keys())
def test_resigned_meta_with_a_bad_field_is_one_line_naming_file_and_field(
    tmp_path, field, value, message
):
    version = save_checkpoint(tmp_path, {"x": np.zeros(2)}, RUN_META)
    _resign_meta(version, lambda meta: _edited(meta, field, value))
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(tmp_path)
    text = str(error.value)
    assert str(version / "meta.json") in text and "`checkpoint_dir`" in text and "\n" not in text
    with pytest.raises(CheckpointError, match=message):
        checkpoint.format.read_version(version)


@pytest.mark.parametrize("field, value, message", BAD_META.values(), ids=BAD_META.keys())
def test_save_refuses_meta_that_could_not_be_loaded(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        save_checkpoint(tmp_path / "run", {"x": np.zeros(2)}, _edited(RUN_META, field, value))
    assert not (tmp_path / "run").exists()


def test_run_meta_with_every_field_at_its_limits_loads(tmp_path):
    meta = {**RUN_META, "epoch": 2**32 - 1, "config": {}, "history": []}
    save_checkpoint(tmp_path, {"x": np.zeros(2)}, meta)
    assert load_checkpoint(tmp_path)[1] == meta
    save_checkpoint(tmp_path, {"x": np.zeros(2)}, {"epoch": 0})  # the other fields are optional
    assert load_checkpoint(tmp_path)[1] == {"epoch": 0}


# LATEST is input too: checked against the writer's names before any path is built from it

BAD_POINTERS = {
    "too long for a file name": "ckpt-" + "0" * 300 + "3",
    "seven digits, leading zero": "ckpt-0000001",
    "ten digits": "ckpt-1000000000",
    "version zero": "ckpt-000000",
    "too few digits": "ckpt-1",
    "a path": "../ckpt-000001",
    "a subdirectory": "ckpt-000001/arrays.npz",
    "trailing text": "ckpt-000001 ckpt-000002",
    "non-ASCII digits": "ckpt-00000\N{ARABIC-INDIC DIGIT ONE}",
    "empty": "",
}


@pytest.mark.parametrize("name", BAD_POINTERS.values(), ids=BAD_POINTERS.keys())
def test_latest_naming_anything_but_a_writer_version_is_corrupt(tmp_path, name):
    version = _saved(tmp_path)
    # Each would be a loadable directory if the pointer were followed blindly.
    for target in ("ckpt-0000001", "ckpt-000000", "ckpt-1"):
        shutil.copytree(version, tmp_path / target)
    (tmp_path / "LATEST").write_text(name + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"LATEST is corrupt.*ckpt-000001") as error:
        latest_checkpoint(tmp_path)
    assert "\n" not in str(error.value) and "`checkpoint_dir`" in str(error.value)


def test_latest_longer_than_any_the_writer_makes_is_corrupt(tmp_path):
    _saved(tmp_path)
    # Stripped, this would name ckpt-000001; the size alone says no writer made it.
    (tmp_path / "LATEST").write_bytes(b"ckpt-000001" + b" " * 100 + b"\n")
    with pytest.raises(CheckpointError, match="LATEST is corrupt"):
        latest_checkpoint(tmp_path)


def test_latest_written_by_hand_is_accepted(tmp_path):
    version = _saved(tmp_path)
    (tmp_path / "LATEST").write_text("ckpt-000001")  # an editor may drop the newline
    assert latest_checkpoint(tmp_path) == version


def test_latest_that_is_a_directory_is_one_line(tmp_path):
    _saved(tmp_path)
    (tmp_path / "LATEST").unlink()
    (tmp_path / "LATEST").mkdir()
    with pytest.raises(CheckpointError, match="LATEST is not a regular file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("target", ["LATEST", "meta.json", "arrays.npz"])
def test_fifo_in_place_of_a_checkpoint_file_fails_instead_of_hanging(tmp_path, target):
    version = _saved(tmp_path)
    path = tmp_path / target if target == "LATEST" else version / target
    path.unlink()
    os.mkfifo(path)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(load_checkpoint, tmp_path)))
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():
        # Opening the FIFO's other end releases the reader blocked in open(), so the run can end.
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join()
        pytest.fail(f"reading a FIFO at {target} blocked")
    assert isinstance(outcome[0], CheckpointError), outcome
    assert f"{target} is not a regular file" in str(outcome[0])


def _error_of(function, *args):
    try:
        function(*args)
    except Exception as error:  # noqa: BLE001 (the test asserts which one)
        return error
    return None


@pytest.mark.parametrize(
    "code, fix",
    [
        (errno.EIO, "check the disk"),
        (errno.EACCES, "let this user read it"),
        (errno.ENAMETOOLONG, "use a shorter path, or pass another `checkpoint_dir`"),
    ],
)
@pytest.mark.parametrize("target", ["LATEST", "meta.json", "arrays.npz"])
def test_any_os_error_while_reading_is_one_line(tmp_path, monkeypatch, code, fix, target):
    _saved(tmp_path)

    def failing(real):
        def call(path, *args, **kwargs):
            if isinstance(path, str | os.PathLike) and Path(path).name == target:
                raise OSError(code, os.strerror(code), str(path))
            return real(path, *args, **kwargs)

        return call

    # Whichever way the file is opened, the disk refuses it.
    for module, name in [(os, "open"), (io, "open"), (builtins, "open")]:
        monkeypatch.setattr(module, name, failing(getattr(module, name)))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    text = str(error.value)
    assert f"{target}: cannot read ({os.strerror(code)}; {fix}" in text and "\n" not in text


def test_os_errors_listing_or_checking_a_checkpoint_are_one_line(tmp_path, monkeypatch):
    _saved(tmp_path)
    (tmp_path / "LATEST").unlink()
    denied = OSError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))
    monkeypatch.setattr(Path, "iterdir", lambda self: (_ for _ in ()).throw(denied))
    with pytest.raises(CheckpointError, match="cannot list .*Permission denied"):
        load_checkpoint(tmp_path)
    monkeypatch.undo()

    (tmp_path / "LATEST").write_text("ckpt-000001\n")
    real_stat = os.stat

    def failing_stat(path, *args, **kwargs):
        if Path(path).name == "ckpt-000001":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing_stat)
    with pytest.raises(CheckpointError, match=r"ckpt-000001: cannot read \(Input/output error"):
        load_checkpoint(tmp_path)


def test_checkpoint_dir_with_too_long_a_name_is_one_line(tmp_path):
    directory = tmp_path / ("x" * 300)
    for read in (latest_checkpoint, load_checkpoint, checkpoint.ensure_writable):
        with pytest.raises(CheckpointError, match="File name too long; use a shorter path"):
            read(directory)
    with pytest.raises(CheckpointError, match="File name too long; use a shorter path"):
        save_checkpoint(directory, {"x": np.zeros(1)}, {"epoch": 1})


# Write failures: the previous checkpoint survives, nothing half-written becomes visible


def _assert_every_version_complete(directory):
    for version in directory.glob("ckpt-*"):
        checkpoint.format.read_version(version)


def test_read_only_directory(tmp_path, monkeypatch):
    _saved(tmp_path)

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    # We run as root, for whom chmod does not stop writes; a refusing mkdir is what a read-only
    # directory looks like to the first write of a save.
    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(CheckpointError, match="Read-only file system") as error:
        save_checkpoint(tmp_path, {"x": np.zeros(1)}, {"epoch": 2})
    monkeypatch.undo()
    assert str(tmp_path) in str(error.value)
    assert load_checkpoint(tmp_path)[1] == {"epoch": 1}


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_for_real(tmp_path):
    _saved(tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match=str(tmp_path)):
            save_checkpoint(tmp_path, {"x": np.zeros(1)}, {"epoch": 2})
    finally:
        tmp_path.chmod(0o755)
    assert load_checkpoint(tmp_path)[1] == {"epoch": 1}


@pytest.mark.parametrize("call", ["fsync", "rename", "replace"])
def test_disk_full_at_every_step_keeps_a_loadable_checkpoint(tmp_path, monkeypatch, call):
    real = getattr(os, call)
    for failing in range(1, 20):
        directory = tmp_path / f"fail-at-{failing}"
        save_checkpoint(directory, {"x": np.full(4, 1.0)}, {"epoch": 1})
        calls = []

        def disk_full(*args, _real=real, _failing=failing, _calls=calls):
            _calls.append(args)
            if len(_calls) == _failing:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return _real(*args)

        monkeypatch.setattr(os, call, disk_full)
        try:
            save_checkpoint(directory, {"x": np.full(4, 2.0)}, {"epoch": 2})
        except CheckpointError as error:
            assert "No space left on device" in str(error) and str(directory) in str(error)
        else:
            break  # the save made fewer calls than `failing`: every step has been failed once
        finally:
            monkeypatch.undo()
        arrays, meta = load_checkpoint(directory)
        # Only a failure after LATEST switched (its directory fsync) may show the new checkpoint.
        assert meta["epoch"] in (1, 2) and arrays["x"].tolist() == [meta["epoch"]] * 4
        assert meta["epoch"] == 1 or call == "fsync"
        _assert_every_version_complete(directory)
        save_checkpoint(directory, {"x": np.full(4, 3.0)}, {"epoch": 3})
        assert load_checkpoint(directory)[1] == {"epoch": 3}
        assert not list(directory.glob(DEBRIS))
    else:
        pytest.fail("save_checkpoint never got past the failures")
    assert failing > 1


# --checkpoint-dir naming a file


@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_checkpoint_dir_that_is_a_file_says_so(tmp_path, below):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("important")
    directory = blocker / below if below else blocker
    problem = "is a file, not a directory: `checkpoint_dir` must name a directory"
    named = "it" if directory == blocker else str(blocker)  # after "cannot save in {directory}"
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(directory, {"x": np.zeros(1)}, {"epoch": 1})
    assert str(error.value) == f"cannot save checkpoint in {directory}: {named} {problem}"
    with pytest.raises(CheckpointError) as error:
        checkpoint.ensure_writable(directory)
    assert str(error.value) == f"cannot write checkpoints in {directory}: {named} {problem}"
    for read in (latest_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError) as error:
            read(directory)
        assert str(error.value) == f"{blocker} {problem}", read
    assert blocker.read_text() == "important" and sorted(tmp_path.iterdir()) == [blocker]


# ensure_writable: the check a run makes before it trains


def test_ensure_writable_creates_the_directory_and_leaves_nothing_behind(tmp_path):
    directory = tmp_path / "runs" / "keras-seed0"
    assert checkpoint.ensure_writable(directory) is None
    assert directory.is_dir() and not list(directory.iterdir())


def test_ensure_writable_changes_nothing_in_a_directory_in_use(tmp_path):
    version = _saved(tmp_path)
    (tmp_path / ".tmp-notes.txt").write_text("important")
    debris = tmp_path / ".LATEST.4242-deadbeef.tmp"
    debris.write_text("ckpt-000009\n")  # left for the next save, which may want to look at it
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    checkpoint.ensure_writable(tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert latest_checkpoint(tmp_path) == version


def _refusing(code, real):
    """`real` (os.open or os.mkdir), except that it fails with `code` for new entries of ours."""

    def call(path, *args, **kwargs):
        name = Path(path).name
        if name.endswith(".tmp") or name == "new":
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    return call


@pytest.mark.parametrize(
    "code, fix",
    [
        (
            errno.EROFS,
            "Read-only file system; remount it read-write, or pass another `checkpoint_dir`",
        ),
        (errno.EACCES, "Permission denied; let this user write there (chmod/chown), or pass"),
        (errno.EPERM, "Operation not permitted; let this user write there"),
        (errno.ENOSPC, "No space left on device; free some space there, or pass"),
    ],
)
@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
def test_ensure_writable_names_the_path_and_the_fix(tmp_path, monkeypatch, code, fix, existing):
    # We run as root, for whom chmod does not stop writes: refusing calls stand in for the disk.
    directory = tmp_path if existing else tmp_path / "new"
    if existing:
        _saved(tmp_path)
        monkeypatch.setattr(os, "open", _refusing(code, os.open))
    else:
        monkeypatch.setattr(os, "mkdir", _refusing(code, os.mkdir))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(CheckpointError) as error:
        checkpoint.ensure_writable(directory)
    monkeypatch.undo()
    assert str(error.value).startswith(f"cannot write checkpoints in {directory}: {fix}")
    assert "\n" not in str(error.value) and sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_ensure_writable_in_a_read_only_directory_for_real(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="Permission denied; let this user write"):
            checkpoint.ensure_writable(tmp_path)
    finally:
        tmp_path.chmod(0o755)


def test_a_probe_left_by_a_dead_process_is_removed_by_the_next_save(tmp_path, monkeypatch):
    def dies_before_unlink(path, *args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(os, "unlink", dies_before_unlink)
    with pytest.raises(CheckpointError, match="Input/output error"):
        checkpoint.ensure_writable(tmp_path)
    monkeypatch.undo()
    assert [p.name.startswith(".jaxmnist-probe.") for p in tmp_path.iterdir()] == [True]
    save_checkpoint(tmp_path, {"x": np.zeros(1)}, {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "ckpt-000001"]


# SIGKILL at random moments


def test_sigkill_at_random_moments_leaves_old_or_new_checkpoint(tmp_path):
    make_arrays = _writer_module().make_arrays
    server = subprocess.Popen(
        [sys.executable, str(WRITER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    rng = random.Random(2024)
    epochs, caught_mid_save = [], 0
    try:
        for trial in range(20):
            directory = tmp_path / f"run-{trial}"
            save_checkpoint(directory, make_arrays(0), {"epoch": 0})
            server.stdin.write(f"{directory}\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            time.sleep(rng.uniform(0.0, 0.06))  # a save takes ~15 ms here: kills land mid-save
            os.kill(pid, signal.SIGKILL)
            status = int(server.stdout.readline().split()[1])
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                "writer crashed"
            )

            arrays, meta = load_checkpoint(directory)
            _assert_arrays_equal(arrays, make_arrays(meta["epoch"]))
            written = [
                checkpoint.format.read_version(v)[1]["epoch"] for v in directory.glob("ckpt-*")
            ]
            assert max(written) - meta["epoch"] <= 1, "more than the save in flight was lost"
            epochs.append(meta["epoch"])
            caught_mid_save += bool(list(directory.glob(DEBRIS)) or len(written) > 2)
            caught_mid_save += latest_checkpoint(directory) != max(directory.glob("ckpt-*"))
            save_checkpoint(directory, make_arrays(99), {"epoch": 99})
            assert load_checkpoint(directory)[1] == {"epoch": 99}
            assert len(list(directory.glob("ckpt-*"))) == 2 and not list(directory.glob(DEBRIS))
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    assert max(epochs) > 0, "no kill came after a completed save"
    assert caught_mid_save > 0, "no kill came in the middle of a save"


# Random bytes and random arrays


@pytest.fixture(scope="module")
def saved_once(tmp_path_factory):
    """One checkpoint to copy per example: copying skips the fsyncs of a real save."""
    directory = tmp_path_factory.mktemp("saved-once")
    _saved(directory)
    return directory


def _copy_of(directory, name):
    shutil.copytree(directory, name, dirs_exist_ok=True)
    return latest_checkpoint(name)


@settings(max_examples=60, deadline=None)
@given(
    target=st.sampled_from(["arrays.npz", "meta.json", "LATEST", "signed npz"]), data=st.binary()
)
def test_random_bytes_raise_only_checkpoint_error(saved_once, target, data):
    with tempfile.TemporaryDirectory() as name:
        version = _copy_of(saved_once, name)
        if target == "signed npz":
            _tampered(version.parent, data)
        else:
            path = version.parent / "LATEST" if target == "LATEST" else version / target
            path.write_bytes(data)
        try:
            load_checkpoint(name)
        except CheckpointError as error:
            assert "\n" not in str(error)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    doc=st.dictionaries(st.sampled_from(["format", "arrays_sha256", "meta", "sha256"]), JSON) | JSON
)
def test_random_json_documents_raise_only_checkpoint_error(saved_once, doc):
    with tempfile.TemporaryDirectory() as name:
        (_copy_of(saved_once, name) / "meta.json").write_text(json.dumps(doc))
        with pytest.raises(CheckpointError):
            load_checkpoint(name)


@settings(max_examples=60, deadline=None)
@given(
    arrays=st.dictionaries(
        st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=6),
        hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_side=3)),
        max_size=4,
    )
)
def test_random_arrays_round_trip_exactly(arrays):
    with tempfile.TemporaryDirectory() as name, pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)  # durability is not what this checks
        save_checkpoint(name, arrays, {"epoch": 0})
        loaded, _ = load_checkpoint(name)
        assert loaded.keys() == arrays.keys()
        for key, value in arrays.items():
            got = loaded[key]
            assert (got.dtype, got.shape, got.tobytes()) == (
                value.dtype,
                value.shape,
                value.tobytes(),
            )
