"""The kernels' device arithmetic, compiled for the host and held to the NumPy table it comes from.

activations.cuh is generated from gpunet/activations.py's table, and its functions are ``__host__
__device__``: a host C++ compiler builds them here, and each activation's forward and derivative (read
off the output, or off the input where the table says so) is evaluated over a grid of inputs, edge values
included, in float and double, and compared with the table's NumPy pair. A sign flipped in a C++
expression fails here without a GPU.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from gpunet.activations import ACTIVATIONS
from gpunet.engines import kernels

Z_GRID = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 0.25, -0.25, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 3.0, -3.0,
                   10.0, -10.0, 20.0, -20.0, 40.0, -40.0, 100.0, -100.0, 1e4, -1e4, np.inf, -np.inf])
DA_GRID = np.array([1.0, -2.0, 0.5, 3.0])
ELEMENTWISE = [name for name, a in ACTIVATIONS.items() if a.cuda_forward is not None]
TOLERANCE = {"float": 2e-6, "double": 1e-14}  # relative: the host's libm against NumPy's; a sign is far beyond


def _compiler() -> str:
    found = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if found is None:
        pytest.fail("no host C++ compiler (g++, c++ or clang++) to build the device arithmetic with")
    return found


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict[tuple[str, str, str], np.ndarray]:
    """Every (ctype, activation, function) over the grid, computed by the compiled header."""
    folder = tmp_path_factory.mktemp("device_arithmetic")
    zs = ", ".join(repr(float(z)) if np.isfinite(z) else ("INFINITY" if z > 0 else "-INFINITY") for z in Z_GRID)
    das = ", ".join(repr(float(d)) for d in DA_GRID)
    calls = []
    for ctype in ("float", "double"):
        for name in ELEMENTWISE:
            code, table = f"GPUNET_{name.upper()}", ACTIVATIONS[name]
            backward = "act_backward" if table.from_output else "act_backward_from_input"
            arg = "act_forward<{c}, {t}>(z)" if table.from_output else "z"
            calls.append(f'    for (double zd : zs) {{ {ctype} z = ({ctype})zd; '
                         f'std::printf("{ctype} {name} forward %a\\n", (double)act_forward<{code}, {ctype}>(z)); }}')
            calls.append(f'    for (double zd : zs) for (double dd : das) {{ {ctype} z = ({ctype})zd, da = ({ctype})dd; '
                         f'std::printf("{ctype} {name} backward %a\\n", (double){backward}<{code}, {ctype}>('
                         f'{arg.format(c=code, t=ctype)}, da)); }}')
    source = folder / "arithmetic.cpp"
    source.write_text("#include <cmath>\n#include <cstdio>\nusing std::exp; using std::tanh;\n"
                      '#include "activations.cuh"\n'
                      f"static const double zs[] = {{{zs}}};\nstatic const double das[] = {{{das}}};\n"
                      "int main() {\n" + "\n".join(calls) + "\n    return 0;\n}\n")
    binary = folder / "arithmetic"
    build = subprocess.run([_compiler(), "-std=c++17", "-O1", "-ffp-contract=off", f"-I{kernels.SOURCE_DIR}",
                            str(source), "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    values: dict[tuple[str, str, str], list[float]] = {}
    for line in out.splitlines():
        ctype, name, fn, value = line.split()
        values.setdefault((ctype, name, fn), []).append(float.fromhex(value))
    return {k: np.array(v) for k, v in values.items()}


def _expected(name: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    table = ACTIVATIONS[name]
    z = Z_GRID.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        forward = np.asarray(table.forward(z.copy()), dtype=dtype)
        at = forward if table.from_output else z  # what the derivative reads: the output, or the input
        rows = np.repeat(at, len(DA_GRID)).reshape(-1, 1)
        backward = np.asarray(table.backward(rows.copy(), np.tile(DA_GRID, len(Z_GRID)).astype(dtype).reshape(-1, 1)),
                              dtype=dtype)
    return forward, backward.reshape(-1)


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_each_activation_and_its_derivative_match_the_table(evaluated, name, ctype):
    forward, backward = _expected(name, np.float32 if ctype == "float" else np.float64)
    assert len(evaluated[ctype, name, "forward"]) == len(Z_GRID)
    np.testing.assert_allclose(evaluated[ctype, name, "forward"], forward, rtol=TOLERANCE[ctype], atol=1e-300,
                               err_msg=f"{name} forward in {ctype}")
    np.testing.assert_allclose(evaluated[ctype, name, "backward"], backward, rtol=TOLERANCE[ctype], atol=1e-300,
                               err_msg=f"{name} derivative in {ctype}")


def test_the_header_is_what_the_table_generates():
    assert (kernels.SOURCE_DIR / "activations.cuh").read_text() == kernels.activations_header(), (
        "activations.cuh is stale: run python scripts/generate_cuda.py")
