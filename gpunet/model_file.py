"""gpunet.save and gpunet.load: a network trained from Python, in the checkpoint format the command line reads."""

from __future__ import annotations

import os
from typing import Any

from .backend import Backend
from .checkpoint import check_finite, load_checkpoint, save_checkpoint
from .checks import check_choice
from .config import preprocessing
from .datasets import PIXELS
from .files import output_path
from .network import Network
from .optim import SGD, Optimizer

SAVED_BY = "gpunet.save"  # meta["saved_by"]: written from Python, not by a `gpunet train` run
DATASETS = ("digits", "mnist")  # what `gpunet evaluate` can find again by name alone


def save(
    net: Network,
    path: str | os.PathLike[str],
    *,
    optimizer: Optimizer | None = None,
    dataset: str = "digits",
    pixels: str = "original",
    data_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    allow_non_finite: bool = False,
) -> None:
    """Write ``net`` (and ``optimizer``'s state, if given) to ``path`` as a checkpoint.

    ``gpunet evaluate`` and ``gpunet predict`` read the file: ``dataset`` (its test
    images for ``evaluate``), ``data_dir`` (where the MNIST files are) and ``pixels``
    (``"original"``, [0.01, 1] as the article, or ``"unit"``, [0, 1]: how the training
    images were scaled, so new ones are scaled alike) are recorded for them. The file
    appears whole or not at all; an existing file is kept unless ``overwrite=True``
    (gpunet.files.output_path decides: a link to nothing, a folder, a missing folder
    are refused). A network with a NaN or infinite parameter is refused
    (CheckpointError naming it) unless ``allow_non_finite=True``: load refuses such a file.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net must be a gpunet.Network; got {type(net).__name__}")
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a gpunet Optimizer or None; got {type(optimizer).__name__}")
    check_choice("dataset", dataset, DATASETS)
    check_choice("pixels", pixels, tuple(PIXELS))
    if not isinstance(overwrite, bool) or not isinstance(allow_non_finite, bool):
        raise TypeError(f"overwrite and allow_non_finite must be True or False; got {overwrite!r}, {allow_non_finite!r}")
    path = output_path(path, overwrite=overwrite, hint="pass overwrite=True to replace it")
    if not allow_non_finite:  # before anything is written
        check_finite(net.get_params(), f"cannot save the network to {path}")
    optimizer = optimizer if optimizer is not None else SGD()
    train_config: dict[str, Any] = {
        "hidden": list(net.sizes[1:-1]), "activation": net.activation, "output": net.output,
        "loss": net.loss_name, "init": net.init, "seed": net.seed, "dtype": net.dtype.name,
        "optimizer": optimizer.name, "weight_decay": optimizer.weight_decay, "dataset": dataset, "pixels": pixels,
    }
    if net.has_dropout and net.dropout[0] == 0 and len(set(net.dropout[1:])) == 1:
        train_config["dropout"] = net.dropout[1]  # a TrainConfig's one rate; other rates: the network's config only
    if data_dir is not None:
        train_config["data_dir"] = str(data_dir)
    meta = {
        "saved_by": SAVED_BY, "epoch": 0, "record": None, "position": None, "train_config": train_config,
        "preprocessing": preprocessing(pixels, net.output, net.loss_name),
    }
    save_checkpoint(path, net, optimizer, meta, allow_non_finite=allow_non_finite)


def load(path: str | os.PathLike[str], backend: str | Backend | None = None) -> Network:
    """The network saved in ``path`` (by :func:`save` or by ``gpunet train``), on ``backend``."""
    net, _, _ = load_checkpoint(path, backend)
    return net
