"""CUDA kernels for the CuPy backend: the fast paths, each tested against the plain ``xp`` code in network.py.

Every kernel's CUDA C lives in a ``.cu`` file in this folder, opening with the
formula it computes and the shapes of its arguments. Kernels reach CuPy only
through a :class:`~gpunet.backend.Backend` (``backend.xp.RawModule``), so
``gpunet/backend.py`` stays the only module that imports CuPy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import importlib.util
import os
import pkgutil
import shutil
import subprocess
import tempfile
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


# --- compiling without a GPU: the tests and the GPU check script ------------------------------------

def name_expressions() -> dict[str, tuple[str, ...]]:
    """Every template instantiation the Python side can ask for, by source file ("fused.cu": (...)).

    The convention: a kernel module of this package exports ``NAME_EXPRESSIONS``, a dict from its .cu
    files' names to the expressions it may pass to :func:`load`; the tables of all modules are merged.
    """
    merged: dict[str, tuple[str, ...]] = {}
    for info in pkgutil.iter_modules([str(SOURCE_DIR)]):
        table = getattr(importlib.import_module(f"{__name__}.{info.name}"), "NAME_EXPRESSIONS", {})
        for name, exprs in table.items():
            merged[name] = tuple(dict.fromkeys(merged.get(name, ()) + tuple(exprs)))
    return merged


def instantiation_unit(name: str, exprs: Sequence[str]) -> str:
    """A translation unit for nvcc: ``name`` included, and each expression instantiated by taking its address
    (what NVRTC's name expressions do)."""
    refs = "".join(f"    (void*)&{e},\n" for e in exprs)
    return f'#include "{name}"\n' + (f"extern void* const gpunet_instantiations[] = {{\n{refs}}};\n" if exprs else "")


def nvcc_path() -> str | None:
    return shutil.which("nvcc")


def nvcc_compile(name: str, arch: str, extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """nvcc on ``name`` with its instantiations, to a cubin for ``arch`` (e.g. "sm_90") that is thrown away."""
    exprs = name_expressions().get(name, ())
    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp) / f"instantiate_{Path(name).stem}.cu"
        unit.write_text(instantiation_unit(name, exprs))
        command = [nvcc_path() or "nvcc", "-std=c++17", f"-I{SOURCE_DIR}", f"-arch={arch}", "-cubin",
                   "-o", str(Path(tmp) / "out.cubin"), *extra, str(unit)]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)


def nvrtc_library() -> ctypes.CDLL | None:
    """libnvrtc, from $GPUNET_NVRTC, the nvidia-cuda-nvrtc wheel, the toolkit beside nvcc, or the loader's path."""
    candidates = [os.environ.get("GPUNET_NVRTC", "")]
    for package in ("nvidia.cuda_nvrtc", "nvidia.cu13", "nvidia.cu12"):
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidates += sorted(str(p) for p in Path(folder).glob("lib*/libnvrtc.so*") if "alt" not in p.name)
    if nvcc_path():
        root = Path(os.path.realpath(nvcc_path())).parent.parent
        candidates += sorted(str(p) for p in root.glob("lib*/libnvrtc.so*"))
    candidates.append(ctypes.util.find_library("nvrtc") or "")
    for path in filter(None, candidates):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def nvrtc_compile(name: str, arch: str, options: Sequence[str] = ()) -> tuple[bool, str, dict[str, str]]:
    """NVRTC on ``name`` with its name expressions for ``arch``, as CuPy compiles it: (ok, log, lowered names).

    Raises RuntimeError when no libnvrtc can be loaded.
    """
    lib = nvrtc_library()
    if lib is None:
        raise RuntimeError("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12, or set GPUNET_NVRTC)")
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    prog = ctypes.c_void_p()

    def check(result: int, what: str) -> None:
        if result != 0:
            raise RuntimeError(f"{what}: {lib.nvrtcGetErrorString(result).decode()}")

    exprs = name_expressions().get(name, ())
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source(name).encode(), name.encode(), 0, None, None),
          "nvrtcCreateProgram")
    try:
        for e in exprs:
            check(lib.nvrtcAddNameExpression(prog, e.encode()), f"nvrtcAddNameExpression({e})")
        opts = [*NVRTC_OPTIONS, f"--gpu-architecture={arch}", *options]
        argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        result = lib.nvrtcCompileProgram(prog, len(opts), argv)
        size = ctypes.c_size_t()
        check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        log = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        lowered: dict[str, str] = {}
        if result == 0:
            for e in exprs:
                out = ctypes.c_char_p()
                check(lib.nvrtcGetLoweredName(prog, e.encode(), ctypes.byref(out)), f"nvrtcGetLoweredName({e})")
                lowered[e] = out.value.decode()
        return result == 0, log.value.decode(errors="replace"), lowered
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def ptxas_report(archs: Sequence[str] = ARCHS) -> str:
    """ptxas's report (registers, spills, shared memory per kernel) for every source and architecture.

    nvcc's ``-Xptxas -v`` where nvcc is found, else NVRTC's ``--ptxas-options=-v``. The GPU check script
    saves it beside its results; raises RuntimeError when neither compiler is here.
    """
    parts = []
    for path in sources():
        for arch in archs:
            if nvcc_path():
                run = nvcc_compile(path.name, arch, ["-Xptxas", "-v"])
                ok, log, tool = run.returncode == 0, run.stdout + run.stderr, "nvcc"
            else:
                ok, log, _ = nvrtc_compile(path.name, arch, ["--ptxas-options=-v"])
                tool = "nvrtc"
            parts.append(f"== {path.name} {arch} ({tool}{'' if ok else ', FAILED'})\n{log.strip()}\n")
    return "\n".join(parts)
