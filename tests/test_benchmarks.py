"""The benchmark suite: FLOP counts, statistics, ratios, tables, skipping, and tiny real runs.

No test asserts a time: only that the numbers are well-formed and sane (positive, finite, in range).
"""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest

from benchmarks import floor
from benchmarks._report import Summary, add_ratios, markdown_table, summarise, target_lines
from benchmarks._runner import Run, System, missing_modules, run_system
from benchmarks.peers._common import Metrics


def _run(name: str, epoch_seconds: list[float], wall: float, test_acc: float = 0.97) -> Run:
    events = [{"event": "start", "system": name}]
    events += [
        {"event": "epoch", "epoch": i + 1, "seconds": s, "loss": 0.1, "accuracy": 0.9 + i / 100}
        for i, s in enumerate(epoch_seconds)
    ]
    events.append({"event": "test", "loss": 0.1, "accuracy": test_acc, "seconds": 0.1})
    return Run(name, 0, "ok", "", wall, 300 * 2**20, events)


# --- the floor -------------------------------------------------------------------------------


def test_epoch_flops_is_the_hand_count():
    # Per image: forward 784*512 + 512*10, backward dW2 512*10, dh 10*512, dW1 784*512 MACs.
    macs = 784 * 512 + 512 * 10 + 512 * 10 + 10 * 512 + 784 * 512  # = 818_176
    assert floor.epoch_flops(60_000, 512) == 2 * macs * 60_000 == 98_181_120_000
    per_step = sum(p.flops for p in floor.step_products(128, 512))
    assert per_step == 2 * macs * 128


def test_step_products_have_the_steps_shapes():
    mkn = [p.mkn for p in floor.step_products(128, 512)]
    assert mkn == [(128, 784, 512), (128, 512, 10), (512, 128, 10), (128, 10, 512), (784, 128, 512)]


def test_floor_at_tiny_shapes_gives_positive_finite_rates():
    result = floor.measure_floor(batch=4, hidden=8, samples=16, budget=0.001)
    assert result["steps"] == 4
    for row in result["products"]:
        for key in ("numpy_gflops", "xla_gflops", "best_seconds"):
            assert math.isfinite(row[key]) and row[key] > 0
        assert row["best_seconds"] == min(row["numpy_seconds"], row["xla_seconds"])
    assert 0 < result["seconds"] <= min(result["numpy_seconds"], result["xla_seconds"])
    assert "GFLOP" in floor.markdown(result)


def test_timed_xla_loop_computes_each_product_as_the_step_does():
    # What is timed must be the step's product, transposes included, not some cheaper stand-in.
    for product in floor.step_products(batch=4, hidden=8):
        run, a, b = floor.xla_product_loop(product, repeats=3)
        lhs, rhs = floor._operands(product)
        lhs = lhs.T if product.transpose_lhs else lhs
        rhs = rhs.T if product.transpose_rhs else rhs
        np.testing.assert_allclose(np.asarray(run(a, b)), lhs @ rhs, rtol=1e-5, atol=1e-5)


def test_best_of_keeps_the_fastest_measurement_of_each_product():
    def made_up(numpy_s, xla_s):
        rows = [
            {"flops": 10**9, "numpy_seconds": n, "xla_seconds": x, "best_seconds": min(n, x)}
            for n, x in zip(numpy_s, xla_s, strict=True)
        ]
        return {"steps": 10, "products": rows}

    merged = floor.best_of(made_up([1.0, 4.0], [2.0, 3.0]), made_up([3.0, 2.0], [0.5, 5.0]))
    assert [r["best_seconds"] for r in merged["products"]] == [0.5, 2.0]
    assert merged["seconds"] == 10 * 2.5
    assert merged["numpy_seconds"] == 10 * (1.0 + 2.0)
    assert merged["products"][0]["xla_gflops"] == 2.0


# --- statistics, ratios, tables ----------------------------------------------------------------


