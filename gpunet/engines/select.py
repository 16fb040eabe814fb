"""Which engine trains a run: the plain ``xp`` code or a CUDA fast path, decided here only.

- ``"plain"``: network.py's array operations (plain.py), the reference every fast path is tested against;
- ``"fused"``: fused.py (cuBLAS products, fused elementwise kernels, one-launch optimiser), and the
  per-sample kernel (per_sample.py) for per-sample plain SGD;
- ``"graph"``: whole epochs at a time: graph.py captures a batch epoch in a CUDA graph, and per-sample
  plain SGD runs per_sample.PerSampleEpochs (the per-sample kernel with the fewest calls a chunk);
- ``"auto"``: the fastest path that can run the configuration among those :data:`VERIFIED` lets it take,
  else plain: for batches the paths in VERIFIED, graph mode only where a step's widest product is no larger
  than :data:`GRAPH_MAX_PRODUCT`; for per-sample plain SGD "graph" once "per-sample-epochs" is in VERIFIED,
  "fused" once "fused" and "per-sample" are. Whole-epoch engines call ``gpunet.train``'s ``on_batch`` once
  an epoch and never ask ``should_stop`` within one, so auto passes them over where the caller gives
  either and ``every_step`` is True (the default). Auto also passes over a path for an optimiser rule or
  an activation that no device run has verified (:data:`VERIFIED_RULES`, :data:`VERIFIED_ACTIVATIONS`; see
  ``why_not(..., auto=True)``); naming the path runs it.

A network with dropout trains on every path, with the plain path's masks: fused makes them with the plain path's
``xp`` code, graph mode with fused.cu's dropout_apply (the step count read from device memory), the per-sample
kernel in its ``_dropout`` form (the inputs' mask by the host). Auto takes a fast path with dropout only once a
device run has verified that path with dropout (:data:`VERIFIED_DROPOUT`); naming it runs it.

Per-sample plain SGD on a network the per-sample kernel does not cover (``per_sample.supports``: not one
hidden layer, or a layer too wide for the device's shared memory) takes the plain path under every choice.

Asking for "fused" or "graph" where it cannot run raises ValueError saying why.
"""

from __future__ import annotations

from typing import Any

from ..checks import KERNELS, check_kernels
from . import per_sample as per_sample_kernel
from .engine import Engine
from .flat import rule_of, supported
from .kernels import OUTPUT_CODES
from .fused import FusedEngine
from .graph import GraphEngine
from .per_sample import KernelPerSample, PerSampleEpochEngine
from .plain import PlainEngine, PlainPerSample

Array = Any
__all__ = ["KERNELS", "VERIFIED", "VERIFIED_DROPOUT", "GRAPH_MAX_PRODUCT", "engine", "choose", "why_not",
           "widest_product"]
# The fast paths a device run has shown equal to the plain path (the gpu tests) and faster; add one here only
# with that evidence (the runs and their figures: docs/benchmarks.md).
VERIFIED: frozenset[str] = frozenset({"fused", "per-sample", "graph", "per-sample-epochs"})
# The optimisers whose rule a device run has held to the host (optim_rules.cuh compiles for the host and is
# tested there, but a rule no device has run is asked for, not chosen: auto trains it on the plain path).
VERIFIED_RULES: frozenset[str] = frozenset({"sgd", "momentum", "adam"})
# The same for the activations (a hidden one, or an output), on every path: silu's code (the fused kernels'
# bias_act_keep, graph mode's forward_keep, the per-sample kernel's z1 kept in D) has run on no device, so it runs
# on a fast path only when asked for by name.
VERIFIED_ACTIVATIONS: frozenset[str] = frozenset({"sigmoid", "tanh", "relu", "leaky_relu", "identity", "softmax"})
# The fast paths a device run has held to the plain path with dropout on (the gpu tests of tests/test_dropout.py,
# test_graph.py and test_per_sample_kernel.py), by VERIFIED's names ("fused", "graph", "per-sample",
# "per-sample-epochs"): auto takes a path for a network with dropout only if it is here.
VERIFIED_DROPOUT: frozenset[str] = frozenset()
# VERIFIED's name of each path for per-sample plain SGD (a batch path's name is its own)
PER_SAMPLE_NAMES = {"fused": "per-sample", "graph": "per-sample-epochs"}
# auto's graph mode for batches stops here: multiply-adds of a step's widest product (batch x inputs x outputs
# of a layer), the largest product a device run has timed graph mode ahead of fused at; beyond it auto takes
# fused, as it would for any size no device run has covered.
GRAPH_MAX_PRODUCT = 1024 * 784 * 1024
FASTEST_FIRST = ("graph", "fused")
# Per-sample plain SGD, fastest first: each path and the VERIFIED names auto needs before it takes it.
PER_SAMPLE_FIRST = (("graph", frozenset({"per-sample-epochs"})), ("fused", frozenset({"fused", "per-sample"})))
# The engine each path runs, for batches and for per-sample plain SGD.
BATCH_ENGINES: dict[str, type[Engine]] = {"plain": PlainEngine, "fused": FusedEngine, "graph": GraphEngine}
PER_SAMPLE_ENGINES: dict[str, type[Engine]] = {"plain": PlainPerSample, "fused": KernelPerSample,
                                                "graph": PerSampleEpochEngine}


