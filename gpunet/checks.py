"""Checks of user input: each raises ValueError/TypeError naming the bad value and what was expected."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .backend import array_module, as_array, to_numpy


# The training paths (gpunet/engines/select.py decides which runs): named here, below the model, so that the
# deprecated Network(kernels=...) can check its argument without importing an engine.
KERNELS = ("auto", "plain", "fused", "graph")


def check_kernels(kernels: Any, backend_name: str) -> str:
    """``kernels`` checked: one of KERNELS, and a CUDA path only on the cupy backend."""
    check_choice("kernels", kernels, KERNELS)
    if kernels in ("fused", "graph") and backend_name != "cupy":
        raise ValueError(f"kernels={kernels!r} needs the cupy backend; got backend {backend_name!r} "
                         "(use kernels='auto' or kernels='plain')")
    return kernels


def check_choice(label: str, value: Any, valid: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{label} must be one of {', '.join(valid)}; got {value!r}")


def check_int(label: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{label} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_number(label: str, value: Any, *, positive: bool) -> float:
    """A finite real number, > 0 when ``positive`` else >= 0."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if not ok:
        raise ValueError(f"{label} must be a finite number {'>' if positive else '>='} 0; got {value!r}")
    return float(value)


def check_decay(label: str, value: Any) -> float:
    """A factor in (0, 1], as a learning-rate decay must be."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{label} must be in (0, 1]; got {value!r}")
    return float(value)


def check_fraction(label: str, value: Any) -> float:
    """A number in [0, 1), as momentum and Adam's betas must be."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{label} must be in [0, 1); got {value!r}")
    return float(value)


def check_matrix(label: str, a: Any, n_cols: int) -> Any:
    """Shape and dtype checks that need no device sync; returns ``a`` as a NumPy or CuPy array.

    Arrays of other libraries (PyTorch, JAX) are read through DLPack without a
    copy: host data becomes a NumPy array, CUDA data a CuPy array.
    """
    try:
        a = as_array(a)
    except ValueError as exc:  # numpy.asarray of ragged or non-numeric nesting
        raise TypeError(f"{label} must be a 2-D array of numbers; got {type(a).__name__} ({exc})") from None
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{label} must hold numbers; got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{label} must be 2-D (N, {n_cols}); got shape {tuple(a.shape)}")
    if a.shape[1] != n_cols:
        raise ValueError(f"{label} must have {n_cols} columns; got shape {tuple(a.shape)}")
    if a.shape[0] < 1:
        raise ValueError(f"{label} must have at least one row; got shape {tuple(a.shape)}")
    return a


def check_finite(label: str, a: Any, original: Any = None) -> None:
    """ValueError naming the first NaN or infinity in ``a`` (NumPy or CuPy), with its position.

    The test is two reductions on the array's own device, read back as one flag: a single
    CPU-GPU sync. Only a failing array is searched for the position. ``original`` is the
    caller's array before its conversion to ``a``'s dtype, so a value that overflows there
    (1e300 in float32) is shown as the caller wrote it.
    """
    if a.dtype.kind != "f" or a.size == 0:
        return
    xp = array_module(a)
    if bool(xp.isfinite(a.min()) & xp.isfinite(a.max())):  # CPU-GPU sync point: one flag; NaN propagates
        return
    index = tuple(int(i) for i in np.argwhere(~np.isfinite(to_numpy(a)))[0])
    value = float(to_numpy(original if original is not None else a)[index])
    where = f"row {index[0]}, column {index[1]}" if len(index) == 2 else f"index {', '.join(map(str, index))}"
    why = f", beyond the range of {a.dtype.name}" if math.isfinite(value) else ""
    raise ValueError(f"{label} contains NaN or infinity; got {value!r} at {where}{why}")


def check_labels(labels: Any, n_classes: int, label: str = "labels") -> np.ndarray:
    """Class labels ``(N,)`` -> host int64, each in 0..n_classes-1 (integral floats accepted).

    A label that is NaN, infinite or fractional, or out of range, is named with its index;
    a wrong shape is refused before it could broadcast against predictions.
    """
    try:
        labels = to_numpy(labels)
    except ValueError as exc:  # numpy.asarray of ragged or non-numeric nesting
        raise TypeError(f"{label} must be a 1-D array of integer class labels; got {type(labels).__name__} "
                        f"({exc})") from None
    if labels.ndim != 1:
        raise ValueError(f"{label} must be 1-D (one class label per row); got shape {labels.shape}")
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels)
        bad = ~finite | (labels != np.round(np.where(finite, labels, 0)))
        if bad.any():
            i = int(np.argmax(bad))
            what = "NaN" if np.isnan(labels[i]) else f"{float(labels[i])!r}"
            kind = "" if not finite[i] else "the fractional label "
            raise TypeError(f"{label} must be integers; got dtype {labels.dtype} with {kind}{what} at index {i}")
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{label} must be integers; got dtype {labels.dtype}")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{label} must be in 0..{n_classes - 1}; got {labels[i]} at index {i}")
    return labels.astype(np.int64)
