"""Shared fixtures: the backend fixture that runs a test body on every usable backend, and MNIST."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet.backend import cupy_unavailable_reason

MNIST_DIR = Path(os.environ.get("GPUNET_MNIST_DIR", Path(__file__).resolve().parents[2] / "shared/data/mnist"))


def backend_param(name: str, *rest: object) -> object:
    """A pytest param for ``name``: CuPy ones carry the gpu marker."""
    marks = [pytest.mark.gpu] if name == "cupy" else []
    return pytest.param((name, *rest) if rest else name, marks=marks, id="-".join(map(str, (name, *rest))))


def require(name: str) -> gpunet.Backend:
    """The backend called ``name``, or skip the test saying why it cannot run here."""
    if name == "cupy":
        reason = cupy_unavailable_reason()
        if reason is not None:
            pytest.skip(f"CuPy backend unusable here: {reason}")
    return gpunet.get_backend(name)


@pytest.fixture(params=[backend_param("numpy"), backend_param("cupy")])
def backend(request: pytest.FixtureRequest) -> gpunet.Backend:
    return require(request.param)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST files not found in {MNIST_DIR} (set GPUNET_MNIST_DIR)")
    return MNIST_DIR


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max-norm relative difference |a - b| / |b|, robust to entries near zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))
