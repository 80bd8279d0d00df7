"""Executables kept on disk: the same results as `jax.jit`, one entry per program, never a stale
or foreign one, and a whole training run that loads its programs trains bit for bit the same."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmnist import executables
from tests._synthetic import train_figures


@pytest.fixture
def stored(tmp_path, monkeypatch):
    """Executables enabled in a fresh directory, with fresh counts; disabled afterwards."""
    directory = tmp_path / "executables"
    directory.mkdir()
    monkeypatch.setattr(executables, "stats", executables.stats.__class__())
    monkeypatch.setattr(executables, "_in_this_process", {})
    executables.enable(directory)
    yield directory
    executables.disable()


def _step(state, x, first, *, n):
    """A small program with what the training programs have: a donated state, a Python number
    that is traced, and a static argument."""
    return state * 0.5 + jnp.sum(x) * n + first


def _args():
    return jnp.arange(4.0), jnp.ones((3, 2), jnp.float32)


def _as_in_a_new_process() -> None:
    executables._in_this_process.clear()


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.exe"))


def test_a_stored_program_loads_in_a_new_jit_and_computes_what_jax_jit_does(stored):
    expected = jax.jit(_step, static_argnames="n")(*_args(), 2, n=3)

    first = executables.jit(_step, static_argnames="n", donate_argnums=0)
    state, x = _args()
    np.testing.assert_array_equal(first(state, x, 2, n=3), expected)
    assert executables.stats == {"compiled": 1}
    assert len(_entries(stored)) == 1

    _as_in_a_new_process()
    again = executables.jit(_step, static_argnames="n", donate_argnums=0)
    state, x = _args()
    np.testing.assert_array_equal(again(state, x, 2, n=3), expected)
    assert executables.stats == {"compiled": 1, "loaded": 1}
    assert state.is_deleted()  # the loaded program still donates its state

    np.testing.assert_array_equal(
        executables.jit(_step, static_argnames="n", donate_argnums=0)(*_args(), 2, n=3), expected
    )
    assert executables.stats == {"compiled": 1, "loaded": 1}  # in this process, read once


def test_a_python_number_is_traced_not_keyed_by_value(stored):
    run = executables.jit(_step, static_argnames="n")
    results = [run(*_args(), first, n=3) for first in (0, 7)]
    np.testing.assert_array_equal(results[1] - results[0], np.full(4, 7.0))
    assert executables.stats == {"compiled": 1}
    assert len(_entries(stored)) == 1


def test_static_values_and_shapes_each_have_their_own_entry(stored):
    run = executables.jit(_step, static_argnames="n")
    state, x = _args()
    for n, rows in ((3, 3), (4, 3), (3, 5)):
        x = jnp.ones((rows, 2), jnp.float32)
        np.testing.assert_array_equal(run(state, x, 1, n=n), state * 0.5 + rows * 2 * n + 1)
    assert executables.stats == {"compiled": 3}
    assert len(_entries(stored)) == 3


def _scaled(scale):
    def program(x):  # the same name and code for every scale: only the program differs
        return x * scale

    return program


def _scaled_inside(scale):
    def program(x):  # a nested jit keeps a constant it closes over in its own jaxpr
        return jax.jit(lambda y: y * scale)(x)

    return program


_ARRAYS = (np.array([1.0, 2.0], np.float32), np.array([1.0, 5.0], np.float32))


@pytest.mark.parametrize(
    "make, scales",
    [(_scaled, (2.0, 3.0)), (_scaled, _ARRAYS), (_scaled_inside, _ARRAYS)],
    ids=["python-number", "array", "array-in-a-nested-jit"],
)
def test_a_different_program_of_the_same_name_is_never_answered_by_another(stored, make, scales):
    x = jnp.array([1.0, 1.0])
    for scale in scales:
        _as_in_a_new_process()
        np.testing.assert_array_equal(executables.jit(make(scale))(x), x * scale)
    assert executables.stats == {"compiled": 2}
    assert len(_entries(stored)) == 2


def test_a_damaged_entry_is_compiled_and_written_again(stored):
    executables.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    (entry,) = _entries(stored)
    data = bytearray(entry.read_bytes())
    data[-100] ^= 0xFF
    entry.write_bytes(bytes(data))

    _as_in_a_new_process()
    result = executables.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    np.testing.assert_array_equal(result, jax.jit(_step, static_argnames="n")(*_args(), 0, n=1))
    assert executables.stats == {"compiled": 2, "damaged": 1}
    _as_in_a_new_process()
    executables.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    assert executables.stats["loaded"] == 1  # the rewritten entry loads


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickled, this would create the marker file
        return (Path.touch, (Path(self.path),))


def test_an_entry_naming_classes_not_jaxs_is_refused_without_running_them(stored, tmp_path):
    executables.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    (entry,) = _entries(stored)
    marker = tmp_path / "ran"
    payload = pickle.dumps((_Marker(marker), [], True))
    entry.write_bytes(executables._MAGIC + hashlib.sha256(payload).digest() + payload)

    _as_in_a_new_process()
    result = executables.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    np.testing.assert_array_equal(result, jax.jit(_step, static_argnames="n")(*_args(), 0, n=1))
    assert not marker.exists()
    assert executables.stats == {"compiled": 2, "refused": 1}  # and written anew:
    _as_in_a_new_process()
    executables.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    assert executables.stats == {"compiled": 2, "refused": 1, "loaded": 1}


def _pickle_calling(module: str, name: str, argument: str) -> bytes:
    """Protocol 4: `module`.`name`(argument), the name looked up by the unpickler's find_class."""

    def text(value: str) -> bytes:
        return b"\x8c" + bytes([len(value)]) + value.encode()

    stack_global, one_tuple, reduce = b"\x93", b"\x85", b"R"
    call = text(module) + text(name) + stack_global + text(argument) + one_tuple + reduce
    return b"\x80\x04" + call + b"."


