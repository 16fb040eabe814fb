"""The MNIST downloader: mirrors tried in turn, md5 verified, files renamed into place only when whole."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import time
import urllib.request
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from .checks import check_number
from .files import atomic_write, remove_stale_temporaries

MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # hosted by PyTorch
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # CVDF
    "http://yann.lecun.com/exdb/mnist/",  # the original site
)
DATA_ENV = "GPUNET_DATA"
MIRRORS_ENV = "GPUNET_MNIST_MIRRORS"  # comma-separated base URLs used instead of MNIST_MIRRORS (a local mirror)
CHUNK = 1 << 16
DEADLINE = 600.0  # seconds one file may take from one mirror, however steadily a slow mirror trickles bytes
MAX_FILE_BYTES = 1 << 26  # MNIST's largest file is 9.9 MB: a mirror sending more than 64 MiB is refused


class DownloadError(RuntimeError):
    """No mirror gave a file with the right checksum; the message says what to place where."""


def cache_dir() -> Path:
    """Where downloads live: ``$GPUNET_DATA``, else ``~/.cache/gpunet``."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "gpunet")


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    url: str, dest: Path, md5: str, timeout: float = 30.0, deadline: float = DEADLINE, max_bytes: int = MAX_FILE_BYTES
) -> None:
    """Download ``url`` to ``dest`` atomically, and only if the bytes have the right ``md5``;
    on any failure nothing is left behind.

    ``timeout`` bounds each network operation and ``deadline`` the whole file, so a
    mirror that trickles bytes is given up; a body over ``max_bytes`` is refused.
    What the mirror does wrong raises DownloadError naming the URL; a local
    failure (a full disk) raises OSError naming ``dest``.
    """

    def stream(out: IO[bytes]) -> None:
        give_up = time.monotonic() + deadline
        digest = hashlib.md5(usedforsecurity=False)
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError and HTTPError are OSErrors
            raise DownloadError(f"{url}: {getattr(exc, 'reason', None) or exc or type(exc).__name__}") from None
        with response:
            expected = response.headers.get("Content-Length")
            if expected is not None and not (expected.isdigit() and int(expected) <= max_bytes):
                raise DownloadError(f"{url}: Content-Length {expected!r}; expected at most {max_bytes} bytes")
            received = 0
            while True:
                if time.monotonic() > give_up:
                    raise DownloadError(f"{url}: only {received} bytes after the deadline of {deadline:g} s")
                try:
                    block = response.read1(CHUNK)  # what has arrived: one slow read cannot outlast the deadline
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(f"{url}: {exc or type(exc).__name__} after {received} bytes") from None
                if not block:
                    break
                received += len(block)
                if received > max_bytes:
                    raise DownloadError(f"{url}: more than {max_bytes} bytes; expected at most that")
                out.write(block)  # a full disk raises OSError here; atomic_write names dest
                digest.update(block)
        if expected is not None and received != int(expected):
            raise DownloadError(f"{url}: connection closed after {received} of {expected} bytes")
        if digest.hexdigest() != md5:
            raise DownloadError(f"{url}: md5 {digest.hexdigest()}, expected {md5}")

    atomic_write(dest, stream)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (one downloader at a time); the lock dies with its process."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (two downloads at once may then remove each other's temporaries)
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for another downloader, which then leaves verified files
        yield
    finally:
        os.close(fd)  # releases the lock


def download_mnist(
    directory: Path | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    on_file: Callable[[str, str], object] | None = None,
    files: dict[str, str] = MNIST_MD5,
    deadline: float = DEADLINE,
) -> Path:
    """Make sure the four MNIST files are in ``directory`` (default: the cache's ``mnist``).

    A file already there with the right md5 is kept; a missing or damaged one is
    fetched from each mirror in turn until one gives the right checksum, each try
    within ``timeout`` per network operation and ``deadline`` seconds in all.
    The folder is locked while this runs, and temporary files that a killed
    download left in it are removed first.
    ``on_file(name, url)`` is called before each attempt (for progress messages);
    ``files`` maps file names to their md5s. ``mirrors`` defaults to
    ``$GPUNET_MNIST_MIRRORS`` (comma-separated base URLs), else ``MNIST_MIRRORS``.
    ``timeout`` and ``deadline`` must be positive numbers of seconds (ValueError naming them).
    """
    check_number("timeout", timeout, positive=True)
    check_number("deadline", deadline, positive=True)
    directory = Path(directory) if directory is not None else cache_dir() / "mnist"
    if mirrors is None:
        mirrors = [m.strip() for m in os.environ.get(MIRRORS_ENV, "").split(",") if m.strip()] or MNIST_MIRRORS
    created = [d for d in (directory, *directory.parents) if not d.exists()]  # leaf first
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the data folder {directory}: {exc.strerror}") from None
    try:
        with _locked(directory):
            # Nobody else writes here while the lock is held: a temporary file is a killed download's.
            remove_stale_temporaries(directory, files)
            _download_missing(directory, mirrors, timeout, deadline, on_file, files)
    except BaseException:
        for d in created:  # leave no trace of a download that got nothing
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    return directory


def _download_missing(
    directory: Path,
    mirrors: Sequence[str],
    timeout: float,
    deadline: float,
    on_file: Callable[[str, str], object] | None,
    files: dict[str, str],
) -> None:
    for name, md5 in files.items():
        dest = directory / name
        if dest.is_file() and md5sum(dest) == md5:
            continue
        errors = []
        for mirror in mirrors:
            url = mirror + name
            if on_file is not None:
                on_file(name, url)
            try:
                fetch(url, dest, md5, timeout, deadline)
                break
            except DownloadError as exc:  # its message names the URL; an OSError (the disk) ends the download
                errors.append(str(exc))
        else:
            raise DownloadError(
                f"could not download {name} ({'; '.join(errors)}). Offline? Place the four files "
                f"{', '.join(files)} in {directory} (or pass data_dir=, the folder that holds them)"
            )
