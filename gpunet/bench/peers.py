"""The peers gpunet is timed against: PyTorch (eager, CUDA graph, torch.compile), JAX and scikit-learn."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

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


class _Torch(NamedTuple):
    """A PyTorch contender's pieces on one device: the network and its optimiser, the data, and the epoch's
    order as a (steps, batch) tensor of row indices and its partial last batch (None if there is none)."""

    torch: Any
    model: Any
    opt: Any
    Xt: Any
    Tt: Any
    batches: Any
    tail: Any
    get: Callable[[], dict[str, np.ndarray]]

    def loss_of(self, x: Any, t: Any) -> Any:  # gpunet's loss: mean over rows of 1/2 sum (t - y)^2
        return 0.5 * ((self.model(x) - t) ** 2).sum(dim=1).mean()

    def step(self, idx: Any) -> None:
        """One SGD step on the rows ``idx``: gather, forward, backward, update (all queued on the device)."""
        self.opt.zero_grad(set_to_none=False)
        self.loss_of(self.Xt.index_select(0, idx), self.Tt.index_select(0, idx)).backward()
        self.opt.step()


def _torch_setup(case: Case, X: np.ndarray, labels: np.ndarray, params: dict, device: str) -> _Torch:
    """The network (gpunet's parameters), its SGD, the data and gpunet.train's first-epoch order on ``device``."""
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
    full = len(X) // case.batch * case.batch  # rows in full batches; the rest is one shorter step
    batches = order[:full].reshape(-1, case.batch)
    tail = order[full:] if full < len(X) else None

    def get() -> dict[str, np.ndarray]:
        return {f"{w}{k}": getattr(layer, attr).detach().cpu().numpy().T.copy() if w == "W"
                else getattr(layer, attr).detach().cpu().numpy().copy()
                for layer, k in ((model[0], "1"), (model[2], "2")) for w, attr in (("W", "weight"), ("b", "bias"))}
    return _Torch(torch, model, opt, Xt, Tt, batches, tail, get)


def _torch_load(torch: Any, model: Any, params: dict) -> None:
    """Copy gpunet-layout parameters into the two Linear layers, in place (a captured graph keeps their memory)."""
    with torch.no_grad():
        for layer, k in ((model[0], "1"), (model[2], "2")):
            layer.weight.copy_(torch.from_numpy(params[f"W{k}"].T.copy()))
            layer.bias.copy_(torch.from_numpy(params[f"b{k}"]))


def torch_contender(device: str) -> Builder:
    """PyTorch SGD on ``device``, eager: a step per batch, each gathering its rows on the device."""
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
        s = _torch_setup(case, X, labels, params, device)
        each = list(s.batches) + ([s.tail] if s.tail is not None else [])  # sliced before the clock starts

        def run() -> None:
            for idx in each:
                s.step(idx)
        run.params = s.get  # type: ignore[attr-defined]
        return run
    return make


# Steps one captured graph holds at most. An epoch of fewer (every batch case: 938 steps at batch 64) is one
# graph, its partial last batch included, replayed once an epoch, as gpunet's graph mode does; a per-sample epoch
# (60,000 steps) replays a graph of GRAPH_STEPS steps 60 times rather than capture some million nodes in one.
GRAPH_STEPS = 1000


def graph_segments(steps: int, tail: bool, most: int = GRAPH_STEPS) -> list[tuple[int, int, bool]]:
    """An epoch of ``steps`` full batches (and a partial last one if ``tail``) as graphs of at most ``most``
    steps: (first step, full steps, with the partial batch) for each replay, in order."""
    if steps + tail <= most:
        return [(0, steps, tail)]
    segments = [(lo, most, False) for lo in range(0, steps - most + 1, most)]
    done = len(segments) * most
    return segments + ([(done, steps - done, tail)] if done < steps or tail else [])


def torch_graph_contender(device: str, most_steps: int = GRAPH_STEPS) -> Builder:
    """PyTorch SGD with the whole epoch captured in a CUDA graph: every step's gather, forward, backward and
    update, replayed once a run (per-sample: graphs of ``most_steps`` steps, see GRAPH_STEPS). The captured
    function reads the epoch's order from a device buffer, copied in before each replay (one small copy).

    On the CPU nothing can be captured: the same function runs eagerly, so the tests hold what the GPU
    captures to gpunet's training."""
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
        s = _torch_setup(case, X, labels, params, device)
        torch = s.torch
        segments = graph_segments(s.batches.shape[0], s.tail is not None, most_steps)
        # One function (and on the GPU one graph) per distinct segment shape, each with its own index buffer.
        shapes = {(k, with_tail) for _, k, with_tail in segments}
        buffers = {shape: s.batches[: shape[0]].clone() for shape in shapes}

        def segment(shape: tuple[int, bool]) -> Callable[[], None]:
            idx, (k, with_tail) = buffers[shape], shape

            def steps() -> None:  # what the GPU captures
                for i in range(k):
                    s.step(idx[i])
                if with_tail:
                    s.step(s.tail)
            return steps
        replays = {shape: segment(shape) for shape in shapes}
        if device == "cuda":
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up on a side stream before capture, as the PyTorch docs say
                for steps in replays.values():
                    steps()
            torch.cuda.current_stream().wait_stream(side)
            for shape, steps in list(replays.items()):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):  # recorded, not run
                    steps()
                replays[shape] = g.replay
            _torch_load(torch, s.model, params)  # the warm-up trained: start again from the case's parameters
            torch.cuda.synchronize()

        def run() -> None:
            for lo, k, with_tail in segments:
                buffers[k, with_tail].copy_(s.batches[lo : lo + k])
                replays[k, with_tail]()
        run.params = s.get  # type: ignore[attr-defined]
        return run
    return make


