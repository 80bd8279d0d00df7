"""Compiled programs kept on disk between runs, so that a second run neither lowers nor compiles.

jax's persistent compilation cache (`devices.enable_compile_cache`) saves a run the compile, but
not the lowering it needs to find the cached program: a whole keras-preset run spent about 0.2 s
of its 3.8 s lowering and loading its three programs (initial state, epoch, test set). `jit` here
traces as `jax.jit` does (a few ms), then looks the program up by its jaxpr and everything else its
lowering depends on, and loads the executable `jax.experimental.serialize_executable` wrote.

The key is the traced program, not our source (`program_key`): no edit, flag or setting can make an
old entry answer for a new program, because a different program has a different key. Entries are
native code that this user's own runs wrote, as the entries of jax's cache are, and are trusted as
such: the directory is used only when this user alone can write in it. Each carries a checksum
(against damage, not tampering), and the unpickler admits jax's, jaxlib's and numpy's classes only.
An entry that is absent, damaged or refused is compiled afresh and written again; a cache that
cannot be written sends the program down `jax.jit`'s own path, as do programs on several devices or
processes, calls inside other transformations and static arguments given by position.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import inspect
import io
import os
import pickle
import threading
import time
from pathlib import Path

import jax

from jaxmnist import program_key
from jaxmnist._fs import read_regular, write_atomic

_MAGIC = b"jaxmnist executable 1\n"
_KEEP = 256  # entries; the oldest go beyond it (a keras-preset run writes three, 0.6 MB in all)
_ALLOWED_MODULES = ("jax", "jaxlib", "ml_dtypes")  # and those below them

_directory: Path | None = None
stats: collections.Counter = collections.Counter()  # loaded, compiled, damaged, refused


def only_this_user_writes(directory: Path) -> bool:
    """Whether `directory` is this user's and no one else may write in it: what is loaded from
    it runs as native code, so a directory others can write in is not used."""
    try:
        info = os.stat(directory)
    except OSError:
        return False
    getuid = getattr(os, "getuid", None)
    return (getuid is None or info.st_uid == getuid()) and not info.st_mode & 0o022


def enable(directory: Path) -> None:
    """Keep executables in `directory` from now on (which must exist)."""
    global _directory
    _directory = Path(directory)


def disable() -> None:
    global _directory
    _directory = None


def jit(fun, **jit_kwargs):
    """`jax.jit(fun, **jit_kwargs)` whose executables are kept on disk while `enable`d."""
    return _StoredJit(fun, jit_kwargs)


class _StoredJit:
    def __init__(self, fun, jit_kwargs: dict):
        self._jitted = jax.jit(fun, **jit_kwargs)
        static = jit_kwargs.get("static_argnames", ())
        self._static = {static} if isinstance(static, str) else set(static)
        # Static arguments given by position, or named by number, are left to jax.jit.
        self._by_position = "static_argnums" in jit_kwargs
        self._static_positions = _positions(fun, self._static)
        self._options = repr(sorted(jit_kwargs.items()))
        self._programs: dict = {}  # this process's: call signature -> jax.stages.Compiled
        self._untried: dict = {}  # signature -> path, of programs loaded but not yet run

    def __call__(self, *args, **kwargs):
        directory = _directory
        if (
            directory is None
            or self._by_position
            or any(position < len(args) for position in self._static_positions)
            or jax.process_count() > 1
        ):
            return self._jitted(*args, **kwargs)
        static = tuple(sorted((name, v) for name, v in kwargs.items() if name in self._static))
        dynamic = {name: value for name, value in kwargs.items() if name not in self._static}
        leaves, structure = jax.tree.flatten((args, dynamic))
        placed = tuple(program_key.placement(leaf) for leaf in leaves)
        if any(where is None for where in placed):  # traced, or on several devices
            return self._jitted(*args, **kwargs)
        # The settings jax.jit itself retraces for: a program traced under others is another.
        signature = (structure, placed, static, program_key.settings())
        program = self._programs.get(signature)
        if program is None:
            device = next((leaf.device for leaf in leaves if isinstance(leaf, jax.Array)), None)
            device = device or _default_device()
            program, path = self._load_or_compile(directory, device, signature, args, kwargs)
            self._programs[signature] = program
            if path is not None:
                self._untried[signature] = path
        if program is _UNSTORABLE:
            return self._jitted(*args, **kwargs)
        path = self._untried.pop(signature, None)
        if path is None:
            return program(*args, **dynamic)
        try:  # the first run of a loaded program: it has run once before it is trusted
            return jax.block_until_ready(program(*args, **dynamic))
        except jax.errors.JaxRuntimeError:
            # An entry that loads but cannot run (one kept without its code) goes, so that the
            # next run compiles it; this call goes to jax.jit if its arguments are still there.
            stats["unrunnable"] += 1
            _in_this_process.pop(path, None)
            with contextlib.suppress(OSError):
                path.unlink()
            self._programs[signature] = _UNSTORABLE
            if any(isinstance(leaf, jax.Array) and leaf.is_deleted() for leaf in leaves):
                raise
            return self._jitted(*args, **kwargs)

    def _cache_size(self) -> int:
        """How many compiled programs this holds, as `jax.jit`'s function reports (tests)."""
        stored = sum(program is not _UNSTORABLE for program in self._programs.values())
        return stored + self._jitted._cache_size()

    def lower(self, *args, **kwargs):
        """`jax.jit`'s lowering, for reading the program (benchmarks.step_profile, tests)."""
        return self._jitted.lower(*args, **kwargs)

    def _load_or_compile(self, directory: Path, device, signature, args, kwargs):
        """The program for these arguments, which run on `device`: kept, or compiled and kept;
        and the path it was loaded from (None when compiled here)."""
        traced = self._jitted.trace(*args, **kwargs)
        try:
            path = directory / f"{program_key.key(traced, device, signature, self._options)}.exe"
        except Exception:  # a constant that cannot be read back as bytes: not keyed, not kept
            stats["unkeyed"] += 1
            return _UNSTORABLE, None
        if path in _in_this_process:
            return _in_this_process[path], None
        program = _load(path, traced, device)
        loaded_from = path if program is not None else None
        if program is None:  # absent, damaged or refused
            program = _compiled_afresh(traced)
            if program is _UNSTORABLE or not _store(path, program):
                program = _UNSTORABLE
        _in_this_process[path] = program
        return program, loaded_from


