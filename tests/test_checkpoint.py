"""Checkpoints: exact round trips, clear mismatch errors, corruption, write failures, SIGKILL."""

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

from jaxmnist import checkpoint
from jaxmnist.checkpoint import (
    flatten_tree,
    latest_checkpoint,
    load_checkpoint,
    restore_tree,
    save_checkpoint,
)
from jaxmnist.errors import CheckpointError

WRITER = Path(__file__).with_name("_checkpoint_writer.py")


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
    (version / "meta.json").write_bytes(checkpoint._meta_bytes(meta, digest))


# Round trips


def test_train_state_round_trip_is_bitwise(tmp_path):
    state = _train_state()
    meta = {
        "epoch": 3,
        "step": 1407,
        "config": {"lr": 1e-3},
        "history": {"loss": [0.5, float("nan")]},
    }
    saved = save_checkpoint(tmp_path, flatten_tree(state), meta)
    assert latest_checkpoint(tmp_path) == saved
    arrays, loaded_meta = load_checkpoint(tmp_path)
    assert {"params/0/W", "params/1/b", "opt_state/0/nu/0/W", "key", "step"} <= arrays.keys()
    assert loaded_meta["epoch"] == 3 and np.isnan(loaded_meta["history"]["loss"][1])
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
    save_checkpoint(tmp_path, flatten_tree(state), {"numpy_scalar": np.float32(0.5)})
    arrays, meta = load_checkpoint(tmp_path)
    restored = restore_tree(state, arrays)
    assert meta == {"numpy_scalar": 0.5}
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
    (tmp_path / ".tmp-ckpt-000009-dead").mkdir()
    (tmp_path / ".tmp-LATEST-dead").write_text("ckpt-000009\n")
    arrays, meta = load_checkpoint(tmp_path)
    assert meta["epoch"] == 5 and arrays["x"].tolist() == [5, 5, 5]
    save_checkpoint(tmp_path, {"x": np.full(3, 6)}, {"epoch": 6})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "ckpt-000005", "ckpt-000006"]


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
    save_checkpoint(tmp_path, flatten_tree(_train_state()), {})
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
    "deleted npz": (lambda v: (v / "arrays.npz").unlink(), r"arrays\.npz: cannot read"),
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


# Write failures: the previous checkpoint survives, nothing half-written becomes visible


def _assert_every_version_complete(directory):
    for version in directory.glob("ckpt-*"):
        checkpoint._read_version(version)


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
        assert not list(directory.glob(".tmp-*"))
    else:
        pytest.fail("save_checkpoint never got past the failures")
    assert failing > 1


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
            written = [checkpoint._read_version(v)[1]["epoch"] for v in directory.glob("ckpt-*")]
            assert max(written) - meta["epoch"] <= 1, "more than the save in flight was lost"
            epochs.append(meta["epoch"])
            caught_mid_save += bool(list(directory.glob(".tmp-*")) or len(written) > 2)
            caught_mid_save += latest_checkpoint(directory) != max(directory.glob("ckpt-*"))
            save_checkpoint(directory, make_arrays(99), {"epoch": 99})
            assert load_checkpoint(directory)[1] == {"epoch": 99}
            assert len(list(directory.glob("ckpt-*"))) == 2 and not list(directory.glob(".tmp-*"))
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
        save_checkpoint(name, arrays, {})
        loaded, _ = load_checkpoint(name)
        assert loaded.keys() == arrays.keys()
        for key, value in arrays.items():
            got = loaded[key]
            assert (got.dtype, got.shape, got.tobytes()) == (
                value.dtype,
                value.shape,
                value.tobytes(),
            )
