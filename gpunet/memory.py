"""Memory checks made before allocating, so that a network or a file too big for this machine fails in one line."""

from __future__ import annotations

import os
from pathlib import Path

GiB = float(1 << 30)
# Bytes a 64-bit process can address at most (48-bit virtual addresses, 256 TiB): a request beyond it is
# one no machine can hold, a usage error (ValueError), not a shortage of memory on this one.
ADDRESS_SPACE = 1 << 48


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


def check_possible(setting: str, what: str, nbytes: int) -> None:
    """ValueError naming ``setting`` where ``nbytes`` (for ``what``) is more than any machine can address:
    a usage error, where DeviceMemoryError is for a reasonable request this machine cannot hold."""
    if nbytes > ADDRESS_SPACE:
        raise ValueError(f"{what} would need {nbytes / GiB:,.0f} GiB, more than any machine can address "
                         f"({ADDRESS_SPACE >> 40} TiB); reduce {setting}=")


def check_network_size(sizes: list[int], itemsize: int) -> None:
    """:func:`check_possible` for a network of layer ``sizes`` with ``itemsize``-byte parameters: the host draws
    each parameter in float64 besides its copy, so the request is ``8 + itemsize`` bytes a parameter."""
    n = parameter_count(sizes)
    check_possible("hidden", f"layers {sizes} ({n:,} parameters)", n * (8 + itemsize))
