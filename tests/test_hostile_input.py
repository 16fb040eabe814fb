"""Hostile input to the readers, the downloader, checkpoints and atomic writes (issue 14): every fault is
the documented one-line error naming the file or value, memory is checked before it is allocated, no row
is dropped or invented, a killed download leaves nothing the next run keeps, a full disk names the path."""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpunet
import gpunet.checkpoint
import gpunet.datasets
import gpunet.files
import gpunet.memory
import gpunet.params
from gpunet.checkpoint import HEADER_LIMIT, STATE_BUFFERS, CheckpointError, load_checkpoint, save_checkpoint
from gpunet.datasets import DataError, load_mnist, read_csv, read_idx
from gpunet.download import DownloadError, download_mnist, fetch
from gpunet.files import atomic_write, remove_stale_temporaries
from gpunet.images import MAX_PIXELS, ImageError, read_grey
from gpunet.training import DeviceMemoryError

from test_datasets import idx_bytes, write_mnist

pytestmark = pytest.mark.filterwarnings("error")  # a warning would be an extra line on stderr
PROPERTY = settings(max_examples=100)  # no deadline, fixed examples: tests/conftest.py's Hypothesis profile
ROOT = Path(__file__).resolve().parents[1]


def peak_bytes(call) -> tuple[int, object]:
    """The most memory Python allocated while ``call()`` ran, and its exception (or None)."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except Exception as exc:  # noqa: BLE001  (returned for the caller to check)
        raised = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, raised


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gpunet", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def assert_one_line(out: subprocess.CompletedProcess, bad: str, status: int) -> None:
    assert out.returncode == status, (out.returncode, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and bad in lines[0], out.stderr


# --- class 3: memory is checked before it is allocated -----------------------------------------


def test_idx_header_declaring_more_than_free_memory_is_refused_unread(tmp_path):
    huge = bytes([0, 0, 8, 2]) + struct.pack(">II", 2**31, 2**31)  # 4.6e18 bytes declared, none present
    path = tmp_path / "huge-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(huge))
    peak, exc = peak_bytes(lambda: read_idx(path))
    assert isinstance(exc, DataError) and str(path) in str(exc), exc
    assert "declare" in str(exc) and "GiB of free memory" in str(exc)
    assert peak < 1 << 20
    raw = tmp_path / "huge-raw"
    raw.write_bytes(huge)  # uncompressed: the file's size already contradicts the header
    with pytest.raises(DataError, match=r"huge-raw: 12 bytes, but dimensions \(2147483648, 2147483648\) need"):
        read_idx(raw)


def test_idx_limit_is_free_memory(tmp_path, monkeypatch):
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 40)))))
    monkeypatch.setattr(gpunet.datasets, "available_host_bytes", lambda: 1999)
    with pytest.raises(DataError, match=r"a.gz: dimensions \(50, 40\) declare .* GiB of data; more than"):
        read_idx(path)
    monkeypatch.setattr(gpunet.datasets, "available_host_bytes", lambda: 2000)
    assert read_idx(path).shape == (50, 40)


def test_gzip_bomb_is_not_inflated(tmp_path):
    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:  # a plausible header, then 256 MiB of zeros
        f.write(idx_bytes(np.zeros((4, 28, 28))))
        for _ in range(256):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    peak, exc = peak_bytes(lambda: read_idx(path))
    assert isinstance(exc, DataError), exc
    assert f"{path}: more bytes than that uncompressed, but dimensions (4, 28, 28) need 3152" in str(exc)
    assert peak < 4 << 20  # the bomb would need 256 MiB


def test_image_declaring_huge_dimensions_is_refused_from_its_header(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    for side, match in ((9000, "9000x9000 pixels"), (40000, "more than 67,108,864 pixels")):
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
        path = tmp_path / f"digit{side}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(side + 1)))
                         + chunk(b"IEND", b""))
        peak, exc = peak_bytes(lambda path=path: read_grey(path))
        assert isinstance(exc, ImageError) and f"{path}: " in str(exc) and match in str(exc), exc
        assert f"expected at most {MAX_PIXELS:,}" in str(exc)
        assert peak < 4 << 20


def test_a_network_too_big_for_memory_is_refused_before_it_is_drawn(monkeypatch):
    with pytest.raises(DeviceMemoryError, match=r"out of memory: layers \[1000000, 1000000, 10\] have "
                                                r"1,000,011,000,010 parameters; .* GiB is free; reduce hidden="):
        gpunet.Network.article([10**6, 10**6, 10], backend="numpy")
    monkeypatch.setattr(gpunet.params, "available_host_bytes", lambda: 10_000)
    with pytest.raises(DeviceMemoryError, match=r"layers \[20, 30, 10\] have 940 parameters; building them in "
                                                r"float32 needs about 0.0 GiB"):
        gpunet.Network.article([20, 30, 10], backend="numpy")  # 940 * (8 + 4) = 11,280 bytes > 10,000
    monkeypatch.setattr(gpunet.params, "available_host_bytes", lambda: 11_280)
    assert gpunet.Network.article([20, 30, 10], backend="numpy").params["W1"].shape == (20, 30)


def test_an_allocation_failure_while_building_is_the_documented_message(monkeypatch):
    def no_memory(*args):
        raise MemoryError("Unable to allocate 3.2 GiB")

    monkeypatch.setattr(gpunet.params, "available_host_bytes", lambda: None)  # where free memory is unknown
    monkeypatch.setattr(gpunet.params, "init_params", no_memory)
    with pytest.raises(DeviceMemoryError, match=r"out of memory on numpy \(cpu\) while building layers \[64, 8, 10\] "
                                                r"in float32 .*Unable to allocate 3.2 GiB; reduce hidden="):
        gpunet.Network.article([64, 8, 10], backend="numpy")


def test_cli_network_too_big_is_one_line_and_writes_nothing(tmp_path):
    out = cli("train", "--hidden", "1000000000", "--epochs", "1", "--out", "run", cwd=tmp_path)
    assert_one_line(out, "out of memory: layers [64, 1000000000, 10]", status=1)
    assert list(tmp_path.iterdir()) == []


def _saved(tmp_path: Path, optimizer="adam", steps=2, sizes=(6, 4, 3)) -> Path:
    net = gpunet.Network.article(list(sizes), backend="numpy", seed=1)
    opt = gpunet.optim.make_optimizer(optimizer)
    X, T = np.random.default_rng(0).random((5, sizes[0])), np.full((5, sizes[-1]), 0.5)
    for _ in range(steps):
        net.train_step(X, T, lr=0.01, optimizer=opt)
    path = tmp_path / "model.npz"
    save_checkpoint(path, net, opt, {"epoch": steps})
    return path


def _arrays(path: Path) -> tuple[dict, dict]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("header"))), arrays


def _write(path: Path, header: dict, arrays: dict) -> Path:
    np.savez(path, header=np.array(json.dumps(header)), **arrays)
    return path


def test_checkpoint_whose_arrays_exceed_free_memory(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    monkeypatch.setattr(gpunet.checkpoint, "available_host_bytes", lambda: 100)
    with pytest.raises(DeviceMemoryError, match=r"out of memory: the checkpoint .*model.npz holds 0.0 GiB"):
        load_checkpoint(path, "numpy")


def test_checkpoint_member_bombs_are_refused_before_reading(tmp_path):
    """A deflated member whose .npy header declares a huge array, or more bytes than the zip says it holds."""
    header_bytes = 4 * (HEADER_LIMIT // 4 + 1)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("header.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": f"<U{header_bytes // 4}", "fortran_order": False,
                                                 "shape": ()})
        for _ in range(header_bytes >> 20):
            f.write(bytes(1 << 20))
        f.write(bytes(header_bytes % (1 << 20)))
    peak, exc = peak_bytes(lambda: load_checkpoint(path, "numpy"))
    assert isinstance(exc, CheckpointError) and "bomb.npz: the header must be one JSON string of at most" in str(exc)
    assert peak < 4 << 20

    good = _saved(tmp_path)
    with zipfile.ZipFile(good) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    w1 = members["param/W1.npy"]
    liar = bytearray(w1)
    start = liar.index(b"(6, 4)")
    liar[start:start + 6] = b"(6, 9)"  # declares 54 floats, holds 24
    members["param/W1.npy"] = bytes(liar)
    with zipfile.ZipFile(tmp_path / "liar.npz", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"liar.npz: param/W1.npy declares \(6, 9\) float32 \(216 bytes\) "
                                             r"but holds 96"):
        load_checkpoint(tmp_path / "liar.npz", "numpy")


# --- class 2: the checkpoint and its optimiser state are validated --------------------------


def _break(name: str, header: dict, arrays: dict) -> str:
    """Damage one field or array of a checkpoint of Adam after 2 steps; returns what the message must say."""
    net, opt = header["network"], header["optimizer"]
    if name == "missing-dtype":
        del net["dtype"]
        return "network fields must be sizes, activation, output, loss, init, seed, dtype"
    if name == "sizes-string":
        net["sizes"] = "6,4,3"
        return "network.sizes must be a list; got '6,4,3'"
    if name == "sizes-bool":
        net["sizes"] = [6, True, 3]
        return "network.sizes must be layer sizes >= 1"
    if name == "sizes-absurd":
        net["sizes"] = [6, 10**12, 3]
        return "params['W1'] must have shape (6, 1000000000000); got (6, 4)"
    if name == "seed-string":
        net["seed"] = "1"
        return "network.seed must be an integer; got '1'"
    if name == "bad-activation":
        net["activation"] = "swish"
        return "activation must be one of"
    if name == "t-negative":
        opt["t"] = -1
        return "t >= 0; got 'adam', t=-1"
    if name == "t-float":
        opt["t"] = 2.0
        return "optimizer.t must be an integer; got 2.0"
    if name == "t-missing":
        del opt["t"]
        return "the header has no field optimizer.t"
    if name == "unknown-optimizer":
        opt["name"] = "rmsprop"
        return "optimizer must be one of sgd, momentum, adam, adamw"
    if name == "missing-beta2":
        del opt["beta2"]
        return "adam optimizer needs the numbers beta1, beta2, eps, weight_decay"
    if name == "beta1-string":
        opt["beta1"] = "0.9"
        return "adam optimizer needs the numbers"
    if name == "beta1-out-of-range":
        opt["beta1"] = 1.5
        return "beta1 must be in [0, 1); got 1.5"
    if name == "meta-list":
        header["meta"] = [1]
        return "the header's meta must be a JSON object; got [1]"
    if name == "header-empty":
        header.clear()
        return "checkpoint format None; expected 1"
    if name == "state-nan":
        arrays["optim/m.W1"][0, 0] = np.nan
        return "optimizer state 'm.W1' contains NaN or infinity"
    if name == "state-inf":
        arrays["optim/v.b2"][0] = np.inf
        return "optimizer state 'v.b2' contains NaN or infinity"
    if name == "state-negative-v":
        arrays["optim/v.W2"][1, 1] = -1.0
        return "optimizer state 'v.W2' (a second moment) must be >= 0; got -1"
    if name == "state-shape":
        arrays["optim/m.W1"] = arrays["optim/m.W1"].T.copy()
        return "optimizer state 'm.W1' must have shape (6, 4); got (4, 6)"
    if name == "state-int":
        arrays["optim/m.b1"] = np.zeros(4, dtype=np.int64)
        return "optimizer state 'm.b1' must be floating point; got dtype int64"
    if name == "state-string":
        arrays["optim/m.b1"] = np.array(["a", "b", "c", "d"])
        return "optimizer state 'm.b1' must be floating point; got dtype <U1"
    if name == "state-missing":
        del arrays["optim/v.W1"]
        return "optimizer state 'v.W1' is missing (layers [6, 4, 3], adam after 2 steps)"
    if name == "state-extra":
        arrays["optim/q.W1"] = np.zeros((6, 4))
        return "unexpected array 'optim/q.W1'"
    if name == "param-nan":
        arrays["param/b1"][2] = np.nan
        return "params['b1'] contains NaN or infinity"
    if name == "param-complex":
        arrays["param/W2"] = arrays["param/W2"].astype(np.complex128)
        return "params['W2'] must be floating point; got dtype complex128"
    if name == "param-missing":
        del arrays["param/b2"]
        return "params['b2'] is missing"
    raise AssertionError(name)


BREAKS = ["missing-dtype", "sizes-string", "sizes-bool", "sizes-absurd", "seed-string", "bad-activation",
          "t-negative", "t-float", "t-missing", "unknown-optimizer", "missing-beta2", "beta1-string",
          "beta1-out-of-range", "meta-list", "header-empty", "state-nan", "state-inf", "state-negative-v",
          "state-shape", "state-int", "state-string", "state-missing", "state-extra", "param-nan", "param-complex",
          "param-missing"]


@pytest.mark.parametrize("name", BREAKS)
def test_damaged_checkpoint_fields(tmp_path, name):
    header, arrays = _arrays(_saved(tmp_path))
    bad = _break(name, header, arrays)
    path = _write(tmp_path / "broken.npz", header, arrays)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, "numpy")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and bad in message and "\n" not in message, message


@pytest.mark.parametrize("name", ["state-nan", "sizes-absurd", "missing-dtype"])
def test_damaged_checkpoint_from_the_command_line(tmp_path, name):
    header, arrays = _arrays(_saved(tmp_path, sizes=(64, 4, 10)))
    if name == "sizes-absurd":
        header["network"]["sizes"] = [64, 10**12, 10]
    else:
        _break(name, header, arrays)
    _write(tmp_path / "broken.npz", header, arrays)
    before = sorted(tmp_path.iterdir())
    out = cli("evaluate", "broken.npz", cwd=tmp_path)
    assert_one_line(out, "broken.npz: ", status=2)
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("optimizer", list(STATE_BUFFERS))
def test_state_buffer_table_matches_the_optimisers(tmp_path, optimizer):
    for steps in (0, 1):
        _, arrays = _arrays(_saved(tmp_path, optimizer, steps))
        prefixes = {k[6:].partition(".")[0] for k in arrays if k.startswith("optim/")}
        assert prefixes == (set(STATE_BUFFERS[optimizer]) if steps else set())
        _, opt, meta = load_checkpoint(tmp_path / "model.npz", "numpy")
        assert (opt.name, opt.t, meta) == (optimizer, steps, {"epoch": steps})


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**13) | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)
with tempfile.TemporaryDirectory(prefix="gpunet-hostile-") as _folder:  # at import: removed again at once
    HEADER, ARRAYS = _arrays(_saved(Path(_folder), "momentum", 1))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One folder for the property tests' files: each example overwrites the one before."""
    return tmp_path_factory.mktemp("hostile")


