"""Every CUDA source of gpunet/engines compiles for sm_80 and sm_90, with every instantiation the Python side
may ask for: with nvcc (skipped, with the reason, where none is found) and with NVRTC, which CuPy uses and
which has no host headers (skipped where libnvrtc cannot be loaded; the test extra installs it).

The instantiations come from each kernel module's ``NAME_EXPRESSIONS`` (gpunet.engines.name_expressions), so
sources added to the folder are covered without changing this file.
"""

from __future__ import annotations

import re

import pytest

from gpunet.engines import build as cuda
from gpunet.activations import ACTIVATIONS
from gpunet.engines import kernels

SOURCES = [p.name for p in cuda.sources()]


def test_there_are_sources_and_each_has_its_formula_comment():
    assert {"fused.cu", "optim.cu"} <= set(SOURCES)
    for name in SOURCES:
        assert kernels.source(name).startswith("//"), f"{name} must open with the formula it computes"


def test_the_python_code_tables_are_the_header_defines():
    # activations.cuh is the one place the kernels' codes are defined, generated from gpunet/activations.py's
    # table; gpunet/engines/kernels.py names them, and which ones read their derivative off the output.
    header = (cuda.SOURCE_DIR / "activations.cuh").read_text()
    defines = {name: int(value) for name, value in re.findall(r"^#define GPUNET_(\w+) (\d+)(?:\s|$)", header, re.M)}
    assert {f"{a.upper()}": t.code for a, t in ACTIVATIONS.items()} == {
        k: v for k, v in defines.items() if not k.startswith("LOSS_")}
    assert {f"{a.upper()}": code for a, code in kernels.OUTPUT_CODES.items()} == {
        a.upper(): t.code for a, t in ACTIVATIONS.items()}
    assert kernels.READ_OFF_OUTPUT == {a for a, t in ACTIVATIONS.items() if t.from_output}
    assert {f"LOSS_{loss.upper().replace('-', '_')}": code for loss, code in kernels.LOSS_CODES.items()} == {
        k: v for k, v in defines.items() if k.startswith("LOSS_")}
    own_code = re.compile(r"^#define (GPUNET_)?(SOFTMAX|(LOSS_)?(SQUARED|ABSOLUTE|CROSS_ENTROPY)) ", re.M)
    for name in SOURCES:  # no kernel defines a code of its own beside the header's
        assert not own_code.search(kernels.source(name)), name


def test_every_name_expression_belongs_to_a_source():
    table = cuda.name_expressions()
    assert set(table) <= set(SOURCES)
    # fused.cu: its 66 instantiations and graph mode's dropout_apply in float and double
    assert len(table["fused.cu"]) == 68 and len(table["optim.cu"]) == 2 * len(kernels.RULE_CODES) == 8
    assert {"dropout_apply<float>", "dropout_apply<double>"} <= set(table["fused.cu"])
    # per_sample.cu: each kernel with and without the hidden layer's dropout
    assert sum(e.startswith("per_sample_chunk_dropout<") for e in table["per_sample.cu"]) == 20
    assert sum(e.startswith("per_sample_chunk_z2_dropout<") for e in table["per_sample.cu"]) == 20
    # and the many-model kernels (one block a model): each form in float and double, for the 5 hidden activations
    for form in ("per_sample_many<", "per_sample_many_z2<", "per_sample_many_dropout<", "per_sample_many_z2_dropout<"):
        assert sum(e.startswith(form) for e in table["per_sample.cu"]) == 10, form
    assert len(table["per_sample.cu"]) == 80 + 40


@pytest.fixture(scope="module")
def nvcc():
    if cuda.nvcc_path() is None:
        pytest.skip("nvcc not found on PATH")
    return cuda.nvcc_path()


@pytest.fixture(scope="module")
def nvrtc():
    lib = cuda.nvrtc_library()
    if lib is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12, or set GPUNET_NVRTC)")
    return lib


@pytest.mark.parametrize("arch", cuda.ARCHS)
@pytest.mark.parametrize("name", SOURCES)
def test_nvcc_compiles(nvcc, name, arch):
    run = cuda.nvcc_compile(name, arch, ["-Werror", "all-warnings"])
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("arch", cuda.ARCHS)
@pytest.mark.parametrize("name", SOURCES)
def test_nvrtc_compiles_every_name_expression(nvrtc, name, arch):
    ok, log, lowered = cuda.nvrtc_compile(name, arch)
    assert ok, log
    exprs = cuda.name_expressions().get(name, ())
    assert sorted(lowered) == sorted(exprs)
    assert all(m.startswith("_Z") for m in lowered.values())  # C++ names, found by CuPy's get_function(expr)


def test_nvrtc_reports_a_broken_source(nvrtc, tmp_path, monkeypatch):
    (tmp_path / "broken.cu").write_text("// nothing\n__global__ void k(float* x) { x[0] = undefined_name; }\n")
    monkeypatch.setattr(kernels, "SOURCE_DIR", tmp_path)
    ok, log, lowered = cuda.nvrtc_compile("broken.cu", "sm_90")
    assert not ok and "undefined_name" in log and lowered == {}


def test_ptxas_report_gives_registers_for_every_kernel_and_no_spills_in_the_batch_kernels():
    if cuda.nvcc_path() is None and cuda.nvrtc_library() is None:
        pytest.skip("neither nvcc nor libnvrtc is available")
    report = cuda.ptxas_report()
    sections = dict(re.findall(r"== (\S+ sm_\d+) \((\w+)\)", report))
    assert sections == {f"{n} {a}": sections.get(f"{n} {a}") for n in SOURCES for a in cuda.ARCHS}
    assert set(sections.values()) <= {"nvcc", "nvrtc"}  # a failed compile says "(nvcc, FAILED)"
    kernels = re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", report)
    assert len(kernels) >= sum(len(v) for v in cuda.name_expressions().values()) * len(cuda.ARCHS)
    assert len(re.findall(r"Used \d+ registers", report)) == len(kernels)
    for name in ("fused.cu", "optim.cu", "gemm.cu"):
        for arch in cuda.ARCHS:
            part = report.split(f"== {name} {arch}")[1].split("\n== ")[0]
            assert len(re.findall("Compiling entry function", part)) == len(cuda.name_expressions()[name]), name
            spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", part)
            assert spills and all(s == ("0", "0") for s in spills), (name, arch)
