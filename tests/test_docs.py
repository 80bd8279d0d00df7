"""docs/chapter2.md: its ```python blocks run in order, in one namespace; every section is there.

The ```offline block (the synthetic stand-in for MNIST) runs with them, in its place. Blocks fenced
```keras (the chapter's code), ```py (needs the real data), ```setup (the notebook's install cell)
and ```text are shown, not run. notebooks/chapter2.ipynb runs the ```python blocks on MNIST.
"""

from __future__ import annotations

import re
import traceback
import warnings
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "chapter2.md"

# One heading per block of the chapter, in the chapter's order.
SECTIONS = (
    "Data: MNIST as uint8",
    "The Keras model: Sequential, compile, fit",
    "Predictions on ten test digits",
    "evaluate: test loss and accuracy",
    "Tensor ranks: scalars to rank-3 tensors",
    "Key attributes: ndim, shape and dtype",
    "Displaying a digit",
    "Slicing and batches",
    "Element-wise operations: loops, jit and vmap",
    "Broadcasting",
    "The tensor product",
    "Reshaping and transposing",
    "Tensors, variables and assignment",
    "GradientTape examples: jax.grad",
    "NaiveDense: an initialiser and dense",
    "NaiveSequential: init_params and sequential",
    "Four weights",
    "BatchGenerator: batches",
    "one_training_step: make_train_step",
    "update_weights: by hand and with an optimizer",
    "fit: engine.fit",
    "Evaluation: predict and evaluate",
    "Both programs end to end",
)
FENCE_LANGUAGES = {"python", "py", "offline", "setup", "keras", "text"}
RUN = {"python", "offline"}
_FENCE = re.compile(r"^```(\S*)\s*$")


def _blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line of the first code line, code) for each fenced block."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if language is None:
            if match:
                language, start, lines = match.group(1), number + 1, []
        elif match and not match.group(1):
            blocks.append((language, start, "\n".join(lines)))
            language = None
        else:
            lines.append(line)
    assert language is None, f"{DOC.name}:{start - 1}: unclosed ``` fence"
    return blocks


@pytest.fixture(scope="module")
def blocks():
    return _blocks(DOC.read_text(encoding="utf-8"))


def test_sections_present_in_order():
    headings = [
        line[3:].strip()
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    ]
    missing = [section for section in SECTIONS if section not in headings]
    assert not missing, f"{DOC.name} lacks the sections: {missing}"
    assert [h for h in headings if h in SECTIONS] == list(SECTIONS), "sections out of order"


def test_fences_are_labelled(blocks):
    for language, line, code in blocks:
        assert language in FENCE_LANGUAGES, f"{DOC.name}:{line - 1}: fence ```{language}"
        if language in RUN:
            assert not re.search(r"^\s*(import|from)\s+(tensorflow|keras)\b", code, re.M), (
                f"{DOC.name}:{line}: chapter code in a ```python block; fence it ```keras"
            )
    assert sum(language == "python" for language, _, _ in blocks) >= len(SECTIONS)
    assert [language for language, _, _ in blocks].count("offline") == 1
    assert [language for language, _, _ in blocks].count("setup") == 1


@pytest.fixture
def headless_pyplot():
    """pyplot drawing off screen: the doc's plt.show() has nothing to show, and no figure stays."""
    matplotlib = pytest.importorskip("matplotlib", reason="the doc draws digits: install [plots]")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "FigureCanvasAgg is non-interactive", UserWarning)
        yield
    plt.close("all")


def test_python_blocks_run(blocks, headless_pyplot):
    namespace: dict = {"__name__": "chapter2_doc"}
    for language, line, code in blocks:
        if language not in RUN:
            continue
        # Leading newlines make tracebacks point at the line of the doc itself.
        try:
            exec(compile("\n" * (line - 1) + code, str(DOC), "exec"), namespace)
        except Exception as error:
            frames = [
                f for f in traceback.extract_tb(error.__traceback__) if f.filename == str(DOC)
            ]
            where, source = (frames[-1].lineno, frames[-1].line) if frames else (line, "")
            if isinstance(error, SyntaxError):
                where, source = error.lineno, (error.text or "").strip()
            pytest.fail(
                f"{DOC.name}:{where} (block at line {line}): {source}\n"
                f"{type(error).__name__}: {error}",
                pytrace=False,
            )