@PROPERTY
@given(where=st.sampled_from([("network", k) for k in HEADER["network"]] + [("optimizer", k) for k in HEADER["optimizer"]]
                             + [("meta", "epoch"), (None, "format"), (None, "meta")]),
       value=JSON, drop=st.booleans())
def test_any_header_value_loads_or_is_a_checkpoint_error(work, where, value, drop):
    header = json.loads(json.dumps(HEADER))
    part = header if where[0] is None else header[where[0]]
    if drop:
        part.pop(where[1])
    else:
        part[where[1]] = value
    path = _write(work / "h.npz", header, ARRAYS)
    try:
        net, opt, _ = load_checkpoint(path, "numpy")
    except CheckpointError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    assert net.sizes == [6, 4, 3] and opt.name == "momentum"


@PROPERTY
@given(key=st.sampled_from(sorted(ARRAYS)), shape=st.lists(st.integers(0, 7), max_size=3),
       dtype=st.sampled_from(["float32", "float64", "int8", "complex64", "bool", "<U2"]),
       fill=st.sampled_from([0.5, -1.0, np.nan, np.inf, 1e30]))
def test_any_array_loads_or_is_a_checkpoint_error(work, key, shape, dtype, fill):
    arrays = dict(ARRAYS)
    if dtype in ("float32", "float64", "complex64"):
        arrays[key] = np.full(shape, fill, dtype=dtype)
    else:
        arrays[key] = np.full(shape, "x") if dtype == "<U2" else np.zeros(shape, dtype=dtype)
    path = _write(work / "a.npz", HEADER, arrays)
    try:
        net, opt, _ = load_checkpoint(path, "numpy")
    except CheckpointError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    assert all(np.isfinite(v).all() for v in (*net.get_params().values(), *opt.state_dict().values())
               if isinstance(v, np.ndarray))


