"""Tests for jaxmnist.data.formats: each format, and truncated, corrupt or wrong files."""

import gzip

import numpy as np
import pytest

from jaxmnist.data.arrays import fingerprint_of
from jaxmnist.data.formats import parse_idx, parse_npz, parse_pickle, read_path
from jaxmnist.errors import DataError


def _same(a, b):
    return fingerprint_of(a) == fingerprint_of(b)


def test_npz_file(tmp_path, tiny_mnist, mnist_files):
    path = tmp_path / "renamed.bin"  # sniffed by content, not by name
    path.write_bytes(mnist_files.npz_bytes(tiny_mnist))
    assert _same(read_path(path), tiny_mnist)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_gz_or_raw(tmp_path, tiny_mnist, mnist_files, gz):
    directory = mnist_files.idx_dir(tmp_path / "idx", tiny_mnist, gz=gz)
    assert _same(read_path(directory), tiny_mnist)
    one_file = next(directory.iterdir())  # one IDX file stands for its directory
    assert _same(read_path(one_file), tiny_mnist)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_classic_pickle_train_then_valid(tmp_path, tiny_mnist, mnist_files, protocol):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(mnist_files.classic_pickle_bytes(tiny_mnist, protocol))
    assert _same(read_path(path), tiny_mnist)
    assert _same(read_path(tmp_path), tiny_mnist)  # a directory holding mnist.pkl.gz


def test_raw_keras_style_pickle(tmp_path, tiny_mnist):
    import pickle

    path = tmp_path / "mnist.pkl"
    path.write_bytes(pickle.dumps(tiny_mnist))
    assert _same(read_path(path), tiny_mnist)


def test_directory_prefers_npz(tmp_path, tiny_mnist, mnist_files):
    (tmp_path / "mnist.npz").write_bytes(mnist_files.npz_bytes(tiny_mnist))
    (tmp_path / "mnist.pkl.gz").write_bytes(b"junk")
    assert _same(read_path(tmp_path), tiny_mnist)


def test_idx_truncated(tiny_mnist, mnist_files):
    data = mnist_files.idx_bytes(tiny_mnist[0][0])
    with pytest.raises(DataError, match=r"f: IDX file is \d+ bytes but its header .*promises"):
        parse_idx(data[:-1], "f", images=True)
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(data[:10], "f", images=True)
    with pytest.raises(DataError, match="gzip stream is truncated"):
        parse_idx(gzip.compress(data)[:-20], "f.gz", images=True)


def test_idx_wrong_magic_and_shape(tiny_mnist, mnist_files):
    labels = mnist_files.idx_bytes(tiny_mnist[0][1])
    with pytest.raises(DataError, match="wrong IDX magic number 2049, expected 2051"):
        parse_idx(labels, "f", images=True)
    small = mnist_files.idx_bytes(np.zeros((2, 27, 28), np.uint8))
    with pytest.raises(DataError, match="27x28, expected 28x28"):
        parse_idx(small, "f", images=True)


def test_idx_directory_missing_a_file(tmp_path, tiny_mnist, mnist_files):
    directory = mnist_files.idx_dir(tmp_path, tiny_mnist)
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        read_path(directory)


def test_idx_labels_out_of_range(tmp_path, tiny_mnist, mnist_files):
    (x_train, y_train), test = tiny_mnist
    bad = ((x_train, np.full_like(y_train, 11)), test)
    with pytest.raises(DataError, match="outside 0..9"):
        read_path(mnist_files.idx_dir(tmp_path, bad))


def test_npz_missing_key_wrong_dtype_wrong_shape(tiny_mnist, mnist_files):
    (x_train, y_train), (x_test, y_test) = tiny_mnist
    import io

    def npz(**arrays):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    with pytest.raises(DataError, match="f.npz: npz lacks y_test"):
        parse_npz(npz(x_train=x_train, y_train=y_train, x_test=x_test), "f.npz")
    floats = npz(x_train=x_train / 255, y_train=y_train, x_test=x_test, y_test=y_test)
    with pytest.raises(DataError, match="x_train has dtype float64"):
        parse_npz(floats, "f.npz")
    flat = npz(x_train=x_train, y_train=y_train, x_test=x_test[:, :20], y_test=y_test)
    with pytest.raises(DataError, match=r"x_test has shape \(5, 20, 28\)"):
        parse_npz(flat, "f.npz")


