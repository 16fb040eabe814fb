"""Benchmarks: the same network, data, dtype, initial parameters and steps on gpunet and its peers, side by side.

Contenders: gpunet on NumPy (and CuPy with a GPU); PyTorch eager on the CPU
(and on CUDA, eager and captured in a CUDA graph); scikit-learn's
MLPClassifier; and the original article's per-sample algorithm written plainly.
Each is timed over the same rows; the figure is the median of ``repeats``
timed runs after one warm-up, the contenders (and a matrix-product ceiling)
taking turns round by round. Library code: it returns results and never prints.

:func:`run_gpu_benchmark` is the GPU side (issues 12 and 13): one MNIST epoch
per case on gpunet's CuPy paths, PyTorch (eager, CUDA graph, torch.compile) and
JAX (a jitted step, the whole epoch in ``lax.scan``), with gpunet on NumPy on
the same machine's CPU for reference. The issues' targets are not the library's:
scripts/benchmark.py holds them and judges these measurements against them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .backend import cupy_unavailable_reason, get_backend
from .initializers import init_params
from .network import Network
from .optim import SGD
from .machine import machine
from .training import epoch_order, train

LR = 0.1


@dataclass(frozen=True)
class Case:
    name: str
    sizes: tuple[int, int, int]
    batch: int
    rows: int  # rows per timed run
    dtype: str = "float32"
    contenders: tuple[str, ...] = ()  # empty: every contender but the textbook (which is per-sample only)
    slow: tuple[str, ...] = ()  # contenders timed over only ``slow_rows`` rows (GPU per-sample cases)
    slow_rows: int = 0

    def flops_per_sample(self) -> int:
        """Matrix-product flops of one training step per row: forward, weight gradients, one hidden delta."""
        n_in, h, n_out = self.sizes
        return 2 * (n_in * h + h * n_out) + 2 * (n_in * h + h * n_out) + 2 * h * n_out

    def rows_for(self, contender: str) -> int:
        return self.slow_rows if contender in self.slow else self.rows


def cases(quick: bool) -> list[Case]:
    scale = 8 if quick else 1
    return [
        Case("per-sample 784-100-10", (784, 100, 10), 1, 4000 // scale),
        Case("per-sample 784-100-10 float64", (784, 100, 10), 1, 4000 // scale, "float64",
             ("gpunet-numpy", "gpunet-cupy", "textbook")),
        Case("batch 64 784-100-10", (784, 100, 10), 64, 12800 // scale),
        Case("batch 128 784-100-10", (784, 100, 10), 128, 25600 // scale),
        Case("batch 1024 784-1024-10", (784, 1024, 10), 1024, 16384 // scale),
    ]


# --- contenders: each builds a function that trains once over the case's rows ----------------
#
# A run returns None (the caller's clock times it) or the seconds it measured itself
# (gpunet on CuPy: the second epoch's time from train()'s history, synchronised).
# Every run also carries ``run.params()``: the trained parameters as NumPy arrays in
# gpunet's layout, so the tests can hold each peer's training against gpunet's.
# All contenders visit the rows in the order gpunet.train uses for epoch 1 with seed 0.

Run = Callable[[], "float | None"]


def _targets(labels: np.ndarray, n_out: int, dtype: Any) -> np.ndarray:
    T = np.full((len(labels), n_out), 0.01, dtype=dtype)  # the sigmoid/squared targets gpunet uses
    T[np.arange(len(labels)), labels] = 0.99
    return T


def _gpunet(backend_name: str, kernels: str | None = None) -> Callable[[Case, np.ndarray, np.ndarray, dict], Run]:
    """gpunet.train for one epoch; on CuPy with ``kernels`` forced when given."""
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
        net = Network(list(case.sizes), "sigmoid", "sigmoid", "squared", backend=backend_name, dtype=case.dtype)
        net.set_params(params)
        Xd, yd = net.backend.to_device(X, net.dtype), labels
        options = {"kernels": kernels} if kernels else {}
        on_gpu = backend_name == "cupy"

        def run() -> float | None:
            # On the GPU, two epochs and the second's own synchronised time: the first may compile
            # or capture, and train()'s per-call data checks and upload fall outside the epoch.
            history = train(net, Xd, yd, epochs=2 if on_gpu else 1, batch_size=case.batch, lr=LR,
                            optimizer=SGD(), **options)
            return history[-1]["seconds"] if on_gpu else None
        run.params = net.get_params  # type: ignore[attr-defined]
        return run
    return make


def _textbook(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
    """The article's code: column vectors, one sample at a time, in the case's dtype."""
    dt = np.dtype(case.dtype)
    W, V = params["W1"].T.astype(dt).copy(), params["W2"].T.astype(dt).copy()  # (H, N), (10, H)
    A, B = params["b1"].astype(dt)[:, None].copy(), params["b2"].astype(dt)[:, None].copy()
    T = _targets(labels, case.sizes[2], dt)
    Xc, lr = X.astype(dt), dt.type(LR)

    def sigma(z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z))

    def run() -> None:
        nonlocal W, V, A, B
        for i in range(len(Xc)):
            x, t = Xc[i][:, None], T[i][:, None]
            Q = sigma(W @ x + A)
            Y = sigma(V @ Q + B)
            G = (t - Y) * Y * (1 - Y)
            E = Q * (1 - Q) * (V.T @ G)
            V += lr * G @ Q.T
            W += lr * E @ x.T
            B += lr * G
            A += lr * E
    run.params = lambda: {"W1": W.T.copy(), "b1": A[:, 0].copy(), "W2": V.T.copy(),  # type: ignore[attr-defined]
                          "b2": B[:, 0].copy()}
    return run


def _torch_setup(case: Case, X: np.ndarray, labels: np.ndarray, params: dict, device: str) -> tuple[Any, ...]:
    """(torch, model, opt, step, Xt, Tt, order, params getter): the network, data and row order on ``device``."""
    import torch

    dt = getattr(torch, case.dtype)
    n_in, h, n_out = case.sizes
    model = torch.nn.Sequential(torch.nn.Linear(n_in, h), torch.nn.Sigmoid(),
                                torch.nn.Linear(h, n_out), torch.nn.Sigmoid()).to(device, dt)
    _torch_load(torch, model, params)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    Xt = torch.tensor(X, dtype=dt, device=device)
    Tt = torch.tensor(_targets(labels, n_out, np.float64), dtype=dt, device=device)
    order = torch.from_numpy(epoch_order(0, 1, len(X))).to(device)  # gpunet.train's first epoch, seed 0

    def loss_of(x: Any, t: Any) -> Any:  # gpunet's loss: mean over rows of 1/2 sum (t - y)^2
        return 0.5 * ((model(x) - t) ** 2).sum(dim=1).mean()

    def step(x: Any, t: Any) -> None:
        opt.zero_grad(set_to_none=False)
        loss_of(x, t).backward()
        opt.step()

    def get() -> dict[str, np.ndarray]:
        return {f"{w}{k}": getattr(layer, attr).detach().cpu().numpy().T.copy() if w == "W"
                else getattr(layer, attr).detach().cpu().numpy().copy()
                for layer, k in ((model[0], "1"), (model[2], "2")) for w, attr in (("W", "weight"), ("b", "bias"))}
    return torch, model, opt, step, loss_of, Xt, Tt, order, get


def _torch_load(torch: Any, model: Any, params: dict) -> None:
    """Copy gpunet-layout parameters into the two Linear layers, in place (a captured graph keeps their memory)."""
    with torch.no_grad():
        for layer, k in ((model[0], "1"), (model[2], "2")):
            layer.weight.copy_(torch.from_numpy(params[f"W{k}"].T.copy()))
            layer.bias.copy_(torch.from_numpy(params[f"b{k}"]))


def _torch(device: str, graph: bool) -> Callable[[Case, np.ndarray, np.ndarray, dict], Run]:
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
        torch, model, _, step, _, Xt, Tt, order, get = _torch_setup(case, X, labels, params, device)
        full = len(X) // case.batch * case.batch  # rows in full batches; the rest is one shorter step

        def sync() -> None:
            if device == "cuda":
                torch.cuda.synchronize()  # CPU-GPU sync point: the clock stops after the work

        if not graph:
            def run() -> None:
                for lo in range(0, len(X), case.batch):
                    idx = order[lo : lo + case.batch]
                    step(Xt[idx], Tt[idx])
                sync()
            run.params = get  # type: ignore[attr-defined]
            return run

        sx, st = Xt[: case.batch].clone(), Tt[: case.batch].clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up on a side stream before capture, as the PyTorch docs say
            for _ in range(3):
                step(sx, st)
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):  # recorded, not run
            step(sx, st)
        _torch_load(torch, model, params)  # the warm-up trained: start again from the case's parameters

        def run() -> None:
            for lo in range(0, full, case.batch):
                idx = order[lo : lo + case.batch]
                sx.copy_(Xt[idx])
                st.copy_(Tt[idx])
                g.replay()
            if full < len(X):  # the partial last batch, eagerly
                idx = order[full:]
                step(Xt[idx], Tt[idx])
            sync()
        run.params = get  # type: ignore[attr-defined]
        return run
    return make


def _torch_compile(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
    """The loss's forward and backward through torch.compile(mode="reduce-overhead") (CUDA graphs
    inside); the SGD update eager. The partial last batch runs eagerly (another shape would recompile)."""
    torch, model, opt, step, loss_of, Xt, Tt, order, get = _torch_setup(case, X, labels, params, "cuda")
    compiled = torch.compile(loss_of, mode="reduce-overhead")
    full = len(X) // case.batch * case.batch
    for p in model.parameters():  # else the first backward makes each .grad the graph's own output, which the
        p.grad = torch.zeros_like(p)  # next replay overwrites, and PyTorch raises on reading it

    def run() -> None:
        for lo in range(0, full, case.batch):
            idx = order[lo : lo + case.batch]
            torch.compiler.cudagraph_mark_step_begin()
            opt.zero_grad(set_to_none=False)
            compiled(Xt[idx], Tt[idx]).backward()
            opt.step()
        if full < len(X):
            idx = order[full:]
            step(Xt[idx], Tt[idx])
        torch.cuda.synchronize()  # CPU-GPU sync point
    run.params = get  # type: ignore[attr-defined]
    return run


def _jax(scan: bool, platform: str = "gpu") -> Callable[[Case, np.ndarray, np.ndarray, dict], Run]:
    """A jitted SGD step called once per batch, or (``scan``) the whole epoch in one ``lax.scan``."""
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
        if case.dtype != "float32":
            raise ValueError(f"the JAX contenders run float32 only; got {case.dtype}")
        jax, jnp = _import_jax()
        device = jax.devices(platform)[0]

        def put(a: np.ndarray, dtype: Any = np.float32) -> Any:
            return jax.device_put(np.asarray(a, dtype=dtype), device)

        state = {"p": {k: put(v) for k, v in params.items()}}
        Xd, Td = put(X), put(_targets(labels, case.sizes[2], np.float32))
        order = epoch_order(0, 1, len(X)).astype(np.int32)  # gpunet.train's first epoch, seed 0
        full = len(X) // case.batch * case.batch
        batches = put(order[:full].reshape(-1, case.batch), np.int32)
        tail = put(order[full:], np.int32) if full < len(X) else None

        def loss(p: dict, x: Any, t: Any) -> Any:  # gpunet's loss: mean over rows of 1/2 sum (t - y)^2
            A1 = jax.nn.sigmoid(x @ p["W1"] + p["b1"])
            Y = jax.nn.sigmoid(A1 @ p["W2"] + p["b2"])
            return 0.5 * jnp.sum((Y - t) ** 2) / x.shape[0]

        def step(p: dict, X: Any, T: Any, idx: Any) -> dict:  # the data are arguments, not baked-in constants
            g = jax.grad(loss)(p, jnp.take(X, idx, axis=0), jnp.take(T, idx, axis=0))
            return jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)

        step_jit = jax.jit(step)
        epoch = jax.jit(lambda p, X, T, batches: jax.lax.scan(lambda q, idx: (step(q, X, T, idx), None), p, batches)[0])
        each = [batches[i] for i in range(batches.shape[0])] if not scan else []  # sliced before the clock starts

        def run() -> None:
            p = state["p"]
            if scan:
                p = epoch(p, Xd, Td, batches)
            else:
                for idx in each:
                    p = step_jit(p, Xd, Td, idx)
            if tail is not None:
                p = step_jit(p, Xd, Td, tail)
            state["p"] = jax.block_until_ready(p)  # CPU-GPU sync point
        run.params = lambda: {k: np.asarray(v) for k, v in state["p"].items()}  # type: ignore[attr-defined]
        return run
    return make


def _import_jax() -> tuple[Any, Any]:
    # JAX takes 75% of the GPU's memory at start-up unless told not to; CuPy and PyTorch share the device.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", "highest")  # full float32 products, no TF32
    return jax, jnp


def _sklearn(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
    """MLPClassifier with SGD and logistic units; its loss is cross-entropy on a softmax output, not gpunet's."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    Xc = X.astype(case.dtype)

    def run() -> None:
        clf = MLPClassifier(hidden_layer_sizes=(case.sizes[1],), activation="logistic", solver="sgd",
                            batch_size=case.batch, learning_rate_init=LR, momentum=0.0, alpha=0.0,
                            max_iter=1, shuffle=True, random_state=0, tol=0.0, n_iter_no_change=10**9)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Xc, labels)
    return run


