"""The array-module switch: the only place gpunet imports CuPy.

Everything else receives the array module (``xp``) from a :class:`Backend`
or from its input arrays via :func:`array_module`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np

BACKEND_NAMES = ("auto", "numpy", "cupy")
# Below this many multiply-adds per matrix product, a second BLAS thread costs more
# than it saves: its share of each result sits in the other core's cache, and the
# next in-place update pulls it across (batch 64, 784-100-10 on 2 cores: the SGD
# update takes 26 us on one thread, 112 us on two; see scripts/benchmark.py).
SMALL_PRODUCT = 1 << 23
INSTALL_HINT = 'pip install "gpunet[cuda12]" (or "gpunet[cuda13]" for CUDA 13)'

try:  # Guarded import: remember why it failed, report it when the GPU is asked for.
    import cupy as _cupy

    _CUPY_IMPORT_ERROR: str | None = None
except ImportError as exc:  # ModuleNotFoundError included
    _cupy = None
    _CUPY_IMPORT_ERROR = (
        "cupy not installed" if isinstance(exc, ModuleNotFoundError) and exc.name == "cupy"
        else f"cupy failed to import: {exc}"
    )


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says why and how to fix it."""


@functools.lru_cache(maxsize=1)
def cupy_unavailable_reason() -> str | None:
    """None when CuPy imports and a CUDA device runs a kernel, else the reason why not."""
    if _cupy is None:
        return _CUPY_IMPORT_ERROR
    try:
        count = _cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError and friends carry the driver's message
        return f"no CUDA device: {exc}"
    if count < 1:
        return "no CUDA device: the driver reports 0 devices"
    try:  # A device can be listed yet unusable (busy, wrong arch, missing NVRTC).
        probe = _cupy.arange(4, dtype=_cupy.float32) * 2
        probe.sum().item()  # CPU-GPU sync point, once per process
    except Exception as exc:
        return f"CUDA device unusable: {type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class Backend:
    """An array module plus the two copies between host and device."""

    name: str
    xp: ModuleType = field(repr=False)
    device: str
    reason: str = ""  # why "auto" chose this backend, empty when asked for by name

    def to_device(self, a: Any, dtype: Any = None) -> Any:
        """Host (or other-backend) array -> this backend's array; no copy when already there."""
        if self.xp is np:
            return np.ascontiguousarray(to_numpy(a), dtype=dtype)
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a: Any) -> np.ndarray:
        """This backend's array -> NumPy array (a CPU-GPU sync point on CuPy)."""
        return to_numpy(a)

    def synchronize(self) -> None:
        """Wait until queued device work has finished (a no-op on NumPy)."""
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()

    @contextlib.contextmanager
    def products_of_size(self, multiply_adds: int) -> Iterator[None]:
        """Within this block the largest matrix product has ``multiply_adds``: on NumPy,
        small ones run on one BLAS thread (threadpoolctl); CuPy is unaffected."""
        if self.xp is not np or multiply_adds >= SMALL_PRODUCT:
            yield
            return
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            yield

    @property
    def out_of_memory_errors(self) -> tuple[type[BaseException], ...]:
        """What this backend raises when an array does not fit."""
        if self.xp is np:
            return (MemoryError,)
        return (MemoryError, _cupy.cuda.memory.OutOfMemoryError)

    def free_memory(self) -> None:
        """Return cached device blocks to the driver (a no-op on NumPy)."""
        if self.xp is not np:
            self.xp.get_default_memory_pool().free_all_blocks()
            self.xp.get_default_pinned_memory_pool().free_all_blocks()


def to_numpy(a: Any) -> np.ndarray:
    """Any array (NumPy, CuPy or a sequence) -> NumPy array; a sync point for CuPy input."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)  # CPU-GPU sync point
    return np.asarray(a)


def array_module(*arrays: Any) -> ModuleType:
    """The array module of the inputs: cupy if any is a CuPy array, else numpy."""
    if _cupy is None or all(type(a) is np.ndarray for a in arrays):  # the common CPU case, without a call
        return np
    return _cupy.get_array_module(*arrays)


def _numpy_backend(reason: str = "") -> Backend:
    return Backend("numpy", np, "cpu", reason)


def _cupy_backend() -> Backend:
    reason = cupy_unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(
            f"backend 'cupy' is unavailable: {reason}. "
            f"Install CuPy with {INSTALL_HINT} on a machine with an NVIDIA GPU and driver, "
            "or use backend='numpy'"
        )
    props = _cupy.cuda.runtime.getDeviceProperties(_cupy.cuda.Device().id)
    name = props["name"]
    return Backend("cupy", _cupy, name.decode() if isinstance(name, bytes) else str(name))


def get_backend(name: str | Backend | None = None) -> Backend:
    """Return the backend called ``name``: "auto", "numpy" or "cupy".

    ``None`` reads the environment variable ``GPUNET_BACKEND`` (default "auto").
    "auto" picks CuPy only when it imports and a CUDA device is usable, and
    records in ``Backend.reason`` why it chose what it did.
    """
    if isinstance(name, Backend):
        return name
    source = "backend"
    if name is None:
        name, source = os.environ.get("GPUNET_BACKEND", "auto"), "GPUNET_BACKEND"
    if not isinstance(name, str) or name.strip().lower() not in BACKEND_NAMES:
        raise ValueError(f"{source} must be one of {', '.join(BACKEND_NAMES)}; got {name!r}")
    name = name.strip().lower()
    if name == "numpy":
        return _numpy_backend()
    if name == "cupy":
        return _cupy_backend()
    reason = cupy_unavailable_reason()
    if reason is None:
        return replace(_cupy_backend(), reason="cupy imports and a CUDA device is usable")
    return _numpy_backend(reason=reason)