# --- class 4: readers never silently drop or invent data -----------------------------------


@pytest.mark.parametrize("text, labels", [
    ("\ufeff7,0,255\n2,255,0\n", [7, 2]),  # a byte-order mark before a data row: the row is used
    ("\ufefflabel,a,b\n7,0,255\n", [7]),  # ... before a header: the header is skipped
    ("\n\nlabel,a,b\r\n7,0,255\r\n\r\n2,1,1\r\n", [7, 2]),  # blank lines before the header, CRLF
    ("7, 0 ,255\n", [7]),  # spaces around numbers
])
def test_csv_rows_are_all_used(tmp_path, text, labels):
    path = tmp_path / "x.csv"
    path.write_bytes(text.encode())
    X, y = read_csv(path)
    assert y.tolist() == labels and X.shape == (len(labels), 2)


@pytest.mark.parametrize("text, match", [
    ("7,0,O\n2,1,1\n", r"line 1: non-numeric cell 'O' beside 2 numeric ones; expected a header of names only"),
    ("\n,1,2\n2,1,1\n", r"line 2: non-numeric cell '' beside 2 numeric ones"),
    ("1,2,3\n1000000,0,0\n", r"labels must be in 0..9; got 1000000 \(line 2, cell 1\)"),
    ("1,2,3\n1e300,0,0\n", r"labels must be in 0..9; got 1e\+300 \(line 2, cell 1\)"),
    ("1,2,3\n-1,0,0\n", r"labels must be integers >= 0; got -1 \(line 2, cell 1\)"),
    ("1,2,3\n\n\n3,nan,0\n", r"contains NaN or infinity; got nan \(line 4, cell 2\)"),
    ("1,2,3\n3,0,-inf\n", r"contains NaN or infinity; got -inf \(line 2, cell 3\)"),
    ("1,2,3\n3,0,255.5\n", r"pixels must be in 0..255; got 255.5 \(line 2, cell 3\)"),
    ("label,a,b\n1,2\n", r"line 2: 2 cells; expected 3 like the header"),
    ("1,2,3\n4,5\n", r"line 2: 2 cells; expected 3"),
    ("1,2,3\n4,x,6\n", r"line 2: non-numeric cell 'x'"),
    ("1.5,2,3\n", r"labels must be integers >= 0; got 1.5 \(line 1, cell 1\)"),
    ("1,2,300\n", r"pixels must be in 0..255; got 300 \(line 1, cell 3\)"),
    ("label,a\n", r"no data rows"),
    ("1\n", r"rows need a label and at least one pixel"),
])
def test_csv_faults_name_their_line(tmp_path, text, match):
    path = tmp_path / "x.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_csv(path)
    assert str(info.value).startswith(str(path))