def test_summary_pools_epochs_after_the_first_over_repeats():
    runs = [
        _run("a", [5.0, 1.0, 2.0, 3.0], 10.0, 0.96),
        _run("a", [4.0, 1.5, 2.5, 3.5], 12.0, 0.98),
    ]
    row = summarise("a", runs)
    assert row.status == "ok" and row.timed_epochs == 6 and row.repeats == 2
    assert (row.epoch_median, row.epoch_min, row.epoch_max) == (2.25, 1.0, 3.5)
    assert row.first_epoch == 4.5
    assert (row.wall_median, row.wall_min, row.wall_max) == (11.0, 10.0, 12.0)
    assert row.train_accuracy == pytest.approx(0.93) and row.test_accuracy == pytest.approx(0.97)
    assert row.max_rss_mib == 300


def test_ratios_to_the_baseline_and_the_floor():
    rows = [summarise("jaxmnist", [_run("jaxmnist", [3, 1, 1, 1], 5.0)])]
    rows.append(summarise("torch", [_run("torch", [3, 2, 2, 2], 20.0)]))
    add_ratios(rows, "jaxmnist", floor_seconds=0.5)
    assert (rows[0].vs_baseline, rows[0].vs_floor) == (1.0, 2.0)
    assert (rows[1].vs_baseline, rows[1].vs_floor, rows[1].wall_vs_baseline) == (2.0, 4.0, 4.0)
    assert any(
        "torch / jaxmnist s/epoch = 2.00 (target >= 2.0): met" in t for t in target_lines(rows)
    )


def test_ratios_are_nan_without_a_baseline():
    rows = [
        summarise("torch", [_run("torch", [3, 2, 2], 20.0)]),
        Summary("jaxmnist", status="failed"),
    ]
    add_ratios(rows, "jaxmnist", floor_seconds=0.0)
    assert math.isnan(rows[0].vs_baseline) and math.isnan(rows[0].vs_floor)
    assert target_lines(rows) == []


def test_a_failed_or_skipped_run_marks_the_row():
    ok, failed = _run("x", [2, 1], 3.0), Run("x", 1, "failed", "exit 1: boom")
    assert summarise("x", [ok, failed]).status == "failed"
    assert summarise("x", [Run("x", 0, "skipped", "no GPU")]).reason == "no GPU"
    assert summarise("x", []).status == "skipped"


def test_markdown_table_groups_rows_and_shows_skips_and_the_floor():
    rows = [
        summarise("jaxmnist", [_run("jaxmnist", [3, 1, 1], 5.0)]),
        Summary("keras-tf", status="skipped", reason="not installed: tensorflow"),
        summarise("jaxmnist-bf16", [_run("jaxmnist-bf16", [3, 0.5, 0.5], 5.0)], group="bfloat16"),
    ]
    made_up_floor = {"seconds": 0.5, "numpy_seconds": 0.8, "xla_seconds": 0.6}
    add_ratios(rows, "jaxmnist", made_up_floor["seconds"])
    table = markdown_table(rows, made_up_floor)
    float32, bfloat16 = table.split("**bfloat16**")
    assert "| jaxmnist | 1.000 |" in float32 and "skipped: not installed: tensorflow" in float32
    assert "| floor: numpy only | 0.800 |" in float32 and "floor:" not in bfloat16
    assert "| jaxmnist-bf16 | 0.500 |" in bfloat16
    header = table.splitlines()[2]
    assert all(line.count("|") == header.count("|") for line in table.splitlines() if "|" in line)


# --- running systems -----------------------------------------------------------------------------


def test_a_system_whose_module_is_missing_is_skipped_without_running(tmp_path):
    assert missing_modules(("json", "no_such_module_xyz", "no_such.sub")) == [
        "no_such_module_xyz",
        "no_such.sub",
    ]
    ghost = System("ghost", "no_such_module_xyz", requires=("no_such_module_xyz",))
    run = run_system(ghost, [], tmp_path)
    assert run.status == "skipped" and "no_such_module_xyz" in run.reason
    assert list(tmp_path.iterdir()) == []


_FAKE_PEER = """
import sys
from benchmarks.peers._common import Metrics, parse_args
args = parse_args("fake")
with Metrics(args.metrics_out) as metrics:
    if args.device == "gpu":
        metrics.skip("no GPU here")
    if args.epochs == 13:
        sys.exit("boom")
    metrics.emit("start", system="fake", device="cpu", config={})
    for epoch in range(1, args.epochs + 1):
        metrics.emit("epoch", epoch=epoch, epochs=args.epochs, steps=1, seconds=0.5 / epoch,
                     loss=1.0, accuracy=0.5)
    metrics.emit("test", loss=1.0, accuracy=0.5, seconds=0.1)
"""


