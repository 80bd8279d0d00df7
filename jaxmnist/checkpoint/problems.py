"""Why a checkpoint could not be read or written, in one line that ends with the fix."""

from __future__ import annotations

import errno
from pathlib import Path

from jaxmnist import _fs
from jaxmnist.errors import one_line

ELSEWHERE = "pass another `checkpoint_dir`"
START_OVER = "restore the checkpoint or start over with another `checkpoint_dir`"


def not_a_directory(path: Path, mode: int, *, subject: str | None = None) -> str:
    """What stands where a directory belongs ("... is a file, not a directory"), and the fix."""
    return (
        f"{subject or path} is {_fs.describe(mode)}, not a directory: "
        "`checkpoint_dir` must name a directory"
    )


def write_problem(root: Path, error: OSError) -> str:
    """Why a write under `root` failed, then the fix: what follows "cannot save ... in {root}: "."""
    # A file where a directory belongs fails as EEXIST or ENOTDIR, which names neither the file
    # nor the fix: look for it.
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = _fs.blocking_file(root)
        if blocker is not None:
            path, mode = blocker
            return not_a_directory(path, mode, subject="it" if path == root else None)
    return _fs.os_problem(error, elsewhere=ELSEWHERE)


def read_problem(root: Path, error: OSError) -> str:
    """A whole message for a failure to read the checkpoint at `root` (or a file in it)."""
    if error.errno == errno.ENOTDIR:
        blocker = _fs.blocking_file(root)
        if blocker is not None:
            return not_a_directory(*blocker)
    if error.errno == errno.ENOENT:
        # Only the pointer may be missing (that is "no checkpoint"); a missing file inside a
        # committed version means someone removed part of it.
        reason = f"{error.strerror or one_line(error)}; the checkpoint is incomplete: {START_OVER}"
    else:
        reason = _fs.os_problem(error, elsewhere=ELSEWHERE, writing=False)
    return f"{error.filename or root}: cannot read ({reason})"
