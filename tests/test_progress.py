"""What a run prints: Keras's bar (live on a terminal, one line per epoch in a log) and the
chapter's `loss at batch N` lines, fed by hand-made callback calls."""

from __future__ import annotations

import io

import numpy as np
import pytest

from jaxmnist.config import PRESETS
from jaxmnist.engine import EpochResult
from jaxmnist.progress import ChapterLog, KerasProgress, format_bar, run_output


def _result(epoch=1, loss=0.2626, accuracy=0.9236, seconds=2.4, steps=469):
    return EpochResult(epoch, loss, accuracy, seconds, batch_losses=[0.5] * steps)


def test_format_bar_is_the_keras_line():
    line = format_bar(469, 469, 2.0, 0.92361, 0.26259)
    assert line == "469/469 ━━━━━━━━━━━━━━━━━━━━ 2s 4ms/step - accuracy: 0.9236 - loss: 0.2626"


def test_format_bar_half_done_pads_the_count_and_the_bar():
    line = format_bar(25, 469, 0.1, 0.5, 1.25)
    # 25 of 469 steps fill 1 of 20 cells; the count is right-aligned to the total's width.
    assert line.startswith(" 25/469 ━" + " " * 19 + " 0s 4ms/step")
    assert line.endswith("- accuracy: 0.5000 - loss: 1.2500")


def test_format_bar_switches_to_microseconds_below_a_millisecond():
    assert " 500us/step " in format_bar(100, 100, 0.05, 0.9, 0.1)


def test_plain_output_is_the_epoch_header_then_one_finished_line():
    out = io.StringIO()
    bar = KerasProgress(epochs=5, stream=out, live=False)
    bar.on_epoch_begin(1, 469)
    bar.on_batches(1, 0, np.array([0.9] * 25), 25, 0.9, 0.5)  # a log gets no partial lines
    bar.on_epoch_end(_result(), state=None)
    assert out.getvalue().splitlines() == [
        "Epoch 1/5",
        "469/469 ━━━━━━━━━━━━━━━━━━━━ 2s 5ms/step - accuracy: 0.9236 - loss: 0.2626",
    ]


def test_live_output_redraws_in_place_and_ends_the_line():
    out = io.StringIO()
    bar = KerasProgress(epochs=2, stream=out, live=True)
    bar.on_epoch_begin(2, 4)
    bar.on_batches(2, 0, np.array([0.7, 0.6]), 2, 0.65, 0.75)
    bar.on_batches(2, 2, np.array([0.5, 0.4]), 4, 0.55, 0.8)  # the last: drawn by epoch end
    bar.on_epoch_end(_result(epoch=2, loss=0.55, accuracy=0.8, seconds=0.2, steps=4), state=None)
    text = out.getvalue()
    assert text.startswith("Epoch 2/2\n\r2/4 ━━━━━━━━━━          ")
    assert "accuracy: 0.7500 - loss: 0.6500" in text
    assert text.count("\r") == 2 and text.endswith("- accuracy: 0.8000 - loss: 0.5500\n")


def test_chapter_log_prints_every_nth_batch_with_the_chapters_numbering():
    out = io.StringIO()
    log = ChapterLog(every=2, stream=out)
    log.on_epoch_begin(1, 5)
    log.on_batches(1, 0, np.array([4.741, 3.2, 2.5]), 3, 3.0, 0.1)
    log.on_batches(1, 3, np.array([2.0, 1.234]), 5, 2.5, 0.2)
    assert out.getvalue().splitlines() == [
        "epoch 0",
        "loss at batch 0: 4.74",
        "loss at batch 2: 2.50",
        "loss at batch 4: 1.23",
    ]


def test_the_third_editions_log_says_Epoch_from_0():
    out = io.StringIO()
    (log,) = run_output(PRESETS["naive3"], live=False, stream=out)
    log.on_epoch_begin(1, 500)
    log.on_batches(1, 0, np.array([2.3061]), 1, 2.3, 0.1)
    assert out.getvalue().splitlines() == ["Epoch 0", "loss at batch 0: 2.31"]


def test_chapter_log_every_0_prints_only_the_epoch_headers():
    out = io.StringIO()
    log = ChapterLog(every=0, stream=out)
    log.on_epoch_begin(3, 5)
    log.on_batches(3, 0, np.array([1.0]), 1, 1.0, 0.0)
    assert out.getvalue() == "epoch 2\n"


@pytest.mark.parametrize(
    ("preset", "log_every", "kinds"),
    [
        ("keras", None, [KerasProgress]),
        ("keras", 50, [KerasProgress, ChapterLog]),
        ("naive", None, [ChapterLog]),
        ("naive", 0, [ChapterLog]),
        ("keras3", None, [KerasProgress]),
        ("naive3", None, [ChapterLog]),
    ],
)
def test_run_output_prints_each_preset_as_the_book_does(preset, log_every, kinds):
    printers = run_output(PRESETS[preset], live=False, log_every=log_every, stream=io.StringIO())
    assert [type(p) for p in printers] == kinds
    logs = [p for p in printers if isinstance(p, ChapterLog)]
    if preset.startswith("naive"):
        assert logs[0].every == (100 if log_every is None else log_every)
    elif logs:
        assert logs[0].every == log_every and not logs[0].header
