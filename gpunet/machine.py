"""What a result was measured on: the host, CPU, Python and library versions, and the GPU where one is usable."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from .backend import cupy_unavailable_reason, get_backend


def processor() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), else platform's guess, else "cpu"."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def machine() -> dict[str, Any]:
    """The host, platform, CPU, Python, NumPy and gpunet versions; CuPy's version and the GPU when usable."""
    from . import __version__

    info: dict[str, Any] = {
        "host": platform.node(), "platform": platform.platform(), "processor": platform.processor(),
        "cpu": processor(), "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "gpunet": __version__,
    }
    if cupy_unavailable_reason() is None:
        backend = get_backend("cupy")
        info.update(cupy=backend.xp.__version__, gpu=backend.device)
    return info
