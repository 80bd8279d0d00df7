"""The MNIST data layer: find, fetch, verify, cache and preprocess the data set.

    from jaxmnist.data import load_mnist, preprocess
    (x_train, y_train), (x_test, y_test) = load_mnist()   # uint8, as keras.datasets.mnist
    x_train = preprocess(x_train)                          # (60000, 784) float32 in [0, 1]

Modules: `loader` (the lookup order), `sources` (download mirrors), `transport` (network),
`formats` (npz, IDX, pickle readers), `safe_pickle`, `cache`, `arrays` (checks and fingerprint),
`cli` (`python -m jaxmnist.data`).
"""

from jaxmnist.data.arrays import MNIST_FINGERPRINT, class_counts, fingerprint, preprocess
from jaxmnist.data.cli import main
from jaxmnist.data.loader import load_mnist

__all__ = ["MNIST_FINGERPRINT", "class_counts", "fingerprint", "load_mnist", "main", "preprocess"]
