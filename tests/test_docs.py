"""docs/chapter2.md: its ```python blocks run, in order, in one namespace; no section is missing.

Blocks fenced ```keras (the chapter's TensorFlow code), ```py (needs the real data) and ```text are
shown, not run.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "chapter2.md"

# One heading per block of the chapter, in the chapter's order.
SECTIONS = (
    "Data: MNIST as uint8",
    "Tensors, variables and assignment",
    "GradientTape examples: jax.grad",
    "The Keras model: Sequential, compile, fit",
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
FENCE_LANGUAGES = {"python", "py", "keras", "text"}
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


def test_sections_present():
    headings = {
        line[3:].strip()
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    missing = [section for section in SECTIONS if section not in headings]
    assert not missing, f"{DOC.name} lacks the sections: {missing}"


def test_fences_are_labelled(blocks):
    for language, line, code in blocks:
        assert language in FENCE_LANGUAGES, f"{DOC.name}:{line - 1}: fence ```{language}"
        if language == "python":
            assert not re.search(r"^\s*(import|from)\s+(tensorflow|keras)\b", code, re.M), (
                f"{DOC.name}:{line}: chapter code in a ```python block; fence it ```keras"
            )
    assert sum(language == "python" for language, _, _ in blocks) >= len(SECTIONS)


def test_python_blocks_run(blocks):
    namespace: dict = {"__name__": "chapter2_doc"}
    for language, line, code in blocks:
        if language != "python":
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
