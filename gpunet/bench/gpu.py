"""The GPU benchmark (issues 12, 13 and 46): one MNIST epoch per case on gpunet's CuPy paths and the GPU peers."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import cupy_unavailable_reason, get_backend
from ..initializers import init_params
from ..machine import machine
from .cases import EPOCH_ROWS, LR, Case, gpu_cases, gpu_data
from .contenders import gpu_contender
from .harness import (
    LEVEL,
    Clock,
    Contender,
    Run,
    add_speedups,
    case_entry,
    ceiling_gflops,
    clock_for,
    failure_reason,
    figures,
    matmul_ceiling,
    time_rounds,
)
from .peers import versions

GPU_SETTLE_S = 0.05  # short: on a GPU machine's many cores, idle BLAS threads do not take the contenders' core
QUICK_SKIPS = {"torch-compile": "not run with --quick: compiling takes tens of seconds"}


def run_gpu_benchmark(fraction: float = 1.0, repeats: int = 10, only: list[str] | None = None,
                      mnist_dir: str | None = None, quick: bool = False,
                      on_result: Callable[[dict[str, Any]], None] | None = None,
                      case_names: list[str] | None = None) -> dict[str, Any]:
    """The GPU cases on every GPU contender and gpunet-numpy; JSON-ready, in benchmark-cpu.json's shape.

    Each contender trains ``rows`` rows (``fraction`` of an epoch; the per-sample
    slow ones fewer) per timed run, from data and an order already on its device;
    ``epoch_seconds`` is the median scaled to 60,000 rows, ``epoch_seconds_interval``
    its 95% interval (harness.median_interval). Every GPU contender, gpunet's paths
    included, is timed by the same CUDA events (harness.CudaEventClock), gpunet-numpy
    by perf_counter. A contender that cannot run, or raises, is recorded as skipped
    with the reason. ``case_names``: only those cases (default every one).
    ``on_result`` gets the results so far after every case (for writing them as
    they come: a stage that runs out of time keeps the finished cases).
    """
    gpu = cupy_unavailable_reason() is None
    devices = ("cpu", "gpu") if gpu else ("cpu",)
    clocks = {device: clock_for(device) for device in devices}
    results: dict[str, Any] = {"machine": gpu_machine(), "quick": quick, "fraction": fraction, "repeats": repeats,
                               "lr": LR, "epoch_rows": EPOCH_ROWS, "tf32": False, "ceilings_gflops": {},
                               "clocks": {device: clock.name for device, clock in clocks.items()},
                               "interval": f"{LEVEL:.0%} order-statistic interval of the median", "cases": []}
    ceilings = {device: matmul_ceiling(device, 1024 if quick else 2048) for device in devices}
    all_cases = gpu_cases(fraction, case_names)
    X_all, labels_all, results["data"] = gpu_data(max(c.rows for c in all_cases), mnist_dir)
    for case in all_cases:
        names = [n for n in case.contenders if not only or n in only]
        skips = {n: QUICK_SKIPS[n] for n in names if quick and n in QUICK_SKIPS}
        entry = measure_case(case, {n: gpu_contender(n) for n in names}, X_all, labels_all, repeats, clocks,
                             ceilings, skips)
        add_speedups(entry)
        results["cases"].append(entry)
        for device in devices:
            results["ceilings_gflops"][device] = statistics.median(
                c["ceiling_gflops"][device] for c in results["cases"])
        if on_result is not None:
            on_result(results)
    return results


def measure_case(case: Case, contenders: dict[str, Contender], X_all: np.ndarray, labels_all: np.ndarray,
                 repeats: int, clocks: dict[str, Clock], ceilings: dict[str, tuple[Callable[[], None], int]],
                 skips: dict[str, str] | None = None) -> dict[str, Any]:
    """One case's record: each contender built on the first ``case.rows_for(name)`` rows from the article's
    initial parameters (seed 0), timed ``repeats`` rounds with the ceilings by the clock of its device, its
    figures scaled to an epoch of 60,000 rows; one that cannot run, is in ``skips``, or raises, is recorded
    as skipped with the reason."""
    params = init_params(list(case.sizes), "article", 0)
    entry = case_entry(case)
    runs: dict[str, Run] = {f"ceiling-{device}": run for device, (run, _) in ceilings.items()}
    paths: dict[str, str] = {}  # gpunet's contenders: the engine that trains
    for name, (make, unavailable) in contenders.items():
        why = (skips or {}).get(name)
        try:
            why = why or unavailable()
            if why is None:
                rows = case.rows_for(name)
                runs[name] = make(case, X_all[:rows], labels_all[:rows], params)
                if hasattr(runs[name], "path"):
                    paths[name] = runs[name].path  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 -- a peer that fails to build never stops the others
            why = failure_reason(exc)
        entry["contenders"][name] = {"skipped": why} if why else {"rows": case.rows_for(name)}
    failed: dict[str, str] = {}
    on = {name: clocks.get(device_of(name), clocks["cpu"]) for name in runs}
    times = time_rounds(runs, repeats, GPU_SETTLE_S, failed, on)
    entry["ceiling_gflops"] = ceiling_gflops(ceilings, times)
    for name, r in entry["contenders"].items():
        if name in failed:
            entry["contenders"][name] = {"skipped": failed[name]}
        elif name in times:
            ceiling = entry["ceiling_gflops"].get(device_of(name))
            r.update(figures(times[name], r["rows"], case.flops_per_sample(), ceiling))
            r["epoch_seconds"] = EPOCH_ROWS / r["samples_per_s"]
            interval = r["seconds_interval"]
            r["epoch_seconds_interval"] = None if interval is None else [s * EPOCH_ROWS / r["rows"] for s in interval]
            if name in paths:
                r["path"] = paths[name]
            if hasattr(runs[name], "note"):
                r["note"] = runs[name].note()  # type: ignore[attr-defined]
    return entry


def device_of(name: str) -> str:
    """Where a contender (or a ceiling) runs: "cpu" for gpunet on NumPy, the CPU peers (named ...-cpu) and the
    CPU ceiling; "gpu" for the rest."""
    cpu = name.startswith("gpunet-numpy") or name.endswith("-cpu") or "-cpu-" in name or name in ("sklearn", "textbook")
    return "cpu" if cpu else "gpu"


def gpu_machine() -> dict[str, Any]:
    """The machine (as for the CPU benchmark), the GPU's name and memory, driver, CUDA and library versions."""
    info = {**machine(), **versions()}
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
        import torch  # installed: versions() found it

        info["torch_cuda"] = torch.version.cuda
    return info


