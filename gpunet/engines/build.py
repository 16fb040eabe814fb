"""Compiling the CUDA sources without a GPU, for the tests and the GPU check: every instantiation the engines
can ask for, by nvcc or NVRTC, and ptxas's report of registers and spills."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from . import fused, graph, per_sample
from . import kernels
from .kernels import ARCHS, NVRTC_OPTIONS, SOURCE_DIR, sources


def name_expressions() -> dict[str, tuple[str, ...]]:
    """Every template instantiation the engines can ask for, by source file ("fused.cu": (...)): each engine
    module's ``NAME_EXPRESSIONS`` merged."""
    merged: dict[str, tuple[str, ...]] = {}
    for table in (fused.NAME_EXPRESSIONS, graph.NAME_EXPRESSIONS, per_sample.NAME_EXPRESSIONS):
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
    nvcc = nvcc_path()
    if nvcc:
        root = Path(os.path.realpath(nvcc)).parent.parent
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
    ok, log, lowered, _ = _nvrtc(name, [f"--gpu-architecture={arch}", *options], want_ptx=False)
    return ok, log, lowered


def kernel_ptx(name: str, arch: str = "compute_90") -> dict[str, str]:
    """The PTX of each instantiation of ``name`` (its name expressions), by expression: the ``.entry`` of the
    kernel as NVRTC lowers it for the virtual ``arch``. What the device runs, free of comments and layout, so a
    test can hold the kernels' code unchanged across a move of their source. RuntimeError when NVRTC fails."""
    ok, log, lowered, ptx = _nvrtc(name, [f"--gpu-architecture={arch}"], want_ptx=True)
    if not ok:
        raise RuntimeError(f"NVRTC failed on {name}: {log}")
    entries = {}
    for match in re.finditer(r"^\.(?:visible|weak) \.entry (\w+)\(.*?^}$", ptx, re.M | re.S):
        # Branch labels and call comments are numbered across the module ($L__BB<function>_<block>, "// callseq
        # N"): a kernel instantiated before this one renumbers them, so the numbers and comments are left out.
        entry = re.sub(r"//.*$", "", match.group(0), flags=re.M)
        entries[match.group(1)] = re.sub(r"\$L__BB\d+_", "$L__BB_", entry)
    return {e: entries[mangled] for e, mangled in lowered.items()}


def _nvrtc(name: str, opts_tail: Sequence[str], want_ptx: bool) -> tuple[bool, str, dict[str, str], str]:
    lib = nvrtc_library()
    if lib is None:
        raise RuntimeError("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12, or set GPUNET_NVRTC)")
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    prog = ctypes.c_void_p()

    def check(result: int, what: str) -> None:
        if result != 0:
            raise RuntimeError(f"{what}: {lib.nvrtcGetErrorString(result).decode()}")

    exprs = name_expressions().get(name, ())
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), kernels.source(name).encode(), name.encode(), 0, None, None),
          "nvrtcCreateProgram")
    try:
        for e in exprs:
            check(lib.nvrtcAddNameExpression(prog, e.encode()), f"nvrtcAddNameExpression({e})")
        opts = [*NVRTC_OPTIONS, *opts_tail]
        argv = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        result = lib.nvrtcCompileProgram(prog, len(opts), argv)
        size = ctypes.c_size_t()
        check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        log = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        lowered: dict[str, str] = {}
        ptx = ""
        if result == 0:
            for e in exprs:
                out = ctypes.c_char_p()
                check(lib.nvrtcGetLoweredName(prog, e.encode(), ctypes.byref(out)), f"nvrtcGetLoweredName({e})")
                assert out.value is not None  # NVRTC sets it where the call succeeded (check raised otherwise)
                lowered[e] = out.value.decode()
            if want_ptx:
                check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
                text = ctypes.create_string_buffer(size.value)
                check(lib.nvrtcGetPTX(prog, text), "nvrtcGetPTX")
                ptx = text.value.decode()
        return result == 0, log.value.decode(errors="replace"), lowered, ptx
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
