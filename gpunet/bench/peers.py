"""The peers gpunet is timed against: PyTorch (eager, CUDA graph, torch.compile), JAX and scikit-learn."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import warnings
from typing import Any

import numpy as np

from ..training import epoch_order
from .cases import LR, Case, one_hot_targets
from .harness import Builder, Run


def missing(module: str) -> str | None:
    """Why a peer cannot run: its module is not installed (None: it is)."""
    return None if importlib.util.find_spec(module) is not None else f"{module} is not installed"


def versions() -> dict[str, str]:
    """The installed peers' versions (PyTorch, scikit-learn), for the results' machine record."""
    return {module: importlib.metadata.version(dist) for module, dist in (("torch", "torch"), ("sklearn", "scikit-learn"))
            if importlib.util.find_spec(module) is not None}


# --- PyTorch -------------------------------------------------------------------------------------

def no_torch_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "PyTorch sees no CUDA device"


def _torch_setup(case: Case, X: np.ndarray, labels: np.ndarray, params: dict, device: str) -> tuple[Any, ...]:
    """(torch, model, opt, step, loss_of, Xt, Tt, order, params getter): the network, data and row order on
    ``device``."""
    import torch

    dt = getattr(torch, case.dtype)
    n_in, h, n_out = case.sizes
    model = torch.nn.Sequential(torch.nn.Linear(n_in, h), torch.nn.Sigmoid(),
                                torch.nn.Linear(h, n_out), torch.nn.Sigmoid()).to(device, dt)
    _torch_load(torch, model, params)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    Xt = torch.tensor(X, dtype=dt, device=device)
    Tt = torch.tensor(one_hot_targets(labels, n_out, np.float64), dtype=dt, device=device)
    order = torch.from_numpy(epoch_order(0, 1, len(X))).to(device)  # gpunet.train's first epoch, seed 0

    def loss_of(x: Any, t: Any) -> Any:  # gpunet's loss: mean over rows of 1/2 sum (t - y)^2
        return 0.5 * ((model(x) - t) ** 2).sum(dim=1).mean()

    def step(x: Any, t: Any) -> None:
        opt.zero_grad(set_to_none=False)
        loss_of(x, t).backward()
        opt.step()

    def get() -> dict[str, np.ndarray]:
        return {f"{w}{k}": getattr(layer, attr).detach().cpu().numpy().T.copy() if w == "W"
                else getattr(layer, attr).detach().cpu().numpy().copy()
                for layer, k in ((model[0], "1"), (model[2], "2")) for w, attr in (("W", "weight"), ("b", "bias"))}
    return torch, model, opt, step, loss_of, Xt, Tt, order, get


def _torch_load(torch: Any, model: Any, params: dict) -> None:
    """Copy gpunet-layout parameters into the two Linear layers, in place (a captured graph keeps their memory)."""
    with torch.no_grad():
        for layer, k in ((model[0], "1"), (model[2], "2")):
            layer.weight.copy_(torch.from_numpy(params[f"W{k}"].T.copy()))
            layer.bias.copy_(torch.from_numpy(params[f"b{k}"]))


def torch_contender(device: str, graph: bool) -> Builder:
    """PyTorch SGD on ``device``, a step per batch: eager, or (``graph``) the step captured in a CUDA graph."""
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
        torch, model, _, step, _, Xt, Tt, order, get = _torch_setup(case, X, labels, params, device)
        full = len(X) // case.batch * case.batch  # rows in full batches; the rest is one shorter step

        def sync() -> None:
            if device == "cuda":
                torch.cuda.synchronize()  # CPU-GPU sync point: the clock stops after the work

        if not graph:
            def run() -> None:
                for lo in range(0, len(X), case.batch):
                    idx = order[lo : lo + case.batch]
                    step(Xt[idx], Tt[idx])
                sync()
            run.params = get  # type: ignore[attr-defined]
            return run

        sx, st = Xt[: case.batch].clone(), Tt[: case.batch].clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up on a side stream before capture, as the PyTorch docs say
            for _ in range(3):
                step(sx, st)
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):  # recorded, not run
            step(sx, st)
        _torch_load(torch, model, params)  # the warm-up trained: start again from the case's parameters

        def replay() -> None:
            for lo in range(0, full, case.batch):
                idx = order[lo : lo + case.batch]
                sx.copy_(Xt[idx])
                st.copy_(Tt[idx])
                g.replay()
            if full < len(X):  # the partial last batch, eagerly
                idx = order[full:]
                step(Xt[idx], Tt[idx])
            sync()
        replay.params = get  # type: ignore[attr-defined]
        return replay
    return make


def torch_compile_contender(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
    """The loss's forward and backward through torch.compile(mode="reduce-overhead") (CUDA graphs
    inside); the SGD update eager. The partial last batch runs eagerly (another shape would recompile)."""
    torch, model, opt, step, loss_of, Xt, Tt, order, get = _torch_setup(case, X, labels, params, "cuda")
    compiled = torch.compile(loss_of, mode="reduce-overhead")
    full = len(X) // case.batch * case.batch
    for p in model.parameters():  # else the first backward makes each .grad the graph's own output, which the
        p.grad = torch.zeros_like(p)  # next replay overwrites, and PyTorch raises on reading it

    def run() -> None:
        for lo in range(0, full, case.batch):
            idx = order[lo : lo + case.batch]
            torch.compiler.cudagraph_mark_step_begin()
            opt.zero_grad(set_to_none=False)
            compiled(Xt[idx], Tt[idx]).backward()
            opt.step()
        if full < len(X):
            idx = order[full:]
            step(Xt[idx], Tt[idx])
        torch.cuda.synchronize()  # CPU-GPU sync point
    run.params = get  # type: ignore[attr-defined]
    return run


# --- JAX -----------------------------------------------------------------------------------------

def import_jax() -> tuple[Any, Any]:
    """(jax, jax.numpy), set to share the GPU and to compute float32 products in full."""
    # JAX takes 75% of the GPU's memory at start-up unless told not to; CuPy and PyTorch share the device.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", "highest")  # full float32 products, no TF32
    return jax, jnp


def no_jax_gpu() -> str | None:
    try:
        jax, _ = import_jax()
        jax.devices("gpu")
    except Exception as exc:  # RuntimeError: no GPU platform; ImportError: a broken install
        return f"JAX sees no GPU: {' '.join(str(exc).split())[:200]}"
    return None


def jax_contender(scan: bool, platform: str = "gpu") -> Builder:
    """A jitted SGD step called once per batch, or (``scan``) the whole epoch in one ``lax.scan``."""
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
        if case.dtype != "float32":
            raise ValueError(f"the JAX contenders run float32 only; got {case.dtype}")
        jax, jnp = import_jax()
        device = jax.devices(platform)[0]

        def put(a: np.ndarray, dtype: Any = np.float32) -> Any:
            return jax.device_put(np.asarray(a, dtype=dtype), device)

        state = {"p": {k: put(v) for k, v in params.items()}}
        Xd, Td = put(X), put(one_hot_targets(labels, case.sizes[2], np.float32))
        order = epoch_order(0, 1, len(X)).astype(np.int32)  # gpunet.train's first epoch, seed 0
        full = len(X) // case.batch * case.batch
        batches = put(order[:full].reshape(-1, case.batch), np.int32)
        tail = put(order[full:], np.int32) if full < len(X) else None

        def loss(p: dict, x: Any, t: Any) -> Any:  # gpunet's loss: mean over rows of 1/2 sum (t - y)^2
            A1 = jax.nn.sigmoid(x @ p["W1"] + p["b1"])
            Y = jax.nn.sigmoid(A1 @ p["W2"] + p["b2"])
            return 0.5 * jnp.sum((Y - t) ** 2) / x.shape[0]

        def step(p: dict, X: Any, T: Any, idx: Any) -> dict:  # the data are arguments, not baked-in constants
            g = jax.grad(loss)(p, jnp.take(X, idx, axis=0), jnp.take(T, idx, axis=0))
            return jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)

        step_jit = jax.jit(step)
        epoch = jax.jit(lambda p, X, T, batches: jax.lax.scan(lambda q, idx: (step(q, X, T, idx), None), p, batches)[0])
        each = [batches[i] for i in range(batches.shape[0])] if not scan else []  # sliced before the clock starts

        def run() -> None:
            p = state["p"]
            if scan:
                p = epoch(p, Xd, Td, batches)
            else:
                for idx in each:
                    p = step_jit(p, Xd, Td, idx)
            if tail is not None:
                p = step_jit(p, Xd, Td, tail)
            state["p"] = jax.block_until_ready(p)  # CPU-GPU sync point
        run.params = lambda: {k: np.asarray(v) for k, v in state["p"].items()}  # type: ignore[attr-defined]
        return run
    return make


# --- scikit-learn --------------------------------------------------------------------------------

def sklearn_contender(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
    """MLPClassifier with SGD and logistic units; its loss is cross-entropy on a softmax output, not gpunet's."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    Xc = X.astype(case.dtype)

    def run() -> None:
        clf = MLPClassifier(hidden_layer_sizes=(case.sizes[1],), activation="logistic", solver="sgd",
                            batch_size=case.batch, learning_rate_init=LR, momentum=0.0, alpha=0.0,
                            max_iter=1, shuffle=True, random_state=0, tol=0.0, n_iter_no_change=10**9)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Xc, labels)
    return run
