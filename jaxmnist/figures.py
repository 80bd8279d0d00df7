"""The report's figures: plain arrays and the run's history in, PNG bytes out (matplotlib, Agg)."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence

import numpy as np

from jaxmnist.errors import JaxmnistError

DPI = 150  # the page shows each image at 100 px per inch: sharp on high-density screens too
INSTALL = "pip install 'jaxmnist[plots]'"
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
TRAIN, VALIDATION, WRONG, MUTED = "tab:blue", "tab:orange", "tab:red", "0.75"


def require_matplotlib():
    """The matplotlib module, or one line saying how to install it (it is an optional extra)."""
    try:
        import matplotlib
    except ImportError:
        message = f"the report draws with matplotlib, which is missing: {INSTALL}"
        raise JaxmnistError(message) from None
    return matplotlib


@contextlib.contextmanager
def _drawing(width: float, height: float) -> Iterator:
    """A Figure on its own Agg canvas: no pyplot, so no global backend switch or figure leak in
    the caller's process; matplotlib's defaults, so a user's matplotlibrc cannot restyle it."""
    matplotlib = require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_STYLE)
        figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        yield figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    # No Software tag: the bytes then depend on the drawing only, not on matplotlib's version.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def learning_curves(history: Sequence[dict]) -> bytes:
    """Loss and accuracy per epoch, training and (when held out) validation, side by side."""
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in history]
    validated = all("val_loss" in record for record in history)
    with _drawing(11, 4.2) as figure:
        for axes, key, name in zip(
            figure.subplots(1, 2), ("loss", "accuracy"), ("Loss", "Accuracy"), strict=True
        ):
            series = [("training", key, TRAIN, "o-")]
            if validated:
                series.append(("validation", "val_" + key, VALIDATION, "s--"))
            for label, field, colour, style in series:
                values = [record[field] for record in history]
                axes.plot(epochs, values, style, color=colour, label=f"{label} ({values[-1]:.4f})")
            axes.set(title=f"{name} per epoch", xlabel="epoch", ylabel=key)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.legend(title="last epoch")
        return _png(figure)


