"""What every peer program shares: its flags, the data, and the metrics protocol's JSON lines.

The protocol, one JSON object per line in `--metrics-out`, written by jaxmnist's CLI and each peer:
    {"event": "start", "system": ..., "device": ..., "config": {...}}
    {"event": "epoch", "epoch": 1, "epochs": 5, "steps": 469, "seconds": ..., "loss": ...,
     "accuracy": ...}
    {"event": "test", "loss": ..., "accuracy": ..., "seconds": ...}
A peer that cannot run here (framework missing, no GPU) writes {"event": "skip", "reason": ...} and
exits 0, so the benchmark reports it as skipped instead of failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any, NoReturn

import numpy as np


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The flags every peer accepts (the same names as `python -m jaxmnist.train`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=512, help="width of the hidden layer")
    parser.add_argument(
        "--train-samples", type=int, default=0, help="train on the first N images (0: all 60000)"
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--metrics-out", metavar="FILE", help="write the metrics as JSON lines (default: stdout)"
    )
    return parser.parse_args(argv)


class Metrics:
    """Writes protocol events as JSON lines, flushed one by one: a crash loses none."""

    def __init__(self, path: str | None):
        self._file: IO[str] = open(path, "w") if path else sys.stdout  # noqa: SIM115

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not sys.stdout:
            self._file.close()

    def emit(self, event: str, **fields: Any) -> None:
        self._file.write(json.dumps({"event": event, **fields}) + "\n")
        self._file.flush()

    def skip(self, reason: str) -> NoReturn:
        """Records why this peer cannot run here and exits successfully."""
        self.emit("skip", reason=reason)
        print(f"skipped: {reason}", file=sys.stderr)
        self.__exit__()
        sys.exit(0)


def load_data(train_samples: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST through jaxmnist's own loader: x as (N, 784) float32 in [0, 1], y as int64."""
    from jaxmnist.data import load_mnist, preprocess

    (x_train, y_train), (x_test, y_test) = load_mnist()
    if train_samples:
        x_train, y_train = x_train[:train_samples], y_train[:train_samples]
    return (
        preprocess(x_train),
        y_train.astype(np.int64),
        preprocess(x_test),
        y_test.astype(np.int64),
    )
