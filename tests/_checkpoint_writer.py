"""Fork server for the SIGKILL test: imports once, then forks one checkpoint writer per request.

Forking from a process that has already paid for the imports keeps twenty kill trials within a
couple of seconds. Protocol, one line each way: the test sends a directory; the server forks a
child that saves epochs 1, 2, ... there until it is killed and answers with the child's pid; once
the child is dead the server reaps it and answers "reaped <wait status>".
"""

import os
import sys
import traceback

import numpy as np

from jaxmnist.checkpoint import save_checkpoint


def make_arrays(epoch: int) -> dict[str, np.ndarray]:
    """The state saved for `epoch`: distinct per epoch, so a mixed-up checkpoint cannot pass."""
    rng = np.random.default_rng(epoch)
    return {
        "params/0/W": rng.standard_normal((128, 64), dtype=np.float32),
        "params/0/b": rng.standard_normal((64,), dtype=np.float32),
        "opt_state/0/count": np.asarray(epoch, dtype=np.int32),
        "key": np.asarray([epoch, 7], dtype=np.uint32),
    }


def _write_forever(directory: str) -> None:
    for epoch in range(1, 1_000_000):
        save_checkpoint(directory, make_arrays(epoch), {"epoch": epoch})


def main() -> None:
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                _write_forever(line.strip())
            except BaseException:
                traceback.print_exc()
            os._exit(1)  # the child must never return into the server's loop
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"reaped {status}", flush=True)


if __name__ == "__main__":
    main()
