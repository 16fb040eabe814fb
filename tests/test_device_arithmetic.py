"""The kernels' device arithmetic, compiled for the host and held to the NumPy code it comes from.

activations.cuh is generated from gpunet/activations.py's table and optim_rules.cuh from gpunet/optim.py's
declarations, and their functions are ``__host__ __device__``: a host C++ compiler builds them here.
Each activation's forward and derivative (read off the output, or off the input where the table says so)
is evaluated over a grid of inputs, edge values included, in float and double, and compared with the
table's NumPy pair; each optimiser rule takes steps from a grid of parameters, gradients and state, and
is compared with the optimiser's host step. A sign flipped in a C++ expression fails here without a GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpunet.activations import ACTIVATIONS, LOSSES
from gpunet.optim import OPTIMIZERS
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


def _compile_and_run(folder: Path, name: str, prelude: str, calls: list[str]) -> list[str]:
    """main() of ``calls`` after ``prelude`` (its usings, the header under test, the input grids), compiled for
    the host against this folder's headers without contracting a * b + c (each harness prints hex floats, to
    compare as NumPy rounds them), then run: its output lines."""
    source = folder / f"{name}.cpp"
    source.write_text("#include <cmath>\n#include <cstdio>\n" + prelude + "int main() {\n" + "\n".join(calls)
                      + "\n    return 0;\n}\n")
    build = subprocess.run([_compiler(), "-std=c++17", "-O1", "-ffp-contract=off", f"-I{kernels.SOURCE_DIR}",
                            str(source), "-o", str(folder / name)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return subprocess.run([str(folder / name)], capture_output=True, text=True, check=True).stdout.splitlines()


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
            # the run-time forms (the per-sample kernel's output), the code a variable: those read off the output,
            # or those whose derivative reads the input
            suffix, at = ("", "act_forward_code(act, z)") if table.from_output else ("_from_input", "z")
            calls.append(f'    for (double zd : zs) {{ {ctype} z = ({ctype})zd; int act = {code}; '
                         f'std::printf("{ctype} {name} forward_code %a\\n", '
                         f'(double)act_forward_code{suffix}(act, z)); }}')
            calls.append(f'    for (double zd : zs) for (double dd : das) {{ {ctype} z = ({ctype})zd, '
                         f'da = ({ctype})dd; int act = {code}; std::printf("{ctype} {name} backward_code %a\\n", '
                         f'(double)act_backward_code{suffix}(act, {at}, da)); }}')
    prelude = ('using std::exp; using std::tanh;\n#include "activations.cuh"\n'
               f"static const double zs[] = {{{zs}}};\nstatic const double das[] = {{{das}}};\n")
    values: dict[tuple[str, str, str], list[float]] = {}
    for line in _compile_and_run(folder, "arithmetic", prelude, calls):
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
    np.testing.assert_allclose(evaluated[ctype, name, "forward_code"], forward, rtol=TOLERANCE[ctype], atol=1e-300,
                               err_msg=f"{name} forward by code in {ctype}")  # the identity: each switch's default
    np.testing.assert_allclose(evaluated[ctype, name, "backward_code"], backward, rtol=TOLERANCE[ctype], atol=1e-300,
                               err_msg=f"{name} derivative by code in {ctype}")


def test_the_header_is_what_the_table_generates():
    assert (kernels.SOURCE_DIR / "activations.cuh").read_text() == kernels.activations_header(), (
        "activations.cuh is stale: run python scripts/generate_cuda.py")


# --- the optimiser rules -------------------------------------------------------------------------------

P_GRID = np.array([-2.0, -0.5, 0.0, 0.3, 1.5])
G_GRID = np.array([-1.0, -0.01, 0.0, 0.2, 3.0])
M_GRID = np.array([0.0, 0.1, -0.2])
V_GRID = np.array([0.0, 0.01, 1.0])
STEPS, LR, WEIGHT_DECAY = (1, 7), 0.01, 0.1
RULES = list(kernels.RULE_CODES)


def _grid() -> np.ndarray:
    """Every (p, g, m, v) of the grids, (n, 4)."""
    return np.array(np.meshgrid(P_GRID, G_GRID, M_GRID, V_GRID, indexing="ij")).reshape(4, -1).T


@pytest.fixture(scope="module")
def stepped(tmp_path_factory) -> dict[tuple[str, str, int, bool], np.ndarray]:
    """(ctype, rule, t, is_weight) -> (n, 3): p, m, v after one step of the compiled rule, as optim.cu runs it."""
    folder = tmp_path_factory.mktemp("optim_rules")
    rows = ", ".join("{" + ", ".join(repr(float(x)) for x in row) + "}" for row in _grid())
    calls = []
    for ctype in ("float", "double"):
        for rule in RULES:
            code = f"GPUNET_RULE_{rule.upper()}"
            beta1, beta2, eps = OPTIMIZERS[rule]().device_hyperparameters()
            for t in STEPS:
                for weight in ("true", "false"):
                    calls.append(f"""    for (const auto& r : grid) {{
        {ctype} p = ({ctype})r[0], gk = ({ctype})r[1], m = ({ctype})r[2], v = ({ctype})r[3];
        const {ctype} rate = ({ctype}){LR!r}, decay = ({ctype}){WEIGHT_DECAY!r};
        const double m_hat = rule_bias_corrected<{code}>() ? 1.0 / (1.0 - std::pow({beta1!r}, double({t}))) : 1.0;
        const {ctype} v_hat = rule_bias_corrected<{code}>() ? {ctype}(1.0 / (1.0 - std::pow({beta2!r}, double({t})))) : {ctype}(1);
        if (rule_couples_decay<{code}>() && {weight}) gk += decay * p;
        rule_update<{ctype}, {code}>(p, gk, m, v, rate, decay, {weight}, {LR!r}, {WEIGHT_DECAY!r}, {beta1!r}, {beta2!r},
                                    {eps!r}, v_hat, {ctype}({LR!r} * m_hat));
        std::printf("{ctype} {rule} {t} {weight} %a %a %a\\n", (double)p, (double)m, (double)v);
    }}""")
    prelude = ('using std::sqrt; using std::pow;\n#include "optim_rules.cuh"\n'
               f"static const double grid[][4] = {{{rows}}};\n")
    values: dict[tuple[str, str, int, bool], list[list[float]]] = {}
    for line in _compile_and_run(folder, "rules", prelude, calls):
        ctype, rule, t, weight, *numbers = line.split()
        values.setdefault((ctype, rule, int(t), weight == "true"), []).append([float.fromhex(x) for x in numbers])
    return {k: np.array(v) for k, v in values.items()}


def _host_step(rule: str, t: int, is_weight: bool, dtype: type) -> np.ndarray:
    """The optimiser's host step from every grid point at once: p, m, v after it, (n, 3)."""
    grid = _grid().astype(dtype)
    p, g, m, v = (grid[:, i].copy() for i in range(4))
    shape = (len(p), 1) if is_weight else (len(p),)  # a weight matrix is decayed, a bias vector is not
    optimizer = OPTIMIZERS[rule](weight_decay=WEIGHT_DECAY)
    names = optimizer.state_names
    optimizer.t = t - 1
    optimizer.state = {f"{s}.W": a.reshape(shape).copy() for s, a in zip(names, (m, v))}
    params = {"W": p.reshape(shape)}
    optimizer.step(params, {"W": g.reshape(shape)}, LR)
    state = [optimizer.state[f"{s}.W"].reshape(-1) if f"{s}.W" in optimizer.state else old
             for s, old in zip((*names, "", "")[:2], (m, v))]
    return np.stack([params["W"].reshape(-1), *state], axis=1)


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("rule", RULES)
def test_each_optimiser_rule_steps_as_its_host_update(stepped, rule, ctype):
    for t in STEPS:
        for is_weight in (True, False):
            device = stepped[ctype, rule, t, is_weight]
            host = _host_step(rule, t, is_weight, np.float32 if ctype == "float" else np.float64)
            assert device.shape == host.shape == (len(_grid()), 3)
            np.testing.assert_allclose(device, host, rtol=TOLERANCE[ctype] * 4, atol=1e-7 if ctype == "float" else 1e-15,
                                       err_msg=f"{rule} step {t}, {'weight' if is_weight else 'bias'}, in {ctype}")


