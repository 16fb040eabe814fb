"""The benchmark harness: a contender's interface, timing runs in turns, and the figures each case records."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import get_backend
from .cases import Case

# A contender's builder takes (case, X, labels, params) and returns a run that trains once over the rows.
# A run returns None (the caller's clock times it) or the seconds it measured itself
# (gpunet on CuPy: the second epoch's time from train()'s history, synchronised).
# Every run also carries ``run.params()``: the trained parameters as NumPy arrays in
# gpunet's layout, so the tests can hold each peer's training against gpunet's.
# All contenders visit the rows in the order gpunet.train uses for epoch 1 with seed 0.
Run = Callable[[], "float | None"]
Builder = Callable[[Case, np.ndarray, np.ndarray, dict], Run]
Contender = tuple[Callable[..., Run], Callable[[], "str | None"]]  # (builder, why it cannot run here or None)

SETTLE_S = 0.3  # seconds between timed runs: see time_rounds


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


def time_rounds(runs: dict[str, Run], repeats: int, settle: float = SETTLE_S,
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
            failed[name] = failure_reason(exc)
            del runs[name]
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in runs}
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
                failed[name] = failure_reason(exc)
                del runs[name], times[name]
                continue
            times[name].append(time.perf_counter() - start if measured is None else measured)
    return times


def failure_reason(exc: BaseException) -> str:
    """The exception's type and message on one line, at most 300 characters of message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def matmul_ceiling(device: str, n: int) -> tuple[Callable[[], None], int]:
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


def case_entry(case: Case) -> dict[str, Any]:
    """A case's record, its ceilings and contenders still to fill."""
    return {"case": case.name, "sizes": list(case.sizes), "batch": case.batch, "dtype": case.dtype,
            "rows": case.rows, "flops_per_sample": case.flops_per_sample(), "ceiling_gflops": {}, "contenders": {}}


def ceiling_gflops(ceilings: dict[str, tuple[Callable[[], None], int]],
                   times: dict[str, list[float]]) -> dict[str, float]:
    """Each device's matrix-product GFLOP/s in this case's rounds (the median)."""
    return {device: flops / statistics.median(times[f"ceiling-{device}"]) / 1e9
            for device, (_, flops) in ceilings.items()}


def figures(times: list[float], rows: int, flops_per_sample: int, ceiling: float | None) -> dict[str, Any]:
    """A contender's figures from its rounds' times: the median, samples/s, GFLOP/s and the share of ``ceiling``."""
    seconds = statistics.median(times)
    rate = rows / seconds
    gflops = rate * flops_per_sample / 1e9
    return {"samples_per_s": rate, "seconds_median": seconds, "seconds": times, "gflops": gflops,
            "share_of_ceiling": gflops / ceiling if ceiling else None}


def add_speedups(entry: dict[str, Any]) -> None:
    """Give each measured contender of a case its ``gpunet_numpy_speedup`` (> 1 where gpunet on NumPy is faster):
    the ratio of the medians, and ``gpunet_numpy_speedup_range``, the lowest and highest ratio of one round's
    two runs (the rounds take turns, so each round's pair ran close together). ``ranked`` is False where the
    range holds 1: some rounds found gpunet on NumPy faster and others slower, too wide a spread to rank them."""
    contenders = entry["contenders"]
    base = contenders.get("gpunet-numpy", {})
    if "samples_per_s" not in base:
        return
    for name, r in contenders.items():
        if "samples_per_s" not in r:
            continue
        r["gpunet_numpy_speedup"] = base["samples_per_s"] / r["samples_per_s"]
        if name == "gpunet-numpy":
            continue
        # samples/s of gpunet-numpy over the contender's, round by round: (rows / s) / (rows / s)
        rounds = [(base.get("rows", entry["rows"]) / b) / (r.get("rows", entry["rows"]) / c)
                  for b, c in zip(base["seconds"], r["seconds"])]
        low, high = min(rounds), max(rounds)
        r["gpunet_numpy_speedup_range"] = [low, high]
        r["ranked"] = not low <= 1.0 <= high