def test_csv_label_range_follows_n_classes(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("12,0,0\n3,1,1\n")
    assert read_csv(path, n_classes=13)[1].tolist() == [12, 3]
    with pytest.raises(DataError, match=r"labels must be in 0..9; got 12 \(line 1, cell 1\)"):
        read_csv(path)
    with pytest.raises(ValueError, match=r"n_classes must be an integer >= 1; got 0"):
        read_csv(path, n_classes=0)


@st.composite
def csv_files(draw):
    """A valid CSV file, in any of the forms people write, and the rows it holds."""
    width = draw(st.integers(1, 5))
    rows = draw(st.lists(st.tuples(st.integers(0, 9), st.lists(st.integers(0, 255), min_size=width, max_size=width)),
                         min_size=1, max_size=8))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [",".join(draw(st.sampled_from([str(v), f"{v}.0", f" {v}"])) for v in (label, *pixels))
             for label, pixels in rows]
    for at in sorted(draw(st.lists(st.integers(0, len(lines)), max_size=3)), reverse=True):
        lines.insert(at, "")  # blank lines anywhere
    if draw(st.booleans()):
        lines.insert(0, ",".join(["label", *(f"{i // 28 + 1}x{i % 28 + 1}" for i in range(width))]))
    text = ("\ufeff" if draw(st.booleans()) else "") + newline.join(lines) + draw(st.sampled_from(["", newline]))
    return text, rows


@PROPERTY
@given(csv_files())
def test_csv_every_row_is_used(work, data):
    text, rows = data
    path = work / "rows.csv"
    path.write_bytes(text.encode())
    X, y = read_csv(path, pixels="unit")
    assert y.tolist() == [label for label, _ in rows]
    np.testing.assert_allclose(X * 255, [pixels for _, pixels in rows])


@PROPERTY
@given(csv_files(), st.data())
def test_csv_one_bad_cell_is_refused_with_its_line(work, data, draw):
    text, rows = data
    lines = text.removeprefix("\ufeff").splitlines()
    data_lines = [i for i, line in enumerate(lines) if line and line[0] not in "l"]
    at = draw.draw(st.sampled_from(data_lines))
    cells = lines[at].split(",")
    column = draw.draw(st.integers(0, len(cells) - 1))
    cells[column] = draw.draw(st.sampled_from(["x", "", "nan", "-1", "256", "1e9", "0x1"] if column
                                              else ["x", "", "nan", "-1", "10", "1e9", "3.5"]))
    lines[at] = ",".join(cells)
    path = work / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_csv(path)
    message = str(info.value)
    assert message.startswith(str(path)) and f"line {at + 1}" in message, message


def test_mnist_test_images_of_another_shape_with_the_same_pixel_count(tmp_path):
    write_mnist(tmp_path)
    rng = np.random.default_rng(1)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(rng.integers(0, 256, (4, 14, 56)))))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: test images are 14x56 pixels; expected 28x28 "
                                        r"like the training images"):
        load_mnist(tmp_path)


