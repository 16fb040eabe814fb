"""Datasets as host NumPy arrays: scikit-learn's 8x8 digits, MNIST IDX files and CSV files.

Images come back as ``(N, pixels)`` float arrays scaled as in the original
article, to [0.01, 1.0] (``pixels="original"``) or to [0, 1] (``pixels="unit"``),
and labels as int64 ``(N,)``.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from .checks import check_choice, check_fraction, check_int, check_number
from .files import require_file
from .memory import GiB, available_host_bytes

MNIST_FILES = {  # the standard names; each may also be stored uncompressed, without ".gz"
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
DATASETS = ("digits", "mnist", "csv")
PIXELS = {"original": "0..max scaled to [0.01, 1.0] (the article's)", "unit": "0..max scaled to [0, 1]"}
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class Split(NamedTuple):
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_val: np.ndarray | None = None  # held out of the training rows by hold_out()
    y_val: np.ndarray | None = None


class DataError(ValueError):
    """A data file is missing, malformed or inconsistent; the message names it."""


def scale_pixels(raw: np.ndarray, max_value: float, pixels: str = "original", dtype: DTypeLike = np.float64) -> np.ndarray:
    """Pixels 0..max_value -> [0.01, 1.0] as the original article (never exactly 0), or -> [0, 1].

    Computed in place in ``dtype``: the only copy made is the result's.
    """
    check_choice("pixels", pixels, tuple(PIXELS))
    X = raw.astype(dtype)
    X /= max_value  # the article's x / 255 * 0.99 + 0.01, in its order
    if pixels == "original":
        X *= 0.99
        X += 0.01
    return X


def load_digits(pixels: str = "original", dtype: DTypeLike = np.float64) -> Split:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), split 80/20 by a fixed seed."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    X, y = scale_pixels(data.data, 16.0, pixels, dtype), data.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y))
    n_test = int(round(len(y) * DIGITS_TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return Split(X[train], y[train], X[test], y[test])


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed or raw), checking its header.

    Header: two zero bytes, the type byte 0x08 (uint8), the number of dimensions,
    then one big-endian uint32 per dimension; the data follows, nothing after it.
    The size the header declares is checked against free memory before anything
    is allocated, and a compressed file is decompressed only up to that size plus
    one byte, so a gzip bomb is refused without being inflated.
    """
    path = require_file(path, DataError)
    try:
        with open(path, "rb") as raw_file:
            compressed = raw_file.read(2) == b"\x1f\x8b"
            raw_file.seek(0)
            f = gzip.GzipFile(fileobj=raw_file, mode="rb") if compressed else raw_file
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\x00\x00":
                raise DataError(f"{path}: not an IDX file (expected two zero bytes, got {head[:2]!r})")
            if head[2] != 0x08:
                raise DataError(f"{path}: IDX type byte 0x{head[2]:02x}; expected 0x08 (unsigned bytes)")
            ndim = head[3]
            dims = f.read(4 * ndim)
            if ndim < 1 or len(dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header ({4 + len(dims)} bytes for {ndim} dimensions)")
            shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
            size, start = math.prod(shape), 4 + 4 * ndim  # Python ints: no overflow
            if not compressed and os.fstat(raw_file.fileno()).st_size != start + size:
                raise DataError(f"{path}: {os.fstat(raw_file.fileno()).st_size} bytes, "
                                f"but dimensions {shape} need {start + size}")
            free = available_host_bytes()
            if free is not None and size > free:
                raise DataError(f"{path}: dimensions {shape} declare {size / GiB:,.1f} GiB of data; "
                                f"more than the {free / GiB:,.1f} GiB of free memory")
            data = f.read(size + 1)  # bounded: one byte past the end says there is more
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    except MemoryError:
        raise DataError(f"{path}: cannot read: its {size:,} bytes of data do not fit in memory") from None
    if len(data) != size:
        got = f"{start + len(data)} bytes" if len(data) < size else "more bytes than that"
        raise DataError(f"{path}: {got} uncompressed, but dimensions {shape} need {start + size}")
    return np.frombuffer(data, dtype=np.uint8, count=size).reshape(shape)


def load_mnist(directory: str | os.PathLike[str], pixels: str = "original", dtype: DTypeLike = np.float64) -> Split:
    """The four standard MNIST IDX files in ``directory``, images flattened to 784 and scaled.

    Test images must have the training images' height and width (not only their
    pixel count), and every label must be a digit 0-9.
    """
    directory, paths = _mnist_paths(directory, ("train", "test"))
    arrays = {key: read_idx(path) for key, path in paths.items()}
    train, test = (_mnist_part(directory, paths, arrays, part) for part in ("train", "test"))
    if test[0].shape[1:] != train[0].shape[1:]:
        raise DataError(f"{paths['test_images']}: test images are {_hw(test[0])} pixels; "
                        f"expected {_hw(train[0])} like the training images")
    return Split(*(a for images, labels in (train, test) for a in _flat(images, labels, pixels, dtype)))


def load_mnist_test(directory: str | os.PathLike[str], pixels: str = "original", dtype: DTypeLike = np.float64
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Only the test images and labels of the MNIST IDX files in ``directory``, checked and scaled as
    :func:`load_mnist` does (the training files need not be there)."""
    directory, paths = _mnist_paths(directory, ("test",))
    arrays = {key: read_idx(path) for key, path in paths.items()}
    return _flat(*_mnist_part(directory, paths, arrays, "test"), pixels, dtype)


def _mnist_paths(directory: str | os.PathLike[str], parts: tuple[str, ...]) -> tuple[Path, dict[str, Path]]:
    """The folder and the files of ``parts`` in it, each found (gz or not) before anything is read."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such folder" if not directory.exists() else f"{directory}: not a folder")
    return directory, {key: _gz_or_raw(directory, name) for key, name in MNIST_FILES.items()
                       if key.startswith(parts)}


def _mnist_part(directory: Path, paths: dict[str, Path], arrays: dict[str, np.ndarray], part: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """One part's images (N, H, W) and labels (N,), checked: ranks, counts, digits 0-9."""
    images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(
            f"{directory}: {part} images must be 3-D and labels 1-D; got {images.shape} and {labels.shape}"
        )
    if images.shape[0] == 0:
        raise DataError(f"{paths[f'{part}_images']}: no images (dimensions {images.shape}); expected at least one")
    if 0 in images.shape[1:]:
        raise DataError(f"{paths[f'{part}_images']}: images of {_hw(images)} pixels (dimensions {images.shape}); "
                        "expected a height and width of at least 1")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{directory}: {images.shape[0]} {part} images but {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        at = int(np.argmax(labels > 9))
        raise DataError(f"{paths[f'{part}_labels']}: {part} label {labels[at]} (item {at}) is not a digit 0-9")
    return images, labels


def _flat(images: np.ndarray, labels: np.ndarray, pixels: str, dtype: DTypeLike) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) uint8 images and their labels -> (N, H*W) scaled pixels and int64 labels."""
    return scale_pixels(images.reshape(images.shape[0], -1), 255.0, pixels, dtype), labels.astype(np.int64)


def _hw(images: np.ndarray) -> str:
    return "x".join(str(n) for n in images.shape[1:])


def _gz_or_raw(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    raise DataError(f"{directory / name}: no such file (nor {name.removesuffix('.gz')}): "
                    f"{directory} is missing {name}")


def read_csv(
    path: str | os.PathLike[str],
    max_value: float = 255.0,
    pixels: str = "original",
    dtype: DTypeLike = np.float64,
    n_classes: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Images from a CSV file, one per row: the label first, then the pixels 0..max_value.

    The format of the widely used ``mnist_train.csv``. A byte-order mark is
    ignored; blank lines are skipped; a first row in which no cell is a number is
    a header and is skipped. Every other row is used, or the file is refused with
    the row's line number: a first row that mixes names and numbers, a
    non-numeric cell, a row of another length, NaN or infinity, a label that is
    not an integer in 0..n_classes-1, a pixel outside 0..max_value.
    Returns scaled pixels and int64 labels.
    """
    path = require_file(path, DataError)
    n_classes = check_int("n_classes", n_classes, 1)
    rows: list[np.ndarray] = []
    lines: list[int] = []  # the line number of each row, for messages
    first = True  # no non-blank line seen yet
    header = 0  # the header's number of cells, if there is one
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the first cell
            for number, line in enumerate(f, start=1):
                cells = line.strip().split(",")
                if cells == [""]:
                    continue
                try:
                    values = np.array([float(c) for c in cells])
                except ValueError:
                    numbers = [c for c in cells if _is_number(c)]
                    if first and not numbers:
                        first, header = False, len(cells)
                        continue  # a header row
                    bad = next(c for c in cells if not _is_number(c))
                    if first:
                        raise DataError(
                            f"{path}, line {number}: non-numeric cell {bad!r} beside {len(numbers)} numeric ones; "
                            "expected a header of names only or a row of numbers only") from None
                    raise DataError(f"{path}, line {number}: non-numeric cell {bad!r}") from None
                first = False
                width = len(rows[0]) if rows else header or len(values)
                if len(values) != width:
                    like = "the rows before" if rows else "the header"
                    raise DataError(f"{path}, line {number}: {len(values)} cells; expected {width} like {like}")
                rows.append(values)
                lines.append(number)
        if not rows:
            raise DataError(f"{path}: no data rows")
        data = np.stack(rows)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text CSV file ({exc.reason} at byte {exc.start})") from None
    except MemoryError:
        raise DataError(f"{path}: too big to read into memory") from None
    del rows
    if data.shape[1] < 2:
        raise DataError(f"{path}: rows need a label and at least one pixel; got {data.shape[1]} cell")

    def refuse(bad: np.ndarray, message: str) -> None:
        if bad.any():
            row, cell = np.argwhere(bad)[0] if bad.ndim == 2 else (np.argmax(bad), 0)
            value = float(data[row, cell])
            shown = str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
            raise DataError(f"{path}: {message}{shown} (line {lines[row]}, cell {cell + 1})")

    refuse(~np.isfinite(data), "contains NaN or infinity; got ")
    labels, values = data[:, 0], data[:, 1:]
    refuse((labels != np.round(labels)) | (labels < 0), "labels must be integers >= 0; got ")
    refuse(labels >= n_classes, f"labels must be in 0..{n_classes - 1}; got ")
    refuse(np.pad((values < 0) | (values > max_value), ((0, 0), (1, 0))), f"pixels must be in 0..{max_value:g}; got ")
    return scale_pixels(values, max_value, pixels, dtype), labels.astype(np.int64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def hold_out(split: Split, fraction: float, seed: int = 0) -> Split:
    """``split`` with a seeded ``fraction`` of its training rows moved to a validation set."""
    fraction = check_fraction("validation fraction", fraction)
    n = len(split.y_train)
    n_val = int(round(n * fraction))
    if fraction > 0 and not 1 <= n_val < n:
        raise ValueError(f"validation fraction {fraction:g} of {n} training rows leaves no validation "
                         "or no training rows")
    if n_val == 0:
        return split
    order = np.random.default_rng([seed, 1 << 20]).permutation(n)  # a stream apart from the epoch orders
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return Split(split.X_train[train], split.y_train[train], split.X_test, split.y_test,
                 split.X_train[val], split.y_train[val])


def check_dataset(name: str, train_csv: object = None, test_csv: object = None) -> None:
    """A known dataset name, with both CSV files where it is csv."""
    check_choice("dataset", name, DATASETS)
    if name == "csv" and (train_csv is None or test_csv is None):
        raise ValueError("dataset='csv' needs train_csv= and test_csv= (the two CSV files)")


def load(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train_csv: str | os.PathLike[str] | None = None,
    test_csv: str | os.PathLike[str] | None = None,
    pixels: str = "original",
    dtype: DTypeLike = np.float64,
    on_download: Callable[[str, str], object] | None = None,
    download_deadline: float | None = None,
) -> Split:
    """The dataset called ``name``: digits, mnist (``data_dir``, else downloaded to the cache) or csv.

    ``download_deadline``: seconds each MNIST file may take to download from one
    mirror, however steadily it trickles (default: gpunet.download.DEADLINE, 600).
    """
    check_dataset(name, train_csv, test_csv)
    if download_deadline is not None:
        check_number("download_deadline", download_deadline, positive=True)
    if name == "digits":
        return load_digits(pixels, dtype)
    if name == "csv":
        assert train_csv is not None and test_csv is not None  # check_dataset refused a csv without both
        return Split(*read_csv(train_csv, pixels=pixels, dtype=dtype), *read_csv(test_csv, pixels=pixels, dtype=dtype))
    if data_dir is None:
        from .download import DEADLINE, download_mnist  # here: urllib, http and ssl are not part of `import gpunet`

        data_dir = download_mnist(on_file=on_download, deadline=download_deadline or DEADLINE)
    return load_mnist(data_dir, pixels, dtype)
