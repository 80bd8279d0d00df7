"""`python -m jaxmnist.predict IMAGE...`: a trained run's digit and ten probabilities per image.

Every failure ends in one line on stderr: a bad image is reported and skipped (the others are
still predicted, and the exit status is 1); a missing checkpoint or a bad flag stops at once.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from jaxmnist import digits
from jaxmnist._cli import OneLineParser, integer, path, run_main
from jaxmnist.errors import CheckpointError, ImageError, UsageError

PREFIX = "jaxmnist.predict"
DEFAULT_CHECKPOINT_DIR = "runs/keras-seed0"  # where `python -m jaxmnist.train` writes by default
DESCRIPTION = """\
Predict the digit in each image with the model of a run of `python -m jaxmnist.train`.

An image may be a PNG, JPEG or BMP of any size, grey or colour, with or without transparency,
dark ink on light paper or light ink on dark, the digit anywhere in it: one digit per image.
It is prepared as MNIST's digits were: made grey, cropped to the ink, scaled to fit 20x20
pixels (thin pen strokes widened to MNIST's), and centred by its centre of mass in 28x28.
"""
EPILOG = f"""\
output, one line per image (--show adds the 28x28 digit the model saw, '.' for 0, '@' for 255):
  seven.png: 7  (p=0.98)  0:0.00 1:0.00 2:0.01 3:0.00 4:0.00 5:0.00 6:0.00 7:0.98 8:0.00 9:0.01
with --json, one object per line:
  {{"path": "seven.png", "prediction": 7, "probabilities": [0.0001, ...]}}
  ("test_index" and "label" for --test-index; "digit", 28 rows of 28 values 0..255, with --show)

examples:
  python -m jaxmnist.train                     # trains and writes {DEFAULT_CHECKPOINT_DIR}
  python -m jaxmnist.predict seven.png photo.jpg
  python -m jaxmnist.predict --show --test-index 0 --test-index 1
"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prefix=PREFIX,
        prog="python -m jaxmnist.predict",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="*", type=path, metavar="IMAGE", help="PNG, JPEG or BMP")
    parser.add_argument(
        "--checkpoint-dir",
        type=path,
        default=DEFAULT_CHECKPOINT_DIR,
        metavar="DIR",
        help=f"the run whose model predicts (default: {DEFAULT_CHECKPOINT_DIR}, the default run's)",
    )
    parser.add_argument(
        "--test-index",
        type=integer,
        action="append",
        default=[],
        metavar="I",
        help="also predict digit I of the MNIST test set (0..9999), with its label; repeatable",
    )
    parser.add_argument(
        "--data-dir",
        type=path,
        metavar="PATH",
        help="MNIST file or directory for --test-index (default: $JAXMNIST_DATA, the cache, "
        "then download)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--show", action="store_true", help="also print the 28x28 the model saw")
    return parser


class Predictor:
    """The model of the run in `directory`, as probabilities of uint8 [28, 28] digits."""

    def __init__(self, directory: str):
        import jax

        from jaxmnist.data import preprocess
        from jaxmnist.model import chapter_model, predict
        from jaxmnist.resume import load_run

        run = load_run(directory)
        if run.epoch == 0:
            raise CheckpointError(
                f"{directory} holds no finished epoch, only the untrained state, whose "
                "predictions are noise: train it for an epoch first (add --resume to its train "
                "command)"
            )
        spec, self._params = chapter_model(run.config.hidden), run.state.params
        # Parameters as arguments, not constants folded into the compiled program.
        self._probabilities = jax.jit(lambda params, x: predict(params, preprocess(x), spec))

    def __call__(self, digit: np.ndarray) -> np.ndarray:
        return np.asarray(self._probabilities(self._params, digit[None]), np.float64)[0]


def mnist_test_digits(
    indices: list[int], data_dir: str | None
) -> list[tuple[int, np.ndarray, int]]:
    """(index, digit, label) of each of `indices` in the MNIST test set."""
    from jaxmnist.data import load_mnist

    _, (x_test, y_test) = load_mnist(data_dir)
    for index in indices:
        if index >= len(x_test):
            raise UsageError(
                f"`test_index` {index} is out of range: the test set has {len(x_test)} digits "
                f"(0..{len(x_test) - 1})"
            )
    return [(index, x_test[index], int(y_test[index])) for index in indices]


def report(fields: dict, probabilities: np.ndarray, digit: np.ndarray, args) -> str:
    """One prediction as the lines to print: text or a JSON object."""
    prediction = int(probabilities.argmax())
    if args.json:
        record = {
            **fields,
            "prediction": prediction,
            "probabilities": [round(float(p), 6) for p in probabilities],
        }
        if args.show:
            record["digit"] = digit.tolist()
        return json.dumps(record)
    name = fields.get("path") or f"test[{fields['test_index']}]"
    spread = " ".join(f"{k}:{p:.2f}" for k, p in enumerate(probabilities))
    line = f"{name}: {prediction}  (p={probabilities[prediction]:.2f})  {spread}"
    if "label" in fields:
        line += f"  label: {fields['label']}"
    if args.show:
        line += "\n" + digits.as_text(digit)
    return line


def prepared(image: str) -> np.ndarray | ImageError:
    """The user's image as the model's 28x28 input, or the one-line reason it cannot be."""
    name = digits.printable(image)
    try:
        grey = digits.load_image(image)  # its errors name the file
    except ImageError as error:
        return error
    try:
        return digits.to_mnist(grey)
    except ImageError as error:
        return ImageError(f"{name}: {error}")


def run(args: argparse.Namespace) -> int:
    if not args.images and not args.test_index:
        raise UsageError("nothing to predict: name an IMAGE, or pass `test_index`")
    if args.images:
        digits.require_pillow()  # else every image fails alike: say so once, before jax loads
    predictor = Predictor(args.checkpoint_dir)
    # Checked before any image, so that a bad index is the only output.
    tests = mnist_test_digits(args.test_index, args.data_dir) if args.test_index else []
    failed = 0
    for image in args.images:
        digit = prepared(image)
        if isinstance(digit, ImageError):
            print(f"{PREFIX}: error: {digit}", file=sys.stderr)
            failed += 1
        else:
            fields = {"path": digits.printable(image)}
            print(report(fields, predictor(digit), digit, args), flush=True)
    for index, digit, label in tests:
        fields = {"test_index": index, "label": label}
        print(report(fields, predictor(digit), digit, args), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_main(PREFIX, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