def test_mnist_absurd_label_names_the_file_and_item(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.array([1, 2, 3, 200, 4, 5]))))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: train label 200 \(item 3\) is not a digit 0-9"):
        load_mnist(tmp_path)


# --- class 5: downloads ------------------------------------------------------------------------

PAYLOAD = b"the file " * 4000
PAYLOAD_MD5 = {"f.gz": __import__("hashlib").md5(PAYLOAD).hexdigest()}


class Slow(BaseHTTPRequestHandler):
    """/good/f.gz serves the file; /trickle/ sends a byte every 20 ms; /stall/ half, then waits until the
    server closes; /huge/ declares a terabyte."""

    closing = threading.Event()

    def do_GET(self):  # noqa: N802
        mode = self.path.strip("/").partition("/")[0]
        self.send_response(200)
        self.send_header("Content-Length", str(10**12 if mode == "huge" else len(PAYLOAD)))
        self.end_headers()
        try:
            if mode == "good":
                self.wfile.write(PAYLOAD)
            elif mode == "trickle":
                for byte in PAYLOAD:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.02)
            elif mode == "stall":
                self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
                self.wfile.flush()
                self.closing.wait(600)  # however long the test takes to see the half-written file
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    Slow.closing = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Slow.closing.set()
    httpd.shutdown()
    httpd.server_close()


