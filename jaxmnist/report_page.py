"""report.html: one self-contained page (images inline, no scripts, nothing fetched) of a run."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

from jaxmnist.figures import DPI

# The browser refuses to fetch anything, even if a future edit added a link by mistake.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1180px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
.where { color: #57606a; margin-top: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 0.8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: right; }
th { background: #f6f8fa; }
td.text, th.text { text-align: left; }
td.best { font-weight: bold; background: #ddf4ff; }
td.wrong { color: #cf222e; font-weight: bold; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.9em; }
.scroll { overflow-x: auto; }
"""


@dataclass
class Page:
    """Everything report.html shows: the numbers come from report.py, the images from figures."""

    title: str
    run_dir: str
    summary: Sequence[tuple[str, str]]  # (what, value) pairs: epochs, losses, accuracies, ...
    config: dict
    images: dict[str, bytes]  # PNG bytes by section (a key of SECTIONS); a missing one is left out
    class_accuracy: np.ndarray  # [10], NaN for a digit absent from the test set
    class_counts: np.ndarray  # [10] test images of each digit
    pairs: Sequence[tuple[int, int, int]]  # (true, predicted, count), most frequent first
    first_labels: np.ndarray  # [k] the first test labels
    first_probabilities: np.ndarray  # [k, 10] the model's probabilities for them


def _size(png: bytes) -> tuple[int, int]:
    """A PNG's pixel width and height, from its IHDR chunk."""
    return struct.unpack(">II", png[16:24])


def _figure(file: str, title: str, caption: str, png: bytes) -> str:
    width, height = _size(png)
    # Shown at 100 px per inch of the figure: the DPI / 100 extra pixels make it sharp when zoomed.
    shown = (round(width * 100 / DPI), round(height * 100 / DPI))
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" width="{shown[0]}" '
        f'height="{shown[1]}" alt="{escape(title)}">'
        f"<figcaption>{escape(caption)} (also saved as "
        f'<a href="{escape(file)}">{escape(file)}</a>)</figcaption></figure>'
    )


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[str | tuple[str, str]]]) -> str:
    """A table of text cells; a cell may be (text, css class). The first column is left-aligned."""

    def cell(tag: str, value, first: bool) -> str:
        text, kind = value if isinstance(value, tuple) else (value, "")
        kind = " ".join(filter(None, ["text" if first else "", kind]))
        attribute = f' class="{kind}"' if kind else ""
        return f"<{tag}{attribute}>{escape(str(text))}</{tag}>"

    head = "".join(cell("th", name, i == 0) for i, name in enumerate(header or ()))
    body = "".join(
        "<tr>" + "".join(cell("td", value, i == 0) for i, value in enumerate(row)) + "</tr>"
        for row in rows
    )
    head = f"<tr>{head}</tr>" if head else ""
    return f'<div class="scroll"><table>{head}{body}</table></div>'


def _class_table(page: Page) -> str:
    rows = [
        (str(digit), str(int(count)), "none" if count == 0 else f"{accuracy:.2%}")
        for digit, (accuracy, count) in enumerate(
            zip(page.class_accuracy, page.class_counts, strict=True)
        )
    ]
    return _table(("digit", "test images", "accuracy"), rows)


def _pairs_table(page: Page) -> str:
    if not page.pairs:
        return "<p>No test image was misclassified.</p>"
    rows = [(str(true), str(predicted), str(count)) for true, predicted, count in page.pairs]
    return _table(("true digit", "predicted as", "test images"), rows)


def _predictions_table(page: Page) -> str:
    rows = []
    for index, (label, probabilities) in enumerate(
        zip(page.first_labels, page.first_probabilities, strict=True)
    ):
        guess = int(np.argmax(probabilities))
        cells: list = [f"test[{index}]", str(int(label))]
        cells += [(f"{p:.4f}", "best" if d == guess else "") for d, p in enumerate(probabilities)]
        cells.append((str(guess), "" if guess == label else "wrong"))
        rows.append(cells)
    return _table(("image", "label", *map(str, range(10)), "predicted"), rows)


# The page's sections in order: key: (file name, heading, caption, table under the figure).
SECTIONS = {
    "curves": (
        "curves.png",
        "Learning curves",
        "Loss and accuracy after each epoch, as Keras's History records them.",
        None,
    ),
    "batches": (
        "batch_losses.png",
        "Loss at each batch",
        "The chapter's 'loss at batch N' lines: every training batch of the run.",
        None,
    ),
    "confusion": (
        "confusion_matrix.png",
        "Confusion matrix",
        "Rows: the true digit; columns: the model's prediction.",
        None,
    ),
    "classes": (
        "class_accuracy.png",
        "Accuracy per digit",
        "The diagonal of the confusion matrix over its row sums.",
        _class_table,
    ),
    "pairs": (
        "confused_pairs.png",
        "Most confused pairs",
        "The largest cells off the diagonal of the confusion matrix.",
        _pairs_table,
    ),
    "misclassified": (
        "misclassified.png",
        "Misclassified test digits",
        "Each with its true label, the prediction and the probability the model gave it.",
        None,
    ),
    "first": (
        "first_predictions.png",
        "The first test digits",
        "The chapter's predictions[0], and nine more: the ten probabilities the model gives "
        "each of the first test digits.",
        _predictions_table,
    ),
}


def final_figures(history, epoch, test_loss, test_accuracy, errors, tested, fingerprint) -> list:
    """(what, value) rows of the run's last epoch and its test set, as the page lists them."""
    last = history[-1]
    seconds = sum(record.get("seconds", 0.0) for record in history)
    rows = [
        ("epochs", str(epoch)),
        ("training time", f"{seconds:.1f} s"),
        ("train loss", f"{last['loss']:.4f}"),
        ("train accuracy", f"{last['accuracy']:.4f}"),
    ]
    if "val_loss" in last:
        rows += [
            ("validation loss", f"{last['val_loss']:.4f}"),
            ("validation accuracy", f"{last['val_accuracy']:.4f}"),
        ]
    return rows + [
        ("test loss", f"{test_loss:.4f}"),
        ("test accuracy", f"{test_accuracy:.4f}"),
        ("misclassified test images", f"{errors} of {tested}"),
        ("data fingerprint", str(fingerprint)),
    ]


def render(page: Page) -> str:
    """The whole page as text; every piece of text in it is HTML-escaped."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(_POLICY)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(page.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(page.title)}</h1>",
        f'<p class="where">run: <code>{escape(page.run_dir)}</code></p>',
        "<h2>Final figures</h2>",
        _table(None, page.summary),
    ]
    for name, (file, title, caption, table) in SECTIONS.items():
        if name not in page.images:
            continue
        parts.append(f'<h2 id="{escape(name)}">{escape(title)}</h2>')
        parts.append(_figure(file, title, caption, page.images[name]))
        if table is not None:
            parts.append(table(page))
    parts += [
        "<h2>Configuration</h2>",
        _table(("setting", "value"), [(k, repr(v)) for k, v in page.config.items()]),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