def format_gpu_results(results: dict[str, Any]) -> str:
    """The GPU results as text: one table per case (epoch seconds scaled to 60,000 rows, with the 95% interval of
    the median; "-" under 6 rounds), and the engine each gpunet contender ran."""
    lines = [f"machine: {results['machine'].get('gpu')}; data: {results['data']}; "
             f"{results['fraction']:g} of an epoch per run, median of {results['repeats']}; clocks: "
             + ", ".join(f"{d} {c}" for d, c in results.get("clocks", {}).items())]
    for entry in results["cases"]:
        lines += ["", f"{entry['case']} ({entry['dtype']})",
                  (f"  {'contender':<24} {'rows':>6} {'epoch s':>9} {'95% interval':>19} {'samples/s':>12} "
                   f"{'GFLOP/s':>9} {'gpunet-numpy is':>16}  path")]
        for name, r in entry["contenders"].items():
            if "skipped" in r:
                lines.append(f"  {name:<24} skipped: {r['skipped']}")
                continue
            ratio = r.get("gpunet_numpy_speedup")
            ratio_text = f"{ratio:.3f}x" if ratio is not None and name != "gpunet-numpy" else "-"
            interval = r.get("epoch_seconds_interval")
            spread = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "-"
            lines.append(f"  {name:<24} {r['rows']:>6} {r['epoch_seconds']:>9.4f} {spread:>19} "
                         f"{r['samples_per_s']:>12,.0f} {r['gflops']:>9.1f} {ratio_text:>16}  {r.get('path', '')}"
                         .rstrip())
    return "\n".join(lines)
