"""The fused training step on CuPy: the products by cuBLAS, the elementwise work by fused.cu's kernels.

Per layer the plain path of network.py makes several passes over each
activation (bias, activation, loss gradient, derivative, column sums, update);
here each becomes one kernel:

- forward: ``Z_i = A_{i-1} @ W_i`` (cuBLAS), then ``A_i = f(Z_i + b_i)`` in place (``bias_act``; ``bias_act_keep``
  also keeps ``Z_i + b_i`` for an activation whose derivative reads the layer's input, as silu's does);
- output: ``Y``, each row's loss (cross-entropy from the logits, as network.py) and ``delta_L`` in one pass
  (``output_layer``, softmax rows too);
- backward: ``dA_{i-1} = delta_i @ W_i^T`` (cuBLAS, before ``W_i`` changes), then
  ``delta_i = dA_i * f'(A_i)`` (or ``f'(Z_i)``, kept) with ``db_i`` = its column sums (``delta_bias``);
- update: plain SGD writes ``W_i -= A_{i-1}^T delta_i`` straight into the weights (cuBLAS gemm,
  alpha = -1, beta = 1; lr is folded into the deltas) and ``b_i -= sum delta_i`` in ``delta_bias``;
  every other optimiser gets its gradients in one flat buffer and steps in one launch (flat.py, optim.cu);
- dropout: a layer input ``A_{i-1}`` is multiplied by its mask (gpunet/dropout.py's generator, in ``xp`` code, as
  the plain path makes it) into a copy that the products read, and ``dA_{i-1}`` by the same mask before
  ``delta_bias``: the plain path's operations, elementwise on CuPy.

:class:`FusedStep` holds this sequence once, for any kernel set: :class:`CudaKernels`
on the device, the tests' ``transcriptions.NumpyKernels`` (the NumPy transcription) in the CPU tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from .kernels import ACT_CODES, C_TYPES, LOSS_CODES, OUTPUT_CODES, RULE_CODES, load
from .engine import StepEngine
from .flat import FlatOptimizer, FlatParameters, checked_rule


Array = Any
OUTPUT_LOSSES = [(o, loss) for o in OUTPUT_CODES for loss in ("squared", "absolute")] + [
    ("softmax", "cross-entropy"), ("sigmoid", "cross-entropy")]
THREADS = 256  # 8 warps: enough to hide memory latency, small enough that a block retires quickly
MAX_BLOCKS = 8192  # grid-stride beyond this: 8192 x 256 threads fill any current GPU several times over


def fused_expressions(ctype: str, activation: str, output: str, loss: str) -> list[str]:
    """fused.cu's instantiations one network needs."""
    a, o = ACT_CODES[activation], OUTPUT_CODES[output]
    forward = "bias_act" if ACTIVATIONS[activation].from_output else "bias_act_keep"
    return [f"{forward}<{ctype}, {a}>", f"output_layer<{ctype}, {o}, {LOSS_CODES[loss]}>",
            *(f"delta_bias<{ctype}, {code}, {u}>" for code in (a, ACT_CODES["identity"]) for u in ("true", "false"))]


def optim_expressions(ctype: str) -> list[str]:
    return [f"flat_step<{ctype}, {r}>" for r in RULE_CODES.values()]


# Every instantiation the Python side can ask for, by source: tests/test_cuda_compile.py compiles them all.
NAME_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "fused.cu": tuple(dict.fromkeys(
        e for c in C_TYPES.values() for act in HIDDEN_ACTIVATIONS for o, loss in OUTPUT_LOSSES
        for e in fused_expressions(c, act, o, loss))),
    "optim.cu": tuple(e for c in C_TYPES.values() for e in optim_expressions(c)),
}


# --- launch geometry, one function per kernel ------------------------------------------------------