def torch_compile_step(s: _Torch) -> Callable[[Any], None]:
    """The whole SGD step as one function for torch.compile: gather, forward, gradients (torch.func.grad, so
    that Dynamo traces one graph: a .backward() call would break it) and the update, SGD's foreach form,
    in place on the model's parameters."""
    torch = s.torch
    from torch.func import functional_call, grad

    params = dict(s.model.named_parameters())
    names, tensors = list(params), list(params.values())

    def loss(p: dict, x: Any, t: Any) -> Any:  # gpunet's loss: mean over rows of 1/2 sum (t - y)^2
        return 0.5 * ((functional_call(s.model, p, (x,)) - t) ** 2).sum(dim=1).mean()

    def step(idx: Any) -> None:
        g = grad(loss)(params, s.Xt.index_select(0, idx), s.Tt.index_select(0, idx))
        with torch.no_grad():
            torch._foreach_add_(tensors, [g[n] for n in names], alpha=-LR)
    return step


def torch_compile_contender(device: str = "cuda", backend: str = "inductor") -> Builder:
    """The whole step (gather, forward, backward, SGD update) compiled by torch.compile in one graph
    (fullgraph=True), in its CUDA-graph mode (mode="reduce-overhead") on the GPU. The partial last batch
    runs the same function uncompiled (another shape would compile again). ``backend`` other than inductor:
    for the CPU tests, which check the traced function trains what gpunet trains."""
    def make(case: Case, X: np.ndarray, labels: np.ndarray, params: dict) -> Run:
        s = _torch_setup(case, X, labels, params, device)
        torch = s.torch
        step = torch_compile_step(s)
        mode = {"mode": "reduce-overhead"} if device == "cuda" and backend == "inductor" else {}
        compiled = torch.compile(step, fullgraph=True, backend=backend, **mode)
        each = list(s.batches)  # sliced before the clock starts
        from torch._dynamo.utils import counters

        skips = counters["inductor"]["cudagraph_skips"]  # inductor counts each graph it runs without CUDA graphs

        def run() -> None:
            for idx in each:
                torch.compiler.cudagraph_mark_step_begin()
                compiled(idx)
            if s.tail is not None:
                step(s.tail)

        def note() -> str:  # asked after the warm-up, which compiled
            if not mode:
                return f"compiled by {backend}, no CUDA graphs (not on CUDA, or not inductor)"
            skipped = counters["inductor"]["cudagraph_skips"] - skips
            return ("inductor skipped CUDA graphs (its log says why)" if skipped else
                    "compiled by inductor into CUDA graphs (mode reduce-overhead)")
        run.params = s.get  # type: ignore[attr-defined]
        run.note = note  # type: ignore[attr-defined]
        return run
    return make


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
    except Exception as exc:  # noqa: BLE001 -- RuntimeError: no GPU platform; ImportError: a broken install
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
            state["p"] = p

        def finish() -> None:  # JAX dispatches asynchronously: the clock waits for the epoch's parameters
            jax.block_until_ready(state["p"])  # CPU-GPU sync point
        run.finish = finish  # type: ignore[attr-defined]
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