def test_an_entry_reaching_through_a_jax_module_is_refused_without_running_it(stored, tmp_path):
    executables.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    (entry,) = _entries(stored)
    marker = tmp_path / "made"
    # jax._src.config imports os: a dotted name would reach os.mkdir through it.
    payload = _pickle_calling("jax._src.config", "os.mkdir", str(marker))
    entry.write_bytes(executables._MAGIC + hashlib.sha256(payload).digest() + payload)

    _as_in_a_new_process()
    executables.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    assert not marker.exists()
    assert executables.stats["refused"] == 1


def test_a_directory_that_cannot_be_written_only_costs_time(tmp_path, monkeypatch):
    monkeypatch.setattr(executables, "stats", executables.stats.__class__())
    monkeypatch.setattr(executables, "_in_this_process", {})
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    executables.enable(not_a_directory)
    try:
        run = executables.jit(_step, static_argnames="n")
        for _ in range(2):
            result = run(*_args(), 0, n=1)
            np.testing.assert_array_equal(
                result, jax.jit(_step, static_argnames="n")(*_args(), 0, n=1)
            )
    finally:
        executables.disable()
    assert executables.stats == {"compiled": 1}  # then jax.jit's own path: not compiled again


def test_a_program_the_backend_cannot_serialize_still_runs(stored, monkeypatch):
    from jax.experimental import serialize_executable

    def refuse(compiled):
        raise RuntimeError("UNIMPLEMENTED: serialization on this backend")

    monkeypatch.setattr(serialize_executable, "serialize", refuse)
    run = executables.jit(_step, static_argnames="n")
    for _ in range(2):
        np.testing.assert_array_equal(
            run(*_args(), 0, n=1), jax.jit(_step, static_argnames="n")(*_args(), 0, n=1)
        )
    assert executables.stats == {"compiled": 1}
    assert _entries(stored) == []


def test_disabled_it_is_jax_jit(tmp_path, monkeypatch):
    monkeypatch.setattr(executables, "stats", executables.stats.__class__())
    executables.disable()
    run = executables.jit(_step, static_argnames="n")
    np.testing.assert_array_equal(
        run(*_args(), 0, n=1), jax.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    )
    assert executables.stats == {}


def test_the_oldest_entries_go_beyond_the_limit(stored, monkeypatch):
    monkeypatch.setattr(executables, "_KEEP", 2)
    run = executables.jit(_step, static_argnames="n")
    for n in range(4):
        run(*_args(), 0, n=n)
    assert len(_entries(stored)) == 2
    _as_in_a_new_process()
    for n in (2, 3):  # the newest two are those kept
        executables.jit(_step, static_argnames="n")(*_args(), 0, n=n)
    assert executables.stats == {"compiled": 4, "loaded": 2}