# Every entry this process has loaded or written, by path: a program that several `jit`s make
# (the initial state of each seed of `--seeds`) is read once.
_in_this_process: dict[Path, object] = {}


# A program whose executable cannot be kept takes `jax.jit`'s own path (and jax's cache).
_UNSTORABLE = object()


def _compiled_afresh(traced):
    """`traced` compiled by XLA now, neither loaded from jax's compilation cache nor taken from
    a program jax compiled earlier in this process; _UNSTORABLE when that cannot be made sure of.

    An executable that jax's cache loaded serializes without its code: loaded again, it fails
    when called ("Function ... not found"), measured with jax 0.10.2. jax decides once per
    process whether its cache is in use (at its first compile, whatever the setting later), so
    the cache is set aside for this compile in that decision itself, and a cache hit reported
    all the same keeps the program from being stored. jax also hands back a program it compiled
    before for the same lowering (which its cache may have loaded); a compiler option, set to
    XLA's default, makes this compile its own."""
    from jax._src import compilation_cache

    _listen_for_cache_hits()
    decision = ("_cache_initialized_mutex", "_cache_checked", "_cache_used")
    if not all(hasattr(compilation_cache, name) for name in decision):
        return _UNSTORABLE  # a jax that decides otherwise: its cache cannot be set aside here
    lock = compilation_cache._cache_initialized_mutex
    with _compiling:  # one at a time: each restores what it found
        hits_before = _jax_cache_hits[0]
        with lock:
            decided = (compilation_cache._cache_checked, compilation_cache._cache_used)
            compilation_cache._cache_checked, compilation_cache._cache_used = True, False
        try:
            program = traced.lower().compile(compiler_options={"xla_embed_ir_in_executable": False})
        finally:
            with lock:
                compilation_cache._cache_checked, compilation_cache._cache_used = decided
        fresh = _jax_cache_hits[0] == hits_before
    stats["compiled"] += 1
    return program if fresh else _UNSTORABLE