def why_not(path: str, net: Any, optimizer: Any, per_sample: bool = False, auto: bool = False) -> str | None:
    """None when ``path`` can run this configuration, else the reason it cannot; with ``auto``, also what keeps
    auto off a path that can run it: code no device run has verified (VERIFIED_RULES, VERIFIED_ACTIVATIONS)."""
    if path == "plain":
        return None
    if net.backend.name != "cupy":
        return f"it needs the cupy backend; the network is on {net.backend.name!r}"
    dropout = getattr(net, "has_dropout", False)  # a stand-in network without the attribute has none
    name = PER_SAMPLE_NAMES.get(path, path) if per_sample else path
    if auto and dropout and name not in VERIFIED_DROPOUT:
        return (f"no device run has verified dropout on the {name!r} path (select.VERIFIED_DROPOUT); "
                f"kernels={path!r} runs it when asked")
    uncoded = [a for a in (net.activation, net.output) if a not in OUTPUT_CODES]
    if uncoded:  # a table row with no C++ expressions
        return f"the kernels have no code for {uncoded[0]!r}"
    if not optimizer.folds_lr and rule_of(optimizer) is None:
        return f"the flat optimiser kernel implements {supported()}; got {type(optimizer).__name__}"
    if auto and not optimizer.folds_lr and rule_of(optimizer) not in VERIFIED_RULES:
        return (f"no device run has verified the kernels' {rule_of(optimizer)!r} rule (select.VERIFIED_RULES); "
                f"kernels={path!r} runs it when asked")
    unverified = [a for a in (net.activation, net.output) if a not in VERIFIED_ACTIVATIONS]
    if auto and unverified:
        return (f"no device run has verified {unverified[0]!r} on the kernels (select.VERIFIED_ACTIVATIONS); "
                f"kernels={path!r} runs it when asked")
    return None


def choose(kernels: str, net: Any, optimizer: Any, per_sample: bool = False) -> str:
    """The path that runs: "plain", "fused" or "graph"."""
    if kernels == "plain" or (kernels == "auto" and not VERIFIED):
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
    return next((p for p in allowed if p != skip and why_not(p, net, optimizer, per_sample, auto=True) is None),
                "plain")


def widest_product(net: Any, rows: int) -> int:
    """Multiply-adds of the largest product of a step on ``rows`` rows: rows x inputs x outputs of the widest layer."""
    return rows * max(a * b for a, b in zip(net.sizes, net.sizes[1:]))


def engine(net: Any, kernels: str | None, optimizer: Any, X: Array, T: Array, rows: int, per_sample: bool,
           step_calls: bool = False) -> Engine:
    """gpunet.train's engine; ``kernels`` None means the network's (deprecated) ``kernels=``. X, T: the whole
    training set; ``rows``: the rows a step takes (the batch size, or the per-sample chunk); ``step_calls``: the
    caller wants calls after every step, which whole-epoch engines, calling once an epoch, cannot make: auto
    passes them over."""
    requested = check_kernels(net.kernels if kernels is None else kernels, net.backend.name)
    path = choose(requested, net, optimizer, per_sample)
    if path == "graph" and requested == "auto" and (
            step_calls or (not per_sample and widest_product(net, rows) > GRAPH_MAX_PRODUCT)):
        path = _fastest(net, optimizer, per_sample, skip="graph")
    if per_sample and path != "plain" and per_sample_kernel.supports(net) is not None:
        path = "plain"  # the per-sample kernel covers one hidden layer that fits on chip: the rest take the plain path
    engines = PER_SAMPLE_ENGINES if per_sample else BATCH_ENGINES
    if path == "graph":
        try:
            return engines["graph"](net, optimizer, X, T, rows)
        except ValueError:  # a configuration graph mode does not support
            if requested == "graph":
                raise
            path = _fastest(net, optimizer, per_sample, skip="graph")
    return engines[path](net, optimizer, X, T, rows)
