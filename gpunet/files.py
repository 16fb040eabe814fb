"""File helpers: atomic writes (a whole new file appears under its name, or nothing changes) and input checks."""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    If ``write`` raises (or the process is interrupted), the temporary file is
    removed and ``path`` is left as it was.
    An OSError (a full disk, a read-only folder) is raised again naming ``path``:
    the file handle that failed does not know its name.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` as an OSError of the same kind whose message ends with ``path``."""
    if exc.errno is None:
        return OSError(f"cannot write {path}: {exc}")
    return OSError(exc.errno, exc.strerror or str(exc), str(path))  # OSError(errno, ...) picks the subclass


def remove_stale_temporaries(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that atomic_write left in ``folder`` for the files ``names`` when its
    process was killed; nothing else is touched.

    Only safe while no other process writes there (the caller holds the folder's
    lock, or owns it); returns the paths removed.
    """
    removed = []
    for name in names:
        for candidate in Path(folder).glob(f".{glob.escape(name)}.*.tmp"):
            # mkstemp's names: the prefix, 8 random characters, the suffix
            if not (re.fullmatch(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp", candidate.name) and candidate.is_file()):
                continue
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """``value`` as indented JSON, written atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(value, indent=2) + "\n").encode()))


def new_file(path: str | os.PathLike[str], overwrite: bool, hint: str) -> Path:
    """``path`` as a Path, to be written: FileExistsError (with ``hint``, what to do instead) if it exists
    and ``overwrite`` is false, FileNotFoundError if its folder does not exist."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; {hint}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder")
    return path


def require_file(path: str | os.PathLike[str], error: type[Exception]) -> Path:
    """``path`` as a Path if it is a regular file, else ``error`` saying what it is instead."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    return path
