"""`jaxmnist.digits`: users' images (any format, size, polarity, place) made into MNIST digits.

Closeness of two 28x28 digits is `distance`: the mean absolute difference in [0, 1] units, at the
best of the nine whole-pixel shifts by at most one. MNIST's own centring moves a digit by whole
pixels to put its centre of mass within half a pixel of (14, 14), so a faithful preparation may
land one pixel off the original. Measured on 300 random real test digits, each inverted, enlarged
5x (bicubic), placed off-centre in a 330x260 page and saved as PNG (L, RGBA), JPEG (RGB, q90) or
BMP: mean 0.022, worst 0.046, where a different test digit of the same class is 0.125 away on
average. The bound below, 0.06, is the worst seen plus a margin and half that typical distance.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest

from jaxmnist import digits
from jaxmnist.errors import ImageError, JaxmnistError

REASON = "Pillow reads users' images: install the predict extra"
Image = pytest.importorskip("PIL.Image", reason=REASON)
ImageDraw = pytest.importorskip("PIL.ImageDraw", reason=REASON)
CLOSE = 0.06


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| of two uint8 [28, 28] digits in [0, 1] units, at b's best shift of <= 1 px."""
    a, padded = a / 255, np.pad(b / 255, 1)
    return min(
        float(np.abs(a - padded[1 + dy : 29 + dy, 1 + dx : 29 + dx]).mean())
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    total = digit.sum()
    return (
        float(digit.sum(1) @ np.arange(28) / total),
        float(digit.sum(0) @ np.arange(28) / total),
    )


def drawn_digits() -> dict[str, np.ndarray]:
    """Pen-drawn digits (black on white, 280x280, strokes 24 px) made MNIST-like: offline
    stand-ins for MNIST's test digits."""
    strokes = {
        "0": lambda d: d.ellipse((90, 30, 190, 250), outline=0, width=24),
        "1": lambda d: d.line((140, 30, 150, 250), fill=0, width=24),
        "4": lambda d: (
            d.line((170, 30, 80, 180), fill=0, width=24),
            d.line((80, 180, 210, 180), fill=0, width=24),
            d.line((170, 30, 170, 250), fill=0, width=24),
        ),
        "7": lambda d: (
            d.line((70, 40, 210, 40), fill=0, width=24),
            d.line((210, 40, 120, 250), fill=0, width=24),
        ),
    }
    made = {}
    for name, draw in strokes.items():
        page = Image.new("L", (280, 280), 255)
        draw(ImageDraw.Draw(page))
        made[name] = digits.to_mnist(np.asarray(page) / 255)
    return made


DRAWN = drawn_digits()


def as_users_image(
    digit: np.ndarray,
    fmt: str = "PNG",
    mode: str = "L",
    *,
    enlarge: int = 5,
    at: tuple[int, int] = (37, 121),
    page: tuple[int, int] = (260, 330),
) -> bytes:
    """An MNIST digit as a user would have it: dark ink on white, enlarged (bicubic), off-centre
    on a larger page with margins (`at` = top, left), saved as `fmt` in `mode`. RGBA is black
    ink whose opacity is its darkness, on a fully transparent page."""
    ink = Image.fromarray(255 - digit).resize((28 * enlarge,) * 2, Image.Resampling.BICUBIC)
    paper = Image.new("L", page[::-1], 255)
    paper.paste(ink, at[::-1])
    if mode == "RGBA":
        rgba = np.zeros((*page, 4), np.uint8)
        rgba[..., 3] = 255 - np.asarray(paper)
        paper = Image.fromarray(rgba)
    else:
        paper = paper.convert(mode)
    buffer = io.BytesIO()
    paper.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


VARIANTS = [("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("BMP", "RGB")]


# --- to_mnist, by hand ----------------------------------------------------------------------


def _page(shape=(200, 160), box=(30, 100, 90, 114), ink=0.0, paper=1.0) -> np.ndarray:
    """A page with one filled rectangle (top, bottom, left, right)."""
    grey = np.full(shape, paper)
    top, bottom, left, right = box
    grey[top:bottom, left:right] = ink
    return grey


@pytest.mark.parametrize(
    ("box", "size"),
    [
        ((30, 90, 100, 124), (20, 8)),  # 60 x 24 -> 20 x 8
        ((120, 150, 10, 100), (7, 20)),  # 30 x 90 -> 7 x 20 (6.67 rounds to 7)
        ((50, 90, 50, 90), (20, 20)),
    ],
)
def test_a_rectangle_fills_20_pixels_on_its_long_side_centred_at_14_14(box, size):
    digit = digits.to_mnist(_page(box=box))
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    assert (len(rows), len(cols)) == size
    inside = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert (inside == 255).all()  # area averages of a filled block stay full
    cy, cx = centre_of_mass(digit)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_dark_ink_on_light_and_light_ink_on_dark_give_the_same_digit():
    page = _page()
    np.testing.assert_array_equal(digits.to_mnist(page), digits.to_mnist(1 - page))
    for digit in DRAWN.values():  # anti-aliased grey levels too, up to rounding
        grey = 1 - digit / 255
        assert np.abs(digits.to_mnist(grey).astype(int) - digits.to_mnist(1 - grey)).max() <= 1


def test_grey_paper_and_ink_are_stretched_to_black_and_white():
    # A dim photo: paper at 0.45 (darker than middle grey) and ink at 0.1.
    digit = digits.to_mnist(_page(ink=0.1, paper=0.45))
    np.testing.assert_array_equal(digit, digits.to_mnist(_page()))


def test_uint8_pages_are_read_as_0_to_255():
    page = _page()
    np.testing.assert_array_equal(
        digits.to_mnist((page * 255).astype(np.uint8)), digits.to_mnist(page)
    )


@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
def test_a_blank_page_shows_no_ink(level):
    with pytest.raises(ImageError, match="shows no ink"):
        digits.to_mnist(np.full((40, 30), level))


def test_faint_noise_is_no_digit():
    noise = np.random.default_rng(0).uniform(0.93, 1.0, (100, 100))  # paper grain, JPEG noise
    with pytest.raises(ImageError, match="shows no ink"):
        digits.to_mnist(noise)


@pytest.mark.parametrize("bad", [np.zeros((3, 4, 5)), np.zeros((0, 7)), np.full((5, 5), np.nan)])
def test_arrays_that_are_no_grey_image_are_image_errors(bad):
    with pytest.raises(ImageError):
        digits.to_mnist(bad)


def test_mnist_digits_come_back_as_they_are():
    for digit in DRAWN.values():
        assert distance(digits.to_mnist(digit), digit) < 0.01


def test_a_hairline_is_widened_to_mnist_strokes():
    page = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(page).line((60, 60, 240, 60), fill=0, width=2)
    ImageDraw.Draw(page).line((240, 60, 120, 280), fill=0, width=2)
    digit = digits.to_mnist(np.asarray(page) / 255)
    # Unwidened, the strokes would be 2 * 20 / 220 = 0.2 px wide and grey.
    assert digits.stroke_width(digit / 255) >= 1.2
    assert digit.max() == 255


def test_a_digit_heavy_at_one_end_stays_inside_the_field():
    page = _page(box=(20, 40, 20, 140))  # a bar on top ...
    page[40:180, 75:80] = 0  # ... and a thin stem below: the mass sits high
    digit = digits.to_mnist(page)
    rows = np.flatnonzero(digit.any(1))
    assert len(rows) == 20 and rows[0] >= 0 and rows[-1] <= 27


def test_as_text_is_28_lines_of_28_characters():
    digit = np.zeros((28, 28), np.uint8)
    digit[3, 4], digit[5, 6], digit[7, 8] = 255, 1, 128
    lines = digits.as_text(digit).split("\n")
    assert len(lines) == 28 and all(len(line) == 28 for line in lines)
    assert lines[3][4] == "@" and lines[0] == "." * 28
    assert lines[5][6] not in ".@" and lines[7][8] not in ".@"


# --- load_image: formats, modes, transparency -------------------------------------------------


@pytest.mark.parametrize(("fmt", "mode"), VARIANTS)
def test_a_drawn_digit_comes_back_from_a_users_image(fmt, mode):
    for name, digit in DRAWN.items():
        got = digits.to_mnist(digits.decode(as_users_image(digit, fmt, mode)))
        assert distance(got, digit) < CLOSE, (name, distance(got, digit))


def test_an_image_file_is_read_through_load_image(tmp_path):
    path = tmp_path / "seven.png"
    path.write_bytes(as_users_image(DRAWN["7"]))
    grey = digits.load_image(path)
    assert grey.shape == (260, 330) and grey.dtype == np.float32
    assert grey.min() >= 0 and grey.max() <= 1
    assert distance(digits.to_mnist(grey), DRAWN["7"]) < CLOSE


def _saved(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _sheet(ink, paper, mode="RGB") -> Image.Image:
    image = Image.new(mode, (120, 100), paper)
    ImageDraw.Draw(image).line((60, 15, 60, 85), fill=ink, width=8)
    return image


@pytest.mark.parametrize(
    "image",
    [
        _sheet(0, 255, "L"),
        _sheet(0, 255, "1"),
        _sheet(0, 255, "L").convert("P"),
        _sheet((200, 0, 0), (255, 255, 255)),  # red pen
        _sheet((255, 255, 0), (0, 0, 90)),  # yellow chalk on blue
        _sheet((0, 0, 0, 255), (0, 0, 0, 0), "RGBA"),  # black ink, transparent page
        _sheet((255, 255, 255, 255), (255, 255, 255, 0), "RGBA"),  # white ink, transparent
        _sheet((0, 255), (0, 0), "LA"),
        Image.fromarray(np.asarray(_sheet(0, 255, "L"), np.uint16) * 257),  # 16-bit grey
    ],
    ids=["L", "1", "P", "red-pen", "yellow-on-blue", "RGBA-black", "RGBA-white", "LA", "I;16"],
)
def test_every_mode_gives_the_same_digit(image):
    expected = digits.to_mnist(np.asarray(_sheet(0, 255, "L")) / 255)
    got = digits.to_mnist(digits.decode(_saved(image)))
    assert distance(got, expected) < 0.01


def test_a_palette_with_a_transparent_colour_is_composited():
    image = _sheet(1, 0, "P")
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 white, 1 black
    image.info["transparency"] = 0  # the white page is transparent
    expected = digits.to_mnist(np.asarray(_sheet(0, 255, "L")) / 255)
    assert distance(digits.to_mnist(digits.decode(_saved(image))), expected) < 0.01


def test_transparent_margins_around_an_opaque_page_take_the_pages_colour():
    rgba = np.zeros((200, 240, 4), np.uint8)  # transparent black all round ...
    rgba[20:190, 20:220] = 255  # ... an opaque white sheet, most of the picture ...
    rgba[60:140, 115:125, :3] = 0  # ... with a black stroke on it
    grey = digits.decode(_saved(Image.fromarray(rgba)))
    assert grey[0, 0] == pytest.approx(1.0)  # the margin is paper, not a black frame
    digit = digits.to_mnist(grey)
    assert len(np.flatnonzero(digit.any(1))) == 20 and len(np.flatnonzero(digit.any(0))) < 6


def test_a_photo_stored_sideways_is_turned_as_its_exif_says():
    upright = Image.fromarray(255 - DRAWN["7"]).resize((140, 140))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    sideways = _saved(upright.rotate(90, expand=True), "JPEG", quality=95, exif=exif)
    assert distance(digits.to_mnist(digits.decode(sideways)), DRAWN["7"]) < CLOSE


def test_a_large_photo_is_reduced_before_the_digit_is_found():
    page = Image.new("L", (3000, 2000), 255)
    ImageDraw.Draw(page).line((1800, 300, 1800, 1500), fill=0, width=60)
    grey = digits.decode(_saved(page, "JPEG", quality=80))
    assert max(grey.shape) <= digits.WORK_SIZE
    assert len(np.flatnonzero(digits.to_mnist(grey).any(1))) == 20


# --- load_image: what it refuses --------------------------------------------------------------


def _refusal(tmp_path, name: str, data: bytes | None = None) -> str:
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(ImageError) as caught:
        digits.load_image(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_a_file_that_is_no_image_is_refused(tmp_path):
    assert "not a PNG, JPEG or BMP image" in _refusal(tmp_path, "notes.png", b"hello\n")


def test_other_formats_are_refused(tmp_path):
    gif = _saved(_sheet(0, 255, "L"), "GIF")
    assert "not a PNG, JPEG or BMP image" in _refusal(tmp_path, "digit.gif", gif)


def test_a_truncated_image_is_refused(tmp_path):
    png = _saved(Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), np.uint8)))
    assert "cannot decode it" in _refusal(tmp_path, "cut.png", png[: len(png) // 2])


def test_a_missing_file_is_refused(tmp_path):
    assert "No such file or directory" in _refusal(tmp_path, "missing.png")


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "folder.png").mkdir()
    assert "directory" in _refusal(tmp_path, "folder.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    assert "FIFO" in _refusal(tmp_path, "pipe.png")


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(digits, "MAX_FILE_BYTES", 1000)
    assert "too large" in _refusal(tmp_path, "huge.png", b"\0" * 1001)


@pytest.mark.parametrize("side", [40, 50], ids=["warning", "error"])
def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch, side):
    # Pillow warns above MAX_IMAGE_PIXELS (1600 > 1000) and raises above twice it (2500 > 2000).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    png = _saved(Image.new("L", (side, side), 255))
    assert "too many to decode safely" in _refusal(tmp_path, "bomb.png", png)


def test_a_missing_pillow_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(JaxmnistError, match=r"pip install 'jaxmnist\[predict\]'") as caught:
        digits.load_image(tmp_path / "any.png")
    assert not isinstance(caught.value, ImageError)  # not one image's problem: every image's


# --- real MNIST -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_test_set():
    from jaxmnist.data import load_mnist

    return load_mnist()[1]


@pytest.mark.integration
@pytest.mark.parametrize(("fmt", "mode"), VARIANTS)
def test_real_test_digits_come_back_from_users_images(mnist_test_set, fmt, mode):
    x_test, _ = mnist_test_set
    prepared = [digits.to_mnist(digits.decode(as_users_image(d, fmt, mode))) for d in x_test[:100]]
    distances = np.array([distance(p, d) for p, d in zip(prepared, x_test, strict=False)])
    assert distances.max() < CLOSE, np.argmax(distances)
    assert distances.mean() < 0.03  # measured: 0.022 on 300 digits