def test_npz_with_pickled_objects_is_refused():
    import io

    buffer = io.BytesIO()
    objects = np.array([{"a": 1}], dtype=object)
    np.savez(buffer, x_train=objects, y_train=objects, x_test=objects, y_test=objects)
    with pytest.raises(DataError, match="not a readable npz"):
        parse_npz(buffer.getvalue(), "f.npz")


@pytest.mark.parametrize("data", [b"not an npz", b"\x80\x04K\x01.", b""])
def test_bytes_that_are_no_zip_are_named_so_without_pickle_advice(data):
    with pytest.raises(DataError, match=r"f.npz: not a readable npz \(not a zip archive\)") as e:
        parse_npz(data, "f.npz")
    assert "pickle" not in str(e.value)


def test_npz_truncated(tiny_mnist, mnist_files):
    data = mnist_files.npz_bytes(tiny_mnist)
    with pytest.raises(DataError, match="f.npz: not a readable npz"):
        parse_npz(data[: len(data) // 2], "f.npz")


def test_pickle_pixels_not_multiples_of_1_over_256(tiny_mnist, mnist_files):
    import pickle

    (x_train, y_train), (x_test, y_test) = tiny_mnist
    splits = ((x_train / 255.0, y_train), (x_test / 256.0, y_test))
    with pytest.raises(DataError, match="not exact multiples of 1/256"):
        parse_pickle(pickle.dumps(splits), "p")
    with pytest.raises(DataError, match="holds a dict"):
        parse_pickle(pickle.dumps({"x": 1}), "p")


def test_random_bytes_and_missing_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not mnist at all")
    with pytest.raises(DataError, match="junk.npz: not a recognised MNIST file") as caught:
        read_path(junk)
    assert "mnist.pkl.gz" in str(caught.value)  # the message says what would work
    with pytest.raises(DataError, match="no such file or directory"):
        read_path(tmp_path / "absent")
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(DataError, match="bad.gz: corrupt gzip data"):
        read_path(bad_gz)


def _npz(save=np.savez, **arrays):
    import io

    buffer = io.BytesIO()
    save(buffer, **arrays)
    return buffer.getvalue()


def _splits(tiny_mnist):
    (x_train, y_train), (x_test, y_test) = tiny_mnist
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def test_stored_npz_members_are_read_in_place(tiny_mnist):
    # The cache's layout (np.savez: stored, C order): every array is a read-only view of the bytes.
    data = _npz(**_splits(tiny_mnist))
    arrays = parse_npz(data, "f.npz")
    assert _same(arrays, tiny_mnist)
    for array in (*arrays[0], *arrays[1]):
        assert np.shares_memory(array, np.frombuffer(data, np.uint8))
        assert not array.flags.writeable


@pytest.mark.parametrize("layout", ["compressed", "fortran"])
def test_other_npz_layouts_are_read_by_numpy(tiny_mnist, layout):
    splits = _splits(tiny_mnist)
    if layout == "compressed":
        data = _npz(np.savez_compressed, **splits)
    else:
        data = _npz(**{key: np.asfortranarray(value) for key, value in splits.items()})
    arrays = parse_npz(data, "f.npz")
    assert _same(arrays, tiny_mnist)
    raw = np.frombuffer(data, np.uint8)  # images: 3-D, so stored in Fortran order as such
    assert not any(np.shares_memory(images, raw) for images in (arrays[0][0], arrays[1][0]))


def test_stored_npz_member_with_a_flipped_byte_is_refused(tiny_mnist):
    # In-place reading must keep the zip's CRC check: a corrupt member is an error, not data.
    data = bytearray(_npz(**_splits(tiny_mnist)))
    at = bytes(data).index(tiny_mnist[1][0].tobytes())  # the test images' first pixels
    data[at] ^= 0xFF
    with pytest.raises(DataError, match="f.npz: not a readable npz .*CRC"):
        parse_npz(bytes(data), "f.npz")
