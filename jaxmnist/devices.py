"""Where training runs: choosing the device, XLA's settings for it, and its failures in one line.

Everything here runs before jax starts a backend or wraps errors a backend raised.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from jaxmnist._fs import cache_home
from jaxmnist.cluster import SINGLE, Cluster
from jaxmnist.errors import DeviceError, one_line

DEVICE_CHOICES = ("auto", "cpu", "gpu")


_REGION_COPIES = "xla_cpu_copy_insertion_use_region_analysis"
_VECTOR_WIDTH = "xla_cpu_prefer_vector_width"
_YNNPACK_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"
# The jaxlib releases whose XLA knows _YNNPACK_FUSIONS as measured: XLA stops the process at a
# flag it does not know, so the flag is given to these only.
_YNNPACK_FUSIONS_KNOWN = ((0, 10),)


def tune_xla_cpu() -> None:
    """XLA's CPU settings that the benchmarks showed faster, each with the same mathematics:
    - region-based copy insertion, on every CPU: it keeps the output layer's weights, bias and the
      step counter from being copied every step of the scan (keras preset: 1.5% off an epoch);
    - on AVX-512 CPUs, 512-bit vector code: 3-4% off an epoch there;
    - on Intel CPUs, single matrix products on Eigen rather than YNNPACK: on an Intel Xeon
      (family 6 model 207) the fast preset's epochs 13% shorter, the keras preset's no different,
      where on a Zen 4 and a Zen 5 Eigen made the keras preset's 1-8% longer. The products sum
      in another order.

    XLA reads XLA_FLAGS once, when jax first starts a backend, so this runs before that; a flag the
    user set, to any value, is left alone.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    wanted = [(_REGION_COPIES, "true")]
    if _cpu_has("avx512f"):
        wanted.append((_VECTOR_WIDTH, "512"))
    if _cpu_vendor() == "GenuineIntel" and _jaxlib_release()[:2] in _YNNPACK_FUSIONS_KNOWN:
        wanted.append((_YNNPACK_FUSIONS, "-individual_dot"))
    added = [f"--{name}={value}" for name, value in wanted if name not in flags]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()


def _cpu_has(feature: str) -> bool:
    return feature in cpu_fields().get("flags", "").split()


def _cpu_vendor() -> str:
    return cpu_fields().get("vendor_id", "")


@functools.cache
def cpu_fields() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo, by name; empty where there is none."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():  # the first processor ends here
                    break
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def _jaxlib_release() -> tuple[int, ...]:
    """The installed jaxlib's version, as numbers; () when unreadable. jax imports jaxlib in any
    case, so importing it here costs nothing overall."""
    try:
        from jaxlib.version import __version__
    except ImportError:
        return ()
    numbers = []
    for part in __version__.split(".")[:3]:
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def enable_compile_cache() -> None:
    """Persist compiled programs, so a second run of the same shapes compiles nothing: jax's
    compilation cache, and the executables of the programs that `executables.jit` compiles."""
    import jax

    from jaxmnist import executables

    directory = cache_home() / "jaxmnist" / "xla"
    stored = cache_home() / "jaxmnist" / "executables"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        stored.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable cache only costs compile time; training goes on without it
    if not (os.access(directory, os.W_OK) and os.access(stored, os.W_OK)):
        return
    if executables.only_this_user_writes(stored):  # its entries are code this process will run
        executables.enable(stored)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Our programs compile in well under JAX's default 1 s threshold; cache them all the same.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def resolve_device(name: str = "auto"):
    """The jax device called `name` ("auto": a GPU if jax sees one), or DeviceError with the fix."""
    import jax

    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    try:
        jax.devices()  # starts the backends; JAX_PLATFORMS naming one that cannot start fails here
    except (RuntimeError, AssertionError) as error:
        if platforms:
            raise DeviceError(
                f"JAX_PLATFORMS={platforms} names a platform jax cannot start here "
                f"({one_line(error, 100)}): unset JAX_PLATFORMS, or set it to cpu"
            ) from None
        raise DeviceError(
            f"jax cannot start any device ({one_line(error)}): reinstall jax and jaxlib"
        ) from None
    if name == "auto":
        return jax.devices()[0]
    try:
        return jax.devices(name)[0]
    except RuntimeError as error:
        if platforms:
            raise DeviceError(
                f"`device` {name}: JAX_PLATFORMS={platforms} leaves it out: unset JAX_PLATFORMS, "
                "or drop `device`"
            ) from None
        if name == "cpu":  # jax always has a CPU backend unless told otherwise
            raise DeviceError(f"`device` cpu: {one_line(error)}") from None
        failure = _gpu_backend_failure()
        if failure:
            raise DeviceError(
                "`device` gpu: jax's GPU backend is installed but failed to start "
                f"({one_line(failure)}); check the NVIDIA driver with nvidia-smi, or use "
                "`device` cpu"
            ) from None
        raise DeviceError(
            "`device` gpu: jax sees no GPU (this jaxlib is CPU-only or no NVIDIA GPU is "
            "present); install jax's CUDA build with: pip install -U 'jax[cuda12]', or use "
            "`device` cpu"
        ) from None