# Per-read time-outs for the local server: far above any wait a loaded machine gives a read on 127.0.0.1, so only
# the behaviour under test (a deadline, a refused header, a full disk) can end these downloads.
READ_TIMEOUT = 60


def test_a_trickling_mirror_hits_the_deadline(slow_server, tmp_path):
    # A byte every 20 ms never trips a per-read time-out; only the deadline on the whole file stops the 720 s.
    with pytest.raises(DownloadError, match=r"/trickle/f.gz: only \d+ bytes after the deadline of 0.5 s") as info:
        fetch(f"{slow_server}/trickle/f.gz", tmp_path / "f.gz", PAYLOAD_MD5["f.gz"], timeout=READ_TIMEOUT,
              deadline=0.5)
    assert int(re.search(r"only (\d+) bytes", str(info.value)).group(1)) < len(PAYLOAD)
    assert list(tmp_path.iterdir()) == []


def test_a_mirror_declaring_a_huge_file_is_refused(slow_server, tmp_path):
    with pytest.raises(DownloadError, match=r"/huge/f.gz: Content-Length '1000000000000'; expected at most 67108864"):
        fetch(f"{slow_server}/huge/f.gz", tmp_path / "f.gz", PAYLOAD_MD5["f.gz"], timeout=READ_TIMEOUT)
    assert list(tmp_path.iterdir()) == []


