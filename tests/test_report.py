"""`python -m jaxmnist.report` offline, on a tiny synthetic run: files, page, numbers, bad input."""

from __future__ import annotations

import base64
import contextlib
import io
import re
import shutil
import sys

import numpy as np
import pytest
from _synthetic import synthetic_mnist

import jaxmnist.data
from jaxmnist import report
from jaxmnist.config import PRESETS
from jaxmnist.data.arrays import fingerprint
from jaxmnist.errors import Interrupted, JaxmnistError
from jaxmnist.report_page import SECTIONS, Page, render
from jaxmnist.runner import train_and_evaluate

pytest.importorskip("matplotlib", reason="the report draws with the plots extra (matplotlib)")
Image = pytest.importorskip("PIL.Image", reason="Pillow (a matplotlib dependency) decodes PNGs")

DATA = synthetic_mnist(512, 256, label_noise=0.1)
CONFIG = PRESETS["keras"].replace(epochs=2, hidden=32, validation_split=0.2)
PNGS = [file for file, *_ in SECTIONS.values()]
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.I)


def _train(directory, **kwargs):
    digest = fingerprint(*DATA[0], *DATA[1])
    return train_and_evaluate(CONFIG, DATA, checkpoint_dir=directory, fingerprint=digest, **kwargs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run") / "ckpt"
    _train(directory)
    return directory


def _main(argv, data=DATA):
    """(exit code, stdout, stderr) of report.main(argv) on `data`, SystemExit included."""
    out, err = io.StringIO(), io.StringIO()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        patch.setattr(jaxmnist.data, "load_mnist", lambda *args, **kwargs: data)
        try:
            code = report.main([str(arg) for arg in argv])
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cli(run_dir):
    """The CLI's report of the run, into the default RUN_DIR/report."""
    code, out, err = _main([run_dir])
    assert code == 0, err
    return out, run_dir / "report"


def test_every_file_is_written_and_printed(cli):
    out, directory = cli
    names = [*PNGS, "report.html"]
    assert sorted(path.name for path in directory.iterdir()) == sorted(names)  # no temporaries
    lines = out.splitlines()
    assert lines[:-1] == [f"wrote {directory / name}" for name in names]
    assert lines[-1] == f"report: {directory / 'report.html'}"


@pytest.mark.parametrize("name", PNGS)
def test_each_png_decodes_at_a_sensible_size(cli, name):
    path = cli[1] / name
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 600 <= width <= 3000 and 200 <= height <= 3000, image.size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 20  # drawn on, not blank


def test_page_shows_every_image_and_needs_nothing_outside_itself(cli):
    directory = cli[1]
    page = (directory / "report.html").read_text("utf-8")
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(PNGS)
    for name, source in zip(PNGS, sources, strict=True):
        assert name in page
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        assert base64.b64decode(source[len(prefix) :]) == (directory / name).read_bytes()
    for forbidden in ("http://", "https://", "<link", "<script", "@import", "url("):
        assert forbidden not in page.lower()
    assert not EXTERNAL.search(page)
    assert all(not re.match(r"[a-z]+:|/", href) for href in re.findall(r'href="([^"]*)"', page))


def test_page_states_the_runs_configuration_and_final_figures(cli, run_dir):
    from jaxmnist.model import chapter_model
    from jaxmnist.resume import load_run
    from jaxmnist.step import evaluate

    page = (cli[1] / "report.html").read_text("utf-8")
    run = load_run(run_dir)
    loss, accuracy = evaluate(run.state.params, *DATA[1], chapter_model(32), "logits")
    last = run.history[-1]
    text = re.sub(r"<[^>]+>", " ", page)
    for what, value in [
        ("epochs", 2),
        ("train loss", f"{last['loss']:.4f}"),
        ("train accuracy", f"{last['accuracy']:.4f}"),
        ("validation loss", f"{last['val_loss']:.4f}"),
        ("validation accuracy", f"{last['val_accuracy']:.4f}"),
        ("test loss", f"{loss:.4f}"),
        ("test accuracy", f"{accuracy:.4f}"),
        ("hidden", 32),
        ("validation_split", 0.2),
    ]:
        assert re.search(rf"\b{what}\s+{re.escape(str(value))}\s", text), what


def test_confusion_matrix_matches_a_hand_count_on_the_test_set(run_dir):
    from jaxmnist.data.arrays import class_counts, preprocess
    from jaxmnist.model import chapter_model, predict
    from jaxmnist.resume import load_run

    (_, _), (x_test, y_test) = DATA
    probabilities = predict(load_run(run_dir).state.params, preprocess(x_test), chapter_model(32))
    predicted = np.asarray(probabilities).argmax(axis=1)
    matrix = report.confusion_matrix(y_test, predicted)
    by_hand = np.bincount(10 * y_test.astype(int) + predicted, minlength=100).reshape(10, 10)
    np.testing.assert_array_equal(matrix, by_hand)
    assert matrix.sum(axis=1).tolist() == class_counts(y_test)
    assert np.trace(matrix) == np.sum(predicted == y_test)


def test_per_class_accuracy_and_most_confused_pairs_on_hand_made_predictions():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    predicted = [0, 1, 1, 1, 2, 2, 2, 0, 1, 3]
    matrix = report.confusion_matrix(labels, predicted)
    assert matrix[:4, :4].tolist() == [[1, 2, 0, 0], [0, 1, 1, 0], [1, 1, 2, 0], [0, 0, 0, 1]]
    accuracy = report.per_class_accuracy(matrix)
    np.testing.assert_allclose(accuracy[:4], [1 / 3, 1 / 2, 2 / 4, 1])
    assert np.isnan(accuracy[4:]).all()  # digits without test images have no accuracy
    assert report.most_confused(matrix) == [(0, 1, 2), (1, 2, 1), (2, 0, 1), (2, 1, 1)]
    assert report.most_confused(matrix, limit=2) == [(0, 1, 2), (1, 2, 1)]
    assert report.most_confused(report.confusion_matrix([1, 2], [1, 2])) == []


def test_misclassified_are_ordered_most_confident_first():
    probabilities = np.array(
        [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.05, 0.95], [0.2, 0.8]]  # labels 0, 0, 1, 0, 1
    )
    assert report.misclassified([0, 0, 1, 0, 1], probabilities).tolist() == [3, 1, 2]
    assert report.misclassified([0, 0, 1, 0, 1], probabilities, limit=1).tolist() == [3]


