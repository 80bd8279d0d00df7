"""notebooks/chapter2.ipynb: made from docs/chapter2.md and only from it, and it runs on MNIST.

Offline: the committed notebook is byte for byte what notebooks/build.py makes from the doc, has
no outputs, and each of its cells comes from the doc; its first cell installs jaxmnist only where
it should. Marked integration: the notebook runs top to bottom on the real data in a fresh kernel.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "chapter2.md"
NOTEBOOK = ROOT / "notebooks" / "chapter2.ipynb"
REBUILD = "run `python notebooks/build.py` and commit the notebook"


def _load_build():
    spec = importlib.util.spec_from_file_location("chapter2_build", ROOT / "notebooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def notebook() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def test_the_notebook_is_the_doc(doc):
    assert NOTEBOOK.read_text(encoding="utf-8") == build.notebook(doc), (
        f"{NOTEBOOK.relative_to(ROOT)} differs from {DOC.relative_to(ROOT)}: {REBUILD}"
    )
    assert build.main(["--check"]) == 0


def test_building_twice_gives_the_same_bytes(doc):
    assert build.notebook(doc) == build.notebook(doc)


def test_no_outputs_and_valid_nbformat(notebook):
    assert (notebook["nbformat"], notebook["nbformat_minor"]) == (4, 5)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(set(ids)) == len(ids)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]
        else:
            assert cell["cell_type"] == "markdown" and "outputs" not in cell, cell["id"]
    nbformat = pytest.importorskip("nbformat")
    parsed = nbformat.reads(NOTEBOOK.read_text(encoding="utf-8"), as_version=4)
    nbformat.validate(parsed)
    # Saved unchanged by Jupyter (nbformat.write adds the final newline), it stays identical.
    assert nbformat.writes(parsed) + "\n" == NOTEBOOK.read_text(encoding="utf-8")


def _fenced(doc: str, language: str) -> list[str]:
    pattern = rf"^```{language}\n(.*?)\n```$"
    return re.findall(pattern, doc, flags=re.M | re.S)


def test_every_cell_comes_from_the_doc(doc, notebook):
    cells = notebook["cells"]
    code = [_source(cell) for cell in cells if cell["cell_type"] == "code"]
    setup, *rest = code
    assert cells[0]["cell_type"] == "code" and [setup] == _fenced(doc, "setup")
    # Every ```python and ```py block, in the doc's order; nothing else, the ```offline one least.
    in_order = [src for _, src in re.findall(r"^```(python|py)\n(.*?)\n```$", doc, re.M | re.S)]
    assert rest == in_order
    offline = _fenced(doc, "offline")
    assert len(offline) == 1 and all(offline[0] not in _source(cell) for cell in cells)
    # Markdown cells are the doc's prose verbatim, the chapter's code relabelled for highlighting.
    shown = re.sub(r"^```offline\n.*?\n```\n\n", "", doc, flags=re.M | re.S)
    shown = shown.replace("```keras\n", "```python\n")
    for cell in cells:
        if cell["cell_type"] == "markdown":
            assert _source(cell) in shown, _source(cell)[:200]
    headings = [line for line in doc.splitlines() if line.startswith("## ")]
    starts = [_source(cell).splitlines()[0] for cell in cells if cell["cell_type"] == "markdown"]
    assert [line for line in starts if line.startswith("## ")] == headings


@pytest.fixture
def run_setup(notebook, monkeypatch):
    """Runs the first cell with `missing` modules absent; returns (pip commands, printed text)."""
    source = _source(notebook["cells"][0])
    real_find_spec = importlib.util.find_spec

    def run(missing: set[str], cwd: Path, capsys):
        commands = []

        def find_spec(name, *args, **kwargs):
            return None if name in missing else real_find_spec(name, *args, **kwargs)

        def fake_run(command, **kwargs):
            commands.append(command)
            return subprocess.CompletedProcess(command, 0)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        monkeypatch.setattr(subprocess, "run", fake_run)
        monkeypatch.chdir(cwd)
        exec(compile(source, "setup cell", "exec"), {"__name__": "__main__"})
        return commands, capsys.readouterr().out

    return run


def _pip(*requirements) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--quiet", *requirements]


def test_setup_does_nothing_when_everything_imports(run_setup, capsys):
    assert run_setup(set(), ROOT / "notebooks", capsys) == ([], "")


@pytest.mark.parametrize("where", ["notebooks", "."])
def test_setup_installs_the_checkout_it_runs_in(run_setup, capsys, tmp_path, where):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "jaxmnist"\n')
    (tmp_path / "notebooks").mkdir()
    commands, printed = run_setup({"jaxmnist"}, tmp_path / where, capsys)
    assert commands == [_pip(f"{tmp_path}[plots]")] and printed == ""


def test_setup_says_how_to_get_jaxmnist_elsewhere(run_setup, capsys, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "another"\n')
    commands, printed = run_setup({"jaxmnist", "matplotlib"}, tmp_path, capsys)
    assert commands == [_pip("matplotlib")]
    assert printed.count("\n") == 1 and "clone" in printed and "notebooks/" in printed


@pytest.mark.integration
def test_the_notebook_runs_top_to_bottom_on_mnist(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # A kernel of this very interpreter: a "python3" kernelspec elsewhere on the machine could be
    # another Python, where the first cell would install the checkout.
    kernel = tmp_path / "jupyter" / "kernels" / "jaxmnist-test"
    kernel.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "jaxmnist tests", "language": "python"}
    (kernel / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's warning about the default
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    folder = tmp_path / "notebooks"  # run from a copy: outputs never reach the committed file
    folder.mkdir()
    nb = nbformat.reads(NOTEBOOK.read_text(encoding="utf-8"), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="jaxmnist-test", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    def output_of(marker: str) -> tuple[str, list[dict]]:
        (cell,) = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        return text, cell.outputs

    keras, _ = output_of("keras_result = train_and_evaluate(")
    assert keras.startswith("Epoch 1/5\n") and keras.count("469/469 ━") == 5, keras
    accuracy = float(re.search(r"^test accuracy: (\d\.\d{4}) - test loss: ", keras, re.M)[1])
    assert accuracy >= 0.97, keras

    naive, _ = output_of("naive_result = train_and_evaluate(")
    lines = naive.splitlines()
    assert lines[0] == "epoch 0" and lines[1].startswith("loss at batch 0: "), naive
    assert abs(float(lines[1].split(": ")[1]) - 3.44) <= 0.02, lines[1]  # seed 0; chapter: 4.74
    assert "epoch 9" in lines and lines[-1].startswith("test accuracy: "), naive

    predictions, outputs = output_of("predictions = predict(keras_result")
    assert "predictions[0].argmax(): 7\n" in predictions, predictions
    assert "test_labels[0]: 7\n" in predictions, predictions
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the ten digits

    digit, outputs = output_of("digit = on_device[4]")
    assert "train_labels[4]: 9" in digit and any("image/png" in o.get("data", {}) for o in outputs)
