"""A user's image -> a 28x28 digit made the way MNIST's were: `load_image`, `to_mnist`, `as_text`.

MNIST's digits are light ink on black, their ink scaled to fit a 20x20 box (aspect ratio kept,
anti-aliased), then placed in a 28x28 field with the centre of mass at its centre. A photo or a
drawing differs in every one of these, so `to_mnist` redoes each step on the user's pixels:

    digit = to_mnist(load_image("seven.jpg"))   # uint8 [28, 28], as load_mnist's images

Pillow decodes the files (PNG, JPEG, BMP); it is imported on first use (the `predict` extra).
"""

from __future__ import annotations

import io
import math
import os
import warnings

import numpy as np

from jaxmnist import _fs
from jaxmnist.errors import ImageError, JaxmnistError, one_line

FORMATS = ("PNG", "JPEG", "BMP")
MAX_FILE_BYTES = 128 * 2**20  # a phone's photo is under 20 MB; this only stops a runaway read
# Big photos are reduced (box average) to this long side first: a digit still spans hundreds of
# pixels, and the float arrays below stay a few MB.
WORK_SIZE = 1024
FIELD, BOX = 28, 20
CENTRE = 14.0  # MNIST's centres of mass lie in [13.5, 14.5]: an integer shift towards 14
# Ink must differ from the paper by this much (of black to white) to count as a digit at all.
MIN_CONTRAST = 0.1
# Ink fainter than this fraction of the strongest stroke is paper: grain, shading, JPEG ringing.
INK_FLOOR = 0.25
# Stroke width (2 * area / perimeter) at the 20-pixel scale: MNIST's median is 2.0, 90% reach 1.5.
STROKE = 1.5
_ORIENTATION = 0x0112  # the EXIF tag
_SHADES = ".-:=+*#%@"  # 0 alone is '.', so every inked pixel shows


