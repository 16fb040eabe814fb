"""The CUDA sources of the engines and their loading: every kernel's C lives in a ``.cu`` file in this folder,
compiled by NVRTC for the current device through a :class:`~gpunet.backend.Backend` (``backend.xp.RawModule``),
so ``gpunet/backend.py`` stays the only module that imports CuPy.

Each source opens with the formula it computes and the shapes of its arguments.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

from ..backend import Backend

SOURCE_DIR = Path(__file__).parent
# -std=c++17 for constexpr if; -I for activations.cuh. NVRTC has no host headers, so sources include none.
NVRTC_OPTIONS = ("-std=c++17", f"-I{SOURCE_DIR}")
# The activation codes of activations.cuh (its GPUNET_* defines), by gpunet's names.
ACT_CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "leaky_relu": 3, "identity": 4}
# The output activations (softmax is row-wise: GPUNET_SOFTMAX) and the losses (GPUNET_LOSS_*: cross-entropy
# fused with a softmax or sigmoid output), activations.cuh's defines too, one table for every kernel.
OUTPUT_CODES = {**ACT_CODES, "softmax": 5}
LOSS_CODES = {"squared": 0, "absolute": 1, "cross-entropy": 2}
C_TYPES = {"float32": "float", "float64": "double"}  # the kernels' element types, by NumPy dtype name
ARCHS = ("sm_80", "sm_90")  # A100, H100/H200: every source must compile for both


def sources() -> list[Path]:
    """Every CUDA source of the package (not the .cuh headers), sorted by name; the compile tests walk this list."""
    return sorted(SOURCE_DIR.glob("*.cu"))


def source(name: str) -> str:
    """The text of ``name`` (e.g. "fused.cu") from this folder."""
    return (SOURCE_DIR / name).read_text()


def load(backend: Backend, name: str, name_expressions: Sequence[str] = (), options: Sequence[str] = ()) -> Any:
    """``name`` compiled by NVRTC for the current device as a ``cupy.RawModule`` (cached per device and options).

    ``name_expressions`` lists the template instantiations to compile, e.g.
    ``"bias_act<float, 1>"``; fetch each with ``module.get_function(expr)``.
    """
    if backend.name != "cupy":
        raise ValueError(f"CUDA kernels need the cupy backend; got backend {backend.name!r}")
    device = backend.xp.cuda.Device().id
    return _load(backend.xp, device, name, tuple(name_expressions), tuple(NVRTC_OPTIONS) + tuple(options))


@functools.lru_cache(maxsize=None)
def _load(xp: Any, device: int, name: str, name_expressions: tuple[str, ...], options: tuple[str, ...]) -> Any:
    module = xp.RawModule(code=source(name), options=options, name_expressions=name_expressions or None)
    module.compile()  # compile now, not at the first launch (which may be inside a graph capture)
    return module