def _train(tmp_path: Path, name: str, *flags: str) -> list[dict]:
    flags = ("--epochs", "2", "--no-checkpoint", "--quiet", "--hidden", "32", *flags)
    return train_figures(
        tmp_path / f"{name}.jsonl", *flags, env={"XDG_CACHE_HOME": str(tmp_path / "cache")}
    )


def test_a_run_that_loads_its_programs_trains_bit_for_bit_as_one_that_compiles(tmp_path):
    compiled_here = _train(tmp_path, "first")
    entries = {p: p.stat() for p in (tmp_path / "cache" / "jaxmnist" / "executables").glob("*")}
    assert len(entries) == 3  # the initial state, the epoch, the test set

    loaded = _train(tmp_path, "second")
    for path, before in entries.items():
        after = path.stat()
        assert after.st_ino == before.st_ino  # not written again,
        assert after.st_mtime_ns > before.st_mtime_ns  # but loaded (marked as recently used)

    without_caches = _train(tmp_path, "plain", "--no-compile-cache")
    assert loaded == compiled_here == without_caches
    assert len(compiled_here) == 3 and compiled_here[0]["batch_losses"]


def test_a_changed_jax_setting_is_a_different_program(stored):
    # The same jaxpr lowers to other bits with threefry's other partitioning.
    def bits(seed):
        return jax.random.bits(jax.random.key(seed), (8,))

    expected = []
    for partitionable in (True, False):
        with jax.threefry_partitionable(partitionable):
            expected.append(jax.jit(bits)(np.uint32(1)))
            np.testing.assert_array_equal(executables.jit(bits)(np.uint32(1)), expected[-1])
    assert not np.array_equal(*expected)
    assert executables.stats == {"compiled": 2}


def test_the_same_function_under_another_jax_setting_is_another_program(stored):
    run = executables.jit(lambda seed: jax.random.bits(jax.random.key(seed), (8,)))
    for partitionable in (True, False, True):
        with jax.threefry_partitionable(partitionable):
            expected = jax.jit(lambda seed: jax.random.bits(jax.random.key(seed), (8,)))
            np.testing.assert_array_equal(run(np.uint32(1)), expected(np.uint32(1)))
    assert executables.stats == {"compiled": 2}


def test_static_arguments_given_by_position_and_calls_inside_transformations_are_jax_jits(stored):
    def step(state, x, first, n):
        return _step(state, x, first, n=n)

    expected = jax.jit(_step, static_argnames="n")(*_args(), 2, n=3)
    np.testing.assert_array_equal(
        executables.jit(step, static_argnames="n")(*_args(), 2, 3),
        expected,  # n by position
    )
    np.testing.assert_array_equal(
        executables.jit(step, static_argnums=3)(*_args(), 2, n=3),
        expected,  # n by number
    )
    run = executables.jit(_step, static_argnames="n")
    batched = jax.vmap(lambda s: run(s, _args()[1], 2, n=3))(jnp.stack([_args()[0]] * 2))
    np.testing.assert_array_equal(batched, jnp.stack([expected] * 2))
    inside = jax.jit(lambda s: run(s, _args()[1], 2, n=3))(_args()[0])
    np.testing.assert_array_equal(inside, expected)
    assert executables.stats == {}  # none of these were kept
    assert _entries(stored) == []


_JAX_CACHE_THEN_STORE = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jaxmnist import executables

jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

def program(x):
    return jnp.tanh(x @ x.T).sum()

x = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
jax.jit(lambda v: v + 1)(x)  # the process's first compile: jax's cache is in use from here
mode = sys.argv[3]
if mode == "jax":
    print(float(jax.jit(program)(x)))
else:
    if mode in ("jax-first", "keep-what-jax-loaded"):
        jax.jit(program)(x)  # loaded from jax's cache, and held by jax in this process
    if mode == "keep-what-jax-loaded":  # a way of keeping it that the store itself never takes
        executables._compiled_afresh = lambda traced: jax.jit(program).lower(x).compile()
    executables.enable(__import__("pathlib").Path(sys.argv[2]))
    print(float(executables.jit(program)(x)))
    jax.jit(lambda v: v * 3)(x)  # a program after it still goes to jax's cache
    print(dict(executables.stats))