CONTENDERS: dict[str, tuple[Callable[..., Run], Callable[[], str | None]]] = {
    # name -> (builder, why it cannot run here or None)
    "gpunet-numpy": (_gpunet("numpy"), lambda: None),
    "gpunet-cupy": (_gpunet("cupy", "plain"), lambda: cupy_unavailable_reason()),
    "torch-cpu": (_torch("cpu", False), lambda: _missing("torch")),
    "torch-cuda": (_torch("cuda", False), lambda: _missing("torch") or _no_torch_cuda()),
    "torch-cuda-graph": (_torch("cuda", True), lambda: _missing("torch") or _no_torch_cuda()),
    "sklearn": (_sklearn, lambda: _missing("sklearn")),
    "textbook": (_textbook, lambda: None),
}
# The GPU benchmark's own contenders (run_gpu_benchmark); gpunet-numpy and the three above with cuda/cupy too.
GPU_CONTENDERS: dict[str, tuple[Callable[..., Run], Callable[[], str | None]]] = {
    "gpunet-cupy-fused": (_gpunet("cupy", "fused"), lambda: cupy_unavailable_reason()),
    "gpunet-cupy-graph": (_gpunet("cupy", "graph"), lambda: cupy_unavailable_reason()),
    "gpunet-cupy-kernel": (_gpunet("cupy", "fused"), lambda: cupy_unavailable_reason()),
    "torch-compile": (_torch_compile, lambda: _missing("torch") or _no_torch_cuda()),
    "jax-jit": (_jax(False), lambda: _missing("jax") or _no_jax_gpu()),
    "jax-scan": (_jax(True), lambda: _missing("jax") or _no_jax_gpu()),
}


