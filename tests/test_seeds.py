"""--seeds: several seeds in one program, each the run its --seed alone would make."""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
import pytest
from _synthetic import synthetic_mnist
from test_cli import _main

import jaxmnist.data
from jaxmnist import checkpoint
from jaxmnist._cli import seed_list
from jaxmnist.callbacks import EpochResult
from jaxmnist.config import PRESETS
from jaxmnist.progress import seeds_line, spread
from jaxmnist.runner import train_and_evaluate
from jaxmnist.seeds import train_and_evaluate_seeds

# 520 images in batches of 128: a ragged last batch of 8. Label noise keeps accuracy below 1.
DATA = synthetic_mnist(520, 96, label_noise=0.1)
FAST = ["--hidden", "32", "--no-compile-cache", "--epochs", "2"]


def _leaves(state):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(state)]


@pytest.mark.parametrize("preset", ["keras", "naive"])
@pytest.mark.parametrize("how", ["sequential", "vmap"])
def test_each_seed_matches_its_own_run(preset, how):
    config = PRESETS[preset].replace(epochs=2, hidden=32, validation_split=0.2)
    together = train_and_evaluate_seeds(config, DATA, (0, 3), how=how)
    for seed, result in zip((0, 3), together, strict=True):
        alone = train_and_evaluate(config.replace(seed=seed), DATA)
        for a, b in zip(_leaves(alone.state), _leaves(result.state), strict=True):
            if how == "sequential":  # the same program on the same shapes: bitwise
                np.testing.assert_array_equal(a, b)
            else:  # vmapped products may sum in another order
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        assert [r["epoch"] for r in result.history] == [1, 2]
        for mine, theirs in zip(result.history, alone.history, strict=True):
            assert mine["val_accuracy"] == pytest.approx(theirs["val_accuracy"], abs=1e-6)
            np.testing.assert_allclose(mine["batch_losses"], theirs["batch_losses"], atol=1e-5)
        assert result.test_accuracy == pytest.approx(alone.test_accuracy, abs=1e-6)
    # Different seeds train different models.
    assert not np.array_equal(_leaves(together[0].state)[0], _leaves(together[1].state)[0])


def test_seed_list_reads_ranges_and_lists():
    assert seed_list("0-3,7") == (0, 1, 2, 3, 7)
    assert seed_list("5") == (5,)
    for bad in ["", "3-1", "0,0", "a", "0-9999999", "1,-2"]:
        with pytest.raises(argparse.ArgumentTypeError):
            seed_list(bad)


def test_the_seeds_line_is_the_mean_spread_and_range():
    results = [EpochResult(2, loss, acc, 1.0, []) for loss, acc in ((0.2, 0.9), (0.4, 0.7))]
    line = seeds_line(results, 5)
    assert line == (
        "Epoch 2/5 - 2 seeds - 2s - accuracy: 0.8000 ± 0.1000 (0.7000-0.9000)"
        " - loss: 0.3000 ± 0.1000 (0.2000-0.4000)"
    )
    assert spread([1.0, 1.0]) == "1.0000 ± 0.0000 (1.0000-1.0000)"


@pytest.fixture
def cli(monkeypatch):
    """test_cli's in-process `python -m jaxmnist.train`, on this module's data."""
    monkeypatch.setattr(jaxmnist.data, "load_mnist", lambda *args, **kwargs: DATA)
    return _main


def test_cli_seeds_print_each_and_keep_each_run(cli, tmp_path):
    root, metrics = tmp_path / "seeds", tmp_path / "metrics.jsonl"
    code, out, err = cli(
        [*FAST, "--seeds", "0,2", "--checkpoint-dir", str(root), "--metrics-out", str(metrics)]
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Epoch 1/2 - 2 seeds - ") and lines[1].startswith("Epoch 2/2")
    assert lines[2].startswith("seed 0: test accuracy: ")
    assert lines[3].startswith("seed 2: test accuracy: ")
    assert lines[4].startswith("2 seeds: test accuracy: ") and "±" in lines[4]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [(r["seed"], r["epoch"]) for r in records if r["event"] == "epoch"] == [
        (0, 1), (2, 1), (0, 2), (2, 2),
    ]  # fmt: skip
    tests = [r for r in records if r["event"] == "test"]
    assert [r["seed"] for r in tests] == [0, 2]
    # Seed 2's checkpoint is the one `--seed 2` writes.
    code, out, _ = cli([*FAST, "--seed", "2", "--checkpoint-dir", str(tmp_path / "alone")])
    assert code == 0
    assert out.splitlines()[-1] == lines[3].removeprefix("seed 2: ")
    together, meta = checkpoint.load_checkpoint(root / "seed-2")
    alone, _ = checkpoint.load_checkpoint(tmp_path / "alone")
    assert meta["config"]["seed"] == 2 and meta["epoch"] == 2
    for name in alone:
        np.testing.assert_array_equal(together[name], alone[name])
    # ...and the seeds resume together.
    code, out, err = cli(
        [*FAST[:-1], "3", "--seeds", "0,2", "--checkpoint-dir", str(root), "--resume"]
    )
    assert code == 0, err
    assert checkpoint.load_checkpoint(root / "seed-0")[1]["epoch"] == 3


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--seeds", "0-1", "--seed", "3"], "--seed and --seeds together"),
        (["--seeds", "0-1", "--devices", "2"], "--seeds trains on one device"),
        (["--seeds", "0-1", "--loop", "batch"], "--seeds runs in the scan loop"),
        (["--seeds", "0-1", "--report"], "--report takes one run"),
        (["--seeds", "1-0"], "argument --seeds"),
    ],
)
def test_bad_seed_flags_are_one_line(cli, flags, expected):
    code, out, err = cli([*FAST, "--no-checkpoint", *flags])
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1, err