def test_write_report_escapes_the_run_directory_and_echoes_each_file(run_dir, tmp_path):
    odd = tmp_path / 'run <b>&"x"'
    shutil.copytree(run_dir, odd, ignore=shutil.ignore_patterns("report"))
    written = []
    html = report.write_report(odd, DATA, out_dir=tmp_path / "out", echo=written.append)
    assert html == tmp_path / "out" / "report.html"
    assert [path.name for path in written] == [*PNGS, "report.html"]
    page = html.read_text("utf-8")
    assert "run &lt;b&gt;&amp;&quot;x&quot;" in page
    assert "<b>" not in page


def test_render_escapes_every_text_and_skips_missing_figures():
    png = _tiny_png()
    page = render(
        Page(
            title="<script>alert(1)</script>",
            run_dir="a&b",
            summary=[("<i>", "1 < 2")],
            config={"preset": "<x>"},
            images={"curves": png},
            class_accuracy=np.full(10, np.nan),
            class_counts=np.zeros(10, int),
            pairs=[],
            first_labels=np.zeros(0, int),
            first_probabilities=np.zeros((0, 10)),
        )
    )
    assert "<script" not in page and "<i>" not in page and "<x>" not in page
    assert "&lt;script&gt;" in page and "a&amp;b" in page and "1 &lt; 2" in page
    assert page.count("<img") == 1 and "confusion_matrix.png" not in page


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def test_help_explains_the_command():
    code, out, _ = _main(["--help"])
    assert code == 0
    for text in ("RUN_DIR", "--data-dir", "--out", "report.html", "pip install 'jaxmnist[plots]'"):
        assert text in out


def _one_line_error(code, out, err, *, status=1) -> str:
    assert code == status, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("jaxmnist.report: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def untrained_dir(tmp_path_factory):
    """A run stopped before its first epoch: only the epoch-0 checkpoint."""
    directory = tmp_path_factory.mktemp("untrained") / "ckpt"
    with pytest.raises(Interrupted):
        _train(directory, should_stop=lambda: True)
    return directory


def test_bad_input_is_one_line_and_writes_nothing(run_dir, untrained_dir, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    out = tmp_path / "out"
    cases = [
        ([tmp_path / "missing", "--out", out], DATA, "no checkpoint in"),
        ([a_file, "--out", out], DATA, "not a directory"),
        ([untrained_dir, "--out", out], DATA, "no finished epoch"),
        ([run_dir, "--out", out], synthetic_mnist(512, 256, seed=1), "--data-dir the run"),
        ([run_dir, "--out", a_file / "report"], DATA, "is a file, not a directory"),
        ([run_dir, "--out", a_file], DATA, "is a file, not a directory"),
    ]
    for argv, data, message in cases:
        line = _one_line_error(*_main(argv, data))
        assert message in line, (argv, line)
        assert not out.exists()
    assert a_file.read_text() == "not a directory"
    assert not (untrained_dir / "report").exists()


@pytest.mark.parametrize("argv", [[], [""], ["a", "b"], ["a", "--out", ""], ["a", "--bogus"]])
def test_usage_errors_are_one_line_with_status_2(argv):
    _one_line_error(*_main(argv), status=2)


def test_missing_matplotlib_says_how_to_install_it(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    line = _one_line_error(*_main([run_dir, "--out", run_dir / "never"]))
    assert line.endswith("pip install 'jaxmnist[plots]'")
    assert not (run_dir / "never").exists()


def test_a_failed_write_leaves_no_temporary_and_no_page(tmp_path):
    (tmp_path / "b.png").mkdir()  # a directory where a file must go: the rename fails
    files = {"a.png": b"a", "b.png": b"b", "report.html": b"page"}
    with pytest.raises(JaxmnistError, match="cannot write the report"):
        report.write(tmp_path, files)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.png", "b.png"]