def _no_jax_gpu() -> str | None:
    try:
        jax, _ = _import_jax()
        jax.devices("gpu")
    except Exception as exc:  # RuntimeError: no GPU platform; ImportError: a broken install
        return f"JAX sees no GPU: {' '.join(str(exc).split())[:200]}"
    return None


def _missing(module: str) -> str | None:
    return None if importlib.util.find_spec(module) is not None else f"{module} is not installed"


def _no_torch_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "PyTorch sees no CUDA device"


SETTLE_S = 0.3  # seconds between timed runs: see _time_rounds


def per_call_us(backend: Any, call: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(device-bound, host) microseconds per call: ``repeats`` calls between two synchronisations,
    the median of 3 rounds; the host figure stops its clock before the closing synchronisation."""
    call()  # the first call compiles and allocates
    backend.synchronize()
    rounds, hosts = [], []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        hosts.append(time.perf_counter() - start)
        backend.synchronize()
        rounds.append(time.perf_counter() - start)
    return statistics.median(rounds) * 1e6 / repeats, statistics.median(hosts) * 1e6 / repeats


def _time_rounds(runs: dict[str, Run], repeats: int, settle: float = SETTLE_S,
                 failed: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Seconds of every run, ``repeats`` times each, after one warm-up each.

    The runs take turns: each round times every run once, and the order rotates
    from round to round, so a slow spell on a shared machine falls on every
    contender alike. Each timed run starts after a pause of ``settle`` so the
    previous library's idle threads, which spin for a while after a call before
    they sleep, have stopped taking a core from the next (on a machine of few
    cores, NumPy's OpenBLAS workers would slow PyTorch down). A run that
    returns a number has timed itself. With ``failed``, a run that raises is
    dropped and its reason recorded there instead of stopping every other.
    """
    runs = dict(runs)
    for name, run in list(runs.items()):
        try:
            run()  # warm-up: first-call costs, compilation, caches, BLAS threads
        except Exception as exc:
            if failed is None:
                raise
            failed[name] = _reason(exc)
            del runs[name]
    names, times = list(runs), {name: [] for name in runs}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if name not in runs:
                continue
            time.sleep(settle)
            start = time.perf_counter()
            try:
                measured = runs[name]()
            except Exception as exc:
                if failed is None:
                    raise
                failed[name] = _reason(exc)
                del runs[name], times[name]
                continue
            times[name].append(time.perf_counter() - start if measured is None else measured)
    return times


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _ceiling(device: str, n: int) -> tuple[Callable[[], None], int]:
    """An n x n x n float32 matrix product on the CPU (NumPy) or the GPU (CuPy), and its flops."""
    backend = get_backend("cupy" if device == "gpu" else "numpy")
    xp, rng = backend.xp, np.random.default_rng(0)
    a = backend.to_device(rng.standard_normal((n, n)), np.float32)
    b = backend.to_device(rng.standard_normal((n, n)), np.float32)
    out = xp.empty((n, n), dtype=np.float32)

    def run() -> None:
        xp.matmul(a, b, out=out)
        backend.synchronize()
    return run, 2 * n**3


def _case_entry(case: Case) -> dict[str, Any]:
    """A case's record, its ceilings and contenders still to fill."""
    return {"case": case.name, "sizes": list(case.sizes), "batch": case.batch, "dtype": case.dtype,
            "rows": case.rows, "flops_per_sample": case.flops_per_sample(), "ceiling_gflops": {}, "contenders": {}}


def _ceiling_gflops(ceilings: dict[str, tuple[Callable[[], None], int]],
                    times: dict[str, list[float]]) -> dict[str, float]:
    """Each device's matrix-product GFLOP/s in this case's rounds (the median)."""
    return {device: flops / statistics.median(times[f"ceiling-{device}"]) / 1e9
            for device, (_, flops) in ceilings.items()}


def _figures(times: list[float], rows: int, flops_per_sample: int, ceiling: float | None) -> dict[str, Any]:
    """A contender's figures from its rounds' times: the median, samples/s, GFLOP/s and the share of ``ceiling``."""
    seconds = statistics.median(times)
    rate = rows / seconds
    gflops = rate * flops_per_sample / 1e9
    return {"samples_per_s": rate, "seconds_median": seconds, "seconds": times, "gflops": gflops,
            "share_of_ceiling": gflops / ceiling if ceiling else None}


def _add_speedups(entry: dict[str, Any]) -> None:
    """Give each measured contender of a case its ``gpunet_numpy_speedup``: > 1 where gpunet on NumPy is faster."""
    base = entry["contenders"].get("gpunet-numpy", {}).get("samples_per_s")
    for r in entry["contenders"].values():
        if base and "samples_per_s" in r:
            r["gpunet_numpy_speedup"] = base / r["samples_per_s"]


def run_benchmark(quick: bool = False, repeats: int = 5, only: list[str] | None = None,
                  on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every case on every contender; returns the JSON-ready results (see scripts/benchmark.py).

    Within a case the contenders and the matrix-product ceiling of each device
    take turns (see ``_time_rounds``); the ceiling a share is reported against is
    the one measured alongside that case. ``ceilings_gflops`` is the median over
    the cases."""
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"machine": _machine(), "quick": quick, "repeats": repeats, "lr": LR,
                               "ceilings_gflops": {}, "cases": []}
    devices = ("cpu", "gpu") if cupy_unavailable_reason() is None else ("cpu",)
    ceilings = {device: _ceiling(device, 1024 if quick else 2048) for device in devices}
    for case in cases(quick):
        X = rng.random((case.rows, case.sizes[0]))
        labels = rng.integers(0, case.sizes[2], case.rows)
        params = init_params(list(case.sizes), "article", 0)
        entry = _case_entry(case)
        names = case.contenders or tuple(n for n in CONTENDERS if n != "textbook")
        if case.batch == 1 and not case.contenders:
            names = (*names, "textbook")
        runs = {f"ceiling-{device}": run for device, (run, _) in ceilings.items()}
        for name in names:
            if only and name not in only:
                continue
            make, unavailable = CONTENDERS[name]
            why = unavailable()
            if why is not None:
                entry["contenders"][name] = {"skipped": why}
            else:
                entry["contenders"][name] = {}
                runs[name] = make(case, X, labels, params)
        times = _time_rounds(runs, repeats, 0.02 if quick else SETTLE_S)  # --quick: a smoke test, not a contest
        entry["ceiling_gflops"] = _ceiling_gflops(ceilings, times)
        for name, r in entry["contenders"].items():
            if name in times:
                ceiling = entry["ceiling_gflops"]["gpu" if "cuda" in name or "cupy" in name else "cpu"]
                r.update(_figures(times[name], case.rows, case.flops_per_sample(), ceiling))
        _add_speedups(entry)
        results["cases"].append(entry)
        if on_result is not None:
            on_result(entry)
    for device in devices:
        results["ceilings_gflops"][device] = statistics.median(c["ceiling_gflops"][device] for c in results["cases"])
    results["memory"] = measure_memory(quick)
    return results


MEMORY_PROBE = """
import json, sys, tracemalloc
import numpy as np
from gpunet import Network, SGD, train
from gpunet.datasets import load_digits, load_mnist


def rss(field):  # kB -> bytes; VmHWM is this process's peak, not inherited through exec as ru_maxrss is
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


mnist = sys.argv[1] if len(sys.argv) > 1 else None
before = rss("VmRSS")
tracemalloc.start()
d = load_mnist(mnist, dtype=np.float32) if mnist else load_digits(dtype=np.float32)
net = Network([d.X_train.shape[1], 100, 10], backend="numpy", dtype="float32")
train(net, d.X_train, d.y_train, epochs=1, batch_size=64, lr=0.1, optimizer=SGD(), X_test=d.X_test, y_test=d.y_test)
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"dataset": "mnist" if mnist else "digits", "rows": len(d.y_train) + len(d.y_test),
                  "data_float32_bytes": 4 * (d.X_train.size + d.X_test.size),
                  "params_bytes": sum(p.nbytes for p in net.params.values()),
                  "peak_traced_bytes": peak, "peak_rss_growth_bytes": rss("VmHWM") - before}))
