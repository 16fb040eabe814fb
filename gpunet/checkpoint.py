"""Checkpoints: parameters, optimiser state and metadata in one .npz, written atomically, read without pickle."""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Backend, BackendUnavailableError
from .files import MISSING, atomic_write, field, require_file
from .memory import ADDRESS_SPACE, DeviceMemoryError, GiB, available_host_bytes, parameter_count
from .network import Network
from .optim import OPTIMIZERS, Optimizer, make_optimizer

FORMAT = 1
HEADER_LIMIT = 1 << 24  # bytes: a header declaring more is refused before it is read
NETWORK_FIELDS = {"sizes": list, "activation": str, "output": str, "loss": str, "init": str, "seed": int, "dtype": str}
# Written only where the network has them (a file without one reads as before they existed): dropout's rates.
OPTIONAL_NETWORK_FIELDS = {"dropout": list}
# The buffers each optimiser keeps per parameter once it has taken a step, as optim.py declares them.
STATE_BUFFERS = {name: cls.state_names for name, cls in OPTIMIZERS.items()}
# Momentum's buffer before it followed PyTorch's convention: the velocity v = -lr * buf, converted on the
# first step after loading (gpunet.optim.Momentum); checkpoints that hold it still load.
LEGACY_STATE_BUFFERS = {"momentum": ("v",)}
NONE = type(None)
# The metadata fields gpunet writes and reads back, checked where present (a caller that needs one asks for it
# with meta_field); inside the optional objects, the fields a resume uses.
META_FIELDS: dict[str, type | tuple[type, ...]] = {"epoch": int, "record": (dict, NONE), "position": (dict, NONE), "train_config": dict,
               "preprocessing": dict, "early_stopping": (dict, NONE), "saved_by": str}
