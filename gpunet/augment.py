"""Input augmentation for image rows: each epoch, every training image shifted (and optionally rotated) afresh.

:class:`Augment` says what to do (``shift=k``: up to k pixels each way, in rows and in columns
independently, as Keras's ``RandomTranslation`` and torchvision's ``RandomAffine(translate=...)``;
``rotate=deg``: an angle drawn uniformly from [-deg, deg] about the image's centre, sampled bilinearly, as
``RandomRotation``). :class:`Augmenter` does it to one training set: epoch ``e``'s draws come from
``numpy.random.default_rng([seed, e, STREAM])`` on the host, two integers a row (and an angle with
``rotate``), drawn row by row, so they are a function of (seed, epoch, row) alone: a run resumed mid-epoch
sees the same images. The images are then made on the device with ``xp`` operations (NumPy or CuPy, the
same code), a chunk of rows at a time, straight into the array the engine trains from.

Pixels moved in from outside the image take the image's background: its own smallest pixel (0.01 under the
article's scaling, 0 for [0, 1] pixels and the 8x8 digits), read once from the original rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import array_module, get_backend
from .checks import check_int

Array = Any
STREAM = 3 << 20  # the draws' stream, apart from the epoch orders ([seed, e]) and the validation rows
CHUNK = 4096  # rows made at once: bounds the temporary index and weight arrays (about 26 MiB each for MNIST)


@dataclass(frozen=True)
class Augment:
    """What each epoch does to the training images: ``shift`` (an integer >= 0, pixels each way), ``rotate``
    (degrees in [0, 180]), ``image_shape`` ((height, width); None: square images, the side the square root of
    a row's width)."""

    shift: int = 0
    rotate: float = 0.0
    image_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.shift, bool) or not isinstance(self.shift, (int, np.integer)) or self.shift < 0:
            raise ValueError(f"augment shift must be an integer >= 0 (pixels); got {self.shift!r}")
        if (isinstance(self.rotate, bool) or not isinstance(self.rotate, (int, float, np.integer, np.floating))
                or not 0 <= self.rotate <= 180):
            raise ValueError(f"augment rotate must be a number of degrees in [0, 180]; got {self.rotate!r}")
        shape = self.image_shape
        if shape is not None and not (isinstance(shape, (tuple, list)) and len(shape) == 2 and all(
                not isinstance(s, bool) and isinstance(s, (int, np.integer)) and s >= 1 for s in shape)):
            raise ValueError(f"augment image_shape must be (height, width), two integers >= 1; got {shape!r}")
        if shape is not None:
            object.__setattr__(self, "image_shape", (int(shape[0]), int(shape[1])))
        object.__setattr__(self, "shift", int(self.shift))
        object.__setattr__(self, "rotate", float(self.rotate))

    @property
    def active(self) -> bool:
        """Whether it changes anything: shift or rotate above 0."""
        return self.shift > 0 or self.rotate > 0


def as_augment(value: Any) -> Augment | None:
    """``train``'s ``augment=``: None, an :class:`Augment`, or a dict of its fields; None where it does nothing."""
    if value is None:
        return None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"shift", "rotate", "image_shape"})
        if unknown:
            raise ValueError(f"augment has no setting {unknown[0]!r}; expected shift, rotate, image_shape")
        value = Augment(**value)
    if not isinstance(value, Augment):
        raise TypeError(f"augment must be None, a gpunet.Augment or a dict like {{'shift': 2}}; "
                        f"got {type(value).__name__}")
    return value if value.active else None


def image_shape(augment: Augment, width: int) -> tuple[int, int]:
    """(height, width) of the rows of ``width`` pixels: ``augment.image_shape``, else the square's."""
    if augment.image_shape is not None:
        h, w = augment.image_shape
        if h * w != width:
            raise ValueError(f"augment image_shape {augment.image_shape} holds {h * w} pixels; the rows have {width}")
        return h, w
    side = math.isqrt(width)
    if side * side != width:
        raise ValueError(f"augment needs the images' height and width: rows of {width} pixels are not square "
                         f"images; give augment=Augment(..., image_shape=(height, width))")
    return side, side


