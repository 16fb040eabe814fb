"""Memory checks made before allocating, so that a network or a file too big for this machine fails in one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .cuda.flat import Packed, empty_packed
from .initializers import init_params

GiB = float(1 << 30)


def available_host_bytes() -> int | None:
    """Bytes the host can still give this process without the kernel's OOM killer, or None where unknown.

    Linux's MemAvailable plus free swap, capped by a cgroup (v2) limit when the process runs in one.
    """
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        free = (int(info["MemAvailable"].split()[0]) + int(info.get("SwapFree", "0 kB").split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    try:
        limit, used = (Path("/sys/fs/cgroup", name).read_text().strip() for name in ("memory.max", "memory.current"))
        if limit != "max":
            free = min(free, max(0, int(limit) - int(used)))
    except (OSError, ValueError):
        pass
    return free


class DeviceMemoryError(MemoryError):
    """An array did not fit in the device's (or host's) memory; the message gives the sizes.
    (Also ``gpunet.training.DeviceMemoryError``, where training raises it.)"""


def parameter_count(sizes: list[int]) -> int:
    """Weights and biases of a network with these layer sizes (a Python int: no overflow)."""
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def build_params(sizes: list[int], init: str, seed: int, backend: Any, dtype: np.dtype) -> Packed:
    """init_params moved to ``backend`` in ``dtype``, after checking that they fit: one flat buffer
    (gpunet/cuda/flat.py's layout, which the CUDA fast paths step in place) and each parameter a view into it.

    The host holds every parameter in float64 while they are drawn (and, on NumPy,
    their copies in ``dtype``); a network that cannot fit gets DeviceMemoryError
    before anything is allocated, one that fails on the device gets it afterwards.
    """
    n = parameter_count(sizes)
    host = n * (8 + (dtype.itemsize if backend.xp is np else 0))
    free = available_host_bytes()
    if free is not None and host > free:
        raise DeviceMemoryError(
            f"out of memory: layers {sizes} have {n:,} parameters; building them in {dtype.name} needs about "
            f"{host / GiB:,.1f} GiB of host memory and {free / GiB:,.1f} GiB is free; reduce hidden="
        )
    try:
        host_params = init_params(sizes, init, seed)
        packed = empty_packed({k: v.shape for k, v in host_params.items()}, dtype, backend.xp)
        for k, v in host_params.items():  # one tensor at a time on the device besides the buffer
            packed.views[k][...] = backend.to_device(v, dtype)
        return packed
    except backend.out_of_memory_errors as exc:
        backend.free_memory()
        raise DeviceMemoryError(
            f"out of memory on {backend.name} ({backend.device}) while building layers {sizes} in {dtype.name} "
            f"({n * dtype.itemsize / GiB:,.2f} GiB of parameters): {str(exc).strip() or type(exc).__name__}; "
            "reduce hidden= or use dtype='float32'"
        ) from None

