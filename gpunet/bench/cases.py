"""The benchmark cases: which network, batch size, dtype and rows each contender trains, and on what data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LR = 0.1
EPOCH_ROWS = 60_000  # one MNIST epoch
# Per-sample rows for the contenders that take seconds a run at one row a step (the plain CuPy path, PyTorch,
# NumPy); their epoch time is scaled from these. Few enough that the per-sample cases leave gpu_check's
# benchmark stage time for the batch cases (its figures: the README's Benchmarks section).
SLOW_ROWS = 1000
BATCH_CONTENDERS = ("gpunet-cupy", "gpunet-cupy-fused", "gpunet-cupy-graph", "torch-cuda", "torch-cuda-graph",
                    "torch-compile", "jax-jit", "jax-scan", "gpunet-numpy")
PER_SAMPLE_CONTENDERS = ("gpunet-cupy-graph", "gpunet-cupy-kernel", "gpunet-cupy", "torch-cuda", "torch-cuda-graph",
                         "jax-scan", "gpunet-numpy")  # jax-scan: float32 cases only (JAX runs without float64)
ALL_GPU_CONTENDERS = tuple(dict.fromkeys(BATCH_CONTENDERS + PER_SAMPLE_CONTENDERS))


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
    """The CPU benchmark's cases; ``quick``: an eighth of the rows."""
    scale = 8 if quick else 1
    return [
        Case("per-sample 784-100-10", (784, 100, 10), 1, 4000 // scale),
        Case("per-sample 784-100-10 float64", (784, 100, 10), 1, 4000 // scale, "float64",
             ("gpunet-numpy", "gpunet-cupy", "textbook")),
        Case("batch 64 784-100-10", (784, 100, 10), 64, 12800 // scale),
        Case("batch 128 784-100-10", (784, 100, 10), 128, 25600 // scale),
        Case("batch 1024 784-1024-10", (784, 1024, 10), 1024, 16384 // scale),
    ]


def gpu_cases(fraction: float = 1.0, names: list[str] | None = None) -> list[Case]:
    """The GPU cases: ``fraction`` of an MNIST epoch each (the per-sample slow contenders fewer rows); with
    ``names``, only those (ValueError for a name that is not a case)."""
    rows = max(1, round(EPOCH_ROWS * fraction))
    slow = ("gpunet-cupy", "torch-cuda", "gpunet-numpy")
    slow_rows = min(rows, SLOW_ROWS if fraction >= 1 else max(1, round(SLOW_ROWS * fraction * 2)))
    # The per-sample torch graph replays one graph of SLOW_ROWS steps (peers.GRAPH_STEPS) whatever the rows: on
    # SLOW_ROWS rows it runs that graph once, the time a 60,000-row epoch takes sixty times.
    per_sample = [Case(f"per-sample 784-{h}-10{'' if dt == 'float32' else ' float64'}", (784, h, 10), 1, rows, dt,
                       tuple(c for c in PER_SAMPLE_CONTENDERS if dt == "float32" or not c.startswith("jax")),
                       (*slow, "torch-cuda-graph"), slow_rows)
                  for h in (100, 200) for dt in ("float32", "float64")]
    # The batch cases' slowest contenders (around a second an epoch) train a quarter.
    quarter = max(1, rows // 4)
    # torch.compile at batch 64 only: each case compiles anew, for tens of seconds, in a stage of minutes.
    batch = [Case(f"batch {b} 784-{h}-10", (784, h, 10), b, rows, "float32",
                  BATCH_CONTENDERS if b == 64 else tuple(c for c in BATCH_CONTENDERS if c != "torch-compile"),
                  slow, quarter)
             for b, h in ((64, 100), (128, 100), (1024, 1024))]
    every = per_sample + batch  # the per-sample cases first: a stage cut short by its time limit keeps them
    if names is None:
        return every
    unknown = [n for n in names if n not in [c.name for c in every]]
    if unknown:
        raise ValueError(f"unknown case {unknown[0]!r}; expected some of {', '.join(c.name for c in every)}")
    return [c for c in every if c.name in names]


def gpu_data(rows: int, mnist_dir: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``rows`` MNIST training images and labels (random pixels without the folder), and which."""
    if mnist_dir:
        from ..datasets import load_mnist

        d = load_mnist(mnist_dir, dtype=np.float32)
        return d.X_train[:rows], d.y_train[:rows].astype(np.int64), "mnist"
    rng = np.random.default_rng(0)
    return rng.uniform(0.01, 1.0, (rows, 784)).astype(np.float32), rng.integers(0, 10, rows), "random"


def one_hot_targets(labels: np.ndarray, n_out: int, dtype: Any) -> np.ndarray:
    """(N, n_out) rows of 0.01 with 0.99 at each label: the sigmoid/squared targets gpunet uses."""
    T = np.full((len(labels), n_out), 0.01, dtype=dtype)
    T[np.arange(len(labels)), labels] = 0.99
    return T