"""


def _run_with_jax_cache(tmp_path: Path):
    jax_cache, store = tmp_path / "jax", tmp_path / "store"
    store.mkdir(exist_ok=True)
    script = tmp_path / "run.py"
    script.write_text(_JAX_CACHE_THEN_STORE)

    def run(mode: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, str(script), str(jax_cache), str(store), mode],
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.split("\n")

    return run, jax_cache, store


def test_a_program_jax_compiled_earlier_in_the_process_is_compiled_again_to_be_kept(tmp_path):
    run, jax_cache, store = _run_with_jax_cache(tmp_path)
    expected = run("jax")[0]
    assert run("jax-first")[1] == "{'compiled': 1}"
    shutil.rmtree(jax_cache)  # what is kept must run without it
    assert run("store")[:2] == [expected, "{'loaded': 1}"]


def test_a_kept_program_that_cannot_run_goes_and_its_call_goes_to_jax_jit(tmp_path):
    run, jax_cache, store = _run_with_jax_cache(tmp_path)
    expected = run("jax")[0]
    run("keep-what-jax-loaded")  # kept without its code
    assert len(_entries(store)) == 1
    shutil.rmtree(jax_cache)
    assert run("store")[:2] == [expected, "{'loaded': 1, 'unrunnable': 1}"]
    assert _entries(store) == []
    assert run("store")[1] == "{'compiled': 1}"
    assert run("store")[:2] == [expected, "{'loaded': 1}"]


def test_a_program_in_jaxs_cache_is_kept_with_its_code_and_jaxs_cache_stays_in_use(tmp_path):
    """An executable loaded from jax's cache serializes without its code, and fails when called
    once loaded again: what is kept must have been compiled, and jax's cache left as it was."""
    run, jax_cache, store = _run_with_jax_cache(tmp_path)
    expected = run("jax")[0]  # now in jax's cache
    in_jax_cache = set(jax_cache.iterdir())
    first = run("store")
    assert first[0] == expected
    assert len(_entries(store)) == 1
    # Compiled for the store alone, neither read from jax's cache nor written to it; `v * 3`
    # after it went to jax's cache as before.
    assert len(set(jax_cache.iterdir()) - in_jax_cache) == 1
    for entry in _entries(store):  # as when pruned: compiled again, with its code
        entry.unlink()
    assert run("store")[1] == "{'compiled': 1}"
    again = run("store")
    assert again[0] == expected
    assert again[1] == "{'loaded': 1}"


def test_a_directory_others_can_write_in_is_not_used(tmp_path, monkeypatch):
    from jaxmnist import devices

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(executables, "_directory", None)
    shared = tmp_path / "jaxmnist" / "executables"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    try:
        devices.enable_compile_cache()
        assert executables._directory is None
        shared.chmod(0o700)
        devices.enable_compile_cache()
        assert executables._directory == shared
    finally:
        executables.disable()
        jax.config.update("jax_compilation_cache_dir", None)


def test_what_a_killed_write_left_behind_goes_once_an_hour_old(stored):
    left = stored / ".0123.exe.999-abcdef01.tmp"
    fresh = stored / ".4567.exe.999-abcdef02.tmp"
    for path in (left, fresh):
        path.write_bytes(b"partial")
    os.utime(left, (0, 0))
    executables.jit(_step, static_argnames="n")(*_args(), 0, n=1)
    assert not left.exists() and fresh.exists()
    assert len(_entries(stored)) == 1


def test_a_program_holding_a_key_it_cannot_read_as_bytes_runs_unkept(stored):
    key = jax.random.key(0)  # a typed key closed over: a constant numpy cannot hold

    def noisy(x):
        return x + jax.random.normal(key, x.shape)

    x = jnp.zeros(3)
    np.testing.assert_array_equal(executables.jit(noisy)(x), jax.jit(noisy)(x))
    assert _entries(stored) == []
    assert executables.stats == {"unkeyed": 1}
