"""Property-based fuzzing: random and mutated bytes fed to every file reader either give valid data or
raise the reader's documented error (DataError, ImageError, CheckpointError) naming the file, on one line, and
never anything else, nor a warning (an extra line on stderr)."""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import gpunet
from gpunet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpunet.datasets import DataError, read_csv, read_idx
from gpunet.images import ImageError, image_inputs

from test_datasets import idx_bytes

pytestmark = pytest.mark.filterwarnings("error")
FUZZ = settings(max_examples=150)  # no deadline, fixed examples: tests/conftest.py's Hypothesis profile


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One folder for the module's files: each example overwrites the one before."""
    return tmp_path_factory.mktemp("fuzz")


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with a few bytes overwritten, some inserted or deleted, and perhaps cut short."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["set", "insert", "delete"]))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _names(exc: Exception, path: Path) -> None:
    assert str(exc).startswith(str(path)) and "\n" not in str(exc), exc


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


IDX = idx_bytes(np.arange(2 * 5 * 4).reshape(2, 5, 4) % 256)
IDX_GZ = gzip.compress(IDX)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(IDX), mutated(IDX_GZ)))
def test_idx_reader(work, data):
    try:
        a = read_idx(_file(work / "x.idx", data))
    except DataError as exc:
        _names(exc, work / "x.idx")
        return
    assert a.dtype == np.uint8 and a.ndim >= 1


CSV = b"label,p1,p2,p3\n3,0,128,255\n7,255,1,2\n0,9,9,9\n"
CSV_BOM = b"\xef\xbb\xbflabel,p1,p2\n3,0,128\n7,255,1\n"  # as a spreadsheet may save it


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(CSV), mutated(CSV_BOM)))
def test_csv_reader(work, data):
    try:
        X, y = read_csv(_file(work / "x.csv", data))
    except DataError as exc:
        _names(exc, work / "x.csv")
        return
    assert X.shape[0] == y.shape[0] >= 1 and np.isfinite(X).all() and (y >= 0).all()
    assert X.min() >= 0.01 - 1e-12 and X.max() <= 1.0 + 1e-12


def _image_bytes(fmt: str) -> bytes:
    a = np.full((20, 16), 255, dtype=np.uint8)
    a[4:16, 7:10] = 0  # a dark "1" on white
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, format=fmt)
    return buffer.getvalue()


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(_image_bytes("PNG")), mutated(_image_bytes("JPEG")),
                 mutated(_image_bytes("BMP"))))
def test_image_loader(work, data):
    try:
        X = image_inputs([str(_file(work / "x.img", data))], 784)
    except ImageError as exc:
        _names(exc, work / "x.img")
        return
    assert X.shape == (1, 784) and np.isfinite(X).all() and 0.01 - 1e-9 <= X.min() and X.max() <= 1.0 + 1e-9


def _checkpoint_bytes() -> bytes:
    net = gpunet.Network.article([6, 4, 3], backend="numpy")
    with tempfile.TemporaryDirectory(prefix="gpunet-fuzz-") as folder:  # at import: removed again at once
        path = Path(folder) / "seed.npz"
        save_checkpoint(path, net, gpunet.Adam(), {"epoch": 1})
        return path.read_bytes()


CHECKPOINT = _checkpoint_bytes()


@settings(FUZZ, max_examples=200)
@given(st.one_of(st.binary(max_size=300), mutated(CHECKPOINT)))
def test_checkpoint_loader(work, data):
    try:
        net, optimizer, meta = load_checkpoint(_file(work / "x.npz", data), "numpy")
    except CheckpointError as exc:
        _names(exc, work / "x.npz")
        return
    assert net.sizes == [6, 4, 3] and all(np.isfinite(v).all() for v in net.get_params().values())
