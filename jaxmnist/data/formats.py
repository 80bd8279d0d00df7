"""Readers for the MNIST formats in the wild: the Keras npz, the four IDX files, the classic pickle.

Every reader works on bytes in memory (the largest member inflates to 220 MB), checks what it reads
and turns any failure into one DataError line that names the file and the check.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from jaxmnist._fs import NotRegularFile, TooLarge, describe, os_problem, read_regular
from jaxmnist.data._reason import guarded
from jaxmnist.data.arrays import Arrays, checked_split
from jaxmnist.data.safe_pickle import safe_loads
from jaxmnist.errors import DataError

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
# The largest MNIST file in any supported form is the classic pickle, 220 MB once inflated (the
# npz is 55 MB, the raw IDX images 47 MB). Every reader stops here, so /dev/zero, an endless
# stream or a gzip bomb ends in a DataError instead of filling memory.
MAX_BYTES = 512 * 2**20
HOW_TO = "supply a Keras mnist.npz, the four IDX files (gz or raw) or the classic mnist.pkl.gz"


class Oversized(DataError):
    """More bytes than any MNIST file holds; the cache treats this as bad content."""


def oversized(where: str, size: int | None, fix: str, limit: int = MAX_BYTES) -> Oversized:
    """The one-line refusal of a file or stream over `limit` (`size` None: not known exactly)."""
    size_text = f"{_size(size)}, " if size is not None else ""
    return Oversized(
        f"{where}: is {size_text}over the {_size(limit)} cap on a data file "
        f"(no MNIST file is over 220 MB); {fix}"
    )


def _size(count: int) -> str:
    return f"{count / 2**20:.0f} MB" if count >= 2**20 else f"{count} bytes"


def read_data(path: Path, fix: str, limit: int = MAX_BYTES) -> bytes:
    """All the bytes of the regular file `path`, at most `limit` of them.

    Anything else (a device, a FIFO, a directory) is refused before it is read: DataError ending
    in `fix`; so is a file over `limit` (Oversized). The OS's own errors come out as OSError, for
    the caller to word.
    """
    try:
        return read_regular(path, limit=limit)
    except NotRegularFile as error:
        raise _not_regular(path, error.mode, fix) from None
    except TooLarge as error:
        raise oversized(str(path), error.size, fix, limit) from None
    except OSError:
        # A socket, or a device whose driver refuses the open, fails before read_regular can
        # look at it; name it for what it is rather than quote the open's errno.
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            raise _not_regular(path, mode, fix) from None
        raise


def _not_regular(path: Path, mode: int, fix: str) -> DataError:
    return DataError(f"{path}: is {describe(mode)}, not a regular file; {fix}")


def gunzip(data: bytes, where: str, limit: int = MAX_BYTES) -> bytes:
    """Inflate gzip bytes in memory up to `limit`; DataError if corrupt, truncated or too big."""
    with guarded(where, "corrupt gzip data", HOW_TO):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out = inflater.decompress(data, limit)
        if limit < MAX_BYTES:  # a peek at the first bytes only
            return out
        if inflater.unconsumed_tail:
            raise DataError(f"{where}: inflates to more than {limit >> 20} MB; {HOW_TO}")
        if not inflater.eof:
            raise DataError(f"{where}: the gzip stream is truncated; download or copy it again")
        return out


def parse_idx(data: bytes, where: str, *, images: bool) -> np.ndarray:
    """One IDX file (raw or gz): check magic number and counts, return uint8 (N, 28, 28) or (N,)."""
    if data[:2] == b"\x1f\x8b":
        data = gunzip(data, where)
    magic, ndim = (_IMAGES_MAGIC, 3) if images else (_LABELS_MAGIC, 1)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated IDX header ({len(data)} bytes); {HOW_TO}")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "images" if images else "labels"
        raise DataError(
            f"{where}: wrong IDX magic number {found}, expected {magic} ({kind}); {HOW_TO}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if images and shape[1:] != (28, 28):
        raise DataError(f"{where}: IDX images are {shape[1]}x{shape[2]}, expected 28x28; {HOW_TO}")
    expected = header + math.prod(shape)  # Python ints: a hostile header cannot overflow
    if len(data) != expected:
        raise DataError(
            f"{where}: IDX file is {len(data)} bytes but its header (count {shape[0]}) promises "
            f"{expected}; the file is truncated or corrupt, {HOW_TO}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_idx_dir(directory: Path) -> Arrays:
    """The four IDX files in `directory`, each raw or gzipped."""
    parts = {}
    for key, stem in IDX_NAMES.items():
        # exists(), not is_file(): a FIFO or device under an IDX name is refused by name in
        # _read, where is_file() would skip it and report the file as missing.
        candidates = (directory / f"{stem}.gz", directory / stem)
        path = next((p for p in candidates if _mode(p) is not None), None)
        if path is None:
            raise DataError(f"{directory}: missing {stem}[.gz] (need all four IDX files); {HOW_TO}")
        parts[key] = parse_idx(_read(path), str(path), images=key.endswith("images"))
    train = checked_split(parts["train_images"], parts["train_labels"], str(directory), "train")
    test = checked_split(parts["test_images"], parts["test_labels"], str(directory), "test")
    return train, test


def parse_npz(data: bytes, where: str) -> Arrays:
    """A Keras-style npz (x_train, y_train, x_test, y_test), read without pickle."""
    keys = ("x_train", "y_train", "x_test", "y_test")
    if not data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        # np.load takes anything else for a pickle, and its refusal advises unpickling it.
        raise DataError(f"{where}: not a readable npz (not a zip archive); {HOW_TO}")
    with guarded(where, "not a readable npz", HOW_TO):
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = sorted(set(keys) - set(npz.files))
            if missing:
                raise DataError(f"{where}: npz lacks {', '.join(missing)}; {HOW_TO}")
            # A compressed npz is a zip: its members could inflate far past the file's own size.
            members = npz.zip.infolist()
            inflated = sum(m.file_size for m in members if m.filename.removesuffix(".npy") in keys)
            if inflated > MAX_BYTES:
                raise oversized(f"{where} (inflated)", inflated, HOW_TO, MAX_BYTES)
            views = (_stored_array(data, npz.zip, f"{key}.npy") for key in keys)
            x_train, y_train, x_test, y_test = (
                npz[key] if view is None else view for key, view in zip(keys, views, strict=True)
            )
        return checked_split(x_train, y_train, where, "train"), checked_split(
            x_test, y_test, where, "test"
        )


def _stored_array(data: bytes, archive: zipfile.ZipFile, name: str) -> np.ndarray | None:
    """The member `name` as a read-only view into `data`, when it is stored uncompressed (as the
    cache writes it), its CRC holds and its .npy header is a plain one; None otherwise, for
    np.load's own reader to read or refuse.

    np.load copies each member in 256 KB pieces: 50-140 ms for the cache's 55 MB, against a few
    for the CRC alone (measured on a 2-core Zen 5).
    """
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # 0x1: encrypted
        return None
    local = data[info.header_offset : info.header_offset + 30]
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        return None
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    member = memoryview(data)[start : start + info.file_size]
    if len(member) != info.file_size or zlib.crc32(member) != info.CRC:
        return None
    header = io.BytesIO(member[: min(len(member), 65536)])
    version = np.lib.format.read_magic(header)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(header)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(header)
    else:
        return None
    count = math.prod(shape)
    if dtype.hasobject or fortran_order or header.tell() + count * dtype.itemsize != len(member):
        return None
    return np.frombuffer(data, dtype, count, start + header.tell()).reshape(shape)


def _pixels(images: object, where: str, name: str) -> np.ndarray:
    """Classic pickle pixels are float32 byte/256 exactly; turn them back into bytes losslessly."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind != "f":
        raise DataError(f"{where}: {name} have dtype {images.dtype}, expected float or uint8")
    # Range first: scaling inf or 1e308 by 256 would overflow before the exactness check.
    in_range = images.size == 0 or (np.isfinite(images).all() and images.min() >= 0)
    in_range = in_range and (images.size == 0 or images.max() < 1)
    scaled = np.rint(images.astype(np.float64) * 256) if in_range else None
    if scaled is None or not np.array_equal(scaled / 256, images):
        raise DataError(
            f"{where}: {name} are not exact multiples of 1/256 in [0, 1); "
            f"this is not the classic mnist.pkl.gz, {HOW_TO}"
        )
    return scaled.astype(np.uint8)


