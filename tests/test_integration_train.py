"""The chapter's two programs on the real MNIST, through the CLI (marked: needs the real data).

Both full reproductions (keras 5 epochs, naive 10 epochs, one seed) take seconds on CPU.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from jaxmnist import train

pytestmark = pytest.mark.integration


def _train(argv, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = train.main(
            [*argv, "--no-checkpoint", "--no-compile-cache", "--metrics-out", str(metrics)]
        )
    assert code == 0
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return out.getvalue(), [r for r in records if r["event"] == "epoch"], records[-1]


def test_one_epoch_of_the_keras_preset_reaches_95_percent(tmp_path):
    out, epochs, test = _train(["--epochs", "1"], tmp_path)
    lines = out.splitlines()
    assert lines[0] == "Epoch 1/1"
    assert re.fullmatch(
        r"469/469 ━{20} \d+s \d+(ms|us)/step - accuracy: 0\.\d{4} - loss: \d+\.\d{4}", lines[1]
    )
    assert epochs[0]["steps"] == 469
    assert test["accuracy"] >= 0.95
    assert lines[-1] == f"test accuracy: {test['accuracy']:.4f} - test loss: {test['loss']:.4f}"


def test_the_keras_program_reproduces_the_chapter(tmp_path):
    # The bar: last epoch's training accuracy >= 0.985, test accuracy >= 0.977
    # (the chapter's code run on this data printed 0.9905 and 0.9796).
    out, epochs, test = _train([], tmp_path)
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5]
    losses = [e["loss"] for e in epochs]
    assert losses == sorted(losses, reverse=True)
    assert epochs[-1]["accuracy"] >= 0.985
    assert test["accuracy"] >= 0.977
    assert out.count("469/469 ") == 5


def test_the_naive_program_reproduces_the_chapter(tmp_path):
    # The bar for each seed: the last epoch's printed losses within 0.55-0.85, test
    # accuracy 0.79-0.84 (the chapter: 0.68 0.72 0.60 0.66 0.73, test 0.82). Seed 0 here.
    out, epochs, test = _train(["--preset", "naive", "--seed", "0"], tmp_path)
    lines = out.splitlines()
    assert lines[0] == "epoch 0" and len(lines) == 10 * 6 + 1
    last = lines[lines.index("epoch 9") + 1 : -1]
    assert [line.split(":")[0] for line in last] == [
        f"loss at batch {b}" for b in range(0, 500, 100)
    ]
    for line in last:
        assert 0.55 <= float(line.split(": ")[1]) <= 0.85, line
    assert float(lines[1].split(": ")[1]) > 2.0  # the naive init starts high (chapter: 4.74)
    losses = [e["loss"] for e in epochs]
    assert losses == sorted(losses, reverse=True) and len(set(losses)) == 10
    assert 0.79 <= test["accuracy"] <= 0.84
