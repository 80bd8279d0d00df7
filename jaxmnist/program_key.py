"""What a compiled program depends on, as one hash: the key of `executables`' entries.

The key is the traced program, not our source, so that no edit, flag or setting can make an old
entry answer for a new program: the jaxpr's text, and every value that text may leave out (the
constants and literals of the program and of the programs inside it), each argument's placement,
the static arguments, the jit options, every jax setting, XLA_FLAGS, the versions of jax, jaxlib
and Python, the platform and the host CPU whose instructions XLA's CPU code uses.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys

import jax
import jaxlib
import numpy as np

from jaxmnist.devices import cpu_fields


def settings():
    """The jax settings that `jax.jit` retraces for (its own cache key's), as a hashable."""
    from jax._src import config

    trace_context = getattr(config, "trace_context", None)
    if trace_context is not None:
        return trace_context()
    return repr(sorted(jax.config.values.items()))


def placement(leaf) -> tuple | None:
    """What the executable takes from an argument: its type, shape, dtype and device, never its
    value (a Python number is traced, as `jax.jit` traces it); None when on several devices."""
    if isinstance(leaf, jax.core.Tracer):  # called inside another transformation
        return None
    if isinstance(leaf, jax.Array):
        devices = leaf.sharding.device_set
        if len(devices) != 1:
            return None
        (device,) = devices
        where = (device.platform, device.id, leaf.sharding.memory_kind, leaf.committed)
        return (leaf.shape, str(leaf.dtype), leaf.weak_type, *where)
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):  # numpy: put on the default device
        return (tuple(leaf.shape), str(leaf.dtype))
    return (type(leaf).__name__,)


def key(traced, device, signature, options: str) -> str:
    """A hash of everything the executable of `traced` on `device` depends on. `signature` is
    the call's (tree, placements, static values, settings); `options`, jit's keyword arguments."""
    jaxpr = traced.jaxpr
    consts = [np.ascontiguousarray(jax.device_get(c)) for c in _values(jaxpr)]
    digest = hashlib.sha256()
    for part in (
        _compiler(device.platform),
        # read each time: a setting changed since the last program is a different program
        os.environ.get("XLA_FLAGS", ""),
        repr(sorted((name, repr(value)) for name, value in jax.config.values.items())),
        options,
        str(jaxpr),
        repr([(c.shape, str(c.dtype)) for c in consts]),
        repr(signature[1:3]),  # placements and static values; the settings are all above
        repr(traced.args_info),
        str(traced.out_tree),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    for const in consts:
        digest.update(const.tobytes())
    return digest.hexdigest()


def _values(closed_jaxpr) -> list:
    """Every value the program holds that its printed text may leave out: its constants, those
    of the programs inside it (a nested jit keeps its own), and its literals, in program order."""
    found = list(closed_jaxpr.consts)

    def visit(jaxpr) -> None:
        for eqn in jaxpr.eqns:
            found.extend(v.val for v in eqn.invars if type(v).__name__ == "Literal")
            for param in eqn.params.values():
                for inner in param if isinstance(param, (list, tuple)) else (param,):
                    if hasattr(inner, "consts") and hasattr(inner, "jaxpr"):  # a ClosedJaxpr
                        found.extend(inner.consts)
                        visit(inner.jaxpr)
                    elif hasattr(inner, "eqns"):  # a Jaxpr
                        visit(inner)

    visit(closed_jaxpr.jaxpr)
    return found


@functools.cache
def _compiler(platform_name: str) -> str:
    """The compiler and what it compiles for: versions, the platform's devices, and the host CPU
    (XLA's CPU code uses the instructions of the CPU it was compiled on)."""
    devices = jax.devices(platform_name)
    return repr(
        (
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
    """What the CPU says it is and can do (x86's vendor, model and flags; Arm's part and
    features)."""
    wanted = ("vendor_id", "cpu family", "model", "model name", "flags")  # x86
    wanted += ("CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features")  # Arm
    fields = cpu_fields()
    described = "".join(f"{name}: {fields[name]}\n" for name in wanted if name in fields)
    return f"{platform.machine()} {platform.processor()}\n{described}"