@pytest.mark.parametrize(
    ("flags", "status", "reason"),
    [(["--epochs", "3"], "ok", ""), (["--device", "gpu"], "skipped", "no GPU here")]
    + [(["--epochs", "13"], "failed", "exit 1: boom")],
)
def test_run_system_reads_the_childs_metrics(tmp_path, monkeypatch, flags, status, reason):
    (tmp_path / "fake_peer.py").write_text(textwrap.dedent(_FAKE_PEER))
    fake = System("fake", "fake_peer", env={"PYTHONPATH": str(tmp_path)})
    run = run_system(fake, flags, tmp_path / "out")
    assert (run.status, run.reason.split(" (see")[0]) == (status, reason)
    assert run.wall_seconds > 0
    if status == "ok":
        assert [e["epoch"] for e in run.of("epoch")] == [1, 2, 3] and run.max_rss_bytes > 0
        assert summarise("fake", [run]).epoch_median == pytest.approx((0.5 / 2 + 0.5 / 3) / 2)


def test_metrics_writes_json_lines_and_skip_exits_cleanly(tmp_path):
    path = tmp_path / "m.jsonl"
    with pytest.raises(SystemExit) as exit_, Metrics(str(path)) as metrics:
        metrics.emit("start", system="x", device="cpu", config={"a": 1})
        metrics.skip("nothing to run on")
    assert exit_.value.code == 0
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert events == [
        {"event": "start", "system": "x", "device": "cpu", "config": {"a": 1}},
        {"event": "skip", "reason": "nothing to run on"},
    ]


def test_torch_peer_rmsprop_has_keras_semantics():
    torch = pytest.importorskip("torch")
    from benchmarks.peers.torch_mlp import _rmsprop_step

    rng = np.random.default_rng(0)
    p0, g, v0 = (rng.standard_normal(5).astype(np.float32) for _ in range(3))
    v0 = np.abs(v0) * 1e-6  # tiny: where eps inside or outside the sqrt differ
    param, velocity = torch.tensor(p0), torch.tensor(v0)
    param.grad = torch.tensor(g)
    _rmsprop_step([param], [velocity])
    v = 0.9 * v0.astype(np.float64) + 0.1 * g.astype(np.float64) ** 2
    expected = p0 - 1e-3 * g / np.sqrt(v + 1e-7)
    np.testing.assert_allclose(velocity.numpy(), v, rtol=1e-5)
    np.testing.assert_allclose(param.numpy(), expected, rtol=1e-5)


# --- tiny real runs (real data, the real CLI and the installed peers) ----------------------------


