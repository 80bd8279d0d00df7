"""Tests for jaxmnist.data.safe_pickle: numpy arrays load; anything else is refused unrun."""

import os
import pickle

import numpy as np
import pytest

from jaxmnist.data.safe_pickle import safe_loads
from jaxmnist.errors import DataError


class _RunsCommand:
    """Unpickling this calls os.system(command): what a malicious mnist.pkl.gz would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_arrays_round_trip(protocol):
    value = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64)),)
    loaded = safe_loads(pickle.dumps(value, protocol=protocol), "p")
    np.testing.assert_array_equal(loaded[0][0], value[0][0])
    assert loaded[0][1].dtype == np.int64


def test_os_system_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(((np.zeros(2), _RunsCommand(f"touch {marker}")),), protocol=2)
    with pytest.raises(DataError, match=r"evil.pkl: refused to unpickle.*(os|posix)\.system"):
        safe_loads(evil, "evil.pkl")
    assert not marker.exists()
    # The same bytes through plain pickle do run the command: the test pickle is truly hostile.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_RunsCommand(f"touch {proof}")))
    assert proof.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"c__builtin__\nexec\n(S'x=1'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",
        b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.",
        b"\x80\x02cnumpy.core.multiarray\nscalar\nq\x00.",
    ],
)
def test_other_globals_are_refused(payload):
    with pytest.raises(DataError, match="p: "):
        safe_loads(payload, "p")


def test_garbage_and_persistent_ids_are_data_errors():
    with pytest.raises(DataError, match="p: not a readable pickle"):
        safe_loads(b"\x80\x02garbage", "p")
    with pytest.raises(DataError, match="persistent ids"):
        safe_loads(b"Pfile-handle\n.", "p")
