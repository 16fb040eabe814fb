"""Benchmark: K models trained together (gpunet.many.train_many) against the same K trained one after another.

    python scripts/many_bench.py                        # the three CPU cases of issue 44, 3 repeats
    python scripts/many_bench.py --cases shared --repeats 5 --out scripts/results/cpu/many.json

Cases (MNIST from $GPUNET_MNIST_DIR, default ../shared/data/mnist; one epoch each):
- ``shared``: 16 models of 784-100-10 in float32 at batch 64, one data order for all (``shuffle_seed``);
- ``own-orders``: the same with each model's own order (seeds 0..15);
- ``per-sample``: the article's 784-200-10 (``Network.article``) in float64, plain SGD one row at a time at lr 0.1,
  8 seeds sharing one order, on the first ``--per-sample-rows`` rows.
The batch cases run with Adam (gpunet's default optimiser) and plain SGD. Each repeat times the group and the
solo runs (``gpunet.train`` with the same settings, in this process) in alternating order, by the same clock;
the ratio is solo over group (above 1: the group is faster). The median ratio and its range are printed, and
each model's parameters are checked against its solo run's. In the shared cases each solo run is also trained
again with every product on two BLAS threads: how far that moves it is the yardstick for the group's distance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import gpunet
import gpunet.backend
from gpunet.datasets import load_mnist
from gpunet.files import output_path, write_json
from gpunet.machine import machine
from gpunet.many import train_many

MNIST_DIR = Path(os.environ.get("GPUNET_MNIST_DIR", Path(__file__).resolve().parents[2] / "shared/data/mnist"))
CASES = ("shared", "own-orders", "per-sample")
TARGETS = {"shared": 3.0, "own-orders": 1.3, "per-sample": 2.0}  # issue 44's, on a 2-core CPU


def settings(case: str, optimizer: str, k: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(what every model shares, what each sets) for ``case``."""
    if case == "per-sample":
        return {"epochs": 1, "batch_size": 1, "optimizer": "sgd", "lr": 0.1}, [{"seed": 0}] * k
    lr = 0.001 if optimizer == "adam" else 0.05
    shared = {"epochs": 1, "batch_size": 64, "optimizer": optimizer, "lr": lr}
    return shared, [{"seed": 0 if case == "shared" else m} for m in range(k)]


def networks(case: str, k: int) -> list[gpunet.Network]:
    if case == "per-sample":
        return [gpunet.Network.article([784, 200, 10], seed=m, dtype="float64", backend="numpy") for m in range(k)]
    return [gpunet.Network([784, 100, 10], seed=m, dtype="float32", backend="numpy") for m in range(k)]


def run(case: str, optimizer: str, X: np.ndarray, y: np.ndarray, k: int, repeats: int) -> dict[str, Any]:
    shared, each = settings(case, optimizer, k)
    solo_times, group_times, ratios, worst = [], [], [], 0.0
    for r in range(repeats):
        timed: dict[str, float] = {}
        nets: dict[str, list[gpunet.Network]] = {}
        for who in (["group", "solo"] if r % 2 == 0 else ["solo", "group"]):
            nets[who] = networks(case, k)
            start = time.perf_counter()
            if who == "group":
                train_many(nets[who], X, y, seed=[e["seed"] for e in each], **shared)
            else:
                for net, e in zip(nets[who], each):
                    gpunet.train(net, X, y, kernels="plain", **shared, **e)
            timed[who] = time.perf_counter() - start
        solo_times.append(timed["solo"])
        group_times.append(timed["group"])
        ratios.append(timed["solo"] / timed["group"])
        for a, b in zip(nets["group"], nets["solo"]):
            for name, p in b.params.items():
                worst = max(worst, float(np.abs(a.params[name] - p).max() / np.abs(p).max()))
    # How far a solo run moves when only its BLAS thread count changes (every product on two threads): in float32
    # a long run amplifies any change of summation order, the group's wide product's included.
    sensitivity = 0.0
    if case == "shared":
        small, gpunet.backend.SMALL_PRODUCT = gpunet.backend.SMALL_PRODUCT, 0
        try:
            for solo, e in zip(nets["solo"], each):
                again = networks(case, k)[solo.seed]
                gpunet.train(again, X, y, kernels="plain", **shared, **e)
                sensitivity = max(sensitivity, max(float(np.abs(again.params[n] - p).max() / np.abs(p).max())
                                                   for n, p in solo.params.items()))
        finally:
            gpunet.backend.SMALL_PRODUCT = small
    result = {
        "case": case, "optimizer": shared["optimizer"], "models": k, "rows": len(y),
        "network": networks(case, 1)[0].sizes, "dtype": "float64" if case == "per-sample" else "float32",
        "batch_size": shared["batch_size"], "solo_seconds": solo_times, "group_seconds": group_times,
        "ratios": ratios, "median_ratio": statistics.median(ratios), "target": TARGETS[case],
        "max_relative_parameter_difference": worst,
        "solo_two_threads_max_relative_parameter_difference": sensitivity if case == "shared" else None,
    }
    print(f"{case:11s} {shared['optimizer']:5s} {k} models: solo {statistics.median(solo_times):6.2f} s, "
          f"together {statistics.median(group_times):6.2f} s, ratio {result['median_ratio']:.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}; target {TARGETS[case]}x); "
          f"parameters within {worst:.1e} of the solo runs"
          + (f" (a solo run on two BLAS threads: within {sensitivity:.1e} of itself)" if case == "shared" else ""),
          flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each case (default 3)")
    parser.add_argument("--per-sample-rows", type=int, default=10000, help="rows of the per-sample case")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown case {unknown[0]!r}; expected some of {', '.join(CASES)}")
    if args.repeats < 1 or args.per_sample_rows < 64:
        parser.error("--repeats must be >= 1 and --per-sample-rows >= 64")
    out = output_path(args.out, overwrite=args.force) if args.out else None
    data = load_mnist(MNIST_DIR, dtype=np.float32)
    results = []
    for case in cases:
        X = data.X_train if case != "per-sample" else data.X_train[: args.per_sample_rows].astype(np.float64)
        y = data.y_train if case != "per-sample" else data.y_train[: args.per_sample_rows]
        for optimizer in (["adam", "sgd"] if case != "per-sample" else ["sgd"]):
            k = 8 if case == "per-sample" else 16
            results.append(run(case, optimizer, X, y, k, args.repeats))
    if out is not None:
        write_json(out, {"machine": machine(), "command": " ".join(["python", *sys.argv]), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
