"""`python -m jaxmnist.report RUN_DIR`: figures and report.html of what a trained run learned.

    from jaxmnist.report import write_report
    html = write_report("runs/keras-seed0", jaxmnist.data.load_mnist())  # RUN_DIR/report/...

Every failure a user can cause (no run, no finished epoch, other data, an unwritable output,
no matplotlib) ends in one line on stderr and a non-zero exit; no file is left half-written.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxmnist import _fs, figures
from jaxmnist._cli import OneLineParser, path, run_main
from jaxmnist.errors import CheckpointError, DataError, JaxmnistError
from jaxmnist.report_page import SECTIONS, Page, final_figures, render

PREFIX = "jaxmnist.report"
CLASSES = 10
GALLERY = 40  # misclassified digits shown
PAIRS = 10  # most confused pairs listed
FIRST = 10  # first test digits shown with their probabilities
HTML = "report.html"
ELSEWHERE = "pass another `out` directory"
DESCRIPTION = f"""\
Write the figures of a trained run and one self-contained {HTML} that shows them all:
learning curves (loss and accuracy per epoch, per-batch losses), the confusion matrix on
the test set, accuracy per digit, the most confused pairs, the misclassified test digits,
and the first {FIRST} test digits with their predicted probabilities.

RUN_DIR is the --checkpoint-dir of a `python -m jaxmnist.train` run. The page needs no
network or server: open it in any browser. Needs matplotlib: {figures.INSTALL}
"""


def confusion_matrix(labels, predicted, classes: int = CLASSES) -> np.ndarray:
    """[classes, classes] counts: row = true digit, column = predicted digit."""
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.intp), np.asarray(predicted, np.intp)), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """The diagonal over the row sums: each digit's accuracy, NaN for a digit with no images."""
    counts = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.diag(matrix) / counts, np.nan)


def most_confused(matrix: np.ndarray, limit: int = PAIRS) -> list[tuple[int, int, int]]:
    """(true, predicted, count) of the most frequent mistakes, ties in (true, predicted) order."""
    errors = np.array(matrix, np.int64)
    np.fill_diagonal(errors, 0)
    cells = [(-int(count), true, guess) for (true, guess), count in np.ndenumerate(errors) if count]
    return [(true, guess, -negative) for negative, true, guess in sorted(cells)[:limit]]