def parse_pickle(data: bytes, where: str) -> Arrays:
    """The classic (train, valid, test) pickle, or a Keras-style (train, test) one; gz or raw."""
    if data[:2] == b"\x1f\x8b":
        data = gunzip(data, where)
    splits = safe_loads(data, where)
    ok = isinstance(splits, tuple | list) and len(splits) in (2, 3)
    if not (ok and all(isinstance(s, tuple | list) and len(s) == 2 for s in splits)):
        raise DataError(
            f"{where}: the pickle holds a {type(splits).__name__}, expected (train, [valid,] test) "
            f"pairs of (images, labels); {HOW_TO}"
        )
    with guarded(where, "unexpected pickle contents", HOW_TO):
        # Train then validation, in that order, is the 60000-image training set.
        *train_parts, (x_test, y_test) = splits
        x_train = np.concatenate([_pixels(x, where, "train images") for x, _ in train_parts])
        y_train = np.concatenate([np.asarray(y).reshape(-1) for _, y in train_parts])
        train = checked_split(x_train, y_train, where, "train")
        return train, checked_split(_pixels(x_test, where, "test images"), y_test, where, "test")


def read_path(path: str | Path) -> Arrays:
    """Read MNIST from a file (npz, pickle, gz, or one IDX file: its directory) or a directory."""
    path = Path(path).expanduser()
    mode = _mode(path)
    if mode is None:
        raise DataError(f"{path}: no such file or directory; {HOW_TO}")
    if stat.S_ISDIR(mode):
        for name in ("mnist.npz", "mnist.pkl.gz", "mnist.pkl"):
            found = _mode(path / name)
            if found is not None and not stat.S_ISDIR(found):
                return read_path(path / name)
        return read_idx_dir(path)
    data = _read(path)
    # Sniff the content, not the name: users rename files.
    head = gunzip(data, str(path), limit=4) if data[:2] == b"\x1f\x8b" else data[:4]
    if data[:4] == b"PK\x03\x04":
        return parse_npz(data, str(path))
    if head[:1] in (b"\x80", b"("):
        return parse_pickle(data, str(path))
    if int.from_bytes(head, "big") in (_IMAGES_MAGIC, _LABELS_MAGIC):
        return read_idx_dir(path.parent)
    raise DataError(f"{path}: not a recognised MNIST file (npz, pickle or IDX); {HOW_TO}")


def _mode(path: Path) -> int | None:
    """The stat mode of `path`, None if nothing is there; DataError if the OS will not say."""
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise _cannot_read(path, error) from None


def _read(path: Path) -> bytes:
    try:
        return read_data(path, HOW_TO)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or directory; {HOW_TO}") from None
    except OSError as error:
        raise _cannot_read(path, error) from None


def _cannot_read(path: Path, error: OSError) -> DataError:
    problem = os_problem(error, elsewhere="supply MNIST from another path", writing=False)
    return DataError(f"{path}: cannot read: {problem}")
