"""The project's error types, each carrying one line that names the problem and the fix.

Library code names its arguments in backticks (`batch_size`, `checkpoint_dir`); the command lines
print the same messages with their flags in place of those names (`--batch-size`).
"""


class JaxmnistError(Exception):
    """Base class: the CLI prints str(error) as one line and exits with `exit_code`."""

    exit_code = 1


class UsageError(JaxmnistError):
    """A bad argument, flag or setting (argparse-style, exit 2)."""

    exit_code = 2


class DataError(JaxmnistError):
    """MNIST could not be found, fetched, parsed or verified."""


class CheckpointError(JaxmnistError):
    """A checkpoint could not be written, read, or does not match the run."""


class DeviceError(JaxmnistError):
    """The requested device is missing or failed (no GPU, out of memory, driver)."""


class ImageError(JaxmnistError):
    """A user's image could not be read, is too large to decode safely, or shows no digit."""


class ClusterError(JaxmnistError):
    """A multi-process run could not start, lost a process, or its processes disagree."""


class TrainingDiverged(JaxmnistError):
    """The loss became NaN or Inf."""


class Interrupted(Exception):  # noqa: N818 (a stop the user asked for, not an error)
    """Training stopped at a user's signal; every finished epoch reached its checkpoint."""

    def __init__(self, epoch: int, step: int):
        where = f"in epoch {epoch} at step {step}" if step else f"before epoch {epoch}"
        super().__init__(f"interrupted {where}")
        self.epoch, self.step = epoch, step


def one_line(error: BaseException | str, limit: int = 200, *, with_type: bool = False) -> str:
    """The first line of an error's message, whitespace collapsed and cut at `limit` characters.

    Errors from jax, zipfile or the OS can run to pages; a user-facing message quotes one line.
    `with_type` prefixes the exception's type (`ValueError: ...`), for errors from parsers whose
    message alone says little.
    """
    text = str(error).strip()
    line = " ".join(text.splitlines()[0].split()) if text else ""
    if isinstance(error, BaseException):
        if not line:
            line = type(error).__name__ if not with_type else "no details"
        if with_type:
            line = f"{type(error).__name__}: {line}"
    return line if len(line) <= limit else line[: limit - 1] + "…"
