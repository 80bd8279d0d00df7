"""Property test: random bytes and small arrays fed to every loader give DataError or data."""

import gzip
import io
import pickle
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxmnist.data.formats import gunzip, parse_idx, parse_npz, parse_pickle, read_path
from jaxmnist.data.safe_pickle import safe_loads
from jaxmnist.errors import DataError

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Prefixes that steer random bytes into each format's parser.
_PREFIXES = [
    b"",
    b"PK\x03\x04",
    b"\x1f\x8b\x08\x00",
    b"\x80\x02",
    b"\x80\x05",
    b"(",
    b"\x00\x00\x08\x03",
    b"\x00\x00\x08\x01",
    b"\x93NUMPY",
]

_LOADERS = [
    lambda data: parse_npz(data, "f"),
    lambda data: parse_pickle(data, "f"),
    lambda data: parse_idx(data, "f", images=True),
    lambda data: parse_idx(data, "f", images=False),
    lambda data: gunzip(data, "f"),
    lambda data: safe_loads(data, "f"),
    lambda data: _via_file(data),
]


def _via_file(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data"
        path.write_bytes(data)
        return read_path(path)


def _only_data_errors(data: bytes) -> None:
    for loader in _LOADERS:
        try:
            loader(data)
        except DataError as error:
            assert "\n" not in str(error)


@_SETTINGS
@given(st.sampled_from(_PREFIXES), st.binary(max_size=300), st.booleans())
def test_random_bytes(prefix, body, gz):
    data = prefix + body
    _only_data_errors(gzip.compress(data) if gz else data)


_arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int8, np.int64, np.float32, np.float64, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
)


@_SETTINGS
@given(st.lists(_arrays, min_size=4, max_size=4), st.integers(0, 3))
def test_random_small_arrays(arrays, missing):
    keys = ["x_train", "y_train", "x_test", "y_test"]
    buffer = io.BytesIO()
    np.savez(buffer, **dict(zip(keys, arrays, strict=True)))
    _only_data_errors(buffer.getvalue())
    buffer = io.BytesIO()
    partial = dict(zip(keys, arrays, strict=True))
    del partial[keys[missing]]
    np.savez(buffer, **partial)
    _only_data_errors(buffer.getvalue())
    for shape in ([arrays[:2], arrays[2:]], [arrays[:2], arrays[:2], arrays[2:]], arrays):
        for protocol in (2, 5):
            _only_data_errors(gzip.compress(pickle.dumps(shape, protocol=protocol)))


@_SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 2**32 - 1), max_size=3),
    st.binary(max_size=200),
)
def test_random_idx_headers(magic, dims, body):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    _only_data_errors(header + body)
