"""Runs jaxmnist's CLI in this process, then appends the device's peak memory to its metrics file.

For the sweep: a GPU's peak bytes in use are visible only from inside the process that used them,
so this wrapper adds {"event": "memory", "device_peak_bytes": N} after the CLI's own events (null on
the CPU backend, which keeps no such statistic; the sweep reads the host's peak RSS instead).

    python -m benchmarks._device_memory <jaxmnist.train flags, --metrics-out FILE among them>
"""

from __future__ import annotations

import json
import sys


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from jaxmnist.train import main as train

    try:
        code = train(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    peak = None
    path = _flag(argv, "--metrics-out")
    if code == 0 and path and _flag(argv, "--device") != "cpu":
        import jax

        # The default device is the one `--device auto|gpu` trained on.
        peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    if path:
        with open(path, "a") as metrics:
            metrics.write(json.dumps({"event": "memory", "device_peak_bytes": peak}) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
