"""The IDX and CSV readers on files the tests write, and on the real MNIST files when present."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from gpunet.datasets import DataError, load_digits, load_mnist, load_mnist_test, read_csv, read_idx


def idx_bytes(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=6, n_test=4, compress=True):
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in parts.items():
        data = idx_bytes(array)
        (folder / (name + ".gz" if compress else name)).write_bytes(gzip.compress(data) if compress else data)
    return parts


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_folder_round_trip(tmp_path, compress):
    parts = write_mnist(tmp_path, compress=compress)
    d = load_mnist(tmp_path)
    assert d.X_train.shape == (6, 784) and d.X_test.shape == (4, 784)
    np.testing.assert_allclose(d.X_train, parts["train-images-idx3-ubyte"].reshape(6, 784) / 255 * 0.99 + 0.01)
    np.testing.assert_array_equal(d.y_test, parts["t10k-labels-idx1-ubyte"])
    assert d.X_train.min() >= 0.01 and d.X_train.max() <= 1.0


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b[:-1], r"bytes, but dimensions \(3, 2\) need"),
        (lambda b: b + b"\x00", r"bytes, but dimensions \(3, 2\) need"),
        (lambda b: b"\x01" + b[1:], r"not an IDX file"),
        (lambda b: b[:2] + b"\x0d" + b[3:], r"type byte 0x0d; expected 0x08"),
        (lambda b: b[:6], r"truncated IDX header"),
        (lambda b: b"\x1f\x8b" + b"garbage", r"cannot read"),
    ],
)
def test_idx_reader_rejects_bad_files(tmp_path, mutate, match):
    path = tmp_path / "x.idx"
    path.write_bytes(mutate(idx_bytes(np.arange(6).reshape(3, 2))))
    with pytest.raises(DataError, match=match):
        read_idx(path)


def test_idx_reader_reads_what_was_written(tmp_path):
    a = np.arange(24).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)
    with pytest.raises(DataError, match=r"no such file"):
        read_idx(tmp_path / "missing")
    with pytest.raises(DataError, match=r"not a file"):
        read_idx(tmp_path)


def test_mnist_folder_count_mismatch_and_missing_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3))))
    with pytest.raises(DataError, match=r"4 test images but 3 labels"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path)


def test_real_mnist(mnist_dir):
    d = load_mnist(mnist_dir)
    assert d.X_train.shape == (60000, 784) and d.X_test.shape == (10000, 784)
    assert np.bincount(d.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert d.y_train[:5].tolist() == [5, 0, 4, 1, 9]


def test_csv_reader(tmp_path):
    path = tmp_path / "mnist_train.csv"
    path.write_text("label,p1,p2,p3\n7,0,255,51\n\n2,255,0,0\n")
    X, y = read_csv(path)
    assert y.tolist() == [7, 2]
    np.testing.assert_allclose(X, [[0.01, 1.0, 0.208], [1.0, 0.01, 0.01]])


def test_digits_split_is_fixed_and_disjoint():
    a, b = load_digits(), load_digits()
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(a.y_train) == 1438 and len(a.y_test) == 359
    rows = {r.tobytes() for r in a.X_train}
    assert sum(r.tobytes() in rows for r in a.X_test) < 10  # a few digits are pixel-identical duplicates


def test_mnist_test_files_alone_are_read_and_checked_like_the_whole_set(tmp_path):
    # evaluate reads only the two test files; they get load_mnist's checks (a label 12 was let through
    # by an earlier copy of the test-only reader) and the same scaling.
    parts = write_mnist(tmp_path, compress=False)
    whole = load_mnist(tmp_path, pixels="unit", dtype=np.float32)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / name).unlink()
    X, y = load_mnist_test(tmp_path, pixels="unit", dtype=np.float32)
    np.testing.assert_array_equal(X, whole.X_test)
    np.testing.assert_array_equal(y, parts["t10k-labels-idx1-ubyte"])
    assert y.dtype == np.int64
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 12, 3, 4])))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: test label 12 \(item 1\) is not a digit 0-9"):
        load_mnist_test(tmp_path)


def test_import_gpunet_leaves_the_downloader_and_its_network_modules_out():
    import subprocess
    import sys

    modules = ("gpunet.download", "urllib.request", "ssl")
    code = f"import sys, gpunet; print(sorted(m for m in {modules} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
