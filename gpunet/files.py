"""File helpers: atomic writes (a whole new file appears under its name, or nothing changes) and input checks."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    If ``write`` raises (or the process is interrupted), the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """``value`` as indented JSON, written atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(value, indent=2) + "\n").encode()))


def require_file(path: str | os.PathLike[str], error: type[Exception]) -> Path:
    """``path`` as a Path if it is a regular file, else ``error`` saying what it is instead."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    return path
