"""Graph mode against the fused path across batch sizes on the GPU: where graph mode stops winning.

    python scripts/graph_vs_fused.py [--json FILE] [--repeats N]

``kernels="auto"`` may pick graph mode only with a rule for when it is faster
than fused (gpunet/engines/select.py). The first H100 run had graph mode 5.4x
fused at batch 64 and 1.6x slower at batch 1024 with 784-1024-10. This measures
between: 784-100-10 at batch 64, 128, 256, 512 and 1024, and 784-1024-10 at
batch 128, 256, 512 and 1024 (sigmoid, squared loss, plain SGD at lr 0.1, float32,
random pixels in [0.01, 1]), then Adam (lr 0.001, its update one flat_step launch in
both paths) on 784-100-10 at batch 64 and 784-1024-10 at batch 1024. Each path
trains ``gpunet.train`` epochs of 30,000 rows through ``kernels="fused"`` and
``kernels="graph"``, as a user would: the first
epoch compiles or captures and is not counted; the figure is the median of the
next ``--repeats`` epochs' own times (gpunet.train's synchronised ``seconds``),
scaled to 60,000 rows. ``graph_speedup`` is fused's epoch over graph's (above 1:
graph mode is faster). Without a usable GPU it says why in one line and exits
with status 1. scripts/gpu_check.py runs it.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

import numpy as np

import gpunet
from gpunet.bench import EPOCH_ROWS

import profiling  # scripts/profiling.py: the command line the GPU profiles share

CASES = tuple(((784, 100, 10), b) for b in (64, 128, 256, 512, 1024)) + \
    tuple(((784, 1024, 10), b) for b in (128, 256, 512, 1024))
ADAM_CASES = (((784, 100, 10), 64), ((784, 1024, 10), 1024))  # the same paths with Adam's one flat_step
ROWS = 30_000
LR = {"sgd": 0.1, "adam": 0.001}
PATHS = ("fused", "graph")


def epoch_seconds(backend: Any, sizes: tuple[int, int, int], batch: int, kernels: str, X: Any, y: np.ndarray,
                  repeats: int, optimizer: str = "sgd") -> float:
    """The median epoch of ``repeats`` timed ones (after one untimed), scaled to 60,000 rows."""
    net = gpunet.Network(list(sizes), "sigmoid", "sigmoid", "squared", init="article", seed=0, backend=backend,
                         dtype="float32")
    history = gpunet.train(net, X, y, epochs=1 + repeats, batch_size=batch, lr=LR[optimizer], optimizer=optimizer,
                           kernels=kernels)
    return statistics.median(r["seconds"] for r in history[1:]) * EPOCH_ROWS / X.shape[0]


def case_record(sizes: tuple[int, int, int], batch: int, seconds: dict[str, float],
                optimizer: str = "sgd") -> dict[str, Any]:
    """One case's JSON record: each path's epoch and graph mode's speed-up over fused."""
    return {"sizes": list(sizes), "batch": batch, "optimizer": optimizer,
            **{f"{p}_epoch_s": round(seconds[p], 5) for p in PATHS},
            "graph_speedup": round(seconds["fused"] / seconds["graph"], 3)}


def format_table(cases: list[dict[str, Any]]) -> str:
    lines = [f"{'network':<12} {'batch':>5}  {'optimizer':<9}  {'fused s':>9}  {'graph s':>9}  {'graph speed-up':>14}"]
    lines += [f"{'-'.join(map(str, c['sizes'])):<12} {c['batch']:>5}  {c['optimizer']:<9}  {c['fused_epoch_s']:>9.4f}  "
              f"{c['graph_epoch_s']:>9.4f}  {c['graph_speedup']:>13.2f}x" for c in cases]
    return "\n".join(lines)


def measure(backend: Any, repeats: int) -> list[dict[str, Any]]:
    """Every case, each path."""
    rng = np.random.default_rng(0)
    X = backend.to_device(0.01 + 0.99 * rng.random((ROWS, 784), dtype=np.float32), np.float32)
    y = rng.integers(0, 10, ROWS)
    cases = [(sizes, batch, "sgd") for sizes, batch in CASES] + [(sizes, batch, "adam") for sizes, batch in ADAM_CASES]
    return [case_record(sizes, batch, {p: epoch_seconds(backend, sizes, batch, p, X, y, repeats, opt) for p in PATHS},
                        opt) for sizes, batch, opt in cases]


def main(argv: list[str] | None = None) -> int:
    return profiling.main(argv, __doc__, "timed epochs", measure, format_table, default_repeats=3)


if __name__ == "__main__":
    sys.exit(main())