def prepare(
    name: str = "auto",
    *,
    compile_cache: bool = True,
    count: int | str = 1,
    start_processes: Callable[[], Cluster] = lambda: SINGLE,
):
    """What the command line does before jax starts: CPU flags, the compile cache, jax's
    processes (`start_processes`, see `cluster.start`), then (device, mesh, cluster): this
    process's device, and a mesh of `count` devices per process ("all": every local one of the
    platform) when that makes more than one, the device being its first local one; mesh None for
    one device."""
    tune_xla_cpu()
    if compile_cache:
        enable_compile_cache()
    if count != 1 and name in ("auto", "cpu") and not _sees_gpu_plugin(name):
        simulate_cpu_devices(count)
    cluster = start_processes()
    device = resolve_device(name)
    if count == 1 and cluster.count == 1:
        return device, None, cluster
    mesh = data_mesh(device.platform, count)
    return mesh.local_devices[0], mesh, cluster


def simulate_cpu_devices(count: int | str) -> None:
    """N CPU devices for `devices` N on a CPU: for trying and testing data parallelism, not for
    speed (they share the same cores). Must run before jax starts its CPU backend."""
    import jax

    if count != "all":
        jax.config.update("jax_num_cpu_devices", int(count))


def _sees_gpu_plugin(name: str) -> bool:
    if name == "cpu":
        return False
    import importlib.util

    return any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_rocm60_plugin"))


def data_mesh(platform: str, count: int | str):
    """A one-axis ("data") mesh over the first `count` local devices of `platform` in every
    process (one process: its first `count`), or DeviceError."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    available = jax.local_devices(backend=platform)
    wanted = len(available) if count == "all" else int(count)
    if wanted > len(available):
        raise DeviceError(
            f"`devices` {wanted}: jax sees {len(available)} {platform} device(s) here: "
            f"pass `devices` {len(available)} or fewer, or `devices` all"
        )
    by_process: dict[int, list] = {}
    for device in jax.devices(platform):  # never index by device.id: process 1's start at 2048
        by_process.setdefault(device.process_index, []).append(device)
    chosen = [d for p in sorted(by_process) for d in by_process[p][:wanted]]
    # Auto axes: XLA partitions the step from the batch's sharding alone (the hand-written
    # backward product in model.dense fails under Explicit axes).
    return Mesh(np.array(chosen), ("data",))


def _gpu_backend_failure() -> str | None:
    """Why an installed CUDA or ROCm plugin did not start, as jax reports it (None if none did).

    Asking jax for the concrete platform, unlike "gpu", names the failure it recorded.
    """
    import jax

    for platform in ("cuda", "rocm"):
        try:
            jax.devices(platform)
        except RuntimeError as error:
            if "failed to initialize" in str(error):
                return f"{platform}: {error}"
    return None


def device_failure(error: Exception, device, kept: str = "") -> DeviceError:
    """One line for an error the device raised while training; `kept` says what survived."""
    first_line = one_line(error)
    if "RESOURCE_EXHAUSTED" in first_line or "out of memory" in first_line.lower():
        elsewhere = "" if device.platform == "cpu" else ", or use `device` cpu"
        return DeviceError(
            f"out of memory on {device.platform} ({one_line(error, 120)}): "
            f"lower `batch_size` or `hidden`{elsewhere}{kept}"
        )
    return DeviceError(f"{device.platform} failed while training: {first_line}{kept}")