def elementwise_geometry(total: int) -> tuple[tuple[int], tuple[int]]:
    """bias_act, flat_step: one thread per element, THREADS a block, grid-stride past MAX_BLOCKS blocks."""
    return (max(1, min(-(-total // THREADS), MAX_BLOCKS)),), (THREADS,)


def output_layer_geometry(rows: int) -> tuple[tuple[int], tuple[int]]:
    """output_layer: one warp per row (a row's max and sums are warp shuffles), THREADS / 32 rows a block."""
    per_block = THREADS // 32
    return (max(1, min(-(-rows // per_block), MAX_BLOCKS)),), (THREADS,)


def delta_bias_geometry(rows: int, cols: int) -> tuple[tuple[int], tuple[int, int]]:
    """delta_bias: blocks of (32, R), 32 adjacent columns (coalesced rows) by R row-walkers, one block per 32
    columns so each column sum is finished inside one block, in a fixed order: no atomics, the same result
    every run. R, a power of two <= 32 for the halving, gives each walker about 4 rows or more."""
    r = 1
    while r < 32 and 2 * r * 4 <= rows:
        r *= 2
    return (-(-cols // 32),), (32, r)


def flat_step_arguments(p: Array, g: Array, m: Array | None, v: Array | None, n_weights: int, lr: Array,
                        step: Array, done: Array, weight_decay: float, beta1: float, beta2: float,
                        eps: float) -> tuple[Any, ...]:
    """optim.cu flat_step's arguments, in its order and C types; p stands in for a state the rule lacks."""
    return (p, g, p if m is None else m, p if v is None else v, np.int64(p.size), np.int64(n_weights), lr, step,
            done, np.float64(weight_decay), np.float64(beta1), np.float64(beta2), np.float64(eps))


def workspace_shapes(sizes: list[int], rows: int, keep_input: bool = False) -> dict[str, tuple[int, ...]]:
    """The arrays one step of ``rows`` rows needs besides the parameters: each layer's activation (A_L holds
    Z_L, then delta_L), each hidden layer's dA (then its delta), with ``keep_input`` each hidden layer's input
    Z_i + b_i, and the rows' losses."""
    shapes: dict[str, tuple[int, ...]] = {f"A{i}": (rows, sizes[i]) for i in range(1, len(sizes))}
    shapes.update({f"dA{i}": (rows, sizes[i]) for i in range(1, len(sizes) - 1)})
    if keep_input:
        shapes.update({f"Z{i}": (rows, sizes[i]) for i in range(1, len(sizes) - 1)})
    shapes["loss"] = (rows,)
    return shapes


# --- the step --------------------------------------------------------------------------------------

class FusedStep:
    """One network's fused training step over a kernel set; buffers are kept per batch size."""

    def __init__(self, net: Any, kernels: Any) -> None:
        self.net, self.kernels = net, kernels
        self.workspaces: dict[int, dict[str, Array]] = {}  # rows -> workspace_shapes' arrays
        self.flat: FlatParameters | None = None  # made at the first step that needs gradients in one buffer
        self.optimizer: FlatOptimizer | None = None

    def workspace(self, rows: int) -> dict[str, Array]:
        if rows not in self.workspaces:  # an epoch's full batches and its last, shorter one
            xp, dtype = self.kernels.xp, self.net.dtype
            shapes = workspace_shapes(self.net.sizes, rows, not ACTIVATIONS[self.net.activation].from_output)
            self.workspaces[rows] = {k: xp.empty(s, dtype=dtype) for k, s in shapes.items()}
        return self.workspaces[rows]

    def __call__(self, X: Array, T: Array, lr: float, optimizer: Any) -> Array:
        """One step on the mean per-sample loss; returns the rows' summed loss before it (0-d, on the device)."""
        net, k, xp = self.net, self.kernels, self.kernels.xp
        L, n = net.n_layers, X.shape[0]
        folds = optimizer.folds_lr  # plain SGD: lr into the deltas, updates straight into W and b
        grads: dict[str, Array] = {}  # the flat gradient buffer's views, where the update is not folded in
        flat_optimizer: FlatOptimizer | None = None  # None: plain SGD, its update folded into the products
        if not folds:
            checked_rule(optimizer, "kernels='fused'")
            if self.flat is None or self.optimizer is None:  # made together
                self.flat = FlatParameters(net.params, xp, net.packed)
                self.optimizer = FlatOptimizer(self.flat, k)
            self.flat.adopt(net.params)
            grads, flat_optimizer = self.flat.grad_views, self.optimizer
        P, work = net.params, self.workspace(n)
        keep = not ACTIVATIONS[net.activation].from_output  # f' reads Z_i + b_i: keep it beside A_i
        # dropout's masks, keyed by the step count before this step, as Network.train_step_unchecked's
        masks = net.dropout_masks(optimizer.t, n) if net.has_dropout else [None] * L
        As, Ins, kept = [X], [], [None]  # Ins[i - 1]: what layer i multiplies; kept[i]: where delta_bias reads f'
        for i in range(1, L + 1):
            Ins.append(As[-1] if masks[i - 1] is None else self._dropped(work, i - 1, As[-1], masks[i - 1]))
            Z = xp.matmul(Ins[-1], P[f"W{i}"], out=work[f"A{i}"])  # (N, n_{i-1}) @ (n_{i-1}, n_i)
            if i < L and keep:
                k.bias_act_keep(Z, P[f"b{i}"], work[f"Z{i}"], net.activation)  # Z_i += b_i kept, A_i = f(Z_i)
            elif i < L:
                k.bias_act(Z, P[f"b{i}"], net.activation)  # A_i = f(Z_i + b_i)
            As.append(Z)
            kept.append(work[f"Z{i}"] if keep and i < L else Z)
        k.output_layer(As[L], P[f"b{L}"], T, work["loss"], net.output, net.loss_name, (lr if folds else 1.0) / n)
        loss = work["loss"].sum()
        delta = As[L]  # delta_L = dL/dZ_L (times lr for plain SGD)
        for i in range(L, 0, -1):
            if i < L:  # delta_i = dA_i * f'(A_i), and its column sums
                delta = work[f"dA{i}"]
                if masks[i] is not None:  # d(A_i * mask)/dA_i = mask
                    delta *= masks[i]
                k.delta_bias(delta, kept[i], P[f"b{i}"] if folds else grads[f"b{i}"], net.activation, folds)
            else:
                k.delta_bias(delta, delta, P[f"b{i}"] if folds else grads[f"b{i}"], "identity", folds)
            if i > 1:  # dA_{i-1} = delta_i @ W_i^T: (N, n_i) @ (n_i, n_{i-1}), with W_i before its update
                xp.matmul(delta, P[f"W{i}"].T, out=work[f"dA{i - 1}"])
            if folds:
                k.gemm_update(Ins[i - 1], delta, P[f"W{i}"])  # W_i -= A_{i-1}^T delta_i
            else:
                xp.matmul(Ins[i - 1].T, delta, out=grads[f"W{i}"])  # dW_i: (n_{i-1}, N) @ (N, n_i)
        if flat_optimizer is None:
            optimizer.count(1)
        else:
            flat_optimizer.step(optimizer, lr)
        return loss


    def _dropped(self, work: dict[str, Array], layer: int, A: Array, mask: Array) -> Array:
        """``A * mask`` into the workspace's kept copy of layer input ``layer`` (made at its first use)."""
        key = f"In{layer}"
        if key not in work:
            work[key] = self.kernels.xp.empty_like(A)
        return self.kernels.xp.multiply(A, mask, out=work[key])


class CudaKernels:
    """fused.cu's and optim.cu's kernels for one network's configuration, compiled by NVRTC (gpunet.engines.load)."""

    def __init__(self, backend: Any, dtype: Any, activation: str, output: str, loss: str) -> None:
        self.xp = backend.xp
        self.dtype = np.dtype(dtype)
        self._cublas = backend.cublas
        ctype = C_TYPES[self.dtype.name]
        fused = load(backend, "fused.cu", fused_expressions(ctype, activation, output, loss))
        optim = load(backend, "optim.cu", optim_expressions(ctype))
        a, o = ACT_CODES[activation], OUTPUT_CODES[output]
        forward = "bias_act" if ACTIVATIONS[activation].from_output else "bias_act_keep"
        self._bias_act = fused.get_function(f"{forward}<{ctype}, {a}>")
        self._output = fused.get_function(f"output_layer<{ctype}, {o}, {LOSS_CODES[loss]}>")
        self._delta_bias = {(act, u): fused.get_function(f"delta_bias<{ctype}, {ACT_CODES[act]}, {str(u).lower()}>")
                            for act in (activation, "identity") for u in (True, False)}
        self._flat_step = {r: optim.get_function(f"flat_step<{ctype}, {c}>") for r, c in RULE_CODES.items()}

    def bias_act(self, Z: Array, b: Array, act: str) -> None:
        rows, cols = Z.shape
        self._bias_act(*elementwise_geometry(rows * cols), (Z, b, np.int64(rows), np.int32(cols)))

    def bias_act_keep(self, Z: Array, b: Array, Zk: Array, act: str) -> None:
        rows, cols = Z.shape
        self._bias_act(*elementwise_geometry(rows * cols), (Z, b, Zk, np.int64(rows), np.int32(cols)))

    def output_layer(self, Z: Array, b: Array, T: Array, loss: Array, output: str, loss_name: str,
                     scale: float) -> None:
        rows, cols = Z.shape
        self._output(*output_layer_geometry(rows),
                     (Z, b, T, loss, np.int64(rows), np.int32(cols), self.dtype.type(scale)))

    def delta_bias(self, dA: Array, A: Array, db: Array, act: str, update: bool) -> None:
        rows, cols = dA.shape
        grid, block = delta_bias_geometry(rows, cols)
        self._delta_bias[act, update](grid, block, (dA, A, db, np.int64(rows), np.int32(cols)),
                                      shared_mem=block[0] * block[1] * self.dtype.itemsize)

    def gemm_update(self, A: Array, delta: Array, W: Array) -> None:
        self._cublas.gemm("T", "N", A, delta, out=W, alpha=-1.0, beta=1.0)  # W = -A^T delta + W

    def flat_step(self, rule: str, p: Array, g: Array, m: Array | None, v: Array | None, n_weights: int,
                  lr: Array, step: Array, done: Array, weight_decay: float, beta1: float, beta2: float,
                  eps: float) -> None:
        self._flat_step[rule](*elementwise_geometry(p.size), flat_step_arguments(
            p, g, m, v, n_weights, lr, step, done, weight_decay, beta1, beta2, eps))


class FusedEngine(StepEngine):
    """Batch steps by :class:`FusedStep` on :class:`CudaKernels` (the cupy backend only)."""

    name = "fused"

    def __init__(self, net: Any, optimizer: Any, X: Array, T: Array, rows: int) -> None:
        super().__init__(net, optimizer, X, T, rows)
        if not optimizer.folds_lr:
            checked_rule(optimizer, "kernels='fused'")
        kernels = CudaKernels(net.backend, net.dtype, net.activation, net.output, net.loss_name)
        self.fused = FusedStep(net, kernels)

    def step(self, X: Array, T: Array, lr: float) -> Array:
        return self.fused(X, T, lr, self.optimizer)