"""


def measure_memory(quick: bool) -> dict[str, Any]:
    """Peak memory of loading MNIST and training one epoch, in a fresh process (Linux: /proc/self/status).

    The 8x8 digits stand in with ``quick`` or without the files. The budget is the
    images in float32 plus the parameters; the figures are the growth of the peak
    resident size over the size after imports, and tracemalloc's peak (NumPy's
    arrays included)."""
    from .download import cache_dir

    mnist = os.environ.get("GPUNET_MNIST_DIR") or str(cache_dir() / "mnist")
    args = [] if quick or not os.path.exists(os.path.join(mnist, "train-images-idx3-ubyte.gz")) else [mnist]
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *args], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    m = json.loads(out.stdout)
    budget = m["data_float32_bytes"] + m["params_bytes"]
    m["ratio_traced"] = m["peak_traced_bytes"] / budget
    m["ratio_rss"] = m["peak_rss_growth_bytes"] / budget
    return m


def _machine() -> dict[str, Any]:
    info = machine()
    for module in ("torch", "sklearn"):  # the peers' versions
        if importlib.util.find_spec(module) is not None:
            info[module] = __import__(module).__version__
    return info


def format_results(results: dict[str, Any]) -> str:
    """The results as text: one table per case, then the ceilings and the memory figures."""
    lines = ["matrix-product ceiling (float32, median over the cases): " + ", ".join(
        f"{d} {g:,.0f} GFLOP/s" for d, g in results["ceilings_gflops"].items())]
    for entry in results["cases"]:
        ceilings = ", ".join(f"{d} {g:,.0f}" for d, g in entry["ceiling_gflops"].items())
        lines += ["", f"{entry['case']} ({entry['dtype']}, {entry['rows']} rows per run, median of "
                  f"{results['repeats']} rounds; ceiling {ceilings} GFLOP/s)",
                  f"  {'contender':<18} {'samples/s':>12} {'GFLOP/s':>9} {'of ceiling':>10} {'gpunet-numpy is':>16}"]
        for name, r in entry["contenders"].items():
            if "skipped" in r:
                lines.append(f"  {name:<18} skipped: {r['skipped']}")
                continue
            ratio = r.get("gpunet_numpy_speedup")
            ratio_text = f"{ratio:.2f}x" if ratio is not None and name != "gpunet-numpy" else "-"
            lines.append(f"  {name:<18} {r['samples_per_s']:>12,.0f} {r['gflops']:>9.1f} "
                         f"{r['share_of_ceiling']:>10.1%} {ratio_text:>16}")
    m = results.get("memory", {})
    if "error" in m:
        lines += ["", f"memory: not measured ({m['error']})"]
    elif m:
        lines += ["", f"memory, one epoch on {m['dataset']} ({m['rows']} images): peak RSS growth "
                  f"{m['peak_rss_growth_bytes'] / 2**20:,.0f} MiB, "
                  f"traced peak {m['peak_traced_bytes'] / 2**20:,.0f} MiB; "
                  f"data in float32 + parameters {(m['data_float32_bytes'] + m['params_bytes']) / 2**20:,.0f} MiB "
                  f"(ratios {m['ratio_rss']:.2f} and {m['ratio_traced']:.2f})"]
    return "\n".join(lines)


# --- the GPU benchmark (issues 12 and 13) ---------------------------------------------------

EPOCH_ROWS = 60_000  # one MNIST epoch
# Per-sample rows for the contenders that take seconds a run at one row a step (the plain CuPy path, PyTorch,
# NumPy); their epoch time is scaled from these. Few enough that the per-sample cases leave gpu_check's
# benchmark stage time for the batch cases (its figures: the README's Benchmarks section).
SLOW_ROWS = 1000
GPU_SETTLE_S = 0.05  # short: on a GPU machine's many cores, idle BLAS threads do not take the contenders' core
BATCH_CONTENDERS = ("gpunet-cupy", "gpunet-cupy-fused", "gpunet-cupy-graph", "torch-cuda", "torch-cuda-graph",
                    "torch-compile", "jax-jit", "jax-scan", "gpunet-numpy")
PER_SAMPLE_CONTENDERS = ("gpunet-cupy-graph", "gpunet-cupy-kernel", "gpunet-cupy", "torch-cuda", "gpunet-numpy")
QUICK_SKIPS = {"torch-compile": "not run with --quick: compiling takes tens of seconds"}


def gpu_cases(fraction: float = 1.0) -> list[Case]:
    """The GPU cases: ``fraction`` of an MNIST epoch each (the per-sample slow contenders fewer rows)."""
    rows = max(1, round(EPOCH_ROWS * fraction))
    slow = ("gpunet-cupy", "torch-cuda", "gpunet-numpy")
    slow_rows = min(rows, SLOW_ROWS if fraction >= 1 else max(1, round(SLOW_ROWS * fraction * 2)))
    per_sample = [Case(f"per-sample 784-{h}-10{'' if dt == 'float32' else ' float64'}", (784, h, 10), 1, rows, dt,
                       PER_SAMPLE_CONTENDERS, slow, slow_rows)
                  for h in (100, 200) for dt in ("float32", "float64")]
    # The batch cases' slowest contenders (around a second an epoch) train a quarter.
    quarter = max(1, rows // 4)
    # torch.compile at batch 64 only: each case compiles anew, for tens of seconds, in a stage of minutes.
    batch = [Case(f"batch {b} 784-{h}-10", (784, h, 10), b, rows, "float32",
                  BATCH_CONTENDERS if b == 64 else tuple(c for c in BATCH_CONTENDERS if c != "torch-compile"),
                  slow, quarter)
             for b, h in ((64, 100), (128, 100), (1024, 1024))]
    return per_sample + batch  # the per-sample cases first: a stage cut short by its time limit keeps them


def gpu_contender(name: str) -> tuple[Callable[..., Run], Callable[[], str | None]]:
    """(builder, why it cannot run) for a GPU benchmark contender."""
    return GPU_CONTENDERS[name] if name in GPU_CONTENDERS else CONTENDERS[name]


ALL_GPU_CONTENDERS = tuple(dict.fromkeys(BATCH_CONTENDERS + PER_SAMPLE_CONTENDERS))


def gpu_data(rows: int, mnist_dir: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``rows`` MNIST training images and labels (random pixels without the folder), and which."""
    if mnist_dir:
        from .datasets import load_mnist

        d = load_mnist(mnist_dir, dtype=np.float32)
        return d.X_train[:rows], d.y_train[:rows].astype(np.int64), "mnist"
    rng = np.random.default_rng(0)
    return rng.uniform(0.01, 1.0, (rows, 784)).astype(np.float32), rng.integers(0, 10, rows), "random"