def test_the_optimiser_rules_header_is_what_the_declarations_generate():
    assert (kernels.SOURCE_DIR / "optim_rules.cuh").read_text() == kernels.optim_rules_header(), (
        "optim_rules.cuh is stale: run python scripts/generate_cuda.py")


# --- the losses' gradients (common.cuh) -------------------------------------------------------------------

Y_GRID = np.array([-2.0, -0.5, 0.0, 1e-9, 0.25, 0.5, 0.99, 1.0, 3.0])
T_GRID = np.array([0.0, 0.01, 0.5, 0.99, 1.0, 1e-9])


def test_the_loss_gradients_match_the_table(tmp_path):
    """loss_grad<T, LOSS> (fused, graph) and loss_grad_code (per-sample) against activations.py's LOSSES[...].grad,
    over every (y, t) of the grids, ties (y == t) included, in float and double."""
    pairs = np.array([(y, t) for y in Y_GRID for t in T_GRID])
    rows = ", ".join(f"{{{float(y)!r}, {float(t)!r}}}" for y, t in pairs)
    calls = [f'    for (const auto& r : grid) std::printf("{c} {loss} %a %a\\n", '
             f"(double)loss_grad<{c}, GPUNET_LOSS_{loss.upper()}>(({c})r[0], ({c})r[1]), "
             f"(double)loss_grad_code(GPUNET_LOSS_{loss.upper()}, ({c})r[0], ({c})r[1]));"
             for c in ("float", "double") for loss in LOSSES]
    out = _compile_and_run(tmp_path, "losses", f'#include "common.cuh"\nstatic const double grid[][2] = {{{rows}}};\n',
                           calls)
    assert len(out) == 2 * len(LOSSES) * len(pairs)
    for k, (ctype, loss) in enumerate((c, loss) for c in ("float", "double") for loss in LOSSES):
        got = np.array([[float.fromhex(x) for x in line.split()[2:]] for line in out[k * len(pairs):(k + 1) * len(pairs)]])
        dtype = np.float32 if ctype == "float" else np.float64
        y, t = pairs[:, :1].astype(dtype), pairs[:, 1:].astype(dtype)
        want = np.asarray(LOSSES[loss].grad(y, t), dtype=dtype).reshape(-1)
        np.testing.assert_array_equal(got[:, 0], want, err_msg=f"loss_grad {loss} {ctype}")
        np.testing.assert_array_equal(got[:, 1], want, err_msg=f"loss_grad_code {loss} {ctype}")
