"""Runs `jaxmnist.train.main` on small synthetic data, as a separate process would.

Used by tests that must signal or kill a real training process; the real MNIST is not needed.
Usage: python tests/_synthetic_run.py TRAIN_SIZE [train flags...]
"""

import sys

import numpy as np


def synthetic_mnist(train_size: int, test_size: int = 256, seed: int = 0):
    """uint8 images whose label is a fixed linear function of the pixels, so training learns."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((28 * 28, 10))

    def split(n):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.argmax(images.reshape(n, -1) @ projection, axis=1).astype(np.uint8)
        return images, labels

    return split(train_size), split(test_size)


if __name__ == "__main__":
    import jaxmnist.data
    from jaxmnist import train

    data = synthetic_mnist(int(sys.argv[1]))
    jaxmnist.data.load_mnist = lambda *args, **kwargs: data
    sys.exit(train.main(sys.argv[2:]))
