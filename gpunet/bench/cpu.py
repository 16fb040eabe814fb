"""The CPU benchmark (gpunet bench): every case on every contender, a matrix-product ceiling, and peak memory."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import cupy_unavailable_reason
from ..initializers import init_params
from ..machine import machine
from .cases import LR, cases
from .contenders import CONTENDERS
from .harness import (
    SETTLE_S,
    Run,
    add_speedups,
    case_entry,
    ceiling_gflops,
    figures,
    matmul_ceiling,
    time_rounds,
)
from .peers import versions


def run_benchmark(quick: bool = False, repeats: int = 10, only: list[str] | None = None,
                  on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every case on every contender; returns the JSON-ready results (see scripts/benchmark.py).

    Within a case the contenders and the matrix-product ceiling of each device
    take turns (see ``time_rounds``); the ceiling a share is reported against is
    the one measured alongside that case. ``ceilings_gflops`` is the median over
    the cases."""
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"machine": {**machine(), **versions()}, "quick": quick, "repeats": repeats, "lr": LR,
                               "ceilings_gflops": {}, "cases": []}
    devices = ("cpu", "gpu") if cupy_unavailable_reason() is None else ("cpu",)
    ceilings = {device: matmul_ceiling(device, 1024 if quick else 2048) for device in devices}
    for case in cases(quick):
        X = rng.random((case.rows, case.sizes[0]))
        labels = rng.integers(0, case.sizes[2], case.rows)
        params = init_params(list(case.sizes), "article", 0)
        entry = case_entry(case)
        names = case.contenders or tuple(n for n in CONTENDERS if n != "textbook")
        if case.batch == 1 and not case.contenders:
            names = (*names, "textbook")
        runs: dict[str, Run] = {f"ceiling-{device}": run for device, (run, _) in ceilings.items()}
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
        times = time_rounds(runs, repeats, 0.02 if quick else SETTLE_S)  # --quick: a smoke test, not a contest
        entry["ceiling_gflops"] = ceiling_gflops(ceilings, times)
        for name, r in entry["contenders"].items():
            if name in times:
                ceiling = entry["ceiling_gflops"]["gpu" if "cuda" in name or "cupy" in name else "cpu"]
                r.update(figures(times[name], case.rows, case.flops_per_sample(), ceiling))
        add_speedups(entry)
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
net = Network.article([d.X_train.shape[1], 100, 10], backend="numpy", dtype="float32")
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
    from ..download import cache_dir

    mnist = os.environ.get("GPUNET_MNIST_DIR") or str(cache_dir() / "mnist")
    args = [] if quick or not os.path.exists(os.path.join(mnist, "train-images-idx3-ubyte.gz")) else [mnist]
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *args], capture_output=True, text=True, timeout=600,
                         check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    m = json.loads(out.stdout)
    budget = m["data_float32_bytes"] + m["params_bytes"]
    m["ratio_traced"] = m["peak_traced_bytes"] / budget
    m["ratio_rss"] = m["peak_rss_growth_bytes"] / budget
    return m


def format_results(results: dict[str, Any]) -> str:
    """The results as text: one table per case, then the ceilings and the memory figures.

    Each ratio to gpunet on NumPy is shown with its spread over the rounds (the lowest and highest round),
    and marked where the spread holds 1: the rounds disagree on which is faster."""
    lines = ["matrix-product ceiling (float32, median over the cases): " + ", ".join(
        f"{d} {g:,.0f} GFLOP/s" for d, g in results["ceilings_gflops"].items())]
    for entry in results["cases"]:
        ceilings = ", ".join(f"{d} {g:,.0f}" for d, g in entry["ceiling_gflops"].items())
        lines += ["", (f"{entry['case']} ({entry['dtype']}, {entry['rows']} rows per run, median of "
                       f"{results['repeats']} rounds; ceiling {ceilings} GFLOP/s)"),
                  (f"  {'contender':<18} {'samples/s':>12} {'GFLOP/s':>9} {'of ceiling':>10}  "
                   "gpunet-numpy is (lowest-highest round)")]
        unranked = []
        for name, r in entry["contenders"].items():
            if "skipped" in r:
                lines.append(f"  {name:<18} skipped: {r['skipped']}")
                continue
            ratio_text = "-"
            if "gpunet_numpy_speedup_range" in r:
                low, high = r["gpunet_numpy_speedup_range"]
                ratio_text = f"{r['gpunet_numpy_speedup']:.2f}x ({low:.2f}-{high:.2f})"
                if not r["ranked"]:
                    ratio_text += " unranked"
                    unranked.append(name)
            lines.append(f"  {name:<18} {r['samples_per_s']:>12,.0f} {r['gflops']:>9.1f} "
                         f"{r['share_of_ceiling']:>10.1%}  {ratio_text}")
        if unranked:
            lines.append(f"  unranked: some rounds found gpunet-numpy faster than {', '.join(unranked)} and "
                         "others slower; the spread is too wide to rank them (try more --repeats)")
    m = results.get("memory", {})
    if "error" in m:
        lines += ["", f"memory: not measured ({m['error']})"]
    elif m:
        budget = m["data_float32_bytes"] + m["params_bytes"]
        lines += ["", (f"memory, one epoch on {m['dataset']} ({m['rows']} images): the images in float32 and the "
                       f"parameters take {mib(budget)}; the peak resident size grew by "
                       f"{mib(m['peak_rss_growth_bytes'])} ({m['ratio_rss']:.1f}x that), Python's traced peak was "
                       f"{mib(m['peak_traced_bytes'])} ({m['ratio_traced']:.1f}x that)")]
    return "\n".join(lines)


def mib(n: float) -> str:
    """Bytes as MiB, with the digits that matter for small sizes too: 1,234 MiB, 12.3 MiB, 0.47 MiB."""
    value = n / 2**20
    return f"{value:,.0f} MiB" if value >= 100 else f"{value:.1f} MiB" if value >= 10 else f"{value:.2f} MiB"
