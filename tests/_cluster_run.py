"""One process of a multi-process `jaxmnist.train` run on small synthetic data, for test_processes.

Usage: python tests/_cluster_run.py TRAIN_SIZE [train flags...]
With FAIL_SAVE_AFTER=N in the environment, this process's checkpoint writes fail with ENOSPC
after N successful ones, as a full disk would make them.
"""

import errno
import os
import sys

from _synthetic import synthetic_mnist  # this script's folder is first on sys.path

if __name__ == "__main__":
    import jaxmnist.data
    from jaxmnist import _fs, train

    data = synthetic_mnist(int(sys.argv[1]))
    jaxmnist.data.load_mnist = lambda *args, **kwargs: data
    if "FAIL_SAVE_AFTER" in os.environ:
        allowed = [2 * int(os.environ["FAIL_SAVE_AFTER"])]  # two files per checkpoint
        write = _fs.write_synced

        def write_until_full(*args, **kwargs):
            if allowed[0] == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]))
            allowed[0] -= 1
            return write(*args, **kwargs)

        _fs.write_synced = write_until_full
    sys.exit(train.main(sys.argv[2:]))
