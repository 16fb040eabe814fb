"""Which path trains a network: the plain ``xp`` code of network.py or a CUDA fast path — decided here only.

- ``"plain"``: network.py's array operations, the reference every fast path is tested against;
- ``"fused"``: gpunet/cuda/fused.py (cuBLAS products, fused elementwise kernels, one-launch optimiser), and
  gpunet/cuda/per_sample.py for per-sample plain SGD in ``gpunet.train``;
- ``"graph"``: whole epochs of ``gpunet.train`` at a time: gpunet/cuda/graph.py captures a batch epoch in a
  CUDA graph, and per-sample plain SGD runs per_sample.PerSampleEpochs (the per-sample kernel with the
  fewest calls a chunk); a single ``train_step`` outside ``gpunet.train`` runs fused;
- ``"auto"``: the fastest path that can run the configuration among those :data:`VERIFIED` lets it take,
  else plain: for batches the paths in VERIFIED, graph mode only where a step's widest product is no larger
  than :data:`GRAPH_MAX_PRODUCT` (the largest a device run has seen it win); for per-sample plain SGD
  "graph" once "per-sample-epochs" is in VERIFIED, "fused" once "fused" and "per-sample" are. Graph mode
  calls ``gpunet.train``'s ``on_batch`` once an epoch and never asks ``should_stop`` within one, so auto
  passes it over where the caller gives either and ``every_step`` is True (the default).

Per-sample plain SGD on a network the per-sample kernel does not cover (``per_sample.supports``: not one
hidden layer, or a layer too wide for the device's shared memory) takes the plain path under every choice.

Asking for "fused" or "graph" where it cannot run raises ValueError saying why.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, NamedTuple

from ..checks import check_choice
from .flat import rule_of

Array = Any
KERNELS = ("auto", "plain", "fused", "graph")
# The fast paths a run on a device has shown equal to the plain path (the gpu tests) and faster; add one here
# only with that evidence. The device runs of 2026-11-27 (scripts/results/gpu-check-h100*.json, -h200-run3.json):
# - "fused": its gpu tests passed (the one float32 miss, 1.03e-4 against 1e-4, was a setup whose float32
#   trajectory turns on rounding; see tests/test_fused.py), and an epoch ran 2.2-2.5x faster than plain
#   at batch 64, 128 and 1024 (scripts/results/benchmark-gpu-h100.json).
# - "per-sample" (the per-sample kernel of "fused"): its gpu tests passed, MNIST runs included; 40 MNIST runs
#   of 5 epochs in float64 equal to the CPU's, and the same bit for bit in a second run; and 38-66x the plain
#   per-sample path on CuPy (an epoch of 784-100-10 in 0.63 s against 41.8 s; benchmark-gpu-h100-run2.json).
# - "graph" (run 3, one H200): every gpu test passed, momentum and Adam included, and an epoch beat fused
#   at every batch measured: 784-100-10 at 64-1024 by 7.4-2.2x, 784-1024-10 at 128-1024 by 2.9-1.3x
#   (graph-vs-fused-h200-run3.json); 40.8x PyTorch eager at batch 64 (benchmark-gpu-h200-run3.json).
# - "per-sample-epochs" ("graph" for per-sample plain SGD: per_sample.PerSampleEpochs; run 3, one H200): its
#   gpu tests passed, and an epoch beat the per-sample kernel in all four cases, 784-100-10 and 784-200-10 in
#   float32 and float64: 0.286-0.337 s against 0.375-0.453 s (benchmark-gpu-h200-run3.json).
VERIFIED: frozenset[str] = frozenset({"fused", "per-sample", "graph", "per-sample-epochs"})
# auto's graph mode for batches stops here: multiply-adds of a step's widest product (batch x inputs x outputs
# of a layer). Graph mode's lead over fused (cuBLAS) shrinks as products grow, from 2.9x at 784-1024-10's
# batch 128 to 1.3x at its batch 1024 (1024 x 784 x 1024 multiply-adds, on the H200): beyond the largest
# product measured, auto takes fused, as it would for any size no device run has covered.
GRAPH_MAX_PRODUCT = 1024 * 784 * 1024
FASTEST_FIRST = ("graph", "fused")
# Per-sample plain SGD, fastest first: each path and the VERIFIED names auto needs before it takes it.
PER_SAMPLE_FIRST = (("graph", frozenset({"per-sample-epochs"})), ("fused", frozenset({"fused", "per-sample"})))


def check_kernels(kernels: Any, backend: Any) -> str:
    """``kernels`` checked: one of KERNELS, and a CUDA path only on the cupy backend."""
    check_choice("kernels", kernels, KERNELS)
    if kernels in ("fused", "graph") and backend.name != "cupy":
        raise ValueError(f"kernels={kernels!r} needs the cupy backend; got backend {backend.name!r} "
                         "(use kernels='auto' or kernels='plain')")
    return kernels


def _module(name: str) -> Any:
    """gpunet.cuda.<name>, or None where this installation lacks it."""
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.{name}":
            raise
        return None


def why_not(path: str, net: Any, optimizer: Any, per_sample: bool = False) -> str | None:
    """None when ``path`` can run this configuration, else the reason it cannot."""
    if path == "plain":
        return None
    if net.backend.name != "cupy":
        return f"it needs the cupy backend; the network is on {net.backend.name!r}"
    if path == "graph" and _module("graph") is None:
        return "gpunet/cuda/graph.py is not part of this installation"
    if per_sample and _module("per_sample") is None:
        return "gpunet/cuda/per_sample.py is not part of this installation"
    if not optimizer.folds_lr and rule_of(optimizer) is None:
        return f"the flat optimiser kernel implements SGD, Momentum and Adam; got {type(optimizer).__name__}"
    return None


def choose(kernels: str, net: Any, optimizer: Any, per_sample: bool = False) -> str:
    """The path that runs: "plain", "fused" or "graph"."""
    if kernels == "plain" or (kernels == "auto" and not VERIFIED):  # every step asks: the common case first
        return "plain"
    if kernels == "auto":
        return _fastest(net, optimizer, per_sample)
    reason = why_not(kernels, net, optimizer, per_sample)
    if reason is not None:
        raise ValueError(f"kernels={kernels!r} cannot train this network: {reason}")
    return kernels


def _fastest(net: Any, optimizer: Any, per_sample: bool, skip: str | None = None) -> str:
    """auto's choice: the fastest path VERIFIED lets it take (other than ``skip``) that can run the
    configuration, else "plain"."""
    if per_sample:
        allowed = [p for p, needs in PER_SAMPLE_FIRST if needs <= VERIFIED]
    else:
        allowed = [p for p in FASTEST_FIRST if p in VERIFIED]
    return next((p for p in allowed if p != skip and why_not(p, net, optimizer, per_sample) is None), "plain")


def step_function(net: Any, path: str) -> Callable[[Array, Array, float, Any], Array]:
    """``(X, T, lr, optimizer) -> summed loss`` for one step by ``path`` (graph: its single steps run fused)."""
    if path == "plain":
        return net.plain_step_unchecked
    return functools.partial(_module("fused").step, net)


def widest_product(net: Any, rows: int) -> int:
    """Multiply-adds of the largest product of a step on ``rows`` rows: rows x inputs x outputs of the widest layer."""
    return rows * max(a * b for a, b in zip(net.sizes, net.sizes[1:]))


class Plan(NamedTuple):
    """How gpunet.train runs: ``step`` for a batch, ``per_sample`` for a chunk of per-sample SGD, and ``graph``
    (a GraphTrainer, or None) for whole epochs."""

    path: str
    step: Callable[[Array, Array, float, Any], Array]
    per_sample: Callable[[Array, Array, float, Any], Array]
    graph: Any


def plan(net: Any, kernels: str | None, optimizer: Any, X: Array, T: Array, rows: int, per_sample: bool,
         step_calls: bool = False) -> Plan:
    """gpunet.train's plan; ``kernels`` None means the network's ``kernels=``. X, T: the whole training set;
    ``rows``: the rows a step takes (the batch size, or the per-sample chunk); ``step_calls``: the caller
    wants calls after every step, which graph mode, calling once an epoch, cannot make: auto passes it over."""
    requested = net.kernels if kernels is None else check_kernels(kernels, net.backend)
    path = choose(requested, net, optimizer, per_sample)
    if path == "graph" and requested == "auto" and (
            step_calls or (not per_sample and widest_product(net, rows) > GRAPH_MAX_PRODUCT)):
        path = _fastest(net, optimizer, per_sample, skip="graph")
    if per_sample and path != "plain" and _module("per_sample").supports(net) is not None:
        path = "plain"  # the per-sample kernel covers one hidden layer that fits on chip: the rest take the plain path
    graph = None
    if path == "graph":
        try:
            if per_sample:
                graph = _module("per_sample").PerSampleEpochs(net, optimizer, X, T, rows)
            else:
                graph = _module("graph").GraphTrainer(net, optimizer, X, T, rows)
        except ValueError:  # a configuration graph mode does not support
            if requested == "graph":
                raise
            path = _fastest(net, optimizer, per_sample, skip="graph")
    if path != "plain" and per_sample:
        chunk = functools.partial(_module("per_sample").per_sample_chunk, net)
    else:
        chunk = net.train_per_sample_unchecked
    step = step_function(net, path)
    if path == "plain" and net.kernels in ("auto", "plain") and choose(net.kernels, net, optimizer) == "plain":
        # the same plain step, through the method callers may wrap (test_reliability does)
        step = net.train_step_unchecked
    return Plan(path, step, chunk, graph)