def _sane(row: dict) -> None:
    assert row["epoch_median"] > 0 and row["first_epoch"] > 0 and row["wall_median"] > 0
    assert 0 <= row["train_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
    assert math.isfinite(row["vs_baseline"]) and row["vs_baseline"] > 0
    assert math.isfinite(row["vs_floor"]) and row["vs_floor"] > 0


@pytest.mark.integration
def test_compare_runs_every_system_tiny(tmp_path):
    from benchmarks import compare

    argv = ["--train-samples", "1024", "--epochs", "2", "--repeats", "1", "--out", str(tmp_path)]
    result = compare.main([*argv, "--floor-budget", "0.02"])
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["jaxmnist"]["status"] == "ok", rows["jaxmnist"]["reason"]
    assert rows["jaxmnist"]["vs_baseline"] == 1.0
    for row in rows.values():
        assert row["status"] in ("ok", "skipped"), row["reason"]  # never failed
        if row["status"] == "ok":
            _sane(row)
    assert result["floor"]["seconds"] > 0 and result["floor"]["epoch_flops"] > 0
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert "| jaxmnist |" in (tmp_path / "compare.md").read_text()


@pytest.mark.integration
def test_sweep_runs_tiny(tmp_path):
    from benchmarks import sweep

    argv = ["--batch-sizes", "128,256", "--hiddens", "512,1024", "--train-samples", "1024"]
    rows = sweep.main([*argv, "--epochs", "2", "--out", str(tmp_path)])
    assert [(r["axis"], r["batch_size"], r["hidden"]) for r in rows] == [
        ("batch_size", 128, 512),
        ("batch_size", 256, 512),
        ("hidden", 128, 512),
        ("hidden", 128, 1024),
    ]
    for row in rows:
        assert row["status"] == "ok", row["reason"]
        assert row["samples_per_second"] > 0 and row["max_rss_mib"] > 0
        assert 0 <= row["test_accuracy"] <= 1
    assert (tmp_path / "sweep.json").exists() and (tmp_path / "sweep.md").exists()


# --- scaling ---------------------------------------------------------------------------------


def test_scaling_twins_run_one_devices_share_of_every_step():
    from benchmarks import scaling

    args = scaling.parse_args(["--devices", "1,3", "--processes", "2", "--train-samples", "1000"])
    rows = scaling.configurations(args)
    assert [(r["name"], r["parts"], r["twin"]) for r in rows] == [
        ("1 process x 1 device(s)", 1, None),
        # 128 / 3 rounds up to 43 images per device: the padded global batch of 129.
        ("1 process x 3 device(s)", 3, (43, 334)),
        ("2 processes x 1 device", 2, (64, 500)),
    ]
    # The twin takes as many steps as the run it stands for.
    for row in rows[1:]:
        batch, samples = row["twin"]
        assert -(-samples // batch) == -(-1000 // 128)


def test_scaling_summary_and_table_from_known_epochs():
    from benchmarks import scaling

    row = {"name": "1 process x 2 device(s)", "parts": 2}
    runs = [{"status": "ok", "epochs": [2.0, 4.0, 3.0], "wall": 10.0}]
    twins = [{"status": "ok", "epochs": [1.0, 1.5, 2.0], "wall": 5.0}]
    summary = scaling._summary(row, runs, twins, samples=6000)
    assert summary["epoch_median"] == 3.0 and summary["samples_per_second"] == 2000.0
    assert summary["communication_share"] == pytest.approx(0.5)  # 1 - 1.5 / 3
    one = {"name": "1 process x 1 device(s)", "status": "ok", "parts": 1, "epoch_median": 1.5}
    one.update(epoch_min=1.5, epoch_max=1.5, samples_per_second=4000.0)
    one.update(communication_share=math.nan)
    machine = {"cpu": "test CPU", "cores": 2, "versions": {"jax": "0"}}
    table = scaling.markdown([one, summary], machine, "cpu")
    assert "| 1 process x 2 device(s) | 3.000 (2.000-4.000) | 2,000 | 0.50x | 50% |" in table
    assert "not a speed-up" in table
    failed = scaling._summary(row, [{"status": "failed", "reason": "exit [1]"}], [], 6000)
    assert failed["status"] == "failed"


@pytest.mark.integration
def test_scaling_runs_tiny(tmp_path):
    from benchmarks import scaling

    argv = ["--devices", "1,2", "--processes", "2", "--train-samples", "1024", "--epochs", "2"]
    rows = scaling.main([*argv, "--out", str(tmp_path)])
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"], rows
    for row in rows:
        assert row["epoch_median"] > 0 and row["samples_per_second"] > 0
    for row in rows[1:]:
        assert 0 <= row["communication_share"] <= 1 and row["compute_median"] > 0
    assert (tmp_path / "scaling.md").exists() and (tmp_path / "scaling.json").exists()


# --- speedrun --------------------------------------------------------------------------------


def test_speedrun_first_reaching_and_accuracy_summary_by_hand():
    from benchmarks import speedrun

    assert speedrun.first_reaching([0.97, 0.98, 0.99]) == 2
    assert speedrun.first_reaching([0.97, 0.979]) is None
    summary = speedrun.accuracy_summary([[0.97, 0.982], [0.975, 0.978]])
    assert summary["mean"] == pytest.approx(0.980) and summary["std"] == pytest.approx(0.002)
    assert (summary["min"], summary["max"], summary["seeds"]) == (0.978, 0.982, 2)
    assert summary["mean_by_epoch"] == pytest.approx([0.9725, 0.980])
    assert summary["epoch_reaching"] == 2 and summary["seeds_reaching"] == 1


def test_speedrun_rows_time_to_target_and_goals_from_known_runs():
    from benchmarks import speedrun

    fast = speedrun.timing_row(
        "fast", [_run("fast", [0.4, 0.2], 2.0), _run("fast", [0.5, 0.3], 3.0)]
    )
    keras = speedrun.timing_row("keras", [_run("keras", [0.5, 0.4, 0.4, 0.4, 0.4], 4.0)])
    assert fast["training"] == pytest.approx({"median": 0.7, "min": 0.6, "max": 0.8})
    assert fast["process"]["median"] == 2.5 and fast["epoch_seconds"] == pytest.approx([0.45, 0.25])
    fast["accuracy"] = speedrun.accuracy_summary([[0.97, 0.981], [0.975, 0.982]])
    keras["accuracy"] = speedrun.accuracy_summary([[0.95, 0.96, 0.97, 0.975, 0.979]])
    assert speedrun.time_to_target(fast) == pytest.approx(0.7)
    assert math.isnan(speedrun.time_to_target(keras))  # it never reached 98%
    goals = speedrun.goal_lines([fast, keras])
    assert goals[0] == "- fast / keras preset, training time: 0.33x (goal <= 0.25x): NOT met"
    assert goals[1] == "- fast / keras preset, whole process: 0.62x (goal <= 0.5x): NOT met"
    assert goals[2].endswith(": met") and "mean 0.9815, lowest 0.9810" in goals[2]
    table = speedrun.markdown([fast, keras], {"cpu": "test CPU", "cores": 2}, "cpu")
    assert "| fast | 0.700 (0.600-0.800) | 2.50 (2.00-3.00) |" in table
    assert "| epoch 2 | 0.700 |" in table and "no (0.9790 at last)" in table
    failed = speedrun.timing_row("keras-jax", [Run("keras-jax", 0, "skipped", "not installed")])
    assert failed["status"] == "skipped" and "not installed" in speedrun.markdown(
        [failed], {}, "cpu"
    )


@pytest.mark.integration
def test_speedrun_runs_tiny(tmp_path):
    from benchmarks import speedrun

    argv = ["--repeats", "1", "--seeds", "2", "--train-samples", "1024", "--no-keras"]
    rows = speedrun.main([*argv, "--out", str(tmp_path)])
    assert [r["name"] for r in rows] == ["fast", "keras"]
    for row in rows:
        assert row["status"] == "ok", row
        assert 0 < row["training"]["median"] < row["process"]["median"]
        curves = row["accuracy"]["curves"]
        assert len(curves) == 2 and all(0.5 < a <= 1 for curve in curves for a in curve)
    assert [len(c) for c in rows[0]["accuracy"]["curves"]] == [3, 3]  # the fast preset's epochs
    assert [len(c) for c in rows[1]["accuracy"]["curves"]] == [5, 5]
    saved = json.loads((tmp_path / "speedrun.json").read_text())
    assert saved["rows"][0]["name"] == "fast" and (tmp_path / "speedrun.md").exists()


def test_speedrun_json_has_no_nan_and_keeps_strings():
    from benchmarks import speedrun

    cleaned = speedrun._finite({"a": [math.nan, 1.0, {"b": math.inf}], "reason": "NaN in log"})
    assert cleaned == {"a": [None, 1.0, {"b": None}], "reason": "NaN in log"}
    json.dumps(cleaned, allow_nan=False)


@pytest.mark.parametrize(
    "argv", [["--repeats", "0"], ["--timeout", "-1"], ["--train-samples", "-5"]]
)
def test_speedrun_rejects_bad_arguments(argv, capsys):
    from benchmarks import speedrun

    with pytest.raises(SystemExit) as stopped:
        speedrun.parse_args(argv)
    assert stopped.value.code == 2 and "error:" in capsys.readouterr().err


# --- the GPU measurements ----------------------------------------------------------------------


def _seeds_row(how: str, seeds: int, median: float) -> dict:
    return {
        "how": how,
        "seeds": seeds,
        "median": median,
        "min": median,
        "max": median,
        "seed_epochs_per_second": seeds / median,
        "images_per_second": seeds * 60000 / median,
        "test_accuracy": 0.98,
    }


def test_gpu_seeds_table_compares_each_count_with_its_seeds_in_turn():
    from benchmarks import gpu

    rows = [_seeds_row("vmap", 10, 0.05), _seeds_row("vmap", 100, 0.2)]
    rows.append(_seeds_row("sequential", 10, 0.2))
    lines = gpu.seeds_table(rows).splitlines()
    # 10 seeds vmapped: 50 ms an epoch, 200 seed-epochs/s, 4x the 200 ms of the seeds in turn
    assert lines[2] == "| 10 | vmap | 50.0 (50.0-50.0) | 200.0 | 12,000,000 | 4.00 | 0.9800 |"
    assert lines[3].startswith("| 100 | vmap | 200.0 (200.0-200.0) | 500.0 |")
    assert "| - |" in lines[3]  # no 100 seeds in turn to compare with
    assert lines[4].split("|")[6].strip() == "1.00"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"name": "jaxmnist", "status": "ok", "epoch_median": 0.0085}], "8.5 ms an epoch"),
        ([{"name": "jaxmnist", "status": "ok", "epoch_median": 0.012}], "(goal under 10 ms: not"),
        ([{"name": "jaxmnist", "status": "failed", "epoch_median": math.nan}], "did not run"),
        ([], "did not run"),
    ],
)
def test_gpu_epoch_goal_line(rows, expected):
    from benchmarks import gpu

    line = gpu.epoch_goal_line({"rows": rows})
    assert expected in line
    assert ("10 ms: met)" in line) == (rows != [] and rows[0]["epoch_median"] < 0.010)


