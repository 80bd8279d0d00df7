"""Atomic checkpoints without pickle: arrays in an .npz, everything else in JSON.

Layout of a checkpoint directory (one writer at a time):

    LATEST              "ckpt-000007\\n": the one committed checkpoint
    ckpt-000006/        the previous one, kept until the next save has committed
    ckpt-000007/
        arrays.npz      one .npy entry per pytree leaf, keyed by path ("params/0/W")
        meta.json       {"format", "arrays_sha256", "meta", "sha256" (of the rest)}
    .ckpt-000008.<pid>-<nonce>.tmp   debris of a killed writer: never read, removed by the next save

A save is complete before it becomes visible: files are fsynced in a temporary directory, renamed
to `ckpt-N`, and only then does `LATEST` switch to it with an atomic rename. A process killed at
any moment therefore leaves `LATEST` naming either the old or the new checkpoint, both complete.
The pytree structure is never read from the file: `restore_tree` rebuilds it from a template.

The directory may be shared with the user's own files: a save removes only names that the writer
makes, matched in full (`.ckpt-N.`, `.old-ckpt-N.`, `.LATEST.` or `.jaxmnist-probe.`, then
`<pid>-<8 hex digits>.tmp`; also the `.jaxmnist-tmp-` names of earlier versions), and `ckpt-N`
directories older than the ones it keeps.

`meta` is JSON with an `epoch` (an integer from 0, the epochs the arrays have trained) and, when
present, a `config` object, a `data_fingerprint` string and a `history` list of objects: a resumed
run trusts these, so both saving and loading check them.

Modules: `tree` (pytrees <-> flat arrays), `format` (the two files of a version), `store` (the
directory protocol), `problems` (OS failures in the user's words).
"""

from jaxmnist.checkpoint.format import ARRAYS, FORMAT, META
from jaxmnist.checkpoint.store import (
    LATEST,
    ensure_writable,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from jaxmnist.checkpoint.tree import flatten_tree, restore_tree
from jaxmnist.errors import CheckpointError

__all__ = [
    "ARRAYS",
    "FORMAT",
    "LATEST",
    "META",
    "CheckpointError",
    "ensure_writable",
    "flatten_tree",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_tree",
    "save_checkpoint",
]
