"""The parameter buffer: a network's weights and biases in one flat array, each parameter a view into it.

The network keeps its parameters here from construction: each ``net.params[k]`` is a
view into one buffer, the same array object for the network's life, so a fast path
can step the whole buffer in place (one optimiser launch over every parameter) while
``set_params``, checkpoints and the plain path keep reading and writing the views.
Weights come first, biases after them, so weight decay applies to one prefix of the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .initializers import init_params
from .memory import DeviceMemoryError, GiB, available_host_bytes, check_network_size, parameter_count

Array = Any
# Each tensor starts on a multiple of 32 elements: 128 bytes in float32, the alignment cuBLAS's fastest kernels
# want for their operands. The padding is zero in every buffer and stays zero (its gradient is never written).
ALIGN = 32


@dataclass(frozen=True)
class Layout:
    """Where each tensor lies in the flat buffer: ``offsets[k]`` and ``shapes[k]``; ``size`` entries in all,
    the weights (decayed) in ``[0, n_weights)``."""

    shapes: dict[str, tuple[int, ...]]
    offsets: dict[str, int]
    size: int
    n_weights: int


def layout(shapes: dict[str, tuple[int, ...]], align: int = ALIGN) -> Layout:
    """The weights ("W...") first, in the given order, then the rest; each offset rounded up to ``align``."""
    names = [k for k in shapes if k.startswith("W")] + [k for k in shapes if not k.startswith("W")]
    offsets, end, n_weights = {}, 0, 0
    for k in names:
        if not k.startswith("W") and not n_weights:
            n_weights = end
        offsets[k] = end
        end += -(-int(np.prod(shapes[k], dtype=np.int64)) // align) * align
    return Layout({k: tuple(shapes[k]) for k in names}, offsets, end, n_weights or end)


def views(flat: Array, lay: Layout) -> dict[str, Array]:
    """Each tensor of ``lay`` as a contiguous view into ``flat``."""
    return {k: flat[o : o + int(np.prod(lay.shapes[k], dtype=np.int64))].reshape(lay.shapes[k])
            for k, o in lay.offsets.items()}


class Packed(NamedTuple):
    """A network's parameters in one flat buffer: ``buffer`` (1-D, laid out by :func:`layout`) and ``views``,
    each parameter as a view into it, in the parameters' own order."""

    buffer: Array
    views: dict[str, Array]


def empty_packed(shapes: dict[str, tuple[int, ...]], dtype: Any, xp: Any) -> Packed:
    """A zeroed flat buffer for tensors of ``shapes`` on ``xp``, and its views in the order of ``shapes``."""
    lay = layout(shapes)
    buffer = xp.zeros(lay.size, dtype=dtype)
    by_offset = views(buffer, lay)
    return Packed(buffer, {k: by_offset[k] for k in shapes})


def pack(params: dict[str, Array], xp: Any) -> Packed:
    """``params`` copied into a new flat buffer on ``xp`` (in their dtype), and its views."""
    first = next(iter(params.values()))
    packed = empty_packed({k: p.shape for k, p in params.items()}, first.dtype, xp)
    for k, p in params.items():
        packed.views[k][...] = p
    return packed


def build_params(sizes: list[int], init: str, seed: int, backend: Any, dtype: np.dtype) -> Packed:
    """init_params moved to ``backend`` in ``dtype``, after checking that they fit: one flat buffer
    (:func:`layout`'s, which the fast paths step in place) and each parameter a view into it.

    The host holds every parameter in float64 while they are drawn (and, on NumPy,
    their copies in ``dtype``); a network that cannot fit gets DeviceMemoryError
    before anything is allocated, one that fails on the device gets it afterwards.
    """
    check_network_size(sizes, dtype.itemsize)  # beyond any machine: a usage error (ValueError), not memory
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