def misclassified(labels, probabilities: np.ndarray, limit: int = GALLERY) -> np.ndarray:
    """Indices of up to `limit` misclassified images, most confident (wrong) prediction first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    order = np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")
    return wrong[order][:limit]


def load(run_dir: str | os.PathLike):
    """The run in `run_dir`, checked to have trained at least one epoch (CheckpointError)."""
    from jaxmnist.resume import load_run

    run = load_run(run_dir)
    if run.epoch == 0 or not run.history:
        raise CheckpointError(
            f"{run_dir} holds no finished epoch to report (its checkpoint is the untrained "
            "state): train it for an epoch first (the same train command with --resume)"
        )
    if any(not {"epoch", "loss", "accuracy"} <= set(record) for record in run.history):
        raise CheckpointError(f"{run_dir} records no usable history: train it again")
    return run


def check_data(run, data, run_dir) -> None:
    """DataError unless `data` is the data set the run trained on."""
    from jaxmnist.data.arrays import fingerprint_of

    expected, actual = str(run.meta.get("data_fingerprint")), fingerprint_of(data)
    if actual != expected:
        raise DataError(
            f"{run_dir} was trained on data with fingerprint {expected[:12]}…, this data is "
            f"{actual[:12]}…: pass the `data_dir` the run trained on"
        )


def build(run, data, run_dir) -> dict[str, bytes]:
    """Every file of the report by name, report.html last; computed in memory, written by none."""
    from jaxmnist.data.arrays import preprocess
    from jaxmnist.model import chapter_model, predict
    from jaxmnist.step import evaluate

    (_, _), (x_test, y_test) = data
    config, params = run.config, run.state.params
    spec = chapter_model(config.hidden)
    test_loss, test_accuracy = evaluate(
        params,
        x_test,
        y_test,
        spec,
        config.loss,
        config.precision,
        label_smoothing=config.label_smoothing,
    )
    probabilities = np.asarray(predict(params, preprocess(x_test), spec), np.float64)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_test, predicted)
    accuracy, counts = per_class_accuracy(matrix), matrix.sum(axis=1)
    pairs = most_confused(matrix)
    errors = int(len(y_test) - np.trace(matrix))
    confidence = probabilities[np.arange(len(predicted)), predicted]
    wrong = misclassified(y_test, probabilities)
    history, first = run.history, slice(0, FIRST)

    images = {
        "curves": figures.learning_curves(history),
        "confusion": figures.confusion_matrix(matrix),
        "classes": figures.class_accuracy(accuracy, counts, float(np.trace(matrix) / len(y_test))),
        "pairs": figures.confused_pairs(pairs, errors),
        "misclassified": figures.misclassified(
            x_test[wrong], y_test[wrong], predicted[wrong], confidence[wrong], errors
        ),
        "first": figures.first_predictions(x_test[first], y_test[first], probabilities[first]),
    }
    # Runs recorded before per-batch losses were kept have none to draw.
    if any(record.get("batch_losses") for record in history):
        images["batches"] = figures.batch_losses(history)
    fingerprint = run.meta.get("data_fingerprint")
    summary = final_figures(
        history, run.epoch, test_loss, test_accuracy, errors, len(y_test), fingerprint
    )
    page = Page(
        title=f"jaxmnist report: {config.preset}, {run.epoch} epochs",
        run_dir=str(run_dir),
        summary=summary,
        config=config.to_dict(),
        images=images,
        class_accuracy=accuracy,
        class_counts=counts,
        pairs=pairs,
        first_labels=y_test[first],
        first_probabilities=probabilities[first],
    )
    # In the page's order, so that the files are listed as the page shows them.
    files = {file: images[key] for key, (file, *_) in SECTIONS.items() if key in images}
    files[HTML] = render(page).encode("utf-8")
    return files


def check_out(out_dir: str | os.PathLike) -> None:
    """Fails now, before minutes of work, when a file stands where the output directory goes or
    its nearest existing directory cannot be written; `write` still reports what comes later."""
    out = Path(out_dir)
    blocked = _fs.blocking_file(out)
    if blocked is not None:
        raise _blocked(out, *blocked)
    existing = next((p for p in (out, *out.parents) if p.is_dir()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        problem = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))
        raise JaxmnistError(f"cannot write the report in {out}: {_problem(problem)}")


def _problem(error: OSError) -> str:
    return _fs.os_problem(error, elsewhere=ELSEWHERE)


def _blocked(out: Path, where: Path, mode: int) -> JaxmnistError:
    return JaxmnistError(
        f"cannot write the report in {out}: {where} is {_fs.describe(mode)}, not a directory; "
        f"{ELSEWHERE}"
    )


def write(out_dir: str | os.PathLike, files: dict[str, bytes], echo: Callable = lambda p: None):
    """Writes each file atomically into `out_dir` (created), in order; the paths written."""
    out = Path(out_dir)
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            written.append(_fs.write_atomic(out / name, data))
            echo(written[-1])
    except OSError as error:
        blocked = _fs.blocking_file(out)
        if blocked is not None:
            raise _blocked(out, *blocked) from None
        raise JaxmnistError(f"cannot write the report in {out}: {_problem(error)}") from None
    return written


def write_report(run_dir, data, *, out_dir=None, echo: Callable = lambda p: None) -> Path:
    """Writes the report of the run in `run_dir` (a checkpoint directory) on `data`, the
    ((x_train, y_train), (x_test, y_test)) it trained on, into `out_dir` (default
    RUN_DIR/report); returns the path of report.html. `echo` sees each path once written.
    JaxmnistError (one line) for no run, no finished epoch, other data, or no matplotlib."""
    figures.require_matplotlib()
    run = load(run_dir)
    out = Path(run_dir) / "report" if out_dir is None else Path(out_dir)
    check_out(out)
    check_data(run, data, run_dir)
    return write(out, build(run, data, run_dir), echo)[-1]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prefix=PREFIX,
        prog="python -m jaxmnist.report",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=path, metavar="RUN_DIR", help="the run's checkpoint dir")
    parser.add_argument(
        "--data-dir",
        type=path,
        metavar="PATH",
        help="MNIST file or directory the run trained on (default: $JAXMNIST_DATA, then the "
        "cache, then download)",
    )
    parser.add_argument(
        "--out",
        type=path,
        metavar="DIR",
        help="where to write the report (default: RUN_DIR/report)",
    )
    return parser


def report(args: argparse.Namespace) -> int:
    # The cheap checks first: a missing matplotlib, run or output directory costs no data load.
    figures.require_matplotlib()
    run = load(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / "report"
    check_out(out)
    import jaxmnist.data

    data = jaxmnist.data.load_mnist(args.data_dir)
    check_data(run, data, args.run_dir)
    files = build(run, data, args.run_dir)
    paths = write(out, files, echo=lambda written: print(f"wrote {written}"))
    print(f"report: {paths[-1]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_main(PREFIX, lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