@pytest.mark.parametrize(
    "argv",
    [["--seed-counts", "0,10"], ["--seed-counts", "a"], ["--parts", "floor"], ["--epochs", "1"]],
)
def test_gpu_rejects_bad_arguments(argv, capsys):
    from benchmarks import gpu

    with pytest.raises(SystemExit) as stopped:
        gpu.parse_args(argv)
    assert stopped.value.code == 2 and "error:" in capsys.readouterr().err


def test_gpu_a_failing_part_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    from benchmarks import gpu, speedrun

    def broken(argv):
        raise RuntimeError("the speedrun broke\n(on two lines)")

    monkeypatch.setattr(speedrun, "main", broken)
    monkeypatch.setattr(gpu, "seeds_rates", lambda *args: [_seeds_row("vmap", 10, 0.05)])
    argv = ["--device", "cpu", "--parts", "speedrun,seeds", "--out", str(tmp_path)]
    result = gpu.main(argv)
    assert result["errors"] == {"speedrun": "RuntimeError: the speedrun broke (on two lines)"}
    assert result["seeds"][0]["seeds"] == 10 and "speedrun" not in result
    report = (tmp_path / "gpu.md").read_text()
    assert "- speedrun: RuntimeError: the speedrun broke" in report and "| 10 | vmap |" in report
    assert json.loads((tmp_path / "gpu.json").read_text())["errors"] == result["errors"]


