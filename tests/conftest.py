"""Shared fixtures: the backend fixture that runs a test body on every usable backend, the parity
candidates (each backend and dtype with its reference), MNIST, and the closeness check."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import gpunet
from gpunet.backend import cupy_unavailable_reason

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
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


# Parity: CuPy runs against NumPy in the same dtype; the NumPy float32 run against NumPy float64.
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}  # max-norm relative
CANDIDATES = [backend_param("numpy", "float32"), backend_param("cupy", "float32"), backend_param("cupy", "float64")]


@pytest.fixture(params=CANDIDATES)
def candidate(request: pytest.FixtureRequest) -> tuple[gpunet.Backend, str, gpunet.Backend, str]:
    """(backend, dtype, reference backend, reference dtype): CuPy against NumPy, NumPy float32 against float64."""
    name, dtype = request.param
    reference = ("numpy", dtype) if name == "cupy" else ("numpy", "float64")
    return require(name), dtype, require(reference[0]), reference[1]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST files not found in {MNIST_DIR} (set GPUNET_MNIST_DIR)")
    return MNIST_DIR


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max-norm relative difference |a - b| / |b|, robust to entries near zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def assert_close(got: object, want: object, tol: float, where: str = "") -> None:
    """``got`` within ``tol`` (rel_diff) of ``want``, of the same shape; dicts key by key, naming the key."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), where
        for k in want:
            assert_close(got[k], want[k], tol, f"{where}/{k}")
        return
    assert np.shape(got) == np.shape(want), where
    d = rel_diff(got, want)
    assert d <= tol, f"{where}: relative difference {d:.2e} > {tol:.0e}"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as the module ``name`` (registered in sys.modules, where dataclasses
    look their module up). scripts/ goes on sys.path, as it is for a script run as a program: the
    profiles import their shared scripts/profiling.py."""
    if str(SCRIPTS) not in sys.path:
        sys.path.append(str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Terminal(io.StringIO):
    """A stream that says it is a terminal: progress bars draw on it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _environment_as_found():
    """Each test leaves os.environ as it found it. Dask's nanny writes OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and
    MKL_NUM_THREADS = 1 into the environment of the process that starts a cluster; left there, every later
    subprocess of the session ran its BLAS on one thread, and a float32 product of one thread rounds apart
    from one of two (test_reliability compares a killed subprocess's records with an in-process run's)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)
