"""benchmarks.step_profile: reading a compiled program's text, naming each operation's part, the
summary table, and one tiny real profile in its own process (XLA reads its flags once)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks import floor
from benchmarks._runner import ROOT
from benchmarks.step_profile import Instruction, hlo_instructions, markdown, parse_args, parts, role

# Lines as XLA 0.10's CPU compiler prints them (some shortened), a tuple-shaped one included.
META = 'metadata={op_name="jit(run_fn)/while/body/closed_call/'
HLO = "\n".join(
    [
        "%fused_computation.3 (param_0.3: f32[128,784], param_1.3: f32[784,512]) -> f32[128,512] {",
        "  ROOT %dot_general.12 = f32[128,512]{1,0} dot(%param_0.3, %param_1.3), "
        f'lhs_contracting_dims={{1}}, rhs_contracting_dims={{0}}, {META}jvp()/dot_general"}}',
        "}",
        "  %ynn_fusion.3 = f32[128,512]{1,0} fusion(%multiply_bitcast_fusion, %get-tuple-element.3"
        f'4), kind=kCustom, calls=%fused_computation.3, {META}jvp()/dot_general"}}, '
        'backend_config={"fusion_config":{"kind":"__ynn_fusion"}}',
        "  %iota_reduce_fusion = (f32[128]{0}, s32[128]{0}) fusion(%ynn_fusion.2, %copy.26), "
        f'kind=kLoop, calls=%fused_computation.21, {META}jvp()/reduce" stack_frame_id=113}}',
        "  %copy.25 = f32[512,10]{1,0} copy(%get-tuple-element.40)",
        "  ROOT %wrapped_compare = pred[] fusion(%get-tuple-element.48, %constant.83), kind=kLoop, "
        'metadata={op_name="jit(run_fn)/while/cond/lt" stack_frame_id=61}',
    ]
)


def test_hlo_instructions_reads_name_opcode_shape_and_jax_op():
    found = hlo_instructions(HLO)
    assert found["ynn_fusion.3"] == Instruction(
        "ynn_fusion.3", "fusion", (128, 512), "jit(run_fn)/while/body/closed_call/jvp()/dot_general"
    )
    assert found["dot_general.12"].opcode == "dot"
    assert found["iota_reduce_fusion"].dims == (128,)  # a tuple: its first element
    assert found["iota_reduce_fusion"].op_name.endswith("jvp()/reduce")
    assert found["copy.25"] == Instruction("copy.25", "copy", (512, 10), "")
    assert found["wrapped_compare"].dims == () and found["wrapped_compare"].opcode == "fusion"
    assert "fused_computation.3" not in found  # a computation's header is not an instruction


def _op(dims, op_name, opcode="fusion"):
    return Instruction("x", opcode, dims, op_name)


FORWARD, BACKWARD, BODY = "b/jvp()/", "b/transpose(jvp())/", "b/"


@pytest.mark.parametrize(
    ("batch", "hidden", "dims", "op_name", "expected"),
    [
        (128, 512, (128, 512), FORWARD + "dot_general", ("products", "h = x @ W1")),
        (128, 512, (128, 10), FORWARD + "dot_general", ("products", "logits = h @ W2")),
        (128, 512, (128, 512), BACKWARD + "dot_general", ("products", "dh = dlogits @ W2.T")),
        (128, 512, (784, 512), BACKWARD + "dot_general", ("products", "dW1 = x.T @ dh")),
        (128, 512, (10, 512), BACKWARD + "dot_general", ("products", "dW2 = h.T @ dlogits")),
        (128, 512, (512, 10), BACKWARD + "dot_general", ("products", "dW2 = h.T @ dlogits")),
        # The fast preset's batch equals its width: forward and backward still tell h from dh.
        (128, 128, (128, 128), FORWARD + "dot_general", ("products", "h = x @ W1")),
        (128, 128, (128, 128), BACKWARD + "dot_general", ("products", "dh = dlogits @ W2.T")),
        (128, 512, (128, 784), FORWARD + "div", ("batch", "div")),
        (128, 512, (128, 1), "b/closed_call/gather", ("batch", "gather")),
        (128, 512, (784, 512), BODY + "add", ("update", "W1: add")),
        (128, 512, (512,), BODY + "add", ("update", "b1: add")),
        (128, 512, (512, 10), "", ("update", "W2: fusion")),
        (128, 512, (10,), BODY + "sub", ("update", "b2: sub")),
        (128, 512, (128, 512), FORWARD + "max", ("forward", "max")),
        (128, 512, (512,), BACKWARD + "reduce_sum", ("backward", "reduce_sum")),
        (128, 512, (), "b/while/cond/lt", ("other", "lt")),
    ],
)
def test_role_names_each_operations_part(batch, hidden, dims, op_name, expected):
    assert role(_op(dims, op_name), batch, hidden) == expected


def _result():
    ops = [
        {"name": "ynn_fusion.3", "part": "products", "what": "h = x @ W1", "us_per_step": 500.0},
        {"name": "dot_general.3", "part": "products", "what": "dW1 = x.T @ dh", "us_per_step": 400},
        {"name": "multiply_add_fusion.6", "part": "update", "what": "W1: add", "us_per_step": 60},
        {"name": "multiply_bitcast_fusion", "part": "batch", "what": "div", "us_per_step": 40.0},
    ]
    result = {"preset": "keras", "batch_size": 128, "hidden": 512, "samples": 60000, "steps": 938}
    return result, ops


def test_parts_sum_each_parts_operations_in_order():
    _, ops = _result()
    assert parts(ops) == {
        "products": 900.0,
        "batch": 40.0,
        "forward": 0.0,
        "backward": 0.0,
        "update": 60.0,
        "other": 0.0,
    }


def test_markdown_gives_shares_of_the_traced_step_and_the_floor_beside_products():
    result, ops = _result()
    result.update(ops=ops, step_us=1100.0, traced_step_us=1200.0)
    measured = {"h = x @ W1": 480e-6, "dW1 = x.T @ dh": 450e-6}
    floor_rows = [{"name": n, "best_seconds": measured.get(n, 10e-6)} for n in _product_names()]
    text = markdown(result, {"products": floor_rows}, top=3)
    assert "1100 us per step untraced, 1200 traced (938 steps)" in text
    assert "operations 1000." in text  # 900 + 40 + 60
    assert "| products | 900.0 | 75.0% |" in text and "| update | 60.0 | 5.0% |" in text
    assert "| forward |" not in text  # empty parts are left out
    assert "| (the floor's five products) | 960.0 | |" in text  # 480 + 450 + 3 * 10
    assert "| `ynn_fusion.3` | products | h = x @ W1 | 500.0 | 480.0 |" in text
    assert "| `multiply_add_fusion.6` | update | W1: add | 60.0 |  |" in text
    assert "multiply_bitcast_fusion" not in text  # beyond the top 3


def _product_names():
    return [p.name for p in floor.step_products()]


@pytest.mark.parametrize(
    "argv",
    [["--epochs", "0"], ["--top", "0"], ["--floor-budget", "-1"], ["--train-samples", "60001"]],
)
def test_step_profile_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(argv)
    assert stopped.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.integration
def test_step_profile_runs_tiny_and_finds_the_five_products(tmp_path):
    argv = ["--train-samples", "1024", "--epochs", "1", "--floor-budget", "0.01"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.step_profile", *argv, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "step_profile.json").read_text())
    products = {op["what"] for op in result["ops"] if op["part"] == "products"}
    assert products == set(_product_names())
    for op in result["ops"]:
        assert math.isfinite(op["us_per_step"]) and op["us_per_step"] >= 0
        assert op["part"] in parts([])
    assert result["steps"] == 8 and result["step_us"] > 0 and result["traced_step_us"] > 0
    assert sum(result["parts"].values()) > 0
    assert "xla_cpu_enable_xprof_traceme" in result["xla_flags"]
    assert "| products |" in (tmp_path / "step_profile.md").read_text()
