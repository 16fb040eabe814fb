"""PNG plots of a run with matplotlib (the optional ``plot`` extra): curves, confusion matrix, first-layer weights."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write, output_path

PLOT_HINT = 'matplotlib is not installed: pip install "gpunet[plot]"'


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(PLOT_HINT) from None
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


Inputs = tuple[Any, ...] | list[Any]


def _save(fig: Any, path: Path) -> None:
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    finally:
        _pyplot().close(fig)


SERIES = {"train": "C0", "validation": "C1", "test": "C2"}  # one colour per series, in every panel


def plot_curves(records: list[dict[str, Any]], path: Path, *, overwrite: bool = False, inputs: Inputs = ()) -> None:
    """Loss and accuracy per epoch of the training, validation and test images, side by side.
    ``path`` is decided by gpunet.files.output_path (``overwrite``, ``inputs``), as for every plot."""
    path = output_path(path, overwrite=overwrite, inputs=inputs)
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in records]
    for series, prefix in (("train", "train_"), ("validation", "val_"), ("test", "test_")):
        for ax, key, scale in ((loss_ax, "loss", 1), (acc_ax, "accuracy", 100)):
            values = [r.get(prefix + key) for r in records]
            if all(v is not None for v in values):
                ax.plot(epochs, [scale * v for v in values if v is not None], marker=".", color=SERIES[series], label=series)
    loss_ax.set(xlabel="epoch", ylabel="mean loss per sample", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, path: Path, *, overwrite: bool = False, inputs: Inputs = ()) -> None:
    """The confusion matrix with counts in the cells (rows: true class)."""
    path = output_path(path, overwrite=overwrite, inputs=inputs)
    plt = _pyplot()
    n = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            dark = matrix[i, j] > matrix.max() / 2
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="confusion matrix")
    _save(fig, path)


def check_weights(W1: np.ndarray) -> int:
    """The side of the square image that each hidden unit's input weights make; ValueError if none."""
    side = math.isqrt(W1.shape[0])
    if side * side != W1.shape[0]:
        raise ValueError(f"first-layer weights have {W1.shape[0]} inputs, not a square image")
    return side


def plot_weights(W1: np.ndarray, path: Path, max_units: int = 100, *, overwrite: bool = False,
                 inputs: Inputs = ()) -> None:
    """The first ``max_units`` hidden units' input weights (columns of W1) as square images, on one colour scale."""
    path = output_path(path, overwrite=overwrite, inputs=inputs)
    plt = _pyplot()
    side = check_weights(W1)
    units = min(W1.shape[1], max_units)
    cols = math.ceil(math.sqrt(units))
    rows = math.ceil(units / cols)
    lim = float(np.abs(W1[:, :units]).max()) or 1.0  # one scale for all units: their sizes compare
    fig, axes = plt.subplots(rows, cols, figsize=(cols + 1.2, rows), squeeze=False)
    image = None
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < units:
            image = ax.imshow(W1[:, k].reshape(side, side), cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="weight")
    fig.suptitle(f"first-layer weights of {units} of {W1.shape[1]} hidden units (red +, blue -)")
    _save(fig, path)


PLOTS = ("curves.png", "confusion.png", "weights.png")


def plot_all(records: list[dict[str, Any]], confusion: np.ndarray, W1: np.ndarray, folder: Path, *,
             overwrite: bool = False, inputs: Inputs = ()) -> list[Path]:
    """curves.png, confusion.png and weights.png in ``folder``; every check passes before the first is written.

    An existing plot is kept, and FileExistsError raised naming it, unless
    ``overwrite`` (a replot of a run replaces its plots only when asked); ``inputs``
    (the model, its metrics) are never written over (gpunet.files.output_path).
    A folder this call creates is removed again when a check fails.
    """
    _pyplot()
    check_weights(W1)
    folder = Path(folder)
    created = not folder.exists() and not folder.is_symlink()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{folder}: cannot create the folder ({exc.strerror})") from None
    try:
        if not os.access(folder, os.W_OK):
            raise ValueError(f"{folder}: the folder is not writable")
        written = [output_path(folder / name, overwrite=overwrite, inputs=inputs) for name in PLOTS]
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise
    plot_curves(records, written[0], overwrite=True, inputs=inputs)  # decided above
    plot_confusion(confusion, written[1], overwrite=True, inputs=inputs)
    plot_weights(W1, written[2], overwrite=True, inputs=inputs)
    return [folder / name for name in PLOTS]