META_INNER: dict[str, dict[str, type | tuple[type, ...]]] = {
    "record": {"epoch": int},
    "position": {"row": int, "loss_sum": float},
    "preprocessing": {"pixels": str},
    "early_stopping": {"best_loss": (float, NONE), "best_epoch": int, "patience_left": int, "stopped": bool},
}
NON_NEGATIVE = {(name, s) for name, cls in OPTIMIZERS.items() for s in cls.non_negative}  # sqrt(v) of a v < 0: NaN


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, from another format, or for another network."""


def save_checkpoint(path: str | os.PathLike[str], net: Network, optimizer: Optimizer, meta: dict[str, Any], *,
                    allow_non_finite: bool = False) -> None:
    """Write ``net``'s parameters, ``optimizer``'s state and ``meta`` (JSON-ready) to ``path``.

    ``path`` is written as given: the caller has decided it may be (gpunet.files.output_path).
    A parameter that is NaN or infinite (a diverged network) is refused with
    CheckpointError naming it, since no loader would take the file back, unless
    ``allow_non_finite=True`` (a file to inspect with numpy.load; load_checkpoint refuses it).
    """
    if not allow_non_finite:
        check_finite(net.get_params(), "cannot save the network")
    state = optimizer.state_dict()
    header = {
        "format": FORMAT, "network": net.config(), "meta": meta,
        "optimizer": {"name": optimizer.name, "t": state.pop("t"), **optimizer.hyperparameters()},
    }
    arrays: dict[str, Any] = {f"param/{k}": v for k, v in net.get_params().items()}
    arrays.update({f"optim/{k}": v for k, v in state.items()})
    arrays["header"] = np.array(json.dumps(header))
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def check_finite(params: dict[str, np.ndarray], doing: str) -> None:
    """CheckpointError naming the first parameter that holds NaN or infinity."""
    for key, value in params.items():
        finite = np.isfinite(value)
        if not finite.all():
            bad = int(finite.size - finite.sum())
            raise CheckpointError(f"{doing}: parameter {key} holds {bad} NaN or infinite values (a diverged network?); "
                                  "pass allow_non_finite=True to write it anyway")


def load_checkpoint(
    path: str | os.PathLike[str], backend: str | Backend | None = None
) -> tuple[Network, Optimizer, dict[str, Any]]:
    """The network, its optimiser (state restored) and the metadata saved in ``path``.

    Everything is checked before it is used, and the sizes before anything is
    allocated: the header's fields and their types, the shape and dtype each
    array's own header declares against the network the header describes, the
    total against free memory (DeviceMemoryError), then the values (no NaN or
    infinity, Adam's second moments >= 0). Any other fault is a CheckpointError
    naming the file.
    """
    path = require_file(path, CheckpointError)
    try:
        with warnings.catch_warnings(), zipfile.ZipFile(path) as z:
            warnings.simplefilter("ignore")  # everything is checked; a warning would only be an extra line
            return _load(z, path, backend)
    except (CheckpointError, BackendUnavailableError, DeviceMemoryError):
        raise
    except MemoryError:
        raise DeviceMemoryError(f"out of memory while reading the checkpoint {path}") from None
    except Exception as exc:  # noqa: BLE001
        # A damaged zip, a bad value: zipfile, zlib, numpy and the constructors raise many types
        # (BadZipFile, ValueError, zlib.error, ...); to the caller it is one thing.
        raise CheckpointError(f"{path}: not a readable gpunet checkpoint ({type(exc).__name__}: {exc})") from None


def _load(z: zipfile.ZipFile, path: Path, backend: str | Backend | None) -> tuple[Network, Optimizer, dict[str, Any]]:
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}")

    members = {info.filename.removesuffix(".npy"): info for info in z.infolist()}
    if "header" not in members:
        raise bad("not a readable gpunet checkpoint (it has no header)")
    dtype, shape = _declared(z, members["header"], path)
    if dtype.kind != "U" or shape != () or dtype.itemsize > HEADER_LIMIT:
        raise bad(f"the header must be one JSON string of at most {HEADER_LIMIT} bytes; got {dtype} {shape}")
    header = json.loads(str(_read(z, members["header"])))
    if not isinstance(header, dict):
        raise bad(f"the header must be a JSON object; got {type(header).__name__}")
    if header.get("format") != FORMAT:
        raise bad(f"checkpoint format {header.get('format')!r}; expected {FORMAT}")
    network, opt_header, meta = (_field(header, key, dict, path) for key in ("network", "optimizer", "meta"))
    _check_meta(meta, path)
    if set(network) - set(OPTIONAL_NETWORK_FIELDS) != set(NETWORK_FIELDS):
        raise bad(f"the header's network fields must be {', '.join(NETWORK_FIELDS)} (and optionally "
                  f"{', '.join(OPTIONAL_NETWORK_FIELDS)}); got {', '.join(network)}")
    for key, kind in NETWORK_FIELDS.items():
        _field(network, key, kind, path, "network.")
    for key, kind in OPTIONAL_NETWORK_FIELDS.items():
        if key in network:
            _field(network, key, kind, path, "network.")
    sizes = network["sizes"]
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise bad(f"the header's network.sizes must be layer sizes >= 1; got {sizes!r}")
    n_params = parameter_count(sizes)
    if n_params * 4 > ADDRESS_SPACE:  # no machine holds it, even in float32: a damaged header, not a shortage
        raise bad(f"the header's layers {sizes} have {n_params:,} parameters, more than any machine can address")
    name = _field(opt_header, "name", str, path, "optimizer.")
    t = _field(opt_header, "t", int, path, "optimizer.")
    if name not in STATE_BUFFERS or t < 0:
        raise bad(f"the header's optimizer must be one of {', '.join(STATE_BUFFERS)} with t >= 0; got {name!r}, t={t}")
    hyper = {k: v for k, v in opt_header.items() if k not in ("name", "t")}
    expected_hyper = make_optimizer(name).hyperparameters()
    if set(hyper) != set(expected_hyper) or not all(_is_number(v) for v in hyper.values()):
        raise bad(f"the header's {name} optimizer needs the numbers {', '.join(expected_hyper)}; got {hyper!r}")

    # What each array must be, from the header alone; then what each array's own header declares.
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shapes[f"W{i}"], shapes[f"b{i}"] = (n_in, n_out), (n_out,)
    names = STATE_BUFFERS[name]
    legacy = LEGACY_STATE_BUFFERS.get(name, ())
    if legacy and any(key.partition(".")[0] == f"optim/{legacy[0]}" for key in members):
        names = legacy
    buffers = [f"{b}.{k}" for b in names for k in shapes] if t > 0 else []
    wanted = {f"param/{k}": s for k, s in shapes.items()}
    wanted.update({f"optim/{k}": shapes[k.partition(".")[2]] for k in buffers})
    for key in members:
        if key != "header" and key not in wanted:
            raise bad(f"unexpected array {key!r} (layers {sizes}, {name} after {t} steps)")
    total = 0
    for key, want in wanted.items():
        label = f"params[{key[6:]!r}]" if key.startswith("param/") else f"optimizer state {key[6:]!r}"
        if key not in members:
            raise bad(f"{label} is missing (layers {sizes}, {name} after {t} steps)")
        dtype, shape = _declared(z, members[key], path)
        if shape != want:
            raise bad(f"{label} must have shape {want}; got {shape} (layers {sizes} in the header)")
        if dtype.kind != "f":
            raise bad(f"{label} must be floating point; got dtype {dtype}")
        total += math.prod(shape) * dtype.itemsize
    free = available_host_bytes()
    if free is not None and total > free:
        raise DeviceMemoryError(f"out of memory: the checkpoint {path} holds {total / GiB:,.1f} GiB of arrays "
                                f"and {free / GiB:,.1f} GiB is free")

    net = Network(backend=backend, **network)  # checks the names and values, and that the network fits
    net.set_params({k[6:]: _read(z, members[k]) for k in wanted if k.startswith("param/")})
    state = {}
    for key in buffers:
        value = _read(z, members[f"optim/{key}"])
        if not np.isfinite(value).all():
            raise bad(f"optimizer state {key!r} contains NaN or infinity")
        if (name, key.partition(".")[0]) in NON_NEGATIVE and value.min() < 0:
            raise bad(f"optimizer state {key!r} (a second moment) must be >= 0; got {value.min():g}")
        state[key] = value
    optimizer = make_optimizer(name, **hyper)
    optimizer.load_state_dict({"t": t, **state}, net.params)
    return net, optimizer, meta


def meta_field(path: str | os.PathLike[str], meta: dict[str, Any], key: str, kind: type | tuple[type, ...],
               default: Any = MISSING) -> Any:
    """``meta[key]`` from :func:`load_checkpoint`, checked to be a ``kind``, else CheckpointError naming the
    file: for callers whose metadata fields (an epoch, a position) the checkpoint itself cannot know.
    A missing field is an error unless ``default`` is given."""
    return field(meta, key, kind, str(path), error=CheckpointError, owner="the header", label="meta.", default=default)


def _field(header: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path, prefix: str = "") -> Any:
    """``header[key]``, checked to be a ``kind`` (bool is not an int here)."""
    return field(header, key, kind, str(path), error=CheckpointError, owner="the header", label=prefix)


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    """The metadata fields gpunet reads, where present: their types, and inside them the fields a resume uses."""
    for key, kind in META_FIELDS.items():
        if key in meta:
            value = _field(meta, key, kind, path, "meta.")
            for inner, inner_kind in META_INNER.get(key, {}).items() if value is not None else ():
                _field(value, inner, inner_kind, path, f"meta.{key}.")
    if meta.get("epoch", 0) < 0:
        raise CheckpointError(f"{path}: the header's meta.epoch must be >= 0; got {meta['epoch']}")
    position = meta.get("position")
    if position is not None and position["row"] < 0:
        raise CheckpointError(f"{path}: the header's meta.position.row must be >= 0; got {position['row']}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _declared(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape an .npy member declares, read from its header alone, and checked against the
    member's size in the zip directory (which bounds how much is ever decompressed)."""
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise CheckpointError(f"{path}: {info.filename} is .npy version {version}; expected 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        start = f.tell()
    if dtype.hasobject:
        raise CheckpointError(f"{path}: {info.filename} holds Python objects; expected numbers")
    nbytes = math.prod(shape) * dtype.itemsize
    if info.file_size != start + nbytes:
        raise CheckpointError(f"{path}: {info.filename} declares {shape} {dtype} ({nbytes} bytes) "
                              f"but holds {info.file_size - start}")
    return dtype, tuple(shape)


def _read(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with z.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)
