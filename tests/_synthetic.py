"""Small MNIST-shaped data with learnable structure, for fast offline tests of training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def synthetic_mnist(
    n_train: int = 512, n_test: int = 256, *, seed: int = 0, label_noise: float = 0.0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_test, y_test)) as load_mnist gives them: uint8 [N, 28, 28], [N].

    Each class has a fixed random stroke pattern; an image is its class's pattern with a quarter of
    its pixels dropped and some background noise, so a small MLP learns it in an epoch or two.
    A `label_noise` fraction of labels is replaced by random ones, which keeps accuracy below 1.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28)) < 0.2

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        keep = rng.random((n, 28, 28)) < 0.75
        noise = rng.random((n, 28, 28)) < 0.03
        on = (prototypes[labels] & keep) | noise
        intensity = rng.integers(128, 256, (n, 28, 28))
        noisy = rng.random(n) < label_noise
        labels = np.where(noisy, rng.integers(0, 10, n), labels).astype(np.uint8)
        return (on * intensity).astype(np.uint8), labels

    return draw(n_train), draw(n_test)


def train_figures(metrics: Path, *flags: str, env: dict | None = None) -> list[dict]:
    """A whole training process on 600 synthetic images (`_synthetic_run.py`), run with `flags`
    and `env` added to this one's: each epoch's and the test's loss, accuracy and batch losses."""
    runner = Path(__file__).with_name("_synthetic_run.py")
    subprocess.run(
        [sys.executable, str(runner), "600", *flags, "--metrics-out", str(metrics)],
        env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})},
        check=True,
        capture_output=True,
    )
    events = [json.loads(line) for line in Path(metrics).read_text().splitlines()]
    return [
        {k: e.get(k) for k in ("event", "loss", "accuracy", "batch_losses")}
        for e in events
        if e["event"] in ("epoch", "test")
    ]
