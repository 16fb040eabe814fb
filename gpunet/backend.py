"""The array-module switch: the only place gpunet imports CuPy.

Everything else receives the array module (``xp``) from a :class:`Backend`
or from its input arrays via :func:`array_module`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np

BACKEND_NAMES = ("auto", "numpy", "cupy")
# Below this many multiply-adds per matrix product, a second BLAS thread costs more
# than it saves: its share of each result sits in the other core's cache, and the
# next in-place update pulls it across (measured: docs/benchmarks.md).
SMALL_PRODUCT = 1 << 23
INSTALL_HINT = 'pip install "gpunet[cuda12]" (or "gpunet[cuda13]" for CUDA 13)'

try:  # Guarded import: remember why it failed, report it when the GPU is asked for.
    import cupy as _cupy

    _CUPY_IMPORT_ERROR: str | None = None
except ImportError as exc:  # ModuleNotFoundError included
    _cupy = None
    _CUPY_IMPORT_ERROR = (
        "cupy not installed" if isinstance(exc, ModuleNotFoundError) and exc.name == "cupy"
        else f"no NVIDIA driver (cupy failed to import: {exc})" if "libcuda" in str(exc)
        else f"cupy failed to import: {exc}"
    )


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says why and how to fix it."""


# The CUDA runtime says "insufficient driver" both when the driver is too old and when
# there is none at all; loading the driver library tells the two apart.
LIBCUDA = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


def _libcuda_loads() -> bool:
    """Whether the NVIDIA driver's library can be loaded (it ships with the driver, not with CuPy)."""
    try:
        ctypes.CDLL(LIBCUDA)
    except OSError:
        return False
    return True


def _device_count_error(exc: BaseException, libcuda_loads: bool) -> str:
    """Why ``getDeviceCount`` failed, in the words a user can act on."""
    message = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    if not libcuda_loads:
        return f"no NVIDIA driver ({LIBCUDA} cannot be loaded; the CUDA runtime says: {message})"
    if "cudaErrorInsufficientDriver" in message:
        return f"NVIDIA driver too old for this CuPy's CUDA runtime: {message}"
    return f"no CUDA device: {message}"


@functools.lru_cache(maxsize=1)
def cupy_unavailable_reason() -> str | None:
    """None when CuPy imports and a CUDA device runs a kernel, else the reason why not."""
    if _cupy is None:
        return _CUPY_IMPORT_ERROR
    try:
        count = _cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError and friends carry the driver's message
        return _device_count_error(exc, _libcuda_loads())
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
        """Any array -> this backend's array; no copy when already there (in that dtype, contiguous).

        NumPy, CuPy, sequences, and arrays of other libraries through DLPack
        (PyTorch, JAX, ...): host data is read in place, and on CuPy a CUDA
        array is taken as it is on the device, with no round trip through the host.
        """
        if self.xp is np:
            return np.ascontiguousarray(to_numpy(a), dtype=dtype)
        return self.xp.ascontiguousarray(self.xp.asarray(as_array(a), dtype=dtype))  # host -> device copy

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        """Pickled by name (an array module cannot be pickled): unpickling finds the backend again."""
        return _restore_backend, (self.name, self.reason)

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
        with _threadpools().limit(limits=1, user_api="blas"):
            yield

    @property
    def cublas(self) -> ModuleType:
        """cupy.cublas, whose gemm adds a product into its output (alpha, beta): the CUDA fast paths' weight
        updates. CuPy backends only (``numpy.cublas`` does not exist)."""
        if self.xp is np:
            raise ValueError(f"cuBLAS needs the cupy backend; got backend {self.name!r}")
        if self.xp is _cupy:
            import cupy.cublas  # noqa: F401  on first use: it loads cuBLASLt, which a machine without CUDA lacks
        return self.xp.cublas

    @property
    def out_of_memory_errors(self) -> tuple[type[BaseException], ...]:
        """What this backend raises when an array does not fit."""
        if self.xp is np:
            return (MemoryError,)
        return (MemoryError, _cupy.cuda.memory.OutOfMemoryError)

    def free_bytes(self) -> int | None:
        """Bytes this backend can still allocate: the device's free memory plus CuPy's cached blocks, or on
        NumPy the host's (gpunet.memory.available_host_bytes); None where unknown."""
        if self.xp is np:
            from .memory import available_host_bytes  # memory.py imports nothing of gpunet's: no cycle

            return available_host_bytes()
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def free_memory(self) -> None:
        """Return cached device blocks to the driver (a no-op on NumPy)."""
        if self.xp is not np:
            self.xp.get_default_memory_pool().free_all_blocks()
            self.xp.get_default_pinned_memory_pool().free_all_blocks()


# DLPack device types (dlpack.h): where an array's memory lives.
DLPACK_CPU, DLPACK_CUDA, DLPACK_CUDA_HOST, DLPACK_CUDA_MANAGED = 1, 2, 3, 13


def as_array(a: Any) -> Any:
    """Any array -> a NumPy array (host data) or a CuPy array (CUDA data), without a copy where possible.

    NumPy and CuPy arrays come back as they are; another library's array with
    ``__dlpack__`` (a PyTorch tensor, a JAX array) is read in place through
    DLPack; anything else goes through ``numpy.asarray``.
    """
    if isinstance(a, np.ndarray) or (_cupy is not None and isinstance(a, _cupy.ndarray)):
        return a
    if not hasattr(a, "__dlpack__") or not hasattr(a, "__dlpack_device__"):
        return np.asarray(a)
    device_type = int(a.__dlpack_device__()[0])
    on_cuda = device_type in (DLPACK_CUDA, DLPACK_CUDA_MANAGED)
    if not on_cuda and device_type not in (DLPACK_CPU, DLPACK_CUDA_HOST):
        raise TypeError(f"cannot read a {type(a).__name__} on DLPack device type {device_type}: "
                        "gpunet reads host (CPU) and CUDA arrays")
    if on_cuda and cupy_unavailable_reason() is not None:
        raise BackendUnavailableError(
            f"a {type(a).__name__} on a CUDA device needs a usable CuPy to be read ({cupy_unavailable_reason()}); "
            f"install it with {INSTALL_HINT}, or move the array to the CPU first"
        )
    try:
        return _cupy.from_dlpack(a) if on_cuda else np.from_dlpack(a)  # both share the memory of a
    except (BufferError, RuntimeError, TypeError) as exc:  # e.g. a tensor that requires grad, bfloat16
        raise TypeError(f"cannot read a {type(a).__name__} through DLPack: {exc}") from None


@functools.lru_cache(maxsize=1)
def _threadpools() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, found once: finding them scans every loaded
    shared library (4 ms here, more with PyTorch loaded), too slow to repeat each epoch."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def to_numpy(a: Any) -> np.ndarray:
    """Any array (NumPy, CuPy, DLPack or a sequence) -> NumPy array; a sync point for device input."""
    a = as_array(a)
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)  # CPU-GPU sync point
    return a


def array_module(*arrays: Any) -> ModuleType:
    """The array module of the inputs: cupy if any is a CuPy array, else numpy."""
    if _cupy is None or all(type(a) is np.ndarray for a in arrays):  # the common CPU case, without a call
        return np
    return _cupy.get_array_module(*arrays)


def _restore_backend(name: str, reason: str) -> Backend:
    return replace(get_backend(name), reason=reason)


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
