"""Classification metrics on host label arrays: the confusion matrix and what follows from it."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``C[i, j]``: how many rows of true class ``i`` were predicted as class ``j``."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if labels.shape != predicted.shape or labels.ndim != 1:
        raise ValueError(f"labels and predictions must be 1-D and alike; got {labels.shape} and {predicted.shape}")
    for name, a in (("labels", labels), ("predictions", predicted)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name} must be in 0..{n_classes - 1}; got {a.min()}..{a.max()}")
    return np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_report(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, per-class precision, recall and support, and the confusion matrix, JSON-ready.

    A class never predicted has precision 0 (scikit-learn's ``zero_division=0``);
    one absent from ``labels`` has recall 0.
    """
    C = confusion_matrix(labels, predicted, n_classes)
    hits = np.diag(C).astype(np.float64)
    predicted_per_class, support = C.sum(axis=0), C.sum(axis=1)
    precision = np.divide(hits, predicted_per_class, out=np.zeros(n_classes), where=predicted_per_class > 0)
    recall = np.divide(hits, support, out=np.zeros(n_classes), where=support > 0)
    return {
        "accuracy": float(hits.sum() / max(C.sum(), 1)),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "support": support.tolist(),
        "confusion_matrix": C.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as text: accuracy, a per-class table, and the confusion matrix (rows: true class)."""
    n = len(report["support"])
    lines = [f"accuracy {report['accuracy']:.2%} on {sum(report['support'])} images", "",
             "class  precision   recall  support"]
    for k in range(n):
        lines.append(f"{k:>5}  {report['precision'][k]:>9.2%}  {report['recall'][k]:>7.2%}  {report['support'][k]:>7}")
    width = max(4, len(str(max(max(row) for row in report["confusion_matrix"]))))
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              "     " + "".join(f"{k:>{width + 1}}" for k in range(n))]
    for k, row in enumerate(report["confusion_matrix"]):
        lines.append(f"{k:>5}" + "".join(f"{v:>{width + 1}}" for v in row))
    return "\n".join(lines)
