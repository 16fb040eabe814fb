"""Your own handwriting as network input: an image file made to look like an MNIST (or 8x8 digits) image.

MNIST's recipe (LeCun et al.): the digit, light on dark, is scaled with
anti-aliasing so its bounding box fits 20x20, then placed in a 28x28 frame so
its centre of mass is the frame's centre. scikit-learn's 8x8 digits are as tall
as their frame and centred by their bounding box.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .datasets import scale_pixels
from .files import require_file

# inputs -> (frame side, side of the box the digit is fitted into, centred by "mass" or "box", maximum pixel value)
GEOMETRY = {784: (28, 20, "mass", 255.0), 64: (8, 8, "box", 16.0)}
MAX_PIXELS = 1 << 26  # 67 million: 512 MiB as float64 grey levels; checked from the header before decoding
TOO_BIG = f"expected at most {MAX_PIXELS:,} (a photo or scan of one digit needs far fewer)"
INK_THRESHOLD = 0.2  # of the darkest-to-lightest range: what counts as ink for the bounding box


class ImageError(ValueError):
    """An image file cannot be read, or holds no digit; the message names it."""


def read_grey(path: str | os.PathLike[str]) -> np.ndarray:
    """The image at ``path`` as grey levels in [0, 1] (1 is white), any size, colour or mode."""
    from PIL import Image

    path = require_file(path, ImageError)
    try:
        with warnings.catch_warnings():
            # Pillow warns about oddities it reads past (corrupt EXIF, ...) and about large images;
            # the size is checked here instead, from the header, before anything is decoded.
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ImageError(f"{path}: {image.width}x{image.height} pixels; {TOO_BIG}")
                image.load()
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:  # transparent -> on white
                    image = image.convert("RGBA")
                    white = Image.new("RGBA", image.size, "white")
                    image = Image.alpha_composite(white, image)
                grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    except ImageError:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit, above ours, hit while reading the header
        raise ImageError(f"{path}: more than {MAX_PIXELS:,} pixels; {TOO_BIG}") from None
    except Exception as exc:  # noqa: BLE001  (UnidentifiedImageError, DecompressionBombError, ...)
        # Pillow's decoders raise many types on damaged files (OSError, SyntaxError, struct.error, ...):
        # to the caller each is the same thing, a file that is not a readable image.
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise ImageError(f"{path}: empty image")
    return grey


def digit_frame(
    grey: np.ndarray, side: int = 28, box: int = 20, centre: str = "mass", *, name: str = "image"
) -> np.ndarray:
    """Grey levels -> a ``side`` x ``side`` frame of ink in [0, 1], light on dark, fitted and centred like MNIST.

    ``centre="mass"`` puts the centre of mass at the frame's centre (MNIST);
    ``"box"`` centres the bounding box (the 8x8 digits).

    Dark ink on light paper is detected (the border is lighter than the middle)
    and inverted; the background level is subtracted.
    """
    from PIL import Image

    ink = 1.0 - grey if np.median(_border(grey)) > 0.5 else grey  # MNIST is light on dark
    ink = np.clip(ink - np.median(_border(ink)), 0.0, None)  # the paper's level becomes 0
    if ink.max() <= 0.0:
        raise ImageError(f"{name}: no digit found (the image is blank)")
    ink /= ink.max()
    rows, cols = np.nonzero(ink >= INK_THRESHOLD)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # the bounding box
    h, w = ink.shape
    scale = box / max(h, w)
    h, w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize((w, h), Image.Resampling.LANCZOS))
    resized = np.clip(resized, 0.0, 1.0).astype(np.float64)
    if centre == "mass":  # the centre of mass goes to the frame's centre, as far as the frame allows
        mass = resized.sum()
        cy = (resized.sum(axis=1) @ np.arange(h)) / mass
        cx = (resized.sum(axis=0) @ np.arange(w)) / mass
        top = int(np.clip(round(side / 2 - cy), 0, side - h))  # MNIST puts it at (14, 14) in 0-based pixels
        left = int(np.clip(round(side / 2 - cx), 0, side - w))
    else:
        top, left = (side - h) // 2, (side - w) // 2
    frame = np.zeros((side, side))
    frame[top : top + h, left : left + w] = resized
    return frame


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def image_inputs(paths: list[str], n_inputs: int, pixels: str = "original") -> np.ndarray:
    """One input row per image file for a network with ``n_inputs`` inputs (784: MNIST, 64: 8x8 digits)."""
    if n_inputs not in GEOMETRY:
        raise ValueError(f"images can be fed to networks with 784 (MNIST) or 64 (8x8 digits) inputs; "
                         f"this network has {n_inputs}")
    side, box, centre, max_value = GEOMETRY[n_inputs]
    frames = [digit_frame(read_grey(p), side, box, centre, name=str(Path(p))) for p in paths]
    return scale_pixels(np.stack(frames).reshape(len(paths), -1) * max_value, max_value, pixels)