_compiling = threading.Lock()
_jax_cache_hits = [0]  # hits jax's compilation cache has reported in this process


@functools.cache
def _listen_for_cache_hits() -> None:
    def count(event: str, **kwargs) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            _jax_cache_hits[0] += 1

    jax.monitoring.register_event_listener(count)


def _positions(fun, names: set) -> set[int]:
    """The positions at which `fun` takes the parameters called `names`."""
    try:
        parameters = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return {0} if names else set()  # unknown: any positional call goes to jax.jit
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {i for i, p in enumerate(parameters) if p.name in names and p.kind in positional}


def _default_device():
    """Where `jax.jit` puts arguments that are not on a device yet."""
    default = jax.config.jax_default_device
    if isinstance(default, str):  # a platform's name
        return jax.devices(default)[0]
    return default or jax.devices()[0]


def _load(path: Path, traced, device):
    """The executable stored at `path` for `traced`; None when absent, damaged or refused (to
    be compiled and written again)."""
    try:
        data = read_regular(path)
    except OSError:  # absent, or not a regular file (a FIFO must not hang the run)
        return None
    header = len(_MAGIC) + 32
    payload = data[header:]
    if (
        data[: len(_MAGIC)] != _MAGIC
        or hashlib.sha256(payload).digest() != data[len(_MAGIC) : header]
    ):
        stats["damaged"] += 1
        return None
    try:
        program = _deserialize(payload, traced, device)
    except Exception:  # a class not jax's, or an entry this jax cannot load: written anew
        stats["refused"] += 1
        return None
    stats["loaded"] += 1
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: the last to be pruned
    return program


def _deserialize(payload: bytes, traced, device):
    """`serialize_executable.deserialize_and_load`, with an unpickler that admits jax's classes
    only and the trees taken from `traced`."""
    from jax.experimental import serialize_executable

    class Unpickler(serialize_executable._JaxPjrtUnpickler):
        def find_class(self, module: str, name: str):
            # A dotted name would reach through an allowed module to anything it imports.
            jaxs = module.split(".")[0] in _ALLOWED_MODULES
            if (jaxs or (module, name) == ("numpy", "dtype")) and "." not in name:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"{module}.{name} is not a jax class")

    unloaded, args_info_flat, no_kwargs = Unpickler(io.BytesIO(payload), device.client).load()
    args_info = jax.tree.structure(traced.args_info).unflatten(args_info_flat)
    return jax.stages.Compiled(unloaded.load(), [], args_info, traced.out_tree, no_kwargs=no_kwargs)


def _store(path: Path, program) -> bool:
    """Writes `program` to `path`; False when it cannot be (jax cannot serialize it, or the
    directory cannot take it)."""
    from jax.experimental import serialize_executable

    try:
        payload, _, _ = serialize_executable.serialize(program)
    except Exception:  # a backend that cannot serialize this program: it runs all the same
        return False
    try:
        write_atomic(path, _MAGIC + hashlib.sha256(payload).digest() + payload)
    except OSError:
        return False
    _prune(path.parent)
    return True


def _prune(directory: Path) -> None:
    """Keeps the `_KEEP` most recently used entries, and removes what writes that were killed
    left behind; another process may be pruning too."""
    entries, now = [], time.time()
    for entry in directory.glob("*.exe"):
        with contextlib.suppress(OSError):
            entries.append((entry.stat().st_mtime, entry))
    entries.sort()
    unfinished = [
        entry
        for entry in directory.glob(".*.exe.*.tmp")  # _fs.temporary_name's, an hour old
        if _age(entry, now) > 3600
    ]
    for old in [entry for _, entry in entries[: max(0, len(entries) - _KEEP)]] + unfinished:
        with contextlib.suppress(OSError):
            old.unlink()


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0