@pytest.mark.integration
def test_gpu_measurements_run_tiny_on_the_cpu(tmp_path):
    from benchmarks import gpu

    argv = ["--device", "cpu", "--train-samples", "1024", "--repeats", "1", "--epochs", "2"]
    argv += ["--seeds", "2", "--seed-counts", "1,2", "--seed-epochs", "2", "--no-keras"]
    result = gpu.main([*argv, "--out", str(tmp_path)])
    rows = {r["name"]: r for r in result["compare"]["rows"]}
    assert rows["jaxmnist"]["status"] == rows["jaxmnist-bf16"]["status"] == "ok"
    assert [r["name"] for r in result["speedrun"]] == ["fast", "keras"]
    seeds = {(r["how"], r["seeds"]): r for r in result["seeds"]}
    assert sorted(seeds) == [("sequential", 1), ("sequential", 2), ("vmap", 1), ("vmap", 2)]
    for (_, count), row in seeds.items():
        assert 0 < row["min"] <= row["median"] <= row["max"]
        assert row["images_per_second"] == pytest.approx(count * 1024 / row["median"])
        # vmapped or in turn, the seeds are the same runs (up to float rounding)
        assert row["test_accuracy"] == pytest.approx(
            seeds[("sequential", count)]["test_accuracy"], abs=2e-3
        )
        assert 0.5 < row["test_accuracy"] <= 1
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["machine"]["device_kind"] and saved["seeds"][0]["how"] == "vmap"
    report = (tmp_path / "gpu.md").read_text()
    assert "## Per epoch" in report and "## Speedrun" in report and "| 2 | vmap |" in report
