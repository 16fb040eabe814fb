"""Benchmarks: the same network, data, dtype, initial parameters and steps on gpunet and its peers, side by side.

Contenders: gpunet on NumPy (and CuPy with a GPU); PyTorch eager on the CPU
(and on CUDA, eager and captured in a CUDA graph); scikit-learn's
MLPClassifier; and the original article's per-sample algorithm written plainly.
Each is timed over the same rows; the figure is the median of ``repeats``
timed runs after one warm-up, the contenders (and a matrix-product ceiling)
taking turns round by round. Library code: it returns results and never prints.
"""

from __future__ import annotations

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
from .training import train

LR = 0.1


@dataclass(frozen=True)
class Case:
    name: str
    sizes: tuple[int, int, int]
    batch: int
    rows: int  # rows per timed run
    dtype: str = "float32"
    contenders: tuple[str, ...] = ()  # empty: every contender but the textbook (which is per-sample only)

    def flops_per_sample(self) -> int:
        """Matrix-product flops of one training step per row: forward, weight gradients, one hidden delta."""
        n_in, h, n_out = self.sizes
        return 2 * (n_in * h + h * n_out) + 2 * (n_in * h + h * n_out) + 2 * h * n_out


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


def _gpunet(backend_name: str) -> Callable[[Case, np.ndarray, np.ndarray, dict], Callable[[], None]]:
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Callable[[], None]:
        net = Network(list(case.sizes), "sigmoid", "sigmoid", "squared", backend=backend_name, dtype=case.dtype)
        net.set_params(params)
        Xd, yd = net.backend.to_device(X, net.dtype), labels

        def run() -> None:
            train(net, Xd, yd, epochs=1, batch_size=case.batch, lr=LR, optimizer=SGD())  # syncs at the end
        return run
    return make


def _textbook(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Callable[[], None]:
    """The article's code: column vectors, one sample at a time, in the case's dtype."""
    dt = np.dtype(case.dtype)
    W, V = params["W1"].T.astype(dt).copy(), params["W2"].T.astype(dt).copy()  # (H, N), (10, H)
    A, B = params["b1"].astype(dt)[:, None].copy(), params["b2"].astype(dt)[:, None].copy()
    T = np.full((len(labels), case.sizes[2]), 0.01, dtype=dt)
    T[np.arange(len(labels)), labels] = 0.99
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
    return run


def _torch(device: str, graph: bool) -> Callable[[Case, np.ndarray, np.ndarray, dict], Callable[[], None]]:
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Callable[[], None]:
        import torch

        dt = getattr(torch, case.dtype)
        n_in, h, n_out = case.sizes
        model = torch.nn.Sequential(torch.nn.Linear(n_in, h), torch.nn.Sigmoid(),
                                    torch.nn.Linear(h, n_out), torch.nn.Sigmoid()).to(device, dt)
        with torch.no_grad():
            for layer, k in ((model[0], "1"), (model[2], "2")):
                layer.weight.copy_(torch.from_numpy(params[f"W{k}"].T.copy()))
                layer.bias.copy_(torch.from_numpy(params[f"b{k}"]))
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        T = np.full((len(labels), n_out), 0.01)
        T[np.arange(len(labels)), labels] = 0.99
        Xt, Tt = torch.tensor(X, dtype=dt, device=device), torch.tensor(T, dtype=dt, device=device)
        order = torch.from_numpy(np.random.default_rng(1).permutation(len(X))).to(device)

        def step(x: Any, t: Any) -> None:  # gpunet's loss: mean over rows of 1/2 sum (t - y)^2
            opt.zero_grad(set_to_none=False)
            loss = 0.5 * ((model(x) - t) ** 2).sum(dim=1).mean()
            loss.backward()
            opt.step()

        if not graph:
            def run() -> None:
                for lo in range(0, len(X), case.batch):
                    idx = order[lo : lo + case.batch]
                    step(Xt[idx], Tt[idx])
                if device == "cuda":
                    torch.cuda.synchronize()
            return run

        sx, st = Xt[: case.batch].clone(), Tt[: case.batch].clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up on a side stream before capture, as the PyTorch docs say
            for _ in range(3):
                step(sx, st)
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step(sx, st)

        def run() -> None:
            for lo in range(0, len(X) - case.batch + 1, case.batch):
                idx = order[lo : lo + case.batch]
                sx.copy_(Xt[idx])
                st.copy_(Tt[idx])
                g.replay()
            torch.cuda.synchronize()
        return run
    return make


def _sklearn(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Callable[[], None]:
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


CONTENDERS: dict[str, tuple[Callable[..., Callable[[], None]], Callable[[], str | None]]] = {
    # name -> (builder, why it cannot run here or None)
    "gpunet-numpy": (_gpunet("numpy"), lambda: None),
    "gpunet-cupy": (_gpunet("cupy"), lambda: cupy_unavailable_reason()),
    "torch-cpu": (_torch("cpu", False), lambda: _missing("torch")),
    "torch-cuda": (_torch("cuda", False), lambda: _missing("torch") or _no_torch_cuda()),
    "torch-cuda-graph": (_torch("cuda", True), lambda: _missing("torch") or _no_torch_cuda()),
    "sklearn": (_sklearn, lambda: _missing("sklearn")),
    "textbook": (_textbook, lambda: None),
}


def _missing(module: str) -> str | None:
    return None if importlib.util.find_spec(module) is not None else f"{module} is not installed"


def _no_torch_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "PyTorch sees no CUDA device"


SETTLE_S = 0.3  # seconds between timed runs: see _time_rounds


def _time_rounds(runs: dict[str, Callable[[], None]], repeats: int, settle: float = SETTLE_S) -> dict[str, list[float]]:
    """Seconds of every run, ``repeats`` times each, after one warm-up each.

    The runs take turns: each round times every run once, and the order rotates
    from round to round, so a slow spell on a shared machine falls on every
    contender alike. Each timed run starts after a pause of ``SETTLE_S`` so the
    previous library's idle threads, which spin for a while after a call before
    they sleep, have stopped taking a core from the next (without it, measured
    on 2 cores, PyTorch lost 20-25% to NumPy's OpenBLAS workers).
    """
    for run in runs.values():
        run()  # warm-up: first-call costs, caches, BLAS threads
    names, times = list(runs), {name: [] for name in runs}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            time.sleep(settle)
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return times


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
        entry: dict[str, Any] = {"case": case.name, "sizes": list(case.sizes), "batch": case.batch,
                                 "dtype": case.dtype, "rows": case.rows, "flops_per_sample": case.flops_per_sample(),
                                 "ceiling_gflops": {}, "contenders": {}}
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
        for device, (_, flops) in ceilings.items():
            entry["ceiling_gflops"][device] = flops / statistics.median(times[f"ceiling-{device}"]) / 1e9
        for name, r in entry["contenders"].items():
            if name not in times:
                continue
            seconds = statistics.median(times[name])
            rate = case.rows / seconds
            gflops = rate * case.flops_per_sample() / 1e9
            ceiling = entry["ceiling_gflops"]["gpu" if "cuda" in name or "cupy" in name else "cpu"]
            r.update(samples_per_s=rate, seconds_median=seconds, seconds=times[name],
                     gflops=gflops, share_of_ceiling=gflops / ceiling)
        base = entry["contenders"].get("gpunet-numpy", {}).get("samples_per_s")
        for name, r in entry["contenders"].items():
            if base and "samples_per_s" in r:
                r["gpunet_numpy_speedup"] = base / r["samples_per_s"]  # > 1: gpunet on NumPy is faster
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
