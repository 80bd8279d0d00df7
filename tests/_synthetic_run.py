"""Runs `jaxmnist.train.main` on small synthetic data, as a separate process would.

Used by tests that must signal or kill a real training process; the real MNIST is not needed.
Usage: python tests/_synthetic_run.py TRAIN_SIZE [train flags...]
"""

import sys

from _synthetic import synthetic_mnist  # this script's folder is first on sys.path

if __name__ == "__main__":
    import jaxmnist.data
    from jaxmnist import train

    data = synthetic_mnist(int(sys.argv[1]))
    jaxmnist.data.load_mnist = lambda *args, **kwargs: data
    sys.exit(train.main(sys.argv[2:]))
