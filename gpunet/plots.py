"""PNG plots of a run with matplotlib (the optional ``plot`` extra): curves, confusion matrix, first-layer weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write

PLOT_HINT = 'matplotlib is not installed: pip install "gpunet[plot]"'


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(PLOT_HINT) from None
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    _pyplot().close(fig)


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Loss (train, validation, test) and accuracy (validation, test) per epoch, side by side."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in records]
    for key, label in (("train_loss", "train"), ("val_loss", "validation"), ("test_loss", "test")):
        if all(r.get(key) is not None for r in records):
            loss_ax.plot(epochs, [r[key] for r in records], marker=".", label=label)
    for key, label in (("val_accuracy", "validation"), ("test_accuracy", "test")):
        if all(r.get(key) is not None for r in records):
            acc_ax.plot(epochs, [100 * r[key] for r in records], marker=".", label=label)
    loss_ax.set(xlabel="epoch", ylabel="mean loss per sample", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, path: Path) -> None:
    """The confusion matrix with counts in the cells (rows: true class)."""
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


def plot_weights(W1: np.ndarray, path: Path, max_units: int = 100) -> None:
    """The first ``max_units`` hidden units' input weights (columns of W1) as square images."""
    plt = _pyplot()
    side = math.isqrt(W1.shape[0])
    if side * side != W1.shape[0]:
        raise ValueError(f"first-layer weights have {W1.shape[0]} inputs, not a square image")
    units = min(W1.shape[1], max_units)
    cols = math.ceil(math.sqrt(units))
    rows = math.ceil(units / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < units:
            w = W1[:, k].reshape(side, side)
            lim = np.abs(w).max() or 1.0
            ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.suptitle(f"first-layer weights of {units} of {W1.shape[1]} hidden units (red +, blue -)")
    _save(fig, path)
