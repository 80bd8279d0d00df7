"""report.html in a real headless Chromium: it renders, offline, with its figures drawn."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import numpy as np
import pytest
from _synthetic import synthetic_mnist

from jaxmnist.config import PRESETS
from jaxmnist.data.arrays import fingerprint
from jaxmnist.runner import train_and_evaluate

pytest.importorskip("matplotlib", reason="the report draws with the plots extra (matplotlib)")
Image = pytest.importorskip("PIL.Image", reason="Pillow (a matplotlib dependency) decodes PNGs")

BROWSER = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium on PATH (Debian: apt-get install -y chromium; CI's .ci/run installs it)",
)
TIMEOUT = 120  # seconds: a browser that hangs fails the test instead of the whole run
WIDTH, HEIGHT = 1200, 2000
TAB_BLUE = (31, 119, 180)  # matplotlib's first colour: the training curve, the bars


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from jaxmnist.report import write_report

    data = synthetic_mnist(512, 256, label_noise=0.1)
    run_dir = tmp_path_factory.mktemp("run") / "ckpt"
    config = PRESETS["keras"].replace(epochs=2, hidden=32, validation_split=0.2)
    digest = fingerprint(*data[0], *data[1])
    train_and_evaluate(config, data, checkpoint_dir=run_dir, fingerprint=digest)
    return write_report(run_dir, data)


def _screenshot(html, directory) -> Image.Image:
    """Chromium's screenshot of `html` (its own profile, no network needed), or a failed test."""
    shot = directory / "shot.png"
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",  # root in containers and CI has no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",  # a small /dev/shm in containers crashes the renderer
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={directory / 'profile'}",
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        html.resolve().as_uri(),
    ]
    # A session of its own, so that on a timeout the renderer and GPU helpers die with it.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{BROWSER} took over {TIMEOUT} s to take a screenshot")
    text = output.decode("utf-8", "replace")
    assert process.returncode == 0 and shot.exists(), text[-2000:]
    with Image.open(shot) as image:
        return image.convert("RGB")


def test_the_page_renders_with_its_figures(page, tmp_path):
    image = _screenshot(page, tmp_path)
    assert image.size == (WIDTH, HEIGHT)
    pixels = np.asarray(image, dtype=np.int16).reshape(-1, 3)
    not_white = np.mean(pixels.min(axis=1) < 235)
    assert not_white > 0.03, f"only {not_white:.1%} of the screenshot is not white"
    colours = len(np.unique(pixels, axis=0))
    assert colours > 200, f"{colours} colours: too few for text and figures"
    # The learning curves are an embedded image: their blue shows only if the page drew it.
    blue = np.sum(np.abs(pixels - TAB_BLUE).max(axis=1) < 25)
    assert blue > 500, f"{blue} pixels of the curves' blue: the figures did not render"