class Augmenter:
    """An :class:`Augment` bound to one training set: ``source`` (N, height * width) on the backend, kept and
    never written; :meth:`apply` writes an epoch's images into another array of its shape."""

    def __init__(self, augment: Augment, source: Array, seed: int, backend: Any) -> None:
        self.augment, self.source, self.seed, self.backend = augment, source, seed, backend
        self.shape = image_shape(augment, source.shape[1])
        self.fill = source.min(axis=1, keepdims=True)  # (N, 1): each image's background

    def draws(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Epoch ``epoch``'s (shifts (N, 2) of (rows down, columns right), angles (N,) in degrees or None),
        on the host, drawn row by row from the (seed, epoch) stream."""
        n, k, r = self.source.shape[0], self.augment.shift, self.augment.rotate
        rng = np.random.default_rng([self.seed, epoch, STREAM])
        shifts = rng.integers(-k, k + 1, size=(n, 2)) if k else np.zeros((n, 2), dtype=np.int64)
        angles = rng.uniform(-r, r, size=n) if r else None  # after the shifts: rotate= leaves them as they were
        return shifts, angles

    def apply(self, epoch: int, out: Array) -> None:
        """Write epoch ``epoch``'s images into ``out`` in place (the array keeps its memory: graph mode's
        captured gather reads it)."""
        shifts, angles = self.draws(epoch)
        d = self.backend.to_device(shifts.T.copy())  # (2, N): the epoch's one small upload (and the angles')
        degrees = None if angles is None else self.backend.to_device(angles)
        for lo in range(0, self.source.shape[0], CHUNK):
            hi = min(lo + CHUNK, self.source.shape[0])
            X, dy, dx, fill = self.source[lo:hi], d[0, lo:hi], d[1, lo:hi], self.fill[lo:hi]
            if degrees is None:
                out[lo:hi] = shifted(X, dy, dx, fill, self.shape)
            else:
                out[lo:hi] = rotated(X, dy, dx, degrees[lo:hi], fill, self.shape)


def augment_images(X: Array, augment: Augment | dict[str, Any], *, seed: int = 0, epoch: int = 1) -> Array:
    """A new array of the images ``X`` (N, height * width; NumPy or CuPy, float) as epoch ``epoch`` of a run
    seeded ``seed`` augments them: what ``train(..., augment=augment, seed=seed)`` trains on in that epoch
    when ``X`` is its whole training set (no validation rows taken out). To look at, or to test on moved
    images."""
    xp = array_module(X)
    if not (hasattr(X, "ndim") and X.ndim == 2 and X.dtype.kind == "f"):
        what = f"shape {X.shape} {X.dtype}" if hasattr(X, "ndim") else type(X).__name__
        raise ValueError(f"X must be a 2-D float NumPy or CuPy array of images, one a row; got {what}")
    check_int("seed", seed, 0)
    check_int("epoch", epoch, 1)
    spec = as_augment(augment)
    out = xp.array(X, copy=True)
    if spec is not None:
        Augmenter(spec, X, seed, get_backend("numpy" if xp is np else "cupy")).apply(epoch, out)  # X's own
    return out


def shifted(X: Array, dy: Array, dx: Array, fill: Array, shape: tuple[int, int]) -> Array:
    """Each row of ``X`` (K, h * w) as an h x w image moved ``dy[k]`` rows down and ``dx[k]`` columns right:
    out[i, j] = in[i - dy, j - dx], and ``fill[k]`` where that falls outside the image."""
    xp, (h, w), K = array_module(X), shape, X.shape[0]
    i = xp.arange(h).reshape(1, h, 1) - dy.reshape(K, 1, 1)  # (K, h, 1): the source row of each output row
    j = xp.arange(w).reshape(1, 1, w) - dx.reshape(K, 1, 1)  # (K, 1, w)
    inside = ((i >= 0) & (i < h) & (j >= 0) & (j < w)).reshape(K, h * w)
    index = (xp.clip(i, 0, h - 1) * w + xp.clip(j, 0, w - 1)).reshape(K, h * w)
    return xp.where(inside, xp.take_along_axis(X, index, axis=1), fill)


def rotated(X: Array, dy: Array, dx: Array, degrees: Array, fill: Array, shape: tuple[int, int]) -> Array:
    """Each row of ``X`` as an h x w image rotated by ``degrees[k]`` about its centre, then moved as
    :func:`shifted` moves it; each pixel sampled bilinearly from the four around its source point, those
    outside the image counting as ``fill[k]``."""
    xp, (h, w), K = array_module(X), shape, X.shape[0]
    theta = xp.deg2rad(degrees.astype(np.float64)).reshape(K, 1, 1)
    cos, sin = xp.cos(theta), xp.sin(theta)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y = xp.arange(h, dtype=np.float64).reshape(1, h, 1) - dy.reshape(K, 1, 1) - cy  # (K, h, 1), from the centre
    x = xp.arange(w, dtype=np.float64).reshape(1, 1, w) - dx.reshape(K, 1, 1) - cx  # (K, 1, w)
    # (K, h, w): the source point, rotated back; one beyond the image at most, where only the fill is read
    ys = xp.clip(cy + cos * y + sin * x, -1, h)
    xs = xp.clip(cx - sin * y + cos * x, -1, w)
    y0, x0 = xp.floor(ys), xp.floor(xs)
    wy, wx = (ys - y0).reshape(K, h * w), (xs - x0).reshape(K, h * w)
    # The images framed by the fill, one pixel before and two after each side: the four pixels around any
    # source point, (y0 .. y0 + 1, x0 .. x0 + 1) with y0 in [-1, h], lie in the frame, so no test is needed.
    W = w + 3
    framed = xp.empty((K, h + 3, W), dtype=X.dtype)
    framed[...] = fill.reshape(K, 1, 1)
    framed[:, 1 : h + 1, 1 : w + 1] = X.reshape(K, h, w)
    framed = framed.reshape(K, (h + 3) * W)
    top_left = ((y0.astype(np.int64) + 1) * W + x0.astype(np.int64) + 1).reshape(K, h * w)

    def at(offset: int) -> Array:
        return xp.take_along_axis(framed, top_left + offset, axis=1)

    top = (1 - wx) * at(0) + wx * at(1)
    bottom = (1 - wx) * at(W) + wx * at(W + 1)
    return ((1 - wy) * top + wy * bottom).astype(X.dtype, copy=False)
