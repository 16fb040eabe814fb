"""Every contender by name: gpunet's own paths and the article's plain code built here, the peers from peers.py."""

from __future__ import annotations

import numpy as np

from ..backend import cupy_unavailable_reason
from ..engines import select
from ..network import Network
from ..optim import SGD
from ..training import PER_SAMPLE_CHUNK, epoch_order
from .cases import LR, Case, one_hot_targets
from .harness import Builder, Contender, Run
from .peers import (
    jax_contender,
    missing,
    no_jax_gpu,
    no_torch_cuda,
    sklearn_contender,
    torch_compile_contender,
    torch_contender,
    torch_graph_contender,
)


def gpunet_contender(backend_name: str, kernels: str | None = None) -> Builder:
    """One epoch of gpunet's training as ``gpunet.train`` runs it, without train()'s per-call checks, upload and
    divergence guard: the engine ``kernels`` picks (``gpunet.engines.select.engine``, the one place that decides;
    None: "auto") over data and an order already on the device. The run's ``path`` names the engine."""
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
        net = Network.article(list(case.sizes), backend=backend_name, dtype=case.dtype)
        net.set_params(params)
        backend, opt = net.backend, SGD()
        Xd = backend.to_device(X, net.dtype)
        Td = backend.to_device(net.targets_from_labels(labels), net.dtype)
        per_sample = case.batch == 1  # plain SGD: train() takes the per-sample engines, a chunk of rows a step
        rows = PER_SAMPLE_CHUNK if per_sample else case.batch
        engine = select.engine(net, kernels or "auto", opt, Xd, Td, rows, per_sample)
        order = backend.to_device(epoch_order(0, 1, len(X)))  # gpunet.train's first epoch, seed 0
        loss_sum = backend.xp.zeros((), dtype=net.dtype)
        widest = select.widest_product(net, rows)

        def run() -> None:
            loss_sum.fill(0)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"), backend.products_of_size(widest):
                engine.run_epoch(order, LR, loss_sum)
        run.params = net.get_params  # type: ignore[attr-defined]
        run.path = engine.name  # type: ignore[attr-defined]
        return run
    return make


def textbook_contender(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
    """The article's code: column vectors, one sample at a time, in the case's dtype."""
    dt = np.dtype(case.dtype)
    W, V = params["W1"].T.astype(dt).copy(), params["W2"].T.astype(dt).copy()  # (H, N), (10, H)
    A, B = params["b1"].astype(dt)[:, None].copy(), params["b2"].astype(dt)[:, None].copy()
    T = one_hot_targets(labels, case.sizes[2], dt)
    Xc, lr = X.astype(dt), dt.type(LR)

    def sigma(z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z))

    def run() -> None:
        nonlocal W, V, A, B
        for i in range(len(Xc)):
            x, t = Xc[i][:, None], T[i][:, None]
            Q = sigma(W @ x + A)
            Y = sigma(V @ Q + B)
            G = (t - Y) * Y * (1 - Y)
            E = Q * (1 - Q) * (V.T @ G)
            V += lr * G @ Q.T
            W += lr * E @ x.T
            B += lr * G
            A += lr * E
    run.params = lambda: {"W1": W.T.copy(), "b1": A[:, 0].copy(), "W2": V.T.copy(),  # type: ignore[attr-defined]
                          "b2": B[:, 0].copy()}
    return run


CONTENDERS: dict[str, Contender] = {
    # name -> (builder, why it cannot run here or None)
    "gpunet-numpy": (gpunet_contender("numpy"), lambda: None),
    "gpunet-cupy": (gpunet_contender("cupy", "plain"), lambda: cupy_unavailable_reason()),
    "torch-cpu": (torch_contender("cpu"), lambda: missing("torch")),
    "torch-cuda": (torch_contender("cuda"), lambda: missing("torch") or no_torch_cuda()),
    "torch-cuda-graph": (torch_graph_contender("cuda"), lambda: missing("torch") or no_torch_cuda()),
    "sklearn": (sklearn_contender, lambda: missing("sklearn")),
    "textbook": (textbook_contender, lambda: None),
}
# The GPU benchmark's own contenders (run_gpu_benchmark); gpunet-numpy and the three above with cuda/cupy too.
GPU_CONTENDERS: dict[str, Contender] = {
    "gpunet-cupy-fused": (gpunet_contender("cupy", "fused"), lambda: cupy_unavailable_reason()),
    "gpunet-cupy-graph": (gpunet_contender("cupy", "graph"), lambda: cupy_unavailable_reason()),
    "gpunet-cupy-kernel": (gpunet_contender("cupy", "fused"), lambda: cupy_unavailable_reason()),
    "gpunet-cupy-auto": (gpunet_contender("cupy", "auto"), lambda: cupy_unavailable_reason()),
    "torch-compile": (torch_compile_contender("cuda"), lambda: missing("torch") or no_torch_cuda()),
    "jax-jit": (jax_contender(False), lambda: missing("jax") or no_jax_gpu()),
    "jax-scan": (jax_contender(True), lambda: missing("jax") or no_jax_gpu()),
}


def gpu_contender(name: str) -> Contender:
    """(builder, why it cannot run) for a GPU benchmark contender."""
    return GPU_CONTENDERS[name] if name in GPU_CONTENDERS else CONTENDERS[name]
