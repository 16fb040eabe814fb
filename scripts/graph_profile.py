"""Where a graph-mode step's time goes on the GPU: each kernel of the step, and the captured step itself.

    python scripts/graph_profile.py [--json FILE] [--repeats N]

For the benchmark's batch cases (784-100-10 at batch 64 and 128, 784-1024-10
at batch 1024; sigmoid, squared loss, plain SGD, float32) on random pixels in
[0.01, 1]: the microseconds of each of a step's launches (gemm.cu's kernels,
in the step's order: 5 launches for 784-100-10), each launched ``--repeats``
times back to back between two synchronisations (medians of 3 such rounds), and
their sum. Then ``replayed``: a whole epoch replayed from its CUDA graph, per
step. Where ``replayed`` exceeds the sum, the difference is what the graph's
nodes cost beyond their kernels. ``epoch_s`` is ``replayed`` for a 60,000-row
epoch. Issue 12 asks for batch 64 to be at least as fast as JAX's whole-epoch
``lax.scan``, which took 0.0254 s on an H100.
Without a usable GPU it says why in one line and exits with status 1.
scripts/gpu_check.py runs it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import gpunet
from gpunet.bench import per_call_us
from gpunet.engines.graph import GraphTrainer

import profiling  # scripts/profiling.py: the command line both profiles share

CASES = (((784, 100, 10), 64), ((784, 100, 10), 128), ((784, 1024, 10), 1024))
ROWS = 60_000
LR = 0.1


def profile_case(backend: Any, sizes: tuple[int, int, int], batch: int, repeats: int) -> dict[str, Any]:
    """One case's figures: each launch of the first step, and an epoch's replay per step."""
    rng = np.random.default_rng(0)
    net = gpunet.Network(list(sizes), "sigmoid", "sigmoid", "squared", init="article", seed=0, backend=backend,
                         dtype="float32")
    X = backend.to_device(0.01 + 0.99 * rng.random((ROWS, sizes[0]), dtype=np.float32), net.dtype)
    T = backend.to_device(net.targets_from_labels(rng.integers(0, sizes[2], ROWS)), net.dtype)
    trainer = GraphTrainer(net, gpunet.SGD(), X, T, batch)
    order = backend.to_device(rng.permutation(ROWS))
    # An epoch: the first call captures its graph (and replays it), then 3 rounds of one replay each.
    epoch_seconds = per_call_us(backend, lambda: trainer.run_epoch(order, LR), 1)[0] * 1e-6
    trainer.buffers["order"][...] = order  # what the step's gathers read
    trainer.buffers["lr"].fill(LR)
    launches = []
    for launch in trainer._step(0, batch):
        function, args = trainer._functions[launch.expression], launch.kernel_args()
        us = per_call_us(backend, lambda: function(launch.grid, launch.block, args), repeats)[0]
        launches.append((launch.expression, launch.grid, us))
    return case_record(sizes, batch, launches, epoch_seconds, len(trainer.batches()))


def case_record(sizes: tuple[int, int, int], batch: int, launches: list[tuple[str, tuple[int, ...], float]],
                epoch_seconds: float, steps: int) -> dict[str, Any]:
    """One case's JSON record: microseconds per launch and their sum, and the replayed step."""
    return {"sizes": list(sizes), "batch": batch,
            "launches": [{"kernel": k, "grid": list(grid), "us": round(us, 2)} for k, grid, us in launches],
            "launches_us": round(sum(us for _, _, us in launches), 2),
            "replayed_us": round(epoch_seconds * 1e6 / steps, 2), "epoch_s": round(epoch_seconds, 4)}


def format_table(cases: list[dict[str, Any]]) -> str:
    lines = []
    for c in cases:
        lines.append(f"{'-'.join(map(str, c['sizes']))} at batch {c['batch']}: launches {c['launches_us']:.1f} us, "
                     f"replayed step {c['replayed_us']:.1f} us, epoch {c['epoch_s']:.4f} s")
        lines += [f"  {launch['us']:>8.2f} us  {launch['kernel']}  grid {tuple(launch['grid'])}"
                  for launch in c["launches"]]
    return "\n".join(lines)


def measure(backend: Any, repeats: int) -> list[dict[str, Any]]:
    """Every case: each network and batch size."""
    return [profile_case(backend, sizes, batch, repeats) for sizes, batch in CASES]


def main(argv: list[str] | None = None) -> int:
    return profiling.main(argv, __doc__, "launches", measure, format_table)


if __name__ == "__main__":
    sys.exit(main())
