"""The benchmark harness: a contender's interface, one clock for every contender, timing runs in turns, the
figures each case records, and the one rule that says whether a measurement meets a target."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backend import get_backend
from .cases import Case

# A contender's builder takes (case, X, labels, params) and returns a run: one epoch's work (one pass over the
# rows), queued on the device where it runs there. Every contender does the same work per run: the data and
# the epoch's permutation (gpunet.train's first epoch, seed 0) are on its device before the clock starts, and
# the run gathers each batch by that permutation, steps and updates. The harness times every run itself (see
# Clock); a run never times itself. A run may carry ``run.finish()``: a wait for work its library queues
# from another thread (JAX's asynchronous dispatch), called inside the timed span. Every run also carries
# ``run.params()``: the trained parameters as NumPy arrays in gpunet's layout, so the tests can hold each
# peer's training against gpunet's; gpunet's runs carry ``run.path``, the engine that trains ("plain", "fused",
# "graph"); a run may carry ``run.note()``, asked after its rounds: how it ran (torch.compile: with CUDA graphs
# or without).
Run = Callable[[], None]
Builder = Callable[[Case, np.ndarray, np.ndarray, dict], Run]
Contender = tuple[Callable[..., Run], Callable[[], "str | None"]]  # (builder, why it cannot run here or None)

SETTLE_S = 0.3  # seconds between timed runs: see time_rounds
LEVEL = 0.95  # the confidence of every interval the benchmarks report


class Clock:
    """Seconds of one run on the CPU: ``time.perf_counter`` around the run (and its ``finish``)."""

    name = "perf_counter"

    def seconds(self, run: Run) -> float:
        start = time.perf_counter()
        run()
        _finish(run)
        return time.perf_counter() - start


class CudaEventClock(Clock):
    """Seconds of one run on the GPU, by two CUDA events on the null stream.

    The start event is recorded after a device-wide synchronise (nothing queued before the run is left), the
    end event after the run, its ``finish`` and another device-wide synchronise, which waits for every stream
    of every library in the process (gpunet's graph mode replays on a stream of its own, PyTorch's and JAX's
    work may run on theirs), so no contender's work escapes the span whatever stream it took. The span therefore
    includes one synchronise's return to the host, tens of microseconds, the same for every contender."""

    name = "cuda-events"

    def __init__(self, backend: Any) -> None:
        cuda = backend.xp.cuda
        self.cuda, self.start, self.end = cuda, cuda.Event(), cuda.Event()

    def seconds(self, run: Run) -> float:
        cuda = self.cuda
        cuda.runtime.deviceSynchronize()  # CPU-GPU sync point: before the clock starts
        self.start.record(cuda.Stream.null)
        run()
        _finish(run)
        cuda.runtime.deviceSynchronize()  # CPU-GPU sync point: every stream's work is in the span
        self.end.record(cuda.Stream.null)
        self.end.synchronize()
        return cuda.get_elapsed_time(self.start, self.end) / 1000  # milliseconds -> seconds


def _finish(run: Run) -> None:
    finish = getattr(run, "finish", None)
    if finish is not None:
        finish()


def clock_for(device: str) -> Clock:
    """The clock for contenders on ``device``: "gpu" (CUDA events, through the CuPy backend) or "cpu"."""
    return CudaEventClock(get_backend("cupy")) if device == "gpu" else Clock()


# --- the median, its interval, and the rule for a target --------------------------------------------

def median_interval(samples: Sequence[float], level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """(median, low, high): the sample median and the distribution-free order-statistic interval for the
    median at ``level`` confidence.

    With the n samples sorted x(1) <= ... <= x(n), the interval is [x(j), x(n+1-j)] for the largest j whose
    coverage, P(j <= B <= n - j) with B ~ Binomial(n, 1/2), is at least ``level`` (the median lies below
    x(j) only if fewer than j samples fall below it). It assumes only independent samples of one
    distribution. Fewer than 6 samples cannot reach 95% (x(1)..x(n) covers 1 - 2/2^n): low and high are None.
    With 10 samples it is [x(2), x(9)], covering 97.9%."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        raise ValueError("median_interval needs at least one sample; got none")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    median = statistics.median(xs)

    def coverage(j: int) -> float:  # P(j <= B <= n - j): 1 - 2 P(B < j)
        return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n

    best = 0  # coverage falls as j grows: the largest j that still reaches level
    while best < n // 2 and coverage(best + 1) >= level:
        best += 1
    if best == 0:
        return median, None, None
    return median, xs[best - 1], xs[n - best]


def judge(samples: Sequence[float], need: float, at_least: bool, level: float = LEVEL) -> dict[str, Any]:
    """Whether ``samples`` meet a target, by the interval of their median: a target of at least ``need``
    (``at_least``, e.g. a speed ratio) is met only where the interval's low end is at or above it; a target
    of at most ``need`` (e.g. seconds an epoch) only where its high end is at or below it. "not met" where the
    interval's far end misses it too, "unclear" where the interval holds ``need``, "too few samples" where there
    is no interval. Returns {"median", "interval" ([low, high] or None), "status"}."""
    median, low, high = median_interval(samples, level)
    if low is None or high is None:
        return {"median": median, "interval": None, "status": f"too few samples ({len(samples)}) for a "
                f"{level:.0%} interval"}
    near, far = (low, high) if at_least else (high, low)
    clears = (lambda v: v >= need) if at_least else (lambda v: v <= need)
    status = "met" if clears(near) else "not met" if not clears(far) else "unclear"
    return {"median": median, "interval": [low, high], "status": status}


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
                failed: dict[str, str] | None = None, clocks: dict[str, Clock] | None = None) -> dict[str, list[float]]:
    """Seconds of every run, ``repeats`` times each, after one warm-up each, each by its clock in ``clocks``
    (by name; perf_counter for a name not there).

    The runs take turns: each round times every run once, and the order rotates
    from round to round, so a slow spell on a shared machine falls on every
    contender alike. Each timed run starts after a pause of ``settle`` so the
    previous library's idle threads, which spin for a while after a call before
    they sleep, have stopped taking a core from the next (on a machine of few
    cores, NumPy's OpenBLAS workers would slow PyTorch down). The warm-up pays
    first-call costs: compilation, graph capture, caches. With ``failed``, a run
    that raises is dropped and its reason recorded there instead of stopping every other.
    """
    runs, cpu = dict(runs), Clock()
    clocks = clocks or {}
    for name, run in list(runs.items()):
        try:
            clocks.get(name, cpu).seconds(run)  # warm-up: first-call costs, compilation, capture, BLAS threads
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
            try:
                seconds = clocks.get(name, cpu).seconds(runs[name])
            except Exception as exc:
                if failed is None:
                    raise
                failed[name] = failure_reason(exc)
                del runs[name], times[name]
                continue
            times[name].append(seconds)
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
    """A contender's figures from its rounds' times: the median and its 95% interval (``median_interval``; None
    under 6 rounds), samples/s, GFLOP/s and the share of ``ceiling``."""
    seconds, low, high = median_interval(times)
    rate = rows / seconds
    gflops = rate * flops_per_sample / 1e9
    return {"samples_per_s": rate, "seconds_median": seconds, "seconds_interval": None if low is None else [low, high],
            "seconds": times, "gflops": gflops, "share_of_ceiling": gflops / ceiling if ceiling else None}


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
