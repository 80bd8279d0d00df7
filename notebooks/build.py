"""Makes notebooks/chapter2.ipynb from docs/chapter2.md, the one source of both.

    python notebooks/build.py           # writes the notebook
    python notebooks/build.py --check   # exit status 1 when the notebook differs from the doc

The doc's fences decide each block's place: ```setup is the first cell, ```python and ```py blocks
are code cells in the doc's order, ```keras and ```text stay in the markdown (shown, not run), and
```offline (the tests' synthetic stand-in for MNIST) is left out. A markdown cell starts at each
`## ` heading. The notebook has no outputs; cell ids are hashes of the cells' content, and the JSON
is laid out as nbformat writes it, so the same doc always gives the same bytes and a notebook saved
unchanged from Jupyter stays identical. Needs nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "chapter2.md"
NOTEBOOK = ROOT / "notebooks" / "chapter2.ipynb"

CODE = {"python", "py"}  # code cells, in place
FIRST = "setup"  # the one code cell moved to the top: it installs what the others import
SHOWN = {"keras": "python", "text": "text"}  # fenced in markdown, relabelled for highlighting
LEFT_OUT = {"offline"}
_FENCE = re.compile(r"^```(\S*)\s*$")

METADATA = {
    "jaxmnist": {
        "source": "docs/chapter2.md",
        "generated_by": "notebooks/build.py: edit the doc, then run it",
    },
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


class Cell(NamedTuple):
    kind: str  # "code" or "markdown"
    source: str


def cells(text: str) -> list[Cell]:
    """The notebook's cells from the doc's text, the ```setup block first."""
    setup: list[Cell] = []
    out: list[Cell] = []
    markdown: list[str] = []

    def flush() -> None:
        nonlocal markdown
        # A block left out leaves the blank lines around it: one is enough.
        source = re.sub(r"\n{3,}", "\n\n", "\n".join(markdown)).strip("\n")
        if source:
            out.append(Cell("markdown", source))
        markdown = []

    language, start, block = None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if language is None:
            if match:
                language, start, block = match.group(1), number, []
            else:
                if line.startswith("## "):
                    flush()
                markdown.append(line)
            continue
        if not match or match.group(1):  # not the closing fence
            block.append(line)
            continue
        code = "\n".join(block)
        if language in CODE or language == FIRST:
            flush()
            (setup if language == FIRST else out).append(Cell("code", code))
        elif language in SHOWN:
            markdown.extend([f"```{SHOWN[language]}", *block, "```"])
        elif language not in LEFT_OUT:
            raise ValueError(f"{DOC.name}:{start}: unknown fence ```{language}")
        language = None
    if language is not None:
        raise ValueError(f"{DOC.name}:{start}: unclosed ``` fence")
    flush()
    if len(setup) != 1:
        raise ValueError(f"{DOC.name}: expected one ```{FIRST} block, found {len(setup)}")
    return setup + out


def _lines(source: str) -> list[str]:
    """nbformat's layout of a source: lines that keep their newline, the last without."""
    return source.splitlines(keepends=True)


def notebook(text: str) -> str:
    """The notebook's file content (nbformat 4.5) for the doc's text."""
    seen: dict[str, int] = {}
    json_cells = []
    for cell in cells(text):
        digest = hashlib.sha256(f"{cell.kind}\0{cell.source}".encode()).hexdigest()[:12]
        seen[digest] = seen.get(digest, 0) + 1
        cell_id = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
        entry = {
            "cell_type": cell.kind,
            "id": cell_id,
            "metadata": {},
            "source": _lines(cell.source),
        }
        if cell.kind == "code":
            entry |= {"execution_count": None, "outputs": []}
        json_cells.append(entry)
    document = {"cells": json_cells, "metadata": METADATA, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only compare: exit 1 if the notebook is out of date"
    )
    args = parser.parse_args(argv)
    wanted = notebook(DOC.read_text(encoding="utf-8"))
    where = NOTEBOOK.relative_to(ROOT)
    if args.check:
        current = NOTEBOOK.read_text(encoding="utf-8") if NOTEBOOK.exists() else None
        if current != wanted:
            print(f"{where} differs from docs/chapter2.md: run `python notebooks/build.py`")
            return 1
        print(f"{where} is up to date")
        return 0
    NOTEBOOK.write_text(wanted, encoding="utf-8", newline="\n")
    print(f"wrote {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