def run_gpu_benchmark(fraction: float = 1.0, repeats: int = 5, only: list[str] | None = None,
                      mnist_dir: str | None = None, quick: bool = False,
                      on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The GPU cases on every GPU contender and gpunet-numpy; JSON-ready, in benchmark-cpu.json's shape.

    Each contender trains ``rows`` rows (``fraction`` of an epoch; the per-sample
    slow ones fewer) per timed run; ``epoch_seconds`` is the median scaled to
    60,000 rows. GPU contenders synchronise before their clock stops. A contender
    that cannot run, or raises, is recorded as skipped with the reason.
    ``on_result`` gets the results so far after every case (for writing them as
    they come: a stage that runs out of time keeps the finished cases).
    """
    gpu = cupy_unavailable_reason() is None
    results: dict[str, Any] = {"machine": gpu_machine(), "quick": quick, "fraction": fraction, "repeats": repeats,
                               "lr": LR, "epoch_rows": EPOCH_ROWS, "tf32": False, "ceilings_gflops": {},
                               "cases": []}
    devices = ("cpu", "gpu") if gpu else ("cpu",)
    ceilings = {device: _ceiling(device, 1024 if quick else 2048) for device in devices}
    all_cases = gpu_cases(fraction)
    X_all, labels_all, results["data"] = gpu_data(max(c.rows for c in all_cases), mnist_dir)
    for case in all_cases:
        params = init_params(list(case.sizes), "article", 0)
        entry = _case_entry(case)
        runs: dict[str, Run] = {f"ceiling-{device}": run for device, (run, _) in ceilings.items()}
        for name in case.contenders:
            if only and name not in only:
                continue
            make, unavailable = gpu_contender(name)
            why = QUICK_SKIPS.get(name) if quick else None
            try:
                why = why or unavailable()
                if why is None:
                    rows = case.rows_for(name)
                    runs[name] = make(case, X_all[:rows], labels_all[:rows], params)
            except Exception as exc:  # a peer that fails to build never stops the others
                why = _reason(exc)
            entry["contenders"][name] = {"skipped": why} if why else {"rows": case.rows_for(name)}
        failed: dict[str, str] = {}
        times = _time_rounds(runs, repeats, GPU_SETTLE_S, failed)
        entry["ceiling_gflops"] = _ceiling_gflops(ceilings, times)
        for name, r in entry["contenders"].items():
            if name in failed:
                entry["contenders"][name] = {"skipped": failed[name]}
            elif name in times:
                ceiling = entry["ceiling_gflops"].get("cpu" if name == "gpunet-numpy" else "gpu")
                r.update(_figures(times[name], r["rows"], case.flops_per_sample(), ceiling))
                r["epoch_seconds"] = EPOCH_ROWS / r["samples_per_s"]
        _add_speedups(entry)
        results["cases"].append(entry)
        for device in devices:
            results["ceilings_gflops"][device] = statistics.median(
                c["ceiling_gflops"][device] for c in results["cases"])
        if on_result is not None:
            on_result(results)
    return results


def gpu_machine() -> dict[str, Any]:
    """The machine (as for the CPU benchmark), the GPU's name and memory, driver, CUDA and library versions."""
    info = _machine()
    reason = cupy_unavailable_reason()
    if reason is not None:
        info["gpu"] = f"none: {reason}"
    else:
        backend = get_backend("cupy")
        runtime = backend.xp.cuda.runtime
        props = runtime.getDeviceProperties(backend.xp.cuda.Device().id)
        info.update(gpu=backend.device, gpu_memory_gib=round(props["totalGlobalMem"] / 2**30, 1),
                    compute_capability=f"{props['major']}.{props['minor']}",
                    cuda_driver=runtime.driverGetVersion(), cuda_runtime=runtime.runtimeGetVersion(),
                    cupy=backend.xp.__version__)
    if importlib.util.find_spec("jax") is not None:
        info["jax"] = importlib.metadata.version("jax")
    if "torch" in info:
        info["torch_cuda"] = __import__("torch").version.cuda
    return info


def format_gpu_results(results: dict[str, Any]) -> str:
    """The GPU results as text: one table per case (epoch seconds scaled to 60,000 rows)."""
    lines = [f"machine: {results['machine'].get('gpu')}; data: {results['data']}; "
             f"{results['fraction']:g} of an epoch per run, median of {results['repeats']}"]
    for entry in results["cases"]:
        lines += ["", f"{entry['case']} ({entry['dtype']})",
                  f"  {'contender':<24} {'rows':>6} {'epoch s':>9} {'samples/s':>12} {'GFLOP/s':>9} "
                  f"{'gpunet-numpy is':>16}"]
        for name, r in entry["contenders"].items():
            if "skipped" in r:
                lines.append(f"  {name:<24} skipped: {r['skipped']}")
                continue
            ratio = r.get("gpunet_numpy_speedup")
            ratio_text = f"{ratio:.3f}x" if ratio is not None and name != "gpunet-numpy" else "-"
            lines.append(f"  {name:<24} {r['rows']:>6} {r['epoch_seconds']:>9.3f} {r['samples_per_s']:>12,.0f} "
                         f"{r['gflops']:>9.1f} {ratio_text:>16}")
    return "\n".join(lines)
