"""Where a per-sample chunk's time goes on the GPU: the kernel, the first layer's products, the host.

    python scripts/per_sample_profile.py [--json FILE] [--repeats N]

For 784-100-10 and 784-200-10 (sigmoid, squared loss, the article's start), in
float32 and float64, with chunks of 64 and 256 rows (gpunet.train uses 64), on
random pixels in [0.01, 1]. Each figure is microseconds per chunk, over
``--repeats`` back-to-back calls between two synchronisations (medians of 3
such rounds):

- ``kernel``: the one launch of per_sample.cu (``per_sample._launch``);
- ``first_layer``: Z1 = X W1 + b1 and G = lr (X X^T + 1), before the launch;
- ``update``: W1 and b1's K updates, after it;
- ``chunk``: the whole ``per_sample_chunk`` (the three above, the loss, the
  allocations), as gpunet.train calls it;
- ``host``: the time the host takes to issue one ``per_sample_chunk``, without
  waiting for the device. When it is close to ``chunk``, the host is the bound;
- ``epochs`` and ``epochs_host``: the same two for a chunk of
  ``per_sample.PerSampleEpochs`` (``kernels="graph"``), from epochs of 16 chunks
  (each epoch's gather and loss shared by its 16 chunks, where a real epoch
  shares them by 938).

``epoch_s`` and ``epochs_epoch_s`` are ``chunk`` and ``epochs`` scaled to a 60,000-row epoch. Issue 13 asks for a
784-100-10 float32 epoch in <= 0.3 s on an H100. Without a usable GPU it says
why in one line and exits with status 1. scripts/gpu_check.py runs it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import gpunet
from gpunet.bench import EPOCH_ROWS, per_call_us
from gpunet.engines import per_sample
from gpunet.engines.plain import first_layer, update_first_layer

import profiling  # scripts/profiling.py: the command line both profiles share

SIZES = ((784, 100, 10), (784, 200, 10))
DTYPES = ("float32", "float64")
CHUNKS = (64, 256)
LR = 0.1
FIGURES = ("kernel", "first_layer", "update", "chunk", "host", "epochs", "epochs_host")
EPOCH_CHUNKS = 16  # chunks in each of PerSampleEpochs' timed epochs


def profile_case(backend: Any, sizes: tuple[int, int, int], dtype: str, rows: int, repeats: int) -> dict[str, Any]:
    """The figures of one network, dtype and chunk size."""
    rng = np.random.default_rng(0)
    net = gpunet.Network(list(sizes), "sigmoid", "sigmoid", "squared", init="article", seed=0, backend=backend,
                         dtype=dtype)
    labels = rng.integers(0, sizes[2], rows)
    X = backend.to_device(rng.uniform(0.01, 1.0, (rows, sizes[0])), net.dtype)
    T = backend.to_device(net.targets_from_labels(labels), net.dtype)
    Z1, G = first_layer(net, X, LR)
    D, Y, Z2 = backend.xp.empty_like(Z1), backend.xp.empty_like(T), backend.xp.empty_like(T)

    def launch() -> None:
        per_sample._launch(net, Z1, G, T, LR, D, Y, Z2, in_kernel=False)

    launch()
    optimizer = gpunet.SGD()
    figures = {
        "kernel": per_call_us(backend, launch, repeats)[0],
        "first_layer": per_call_us(backend, lambda: first_layer(net, X, LR), repeats)[0],
        "update": per_call_us(backend, lambda: update_first_layer(net, X, D, LR, optimizer), repeats)[0],
    }
    figures["chunk"], figures["host"] = per_call_us(
        backend, lambda: per_sample.per_sample_chunk(net, X, T, LR, optimizer), repeats)
    n = rows * EPOCH_CHUNKS
    epoch_X = backend.to_device(rng.uniform(0.01, 1.0, (n, sizes[0])), net.dtype)
    epoch_T = backend.to_device(net.targets_from_labels(rng.integers(0, sizes[2], n)), net.dtype)
    runner = per_sample.PerSampleEpochs(net, optimizer, epoch_X, epoch_T, rows)
    order = backend.to_device(rng.permutation(n))
    epoch_us, host_us = per_call_us(backend, lambda: runner.run_epoch(order, LR), max(1, repeats // EPOCH_CHUNKS))
    figures["epochs"], figures["epochs_host"] = epoch_us / EPOCH_CHUNKS, host_us / EPOCH_CHUNKS
    return case_record(sizes, dtype, rows, figures)


def case_record(sizes: tuple[int, int, int], dtype: str, rows: int, figures: dict[str, float]) -> dict[str, Any]:
    """One case's JSON record: its figures in microseconds per chunk, and ``chunk`` scaled to an epoch."""
    return {"sizes": list(sizes), "dtype": dtype, "rows_per_chunk": rows,
            **{f"{k}_us": round(figures[k], 1) for k in FIGURES},
            "epoch_s": round(figures["chunk"] * 1e-6 * EPOCH_ROWS / rows, 4),
            "epochs_epoch_s": round(figures["epochs"] * 1e-6 * EPOCH_ROWS / rows, 4)}


def format_table(cases: list[dict[str, Any]]) -> str:
    head = f"{'network':<12} {'dtype':<8} {'rows':>4}  " + "  ".join(f"{f + ' us':>14}" for f in FIGURES) + \
        f"  {'epoch s':>8}  {'epochs s':>8}"
    lines = [head]
    for c in cases:
        name = "-".join(map(str, c["sizes"]))
        lines.append(f"{name:<12} {c['dtype']:<8} {c['rows_per_chunk']:>4}  "
                     + "  ".join(f"{c[f + '_us']:>14.1f}" for f in FIGURES) + f"  {c['epoch_s']:>8.3f}"
                     + f"  {c['epochs_epoch_s']:>8.3f}")
    return "\n".join(lines)


def measure(backend: Any, repeats: int) -> list[dict[str, Any]]:
    """Every case: each network, dtype and chunk size."""
    return [profile_case(backend, sizes, dtype, rows, repeats)
            for sizes in SIZES for dtype in DTYPES for rows in CHUNKS]


def main(argv: list[str] | None = None) -> int:
    return profiling.main(argv, __doc__, "calls", measure, format_table)


if __name__ == "__main__":
    sys.exit(main())
