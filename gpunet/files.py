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


def output_path(path: str | os.PathLike[str], *, overwrite: bool = False,
                inputs: Iterable[str | os.PathLike[str]] = (),
                hint: str = "pass overwrite=True (--force on the command line) to replace it") -> Path:
    """The one decision on whether ``path`` may be written; every writer calls it before its first write.

    Links are resolved first, and the decision is made on what they point to:

    - a link that points nowhere, or into a loop, is refused (FileExistsError): the name
      is taken, and what writing through it would touch cannot be known;
    - a folder is refused (IsADirectoryError);
    - an input of the same command (``inputs``, compared after resolving links, hard
      links included) is refused always, even with ``overwrite`` (ValueError);
    - any other existing file is refused unless ``overwrite`` (FileExistsError, with ``hint``);
    - a missing parent folder is refused (FileNotFoundError).

    Returns the resolved path: writing there (atomically, with :func:`atomic_write`)
    replaces the file the user named, not the link to it.
    """
    path = Path(path)
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing target (FileNotFoundError) or a loop (RuntimeError before 3.13)
            raise FileExistsError(f"{path} is a symbolic link to nothing (a missing file or a loop); "
                                  "remove it or name another output") from None
    target = path.resolve()
    if target.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected the name of a file to write")
    for source in inputs:
        source = Path(source)
        if source.resolve() == target or (target.exists() and source.exists() and os.path.samefile(source, target)):
            raise ValueError(f"{path} is also an input of this command ({source}); name another output")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; {hint}")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder")
    return target


# What each kind of JSON value is called in messages; ``float`` accepts integers too (JSON's numbers).
KINDS = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a JSON object",
         bool: "true or false", type(None): "null"}
MISSING = object()


def field(record: Any, key: str, kind: type | tuple[type, ...], where: str, *, error: type[Exception] = ValueError,
          owner: str = "the record", label: str = "", default: Any = MISSING) -> Any:
    """``record[key]`` from a file gpunet wrote and a person may have edited, checked to be a ``kind``.

    The one check every reader makes of a field it uses: ``error`` (a ValueError by
    default) names ``where`` (the file, and the line), the field (``owner``'s, with
    ``label`` before ``key``: "the header's meta.epoch") and what was expected. ``kind`` is a type or a tuple of
    types; ``float`` accepts integers, ``type(None)`` allows null, and true/false is
    never a number. A missing field is an error unless a ``default`` is given.
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(record, dict):
        whole = f"{owner}'s {label.rstrip('.')}" if label else owner
        raise error(f"{where}: {whole} must be a JSON object; got {_shown(record)}")
    if key not in record:
        if default is not MISSING:
            return default
        raise error(f"{where}: {owner} has no field {label}{key}")
    value = record[key]
    if not any(_is_kind(value, k) for k in kinds):
        expected = " or ".join(KINDS.get(k, k.__name__) for k in kinds)
        raise error(f"{where}: {owner}'s {label}{key} must be {expected}; got {_shown(value)}")
    return value


def _is_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _shown(value: Any) -> str:
    """A value for a message, cut short: a hand-edited field may hold a whole document."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def require_file(path: str | os.PathLike[str], error: type[Exception]) -> Path:
    """``path`` as a Path if it is a regular file, else ``error`` saying what it is instead."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    return path
