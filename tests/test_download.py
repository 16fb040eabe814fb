"""The downloader against a real HTTP server on 127.0.0.1: good files, bad checksums, dropped connections."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from gpunet.datasets import load_mnist
from gpunet.download import MNIST_MD5, DownloadError, download_mnist

FILES = {"a.gz": b"first file " * 1000, "b.gz": b"second file " * 3000}
MD5 = {name: hashlib.md5(data).hexdigest() for name, data in FILES.items()}


class Handler(BaseHTTPRequestHandler):
    """/good/NAME serves NAME; /bad/NAME serves other bytes; /drop/NAME stops half-way."""

    content: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        mode, _, name = self.path.strip("/").partition("/")
        data = self.content.get(name)
        if data is None or mode not in ("good", "bad", "drop"):
            self.send_error(404)
            return
        if mode == "bad":
            data = data[::-1]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "drop":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.content, Handler.requests = dict(FILES), []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_good_files_are_downloaded_and_verified(server, tmp_path):
    out = download_mnist(tmp_path / "cache", mirrors=[f"{server}/good/"], files=MD5, timeout=10)
    for name, data in FILES.items():
        assert (out / name).read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no temporary files left
    # A second call finds verified files and fetches nothing.
    Handler.requests.clear()
    download_mnist(out, mirrors=[f"{server}/good/"], files=MD5, timeout=10)
    assert Handler.requests == []


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match=r"md5 .*, expected " + MD5["a.gz"]) as info:
        download_mnist(tmp_path, mirrors=[f"{server}/bad/"], files=MD5, timeout=10)
    assert f"Place the four files a.gz, b.gz in {tmp_path}" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_connection_dropped_mid_file_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match=r"a.gz"):
        download_mnist(tmp_path, mirrors=[f"{server}/drop/"], files=MD5, timeout=10)
    assert list(tmp_path.iterdir()) == []


def test_first_mirror_down_second_used(server, tmp_path, refused_url):
    mirrors = [refused_url, f"{server}/missing/", f"{server}/bad/", f"{server}/good/"]
    tried = []
    download_mnist(tmp_path, mirrors=mirrors, files=MD5, timeout=10, on_file=lambda n, u: tried.append(u))
    assert (tmp_path / "a.gz").read_bytes() == FILES["a.gz"]
    assert tried[:4] == [m + "a.gz" for m in mirrors]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gz", "b.gz"]


def test_damaged_cached_file_is_replaced(server, tmp_path):
    (tmp_path / "a.gz").write_bytes(b"half a file")
    download_mnist(tmp_path, mirrors=[f"{server}/good/"], files=MD5, timeout=10)
    assert (tmp_path / "a.gz").read_bytes() == FILES["a.gz"]


def test_offline_message_says_what_to_place_where(tmp_path, refused_url):
    with pytest.raises(DownloadError) as info:
        download_mnist(tmp_path / "mnist", mirrors=[refused_url], timeout=5)
    message = str(info.value)
    assert "could not download train-images-idx3-ubyte.gz" in message
    assert f"{', '.join(MNIST_MD5)} in {tmp_path / 'mnist'}" in message
    assert list(tmp_path.iterdir()) == []  # the folder it made for nothing is gone again


def test_real_mnist_files_through_the_server(server, tmp_path, mnist_dir):
    Handler.content = {name: (mnist_dir / name).read_bytes() for name in MNIST_MD5}
    out = download_mnist(tmp_path, mirrors=[f"{server}/good/"], timeout=30)
    data = load_mnist(out)
    assert data.X_train.shape == (60000, 784) and data.X_test.shape == (10000, 784)
    assert np.bincount(data.y_test).tolist()[:3] == [980, 1135, 1032]
