"""Benchmark: a sweep on local Dask workers against the same sweep in-process; prints the wall-time ratio.

    python scripts/sweep_bench.py                      # 8 runs, 2 workers, 3 repeats
    python scripts/sweep_bench.py --repeats 1 --epochs 10

Each repeat times the in-process sweep and the Dask sweep
(``gpunet.sweep.run_sweep``, what ``gpunet sweep`` and ``gpunet sweep --workers
N`` run; the cluster's start and stop included), in alternating order, each
into a fresh results file; the ratio is Dask's wall time over the in-process
one (below 1: Dask is faster). The runs are digits runs of one hidden layer that
differ in seed; the two sweeps' results are checked to be equal run for run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpunet.config import TrainConfig
from gpunet.files import write_json
from gpunet.machine import machine
from gpunet.sweep import run_config, run_sweep, without_timing


def timed(configs: list[TrainConfig], path: Path, workers: int | None) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    rows = run_sweep(configs, path, workers=workers)
    return time.perf_counter() - start, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs in the sweep (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2)")
    parser.add_argument("--hidden", type=int, default=1024, help="hidden units of each run (default 1024)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of each run (default 60)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median ratio is reported")
    parser.add_argument("--out", help="also write the timings as JSON here")
    args = parser.parse_args(argv)
    for name in ("runs", "workers", "hidden", "epochs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    configs = [TrainConfig(hidden=(args.hidden,), epochs=args.epochs, backend="numpy", seed=s)
               for s in range(args.runs)]
    print(f"{args.runs} runs of `{configs[0].command()} --seed S`; in-process vs {args.workers} local Dask workers",
          flush=True)
    run_config(TrainConfig(hidden=(args.hidden,), epochs=1, backend="numpy"))  # untimed: imports, digits cache
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