def require_pillow():
    """PIL.Image, or the error that says how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise JaxmnistError(
            "reading images needs Pillow, which is not installed: pip install 'jaxmnist[predict]'"
        ) from None
    return Image


def printable(name: str) -> str:
    """`name` fit for one line of output: a file name may hold newlines or undecodable bytes."""
    return name if name.isprintable() else ascii(name)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """The image at `path` as float32 [H, W] grey levels in [0, 1] (0 black, 1 white).

    Colour becomes luma; transparency is composited onto the paper it implies (see `_paper`).
    ImageError, naming the file, for anything that is not a readable PNG, JPEG or BMP.
    """
    require_pillow()  # a missing Pillow is the first thing to tell, before any file problem
    name = printable(os.fspath(path))
    try:
        data = _fs.read_regular(path, limit=MAX_FILE_BYTES)
    except _fs.TooLarge:
        raise ImageError(
            f"{name}: larger than {MAX_FILE_BYTES >> 20} MB, too large for a digit's image: "
            "scale it down"
        ) from None
    except _fs.NotRegularFile as error:
        raise ImageError(f"{error}: pass an image file") from None
    except OSError as error:
        raise ImageError(f"{name}: {error.strerror or one_line(error)}") from None
    return decode(data, name)


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """`load_image` for bytes already read; `name` is what error messages call them."""
    image_module = require_pillow()
    bombs = (image_module.DecompressionBombError, image_module.DecompressionBombWarning)
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; here both refuse. Its other
        # warnings (odd EXIF, palette transparency) would break the one line per image.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", image_module.DecompressionBombWarning)
        try:
            with image_module.open(io.BytesIO(data), formats=FORMATS) as image:
                return _grey(image)
        except bombs:
            raise ImageError(
                f"{name}: more than {image_module.MAX_IMAGE_PIXELS:,} pixels, too many to decode "
                "safely: scale it down"
            ) from None
        except image_module.UnidentifiedImageError:
            raise ImageError(f"{name}: not a PNG, JPEG or BMP image") from None
        except MemoryError:
            raise ImageError(f"{name}: not enough memory to decode it: scale it down") from None
        except Exception as error:  # a corrupt file can raise anything from a decoder
            reason = one_line(error, with_type=True)
            raise ImageError(f"{name}: cannot decode it ({reason})") from None


def _grey(image) -> np.ndarray:
    image.draft("L", (WORK_SIZE, WORK_SIZE))  # JPEG only: decode at 1/2, 1/4 or 1/8 of the size
    if image.getexif().get(_ORIENTATION, 1) != 1:
        # Phones store photos sideways and say so in EXIF; viewers (and users) see them upright.
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
    factor = math.ceil(max(image.size) / WORK_SIZE)
    if image.mode.startswith(("I", "F")):
        # 16-bit PNGs: Pillow's convert("L") clips them at 255 instead of scaling them.
        grey = np.asarray(_reduced(image.convert("F"), factor), np.float32)
        top = float(grey.max(initial=0))
        return np.clip(grey / (255 if top <= 255 else 65535 if top <= 65535 else top), 0, 1)
    if "A" in image.getbands() or "transparency" in image.info:
        # Premultiplied, so that box-averaging mixes colours in proportion to their opacity.
        rgba = np.asarray(_reduced(image.convert("RGBA").convert("RGBa"), factor), np.float32)
        rgba = rgba / 255
        alpha = rgba[..., 3]
        grey = rgba[..., :3] @ np.float32([0.299, 0.587, 0.114])  # ITU-R 601 luma, as "L" has
        return np.clip(grey + _paper(grey, alpha) * (1 - alpha), 0, 1)
    return np.asarray(_reduced(image.convert("L"), factor), np.float32) / 255


def _reduced(image, factor: int):
    return image.reduce(factor) if factor > 1 else image


def _paper(premultiplied: np.ndarray, alpha: np.ndarray) -> float:
    """The grey level that transparent pixels show: the paper the opaque pixels sit on.

    Mostly opaque: a picture with transparent margins, whose paper is its own typical grey.
    Mostly transparent: the opaque pixels are the strokes, so the paper is white under dark ink
    and black under light ink (white strokes on white would vanish).
    """
    opaque = alpha > 0.5
    if opaque.mean() >= 0.5:
        return float(np.median(premultiplied[opaque] / alpha[opaque]))
    if alpha.sum() == 0:
        return 1.0  # fully transparent: blank, which `to_mnist` then says
    ink = premultiplied.sum() / alpha.sum()  # the strokes' mean grey
    return 1.0 if ink < 0.5 else 0.0


def to_mnist(grey: np.ndarray) -> np.ndarray:
    """A grey image's digit as MNIST has it: uint8 [28, 28], light ink on 0, strongest 255.

    `grey` is [H, W] in [0, 1] (0 black; uint8 arrays are read as 0..255), dark ink on light
    paper or light on dark: the paper is the median of the border, and the ink is whichever side
    of it reaches further. The ink is cropped, its strokes widened if they would come out thinner
    than MNIST's, scaled to fit 20x20 keeping its aspect ratio, and shifted so that its centre of
    mass is within half a pixel of (14, 14) (row, column). ImageError when it shows no ink.
    """
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.size == 0:
        raise ImageError(f"expected a 2-D grey image, got an array of shape {grey.shape}")
    grey = grey / 255.0 if grey.dtype == np.uint8 else grey.astype(np.float64)
    if not np.isfinite(grey).all():
        raise ImageError("the image has pixels that are not finite numbers")
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    paper = float(np.median(border))
    dark, light = paper - grey.min(), grey.max() - paper
    ink = np.clip(paper - grey if dark > light else grey - paper, 0, None)
    contrast = float(ink.max())
    if contrast < MIN_CONTRAST:
        raise ImageError(
            f"shows no ink: no pixel differs from the paper's grey by {MIN_CONTRAST:.0%} of black "
            f"to white (the most is {contrast:.0%}); it needs a digit in clear contrast"
        )
    ink = ink / contrast
    ink[ink < INK_FLOOR] = 0
    ink = _widened(_cropped(ink))
    patch = _fit(ink, BOX)
    return _centred(patch / patch.max(), FIELD)


def _cropped(ink: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def stroke_width(ink: np.ndarray) -> float:
    """The strokes' mean width in pixels, 2 * area / perimeter of the pixels at half ink or more
    (a long stroke's area is length x width, its perimeter about twice its length)."""
    mask = np.pad(ink >= 0.5, 1)
    edges = np.count_nonzero(np.diff(mask, axis=0)) + np.count_nonzero(np.diff(mask, axis=1))
    return 2 * np.count_nonzero(mask) / edges if edges else 0.0


def _widened(ink: np.ndarray) -> np.ndarray:
    """`ink` (cropped) with its strokes widened to STROKE pixels at the 20-pixel scale, if thinner.

    A pen on paper draws strokes some 1% of a digit's height; MNIST's are about 10%, and a model
    trained on them reads hairlines weakly or wrongly.
    """
    long_side = max(ink.shape)
    width, target = stroke_width(ink), STROKE * long_side / BOX
    if width >= target:
        return ink
    # Dilating by k - 1 pixels also makes the long side k - 1 longer, so the scale shrinks too.
    k = 1 + round((target - width) / (1 - STROKE / BOX))
    return _cropped(_max_filter(np.pad(ink, k), k))


def _max_filter(a: np.ndarray, k: int) -> np.ndarray:
    """Grey dilation by a k x k square (zeros beyond the edges), in O(log k) passes per axis."""
    for axis in (0, 1):
        a = np.moveaxis(a, axis, 0)
        n, before = a.shape[0], (k - 1) // 2
        padded = np.pad(a, [(before, k - 1 - before), (0, 0)])
        span, spans = 1, padded  # spans[i] = max(padded[i : i + span])
        while 2 * span <= k:
            spans, span = np.maximum(spans[:-span], spans[span:]), 2 * span
        # Two windows of `span` cover the window of k (span <= k < 2 * span).
        a = np.moveaxis(np.maximum(spans[:n], spans[k - span : k - span + n]), 0, axis)
    return a


def _fit(ink: np.ndarray, box: int) -> np.ndarray:
    """`ink` resized so that its long side is `box` pixels: area averages when shrinking
    (anti-aliased as MNIST's digits were, without the faint halo Lanczos rings around strokes),
    bilinear when enlarging."""
    h, w = ink.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pil = require_pillow()
    method = pil.Resampling.BOX if scale < 1 else pil.Resampling.BILINEAR
    image = pil.fromarray(ink.astype(np.float32))
    return np.clip(np.asarray(image.resize(size, method), np.float64), 0, 1)


def _centred(patch: np.ndarray, field: int) -> np.ndarray:
    """`patch` in a `field` x `field` of zeros, its centre of mass moved to CENTRE (an integer
    shift, as MNIST's; kept inside the field)."""
    h, w = patch.shape
    total = patch.sum()
    cy, cx = patch.sum(1) @ np.arange(h) / total, patch.sum(0) @ np.arange(w) / total
    top = min(max(math.floor(CENTRE - cy + 0.5), 0), field - h)
    left = min(max(math.floor(CENTRE - cx + 0.5), 0), field - w)
    digit = np.zeros((field, field))
    digit[top : top + h, left : left + w] = patch
    return np.round(digit * 255).astype(np.uint8)


def as_text(digit: np.ndarray) -> str:
    """A 28x28 uint8 digit as 28 lines of 28 characters, '.' for 0 up to '@' for 255."""
    levels = np.where(digit == 0, 0, 1 + (digit.astype(np.int32) - 1) * (len(_SHADES) - 1) // 255)
    return "\n".join("".join(_SHADES[v] for v in row) for row in levels)
