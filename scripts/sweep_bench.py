"""Benchmark: a sweep on local Dask workers against the same sweep in-process; prints the wall-time ratio.
With --backends, the same sweep on two backends, each on the same number of local Dask workers on this host.

    python scripts/sweep_bench.py                      # 8 runs, 2 workers, 3 repeats
    python scripts/sweep_bench.py --repeats 1 --epochs 10
    python scripts/sweep_bench.py --backends cupy,numpy --workers 8 --sweep scripts/sweeps/article-seeds.toml \
        --data-dir DIR --repeats 1                     # the GPU sweep against its CPU reference, same host

Each repeat times the in-process sweep and the Dask sweep
(``gpunet.sweep.run_sweep``, what ``gpunet sweep`` and ``gpunet sweep --workers
N`` run; the cluster's start and stop included), in alternating order, each
into a fresh results file; the ratio is Dask's wall time over the in-process
one (below 1: Dask is faster). The runs are digits runs of one hidden layer that
differ in seed (or, with --sweep, a sweep file's runs); the two sweeps' results are checked to be equal run for run.

--backends A,B runs the sweep with every run's backend set to A, then to B (alternating which goes first),
each on --workers local Dask workers of this machine: the CPU reference of a GPU sweep on the same host, with
the same number of workers (a reference timed elsewhere, or serially, measures the host as much as the
backend). The figure is B's wall time over A's (above 1: A is faster); the two backends' results are compared
run for run: equal test accuracies counted, and the largest difference of a final training loss.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpunet.config import TrainConfig
from gpunet.files import write_json
from gpunet.machine import machine
from gpunet.sweep import load_grid, override, run_config, run_sweep, without_timing


def timed(configs: list[TrainConfig], path: Path, workers: int | None) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    rows = run_sweep(configs, path, workers=workers)
    return time.perf_counter() - start, rows


def agreement(first: list[dict], second: list[dict]) -> dict[str, Any]:
    """How two backends' records of the same runs agree: equal test accuracies, the largest final-loss gap."""
    gaps = [abs(a["history"][-1]["train_loss"] - b["history"][-1]["train_loss"]) for a, b in zip(first, second)]
    return {"runs": len(first), "equal_test_accuracy": sum(a["test_accuracy"] == b["test_accuracy"]
                                                           for a, b in zip(first, second)),
            "max_train_loss_difference": max(gaps, default=0.0)}


def compare_backends(args: argparse.Namespace, configs: list[TrainConfig]) -> int:
    """The sweep on backend A and on backend B, each on ``args.workers`` local Dask workers, ``args.repeats`` times."""
    first, second = args.backends
    sets = {b: override(configs, backend=b) for b in (first, second)}
    print(f"{len(configs)} runs on {args.workers} local Dask workers: backend {first} against {second}", flush=True)
    repeats = []
    with tempfile.TemporaryDirectory() as folder:
        for k in range(args.repeats):
            seconds, rows = {}, {}
            for b in ((first, second) if k % 2 == 0 else (second, first)):
                seconds[b], rows[b] = timed(sets[b], Path(folder) / f"{k}-{b}.jsonl", args.workers)
            failed = [r.get("error") for b in rows for r in rows[b] if r.get("status") != "ok"]
            if failed:
                print(f"error: a run failed: {failed[0]}", file=sys.stderr)
                return 1
            ratio = seconds[second] / seconds[first]
            repeats.append({f"{first}_s": round(seconds[first], 2), f"{second}_s": round(seconds[second], 2),
                            "ratio": round(ratio, 3), **agreement(rows[first], rows[second])})
            print(f"repeat {k + 1}: {first} {seconds[first]:.1f} s, {second} {seconds[second]:.1f} s, "
                  f"{second}/{first} {ratio:.2f}; {repeats[-1]['equal_test_accuracy']} of {len(configs)} test "
                  f"accuracies equal, final losses within {repeats[-1]['max_train_loss_difference']:.2g}", flush=True)
    median = statistics.median(r["ratio"] for r in repeats)
    print(f"median wall-time ratio ({second} / {first}, both on {args.workers} workers of this host) over "
          f"{len(repeats)} repeats: {median:.2f}")
    if args.out:
        write_json(args.out, {"args": {**vars(args), "backends": list(args.backends)}, "machine": machine(),
                              "same_host": True, "workers": args.workers, "repeats": repeats, "median_ratio": median})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs in the sweep (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2)")
    parser.add_argument("--hidden", type=int, default=1024, help="hidden units of each run (default 1024)")
    parser.add_argument("--epochs", type=int, help="epochs of each run (default 60, or the sweep file's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median ratio is reported")
    parser.add_argument("--out", help="also write the timings as JSON here")
    parser.add_argument("--sweep", metavar="FILE", help="the runs of this sweep file instead of the digits seeds")
    parser.add_argument("--data-dir", metavar="DIR", help="MNIST's folder, for a sweep file's MNIST runs")
    parser.add_argument("--backends", metavar="A,B", help="time the sweep on backend A against backend B, each on "
                        "--workers Dask workers of this host (e.g. cupy,numpy)")
    args = parser.parse_args(argv)
    for name in ("runs", "workers", "hidden", "epochs", "repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.backends is not None:
        args.backends = args.backends.split(",")
        if len(args.backends) != 2 or any(b not in ("numpy", "cupy") for b in args.backends):
            parser.error(f"--backends must be two of numpy and cupy, as A,B; got {','.join(args.backends)!r}")
    if args.sweep:
        try:
            _, configs = load_grid(args.sweep)
        except (OSError, ValueError) as exc:
            parser.error(f"--sweep {args.sweep!r}: {exc}")
        configs = override(configs, epochs=args.epochs, data_dir=args.data_dir)
    else:
        configs = [TrainConfig(hidden=(args.hidden,), epochs=args.epochs or 60, backend="numpy", seed=s)
                   for s in range(args.runs)]
    run_config(replace(configs[0], epochs=1))  # untimed: imports, the data's cache
    if args.backends:
        return compare_backends(args, configs)
    print(f"{len(configs)} runs like `{configs[0].command()}`; in-process vs {args.workers} local Dask workers",
          flush=True)
    repeats = []
    with tempfile.TemporaryDirectory() as folder:
        for k in range(args.repeats):
            order = [None, args.workers] if k % 2 == 0 else [args.workers, None]
            seconds, rows = {}, {}
            for workers in order:
                path = Path(folder) / f"{k}-{workers or 'serial'}.jsonl"
                seconds[workers], rows[workers] = timed(configs, path, workers)
            if [without_timing(r) for r in rows[None]] != [without_timing(r) for r in rows[args.workers]]:
                print("error: the Dask sweep's results differ from the in-process sweep's", file=sys.stderr)
                return 1
            ratio = seconds[args.workers] / seconds[None]
            repeats.append({"in_process_s": round(seconds[None], 2), "dask_s": round(seconds[args.workers], 2),
                            "ratio": round(ratio, 3)})
            print(f"repeat {k + 1}: in-process {seconds[None]:.1f} s, Dask {seconds[args.workers]:.1f} s, "
                  f"ratio {ratio:.2f}", flush=True)
    median = statistics.median(r["ratio"] for r in repeats)
    print(f"median wall-time ratio (Dask / in-process) over {len(repeats)} repeats: {median:.2f}; "
          "results equal run for run")
    if args.out:
        write_json(args.out, {"args": vars(args), "machine": machine(), "repeats": repeats, "median_ratio": median})
    return 0


if __name__ == "__main__":  # the guard matters: Dask's worker processes start by importing this file
    sys.exit(main())
