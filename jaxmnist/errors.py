"""The project's error types: each one carries a single line that names the problem and the fix."""


class JaxmnistError(Exception):
    """Base class: the CLI prints str(error) as one line and exits with `exit_code`."""

    exit_code = 1


class UsageError(JaxmnistError):
    """A bad flag or setting (argparse-style, exit 2)."""

    exit_code = 2


class DataError(JaxmnistError):
    """MNIST could not be found, fetched, parsed or verified."""


class CheckpointError(JaxmnistError):
    """A checkpoint could not be written, read, or does not match the run."""


class DeviceError(JaxmnistError):
    """The requested device is missing or failed (no GPU, out of memory, driver)."""


class TrainingDiverged(JaxmnistError):
    """The loss became NaN or Inf."""


class Interrupted(Exception):  # noqa: N818 (a stop the user asked for, not an error)
    """Training stopped at a user's signal; every finished epoch reached its checkpoint."""

    def __init__(self, epoch: int, step: int):
        where = f"in epoch {epoch} at step {step}" if step else f"before epoch {epoch}"
        super().__init__(f"interrupted {where}")
        self.epoch, self.step = epoch, step