def test_the_next_download_removes_what_a_killed_one_left(slow_server, tmp_path):
    cache = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, "-c", ("from gpunet.download import download_mnist; "
                                f"download_mnist({str(cache)!r}, mirrors=[{slow_server + '/stall/'!r}], "
                                f"files={PAYLOAD_MD5!r}, timeout={READ_TIMEOUT})")],
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120  # the child's start-up: 1-5 s here
        while not any(p.stat().st_size for p in cache.glob(".f.gz.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(p.stat().st_size for p in cache.glob(".f.gz.*.tmp")), "the child never started writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    user_file = cache / ".notes.tmp"
    user_file.write_text("mine")  # not a name the downloader writes: kept
    download_mnist(cache, mirrors=[f"{slow_server}/good/"], files=PAYLOAD_MD5, timeout=READ_TIMEOUT)
    assert sorted(p.name for p in cache.iterdir()) == [".notes.tmp", "f.gz"]
    assert (cache / "f.gz").read_bytes() == PAYLOAD


def test_a_full_disk_during_a_download_names_the_path_and_stops(slow_server, tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    tried = []
    monkeypatch.setattr(gpunet.files.os, "fsync", full)
    with pytest.raises(OSError) as info:
        download_mnist(tmp_path / "cache", mirrors=[f"{slow_server}/good/", f"{slow_server}/good/"],
                       files=PAYLOAD_MD5, timeout=READ_TIMEOUT, on_file=lambda name, url: tried.append(url))
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"[Errno 28] No space left on device: '{tmp_path / 'cache' / 'f.gz'}'"
    assert len(tried) == 1  # a full disk is not the mirror's fault: no other mirror is tried
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_other_names_are_kept(tmp_path):
    for name in (".a.gz.abcd_123.tmp", ".a.gz.short.tmp", ".b.gz.abcd_123.tmp", "a.gz", ".a.gz.abcd_1234.tmp"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in remove_stale_temporaries(tmp_path, ["a.gz"])] == [".a.gz.abcd_123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.gz.abcd_1234.tmp", ".a.gz.short.tmp",
                                                          ".b.gz.abcd_123.tmp", "a.gz"]


# --- class 6: a full disk names the path; the old file survives -------------------------------


def test_atomic_write_on_a_full_disk_names_the_path_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")

    def write(f):
        f.write(b"new, half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic_write(path, write)
    assert str(info.value) == f"[Errno 28] No space left on device: '{path}'"
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_checkpoint_on_a_full_disk_names_the_path(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    before = path.read_bytes()
    monkeypatch.setattr(gpunet.files.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    net = gpunet.Network.article([6, 4, 3], backend="numpy")
    with pytest.raises(OSError, match=rf"\[Errno 28\] full: '{path}'"):
        save_checkpoint(path, net, gpunet.SGD(), {})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_a_folder_that_cannot_be_written_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"No such file or directory: '{tmp_path / 'gone' / 'x.json'}'"):
        gpunet.files.write_json(tmp_path / "gone" / "x.json", {})