def batch_losses(history: Sequence[dict]) -> bytes:
    """The loss of every training batch, as the chapter prints it, with a running mean."""
    per_epoch = [np.asarray(record.get("batch_losses", []), float) for record in history]
    losses = np.concatenate(per_epoch) if per_epoch else np.zeros(0)
    steps = np.arange(1, len(losses) + 1)
    with _drawing(11, 4) as figure:
        axes = figure.subplots()
        axes.plot(steps, losses, color=TRAIN, alpha=0.35, linewidth=0.8, label="batch loss")
        window = max(1, len(losses) // 50)
        if window > 1:
            mean = np.convolve(losses, np.ones(window) / window, mode="valid")
            axes.plot(steps[window - 1 :], mean, color=TRAIN, linewidth=2, label="running mean")
        for boundary in np.cumsum([len(epoch) for epoch in per_epoch])[:-1]:
            axes.axvline(boundary + 0.5, color="0.5", linestyle=":", linewidth=1)
        # Losses fall by orders of magnitude in the first epoch: a log axis keeps the rest visible.
        if len(losses) and losses.min() > 0 and losses.max() / losses.min() > 10:
            axes.set_yscale("log")
        axes.set(
            title=f"Training loss at each batch ({len(per_epoch)} epochs, dotted lines between)",
            xlabel="batch (counted across epochs)",
            ylabel="loss",
        )
        axes.legend()
        return _png(figure)


def confusion_matrix(matrix: np.ndarray) -> bytes:
    """Counts of (true, predicted) digits, each cell labelled; a log colour scale so that the
    errors show beside a diagonal a hundred times larger."""
    from matplotlib.colors import ListedColormap, LogNorm

    matrix = np.asarray(matrix)
    classes = len(matrix)
    # Blues without its near-white end, so that a single image stands out from an empty cell.
    blues = require_matplotlib().colormaps["Blues"]
    cmap = ListedColormap(blues(np.linspace(0.12, 1, 256))).with_extremes(bad="white")
    with _drawing(7.4, 6.4) as figure:
        axes = figure.subplots()
        norm = LogNorm(vmin=1, vmax=max(2, int(matrix.max())))
        shown = np.ma.masked_equal(matrix, 0)
        image = axes.imshow(shown, cmap=cmap, norm=norm)
        style = {"ha": "center", "va": "center", "fontsize": 8 if matrix.max() >= 1000 else 9}
        for (true, predicted), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if norm(count) > 0.6 else "black"
                weight = "bold" if true == predicted else "normal"
                axes.text(predicted, true, f"{count}", color=colour, fontweight=weight, **style)
        axes.set_xticks(range(classes))
        axes.set_yticks(range(classes))
        axes.grid(False)
        axes.spines[["top", "right"]].set_visible(True)
        axes.set(
            title=f"Confusion matrix on the test set ({int(matrix.sum())} images)",
            xlabel="predicted digit",
            ylabel="true digit",
        )
        figure.colorbar(image, ax=axes, shrink=0.85, label="images (log scale; empty: none)")
        return _png(figure)


def class_accuracy(accuracy: np.ndarray, counts: np.ndarray, overall: float) -> bytes:
    """Test accuracy of each digit as bars, the overall accuracy as a dashed line."""
    accuracy, counts = np.asarray(accuracy, float), np.asarray(counts)
    digits = np.arange(len(accuracy))
    known = np.nan_to_num(accuracy, nan=0.0)
    with _drawing(9, 4.4) as figure:
        axes = figure.subplots()
        colours = [WRONG if value < overall else TRAIN for value in known]
        axes.bar(digits, known, color=colours, width=0.7)
        axes.axhline(overall, color="0.3", linestyle="--")
        # Accuracies bunch near 1: start the axis just below the worst class, to tell them apart.
        worst = np.nanmin(accuracy) if np.isfinite(accuracy).any() else overall
        low = max(0.0, math.floor((min(worst, overall) - 0.03) * 20) / 20)
        axes.set_ylim(low, 1.0 + (1.0 - low) * 0.12)
        # A white box keeps each number legible where the overall line crosses it.
        box = {"facecolor": "white", "edgecolor": "none", "pad": 0.5}
        label = {"xytext": (0, 3), "textcoords": "offset points", "bbox": box}
        label |= {"ha": "center", "va": "bottom", "fontsize": 9}
        for digit, value, count in zip(digits, accuracy, counts, strict=True):
            text = "none" if count == 0 else f"{value:.1%}"
            axes.annotate(text, (digit, max(value if count else 0, low)), **label)
        axes.set_xticks(digits, [f"{d}\n(n={c})" for d, c in zip(digits, counts, strict=True)])
        axes.grid(axis="x", visible=False)
        axes.set(
            title=f"Test accuracy per digit (dashed: all digits, {overall:.2%}; red: below it)",
            xlabel="true digit (test images)",
            ylabel="accuracy",
        )
        return _png(figure)


def confused_pairs(pairs: Sequence[tuple[int, int, int]], errors: int) -> bytes:
    """The most frequent (true, predicted, count) mistakes as horizontal bars, largest on top."""
    title = f"Most confused pairs (of {errors} misclassified test images)"
    if not pairs:
        return _message(title, "no misclassified test images")
    with _drawing(8, 0.42 * max(len(pairs), 3) + 1.4) as figure:
        axes = figure.subplots()
        labels = [f"true {true} → predicted {predicted}" for true, predicted, _ in pairs]
        counts = [count for _, _, count in pairs]
        rows = np.arange(len(pairs))
        axes.barh(rows, counts, color=WRONG, height=0.65)
        axes.set_yticks(rows, labels)
        axes.invert_yaxis()
        axes.set_xlim(0, max(counts) * 1.12)
        for row, count in zip(rows, counts, strict=True):
            axes.text(count, row, f" {count}", va="center", fontsize=9)
        axes.grid(axis="y", visible=False)
        axes.set(title=title, xlabel="test images")
        return _png(figure)


def misclassified(images, labels, predicted, confidence, total: int) -> bytes:
    """A gallery of misclassified digits, each titled with its true label, the prediction and
    the probability the model gave that prediction; `total` is how many there are in all."""
    if not len(images):
        return _message("Misclassified test digits", "no misclassified test images")
    columns = 8
    rows = math.ceil(len(images) / columns)
    with _drawing(1.4 * columns, 1.65 * rows + 0.6) as figure:
        figure.suptitle(
            f"Misclassified test digits: {len(images)} of {total}, most confident first",
            fontweight="bold",
        )
        for index, axes in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
            axes.set_axis_off()
            if index < len(images):
                axes.imshow(images[index], cmap="binary", vmin=0, vmax=255)
                title = f"true {labels[index]}, pred {predicted[index]}"
                title += f"\np = {confidence[index]:.2f}"
                axes.set_title(title, fontsize=9, fontweight="normal")
        return _png(figure)


def _message(title: str, text: str) -> bytes:
    """A small figure that says there is nothing to draw, where a chart would stand."""
    with _drawing(8, 1.6) as figure:
        axes = figure.subplots()
        axes.set_axis_off()
        axes.set_title(title)
        axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
        return _png(figure)


def first_predictions(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> bytes:
    """The first test digits over their ten predicted probabilities: the chapter's
    `predictions[0]`, `predictions[0].argmax()` and `test_labels[0]`, for ten digits."""
    count = len(images)
    columns = min(5, max(count, 1))
    rows = max(1, math.ceil(count / columns))
    with _drawing(2.3 * columns, 3.9 * rows + 0.5) as figure:
        figure.suptitle(
            "First test digits and their predicted probabilities (red: wrong)", fontweight="bold"
        )
        # More room between rows than the default, or a digit's title meets the bars above it.
        figure.get_layout_engine().set(h_pad=0.12)
        grid = figure.add_gridspec(2 * rows, columns, height_ratios=[1.1, 1] * rows)
        for index in range(count):
            row, column = divmod(index, columns)
            picture = figure.add_subplot(grid[2 * row, column])
            picture.imshow(images[index], cmap="binary", vmin=0, vmax=255)
            picture.set_axis_off()
            picture.set_title(f"test[{index}]: label {labels[index]}", fontsize=10)
            bars = figure.add_subplot(grid[2 * row + 1, column])
            guess = int(np.argmax(probabilities[index]))
            colour = TRAIN if guess == labels[index] else WRONG
            colours = [colour if digit == guess else MUTED for digit in range(10)]
            bars.bar(range(10), probabilities[index], color=colours)
            bars.set_ylim(0, 1.05)
            bars.set_xticks(range(10))
            bars.tick_params(labelsize=8)
            bars.grid(axis="x", visible=False)
            bars.set_xlabel(f"predicted {guess}  (p = {probabilities[index][guess]:.3f})")
            if column == 0:
                bars.set_ylabel("probability")
            else:
                bars.set_yticklabels([])
        return _png(figure)
