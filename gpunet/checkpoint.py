"""Checkpoints: parameters, optimiser state and metadata in one .npz, written atomically, read without pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Backend, BackendUnavailableError
from .files import atomic_write, require_file
from .network import Network
from .optim import Optimizer, make_optimizer

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, from another format, or for another network."""


def save_checkpoint(path: str | os.PathLike[str], net: Network, optimizer: Optimizer, meta: dict[str, Any]) -> None:
    """Write ``net``'s parameters, ``optimizer``'s state and ``meta`` (JSON-ready) to ``path``."""
    state = optimizer.state_dict()
    header = {
        "format": FORMAT, "network": net.config(), "meta": meta,
        "optimizer": {"name": optimizer.name, "t": state.pop("t"), **optimizer.hyperparameters()},
    }
    arrays = {f"param/{k}": v for k, v in net.get_params().items()}
    arrays.update({f"optim/{k}": v for k, v in state.items()})
    arrays["header"] = np.array(json.dumps(header))
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def load_checkpoint(
    path: str | os.PathLike[str], backend: str | Backend | None = None
) -> tuple[Network, Optimizer, dict[str, Any]]:
    """The network, its optimiser (state restored) and the metadata saved in ``path``."""
    path = require_file(path, CheckpointError)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(str(arrays.pop("header")))
        if header.get("format") != FORMAT:
            raise CheckpointError(f"{path}: checkpoint format {header.get('format')!r}; expected {FORMAT}")
        net = Network(backend=backend, **header["network"])
        net.set_params({k.removeprefix("param/"): v for k, v in arrays.items() if k.startswith("param/")})
        opt_header = dict(header["optimizer"])
        optimizer = make_optimizer(opt_header.pop("name"), **{k: v for k, v in opt_header.items() if k != "t"})
        state = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
        optimizer.load_state_dict({"t": opt_header["t"], **state}, net.params)
        return net, optimizer, header["meta"]
    except (CheckpointError, BackendUnavailableError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001
        # A damaged zip, a missing field, a wrong shape or type: numpy, zipfile and json raise many
        # types (BadZipFile, KeyError, ValueError, zlib.error, ...); to the caller it is one thing.
        raise CheckpointError(f"{path}: not a readable gpunet checkpoint ({type(exc).__name__}: {exc})") from None
