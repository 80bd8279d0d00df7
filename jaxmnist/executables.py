"""Compiled programs kept on disk between runs, so that a second run neither lowers nor compiles.

jax's persistent compilation cache (`devices.enable_compile_cache`) saves a run the compile, but
not the lowering it needs to find the cached program: a whole keras-preset run spent about 0.2 s
of its 3.8 s lowering and loading its three programs (initial state, epoch, test set). `jit` here
traces as `jax.jit` does (a few ms), then looks the program up by its jaxpr and everything else its
lowering depends on, and loads the executable `jax.experimental.serialize_executable` wrote.

The key is the traced program, not our source: no edit, flag or setting can make an old entry
answer for a new program, because a different program has a different key. Entries are native code
that this user's own runs wrote, as the entries of jax's cache are; each carries a checksum, and
the unpickler admits jax's, jaxlib's and numpy's classes only. An entry that is absent or damaged
is compiled afresh and written again; one refused, or a cache that cannot be written, sends the
program down `jax.jit`'s own path, as do programs on several devices or processes.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import io
import os
import pickle
import platform
import sys
from pathlib import Path

import jax
import jaxlib
import numpy as np

from jaxmnist._fs import write_atomic

_MAGIC = b"jaxmnist executable 1\n"
_KEEP = 256  # entries; the oldest go beyond it (a keras-preset run writes three, 0.6 MB in all)
_ALLOWED_MODULES = ("jax", "jaxlib", "ml_dtypes")  # and those below them

_directory: Path | None = None
stats: collections.Counter = collections.Counter()  # loaded, compiled, damaged, refused


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
        self._options = repr(sorted(jit_kwargs.items()))
        self._programs: dict = {}  # this process's: call signature -> jax.stages.Compiled

    def __call__(self, *args, **kwargs):
        directory = _directory
        if directory is None or jax.process_count() > 1:
            return self._jitted(*args, **kwargs)
        static = sorted((name, v) for name, v in kwargs.items() if name in self._static)
        dynamic = {name: value for name, value in kwargs.items() if name not in self._static}
        leaves, structure = jax.tree.flatten((args, dynamic))
        placed = tuple(_placement(leaf) for leaf in leaves)
        if any(where is None for where in placed):  # on several devices: jax's own path
            return self._jitted(*args, **kwargs)
        signature = (structure, placed, repr(static))
        program = self._programs.get(signature)
        if program is None:
            device = next((leaf.device for leaf in leaves if isinstance(leaf, jax.Array)), None)
            device = device or _default_device()
            program = self._load_or_compile(directory, device, signature, args, kwargs)
            self._programs[signature] = program
        if program is _UNSTORABLE:
            return self._jitted(*args, **kwargs)
        return program(*args, **dynamic)

    def _cache_size(self) -> int:
        """How many compiled programs this holds, as `jax.jit`'s function reports (tests)."""
        stored = sum(program is not _UNSTORABLE for program in self._programs.values())
        return stored + self._jitted._cache_size()

    def lower(self, *args, **kwargs):
        """`jax.jit`'s lowering, for reading the program (benchmarks.step_profile, tests)."""
        return self._jitted.lower(*args, **kwargs)

    def _load_or_compile(self, directory: Path, device, signature, args, kwargs):
        """The program for these arguments, which run on `device`: kept, or compiled and kept."""
        traced = self._jitted.trace(*args, **kwargs)
        path = directory / f"{_key(traced, device, signature, self._options)}.exe"
        program = _in_this_process.get(path) or _load(path, traced, device)
        if program is None:  # absent or damaged
            program = _compiled_afresh(traced)
            if not _store(path, program):
                program = _UNSTORABLE
        _in_this_process[path] = program
        return program


# Every entry this process has loaded or written, by path: a program that several `jit`s make
# (the initial state of each seed of `--seeds`) is read once.
_in_this_process: dict[Path, object] = {}


# A program whose executable could not be stored or loaded takes `jax.jit`'s path, which still
# finds it in jax's own cache; compiling it afresh every run would cost more than lowering it.
_UNSTORABLE = object()


def _compiled_afresh(traced):
    # An executable that jax's own cache loaded serializes without its code (measured: loaded
    # again, it fails with "Function ... not found"), so this one is compiled without that cache.
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        program = traced.lower().compile()
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
    stats["compiled"] += 1
    return program


def _default_device():
    """Where `jax.jit` puts arguments that are not on a device yet."""
    default = jax.config.jax_default_device
    if isinstance(default, str):  # a platform's name
        return jax.devices(default)[0]
    return default or jax.devices()[0]


def _placement(leaf) -> tuple | None:
    """What the executable takes from an argument: its type, shape, dtype and device, never its
    value (a Python number is traced, as `jax.jit` traces it); None when on several devices."""
    if isinstance(leaf, jax.Array):
        devices = leaf.sharding.device_set
        if len(devices) != 1:
            return None
        (device,) = devices
        where = (device.platform, device.id, leaf.sharding.memory_kind)
        return (leaf.shape, str(leaf.dtype), leaf.weak_type, *where)
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):  # numpy: put on the default device
        return (tuple(leaf.shape), str(leaf.dtype))
    return (type(leaf).__name__,)


def _key(traced, device, signature, options: str) -> str:
    """A hash of everything the executable depends on: the program, its arguments' placement
    and static values, the jit options, and the compiler, its settings and the machine."""
    jaxpr = traced.jaxpr
    consts = [np.ascontiguousarray(jax.device_get(c)) for c in jaxpr.consts]
    digest = hashlib.sha256()
    for part in (
        _compiler(device.platform),
        # read each time: a setting changed since the last program is a different program
        os.environ.get("XLA_FLAGS", ""),
        repr(sorted((name, repr(value)) for name, value in jax.config.values.items())),
        options,
        str(jaxpr),
        repr([(c.shape, str(c.dtype)) for c in consts]),
        repr(signature[1:]),
        repr(traced.args_info),
        str(traced.out_tree),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    for const in consts:
        digest.update(const.tobytes())
    return digest.hexdigest()


@functools.cache
def _compiler(platform_name: str) -> str:
    """The compiler and what it compiles for: versions, the platform's devices, and the host CPU
    (XLA's CPU code uses the instructions of the CPU it was compiled on)."""
    devices = jax.devices(platform_name)
    return repr(
        (
            _MAGIC,
            jax.__version__,
            jaxlib.__version__,
            sys.version,
            platform_name,
            devices[0].client.platform_version,
            [d.device_kind for d in devices],
            _host_cpu(),
        )
    )


def _host_cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            wanted = ("vendor_id", "cpu family", "model", "model name", "flags")
            lines = [line for line in cpuinfo if line.split(":")[0].strip() in wanted]
            return "".join(lines[: len(wanted)])
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _load(path: Path, traced, device):
    """The executable stored at `path` for `traced`; None when absent or damaged (to be compiled
    and written again), _UNSTORABLE when refused or not loadable by this jax."""
    try:
        data = path.read_bytes()
    except OSError:
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
    except Exception:  # a class not jax's, or an entry this jax cannot load
        stats["refused"] += 1
        return _UNSTORABLE
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
            if module.split(".")[0] in _ALLOWED_MODULES or (module, name) == ("numpy", "dtype"):
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
    """Keeps the `_KEEP` most recently used entries; another process may be pruning too."""
    entries = []
    for entry in directory.glob("*.exe"):
        with contextlib.suppress(OSError):
            entries.append((entry.stat().st_mtime, entry))
    entries.sort()
    for _, old in entries[: max(0, len(entries) - _KEEP)]:
        with contextlib.suppress(OSError):
            old.unlink()
