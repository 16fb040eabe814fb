"""A trained model at work: its report on test images, its reading of image files, and a run's plots."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, meta_field
from .checks import check_labels
from .config import TrainConfig
from .datasets import PIXELS
from .download import DEADLINE
from .files import field, require_file
from .metrics import classification_report, confusion_matrix
from .network import Network
from .run import check_width, load_test_data, model_path, read_metrics, saved_config


def model_and_test_data(model: str | os.PathLike[str], *, dataset: str | None = None, data_dir: str | None = None,
                        test_csv: str | None = None, backend: str | None = None,
                        on_download: Callable[[str, str], object] | None = None,
                        download_deadline: float = DEADLINE,
                        ) -> tuple[Network, TrainConfig, np.ndarray, np.ndarray]:
    """A checkpoint's network, its config, and test images and labels preprocessed as it was trained.

    ``model`` is a run folder or a checkpoint; the test data are the training
    dataset's unless ``dataset`` (with ``data_dir`` or ``test_csv``) says otherwise.
    ``download_deadline``: seconds each MNIST file may take to download.
    """
    path = model_path(model)
    net, _, meta = load_checkpoint(path, backend)
    saved = saved_config(meta, path)
    overrides: dict[str, Any] = {"dataset": dataset or saved.dataset, "validation": 0.0, "early_stopping": None}
    if data_dir is not None or overrides["dataset"] != saved.dataset:
        overrides["data_dir"] = data_dir
    if test_csv is not None or overrides["dataset"] != saved.dataset:
        overrides.update(train_csv=test_csv, test_csv=test_csv)  # the training file is not read
    config = replace(saved, **overrides)
    X, y = load_test_data(config, on_download, download_deadline=download_deadline)
    check_width(net, X, path, config.dataset)
    return net, config, X, check_labels(y, net.sizes[-1])


def evaluate_model(model: str | os.PathLike[str], **data: Any) -> dict[str, Any]:
    """Accuracy, per-class precision, recall and support, and the confusion matrix on the test images."""
    net, config, X, labels = model_and_test_data(model, **data)
    report = classification_report(labels, net.predict(X), net.sizes[-1])
    return {"model": str(model_path(model)), "dataset": config.dataset, **report}


def predict_images(model: str | os.PathLike[str], images: list[str], backend: str | None = None,
                   ) -> list[dict[str, Any] | Exception]:
    """For each image: its digit and class probabilities, or the error that kept it from being read."""
    from .images import GEOMETRY, ImageError, image_inputs

    path = model_path(model)
    net, _, meta = load_checkpoint(path, backend)
    if net.sizes[0] not in GEOMETRY:
        image_inputs([], net.sizes[0])  # raises: the network takes no images
    recorded = meta_field(path, meta, "preprocessing", dict, default={})
    pixels = field(recorded, "pixels", str, str(path), error=CheckpointError, owner="the header",
                   label="meta.preprocessing.", default="original")  # checkpoints from before it was recorded
    if pixels not in PIXELS:
        raise CheckpointError(f"{path}: the header's meta.preprocessing.pixels must be one of "
                              f"{', '.join(PIXELS)}; got {pixels!r}")
    rows: list[Any] = []
    for image in images:
        try:
            rows.append(image_inputs([image], net.sizes[0], pixels))
        except (ImageError, OSError, ValueError) as exc:
            rows.append(exc)
    good = [r for r in rows if not isinstance(r, Exception)]
    if not good:
        return rows
    Y = net.backend.to_host(net.forward(np.vstack(good))).astype(np.float64)
    if net.output != "softmax":  # sigmoid outputs are independent scores: normalised to sum to 1 for display
        Y = Y / np.maximum(Y.sum(axis=1, keepdims=True), 1e-300)
    found = iter(Y)
    results: list[dict[str, Any] | Exception] = []
    for r in rows:
        if isinstance(r, Exception):
            results.append(r)
        else:
            p = next(found)
            results.append({"digit": int(p.argmax()), "probabilities": [round(float(v), 6) for v in p]})
    return results


def plot_run(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, overwrite: bool = False,
             **data: Any) -> list[Path]:
    """curves.png, confusion.png and weights.png of a run (a folder, or its model.npz), in ``out`` or the folder.

    Everything is read and checked before the first file is written: every line of
    metrics.jsonl (gpunet.run.read_metrics), the checkpoint, the test data, and each
    plot's path (an existing plot is replaced only with ``overwrite``; the model and
    its metrics, never).
    """
    from .plots import plot_all

    path = model_path(run)
    metrics = require_file(path.parent / "metrics.jsonl", ValueError)
    records = read_metrics(metrics, torn_end=False)
    if not records:
        raise ValueError(f"{metrics}: no epochs recorded yet")
    net, _, X, labels = model_and_test_data(path, **data)
    C = confusion_matrix(labels, net.predict(X), net.sizes[-1])
    return plot_all(records, C, net.get_params()["W1"], Path(out) if out is not None else path.parent,
                    overwrite=overwrite, inputs=[path, metrics])
