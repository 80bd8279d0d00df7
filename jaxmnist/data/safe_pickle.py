"""A restricted unpickler: numpy arrays and nothing else, so a malicious pickle cannot run code."""

from __future__ import annotations

import io
import pickle

import numpy as np
from numpy._core import multiarray, numeric

from jaxmnist.data._reason import guarded
from jaxmnist.errors import DataError


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """The one use of `_codecs.encode` an array pickle makes; other codecs are refused."""
    if not isinstance(text, str) or encoding != "latin1":
        raise ValueError("_codecs.encode used for something other than latin1 bytes")
    return text.encode("latin1")


# The globals an ndarray pickle refers to, under the module names numpy 1.x and 2.x write.
# Each maps to the object itself, so nothing is imported by name from the file's say-so.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes as _codecs.encode(text, "latin1") under protocols 0-2.
    ("_codecs", "encode"): _latin1_bytes,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy's array reconstruction machinery and refuses every other global."""

    def __init__(self, file: io.BytesIO, where: str) -> None:
        # latin1: the classic mnist.pkl.gz was written by Python 2 and holds str8 array bytes.
        super().__init__(file, encoding="latin1")
        self._where = where

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._where}: refused to unpickle: the file asks for {module}.{name}, and only "
                "numpy arrays are allowed; the file may be malicious, use a genuine MNIST file"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise DataError(
            f"{self._where}: refused to unpickle: it uses persistent ids; use a genuine MNIST file"
        )


def safe_loads(data: bytes, where: str) -> object:
    """Unpickle `data` allowing only numpy arrays; any failure is a DataError naming `where`."""
    with guarded(where, "not a readable pickle", "supply a genuine mnist.pkl.gz"):
        return _NumpyOnlyUnpickler(io.BytesIO(data), where).load()
