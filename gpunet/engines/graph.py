"""Graph mode: an epoch of training steps captured once into a CUDA graph, then replayed every epoch.

A step is most often 2L + 1 launches of gemm.cu's kernels for L layers (no cuBLAS: CuPy's cuBLAS wrappers
refuse stream capture): gather the batch's inputs and targets on the device (one launch); a forward product
per layer with bias and activation fused (forward_keep also keeps the layer's input Z_i where its
activation's derivative reads that, as silu's does), the output layer's running the output delta and per-row
loss (cross-entropy from the logits, as in the plain path) in the same launch (forward_output) where its
product is one column tile; per layer from the top, the backward product with f' fused (at Z_i where kept);
then, once every backward has read its W_i, every layer's weight-gradient product with the SGD update fused,
its bias's gradient and update in the same product (a row of ones appended to the activations), in one
launch (weight_grads; weight_grad for a lone layer). An output layer wider than a tile, or register-tiled, takes its forward and
output_delta as two launches, and layers at both product forms (R, below) take one weight-gradient launch
per form. Each row's loss goes to an epoch-long buffer, summed once at the epoch's end. Momentum and Adam
write the gradients instead, into flat.py's one buffer, and step every parameter in one launch of optim.cu's
flat_step, which reads lr and the step count from device memory and advances the count itself. The whole
training set, the epoch's permutation and lr live in device buffers the graph reads, so an epoch costs two
small copies (three with dropout: the step count) and one graph launch, with no host round trip.

Dropout (a network with ``dropout``): fused.cu's dropout_apply writes a dropped layer input ``In_l = A_l * mask_l``
after the launch that makes A_l (the gather for the inputs, the layer's forward for a hidden layer), and the
products read In_l (the next forward, the weight gradient) where the plain path reads its dropped input; after
the backward product that writes delta_l, the same launch multiplies it by mask_l in place. The masks are
gpunet/dropout.py's, keyed as the plain path keys them (the optimiser's step count before the step, each row's
place in its batch): the count before the epoch is in device memory (``buffers["step"]``, written each epoch as
lr is) and each step's launches add its place in the epoch, so a replay draws its own epoch's masks.

Every buffer is allocated in ``GraphTrainer.__init__``, before any capture, and kept in
``GraphTrainer.buffers`` (and its ``flat`` parameters, gradients and optimiser state) as long as the
trainer (and so its graphs) lives: an array freed during capture would go back to CuPy's memory pool, and
the replay would write into memory reused by something else. ``net.params`` are views into the network's own flat
buffer (``net.packed``) from its construction, and the optimiser's state becomes views into flat buffers; an
entry rebound since (a user's assignment, a restored optimiser state) is copied back in before the next replay.
``GraphTrainer(..., launcher=f)`` hands each launch, in order, to ``f`` instead, with no compile and no graph:
the CPU tests pass the kernels' NumPy transcriptions (tests/transcriptions.py) and hold the result to
network.py's plain path. Measured figures and the device runs that verified graph mode: see docs/benchmarks.md.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, NamedTuple

import numpy as np

from .. import dropout as drop
from ..activations import ACTIVATIONS, FUSED, HIDDEN_ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS
from ..checks import check_int, check_number
from ..network import Network
from ..optim import Optimizer
from .kernels import ACT_CODES, C_TYPES, LOSS_CODES, OUTPUT_CODES, READ_OFF_OUTPUT, load
from .engine import Engine
from .flat import FlatOptimizer, FlatParameters, checked_rule
from .fused import RULE_CODES, FusedEngine, elementwise_geometry, flat_step_arguments
from .gemm import GRAD_WRITE, LOSS_THREADS, MAX_LAYERS, RTILE, SGD_DECAY, SGD_FOLDED, TILE, WeightGradLayer

Array = Any
# One layer's weight_grad arguments: A_{i-1}, delta_i, (W_i, dW_i), (b_i, db_i)
LayerArguments = tuple[Array, Array, tuple[Array, Array], tuple[Array, Array]]
# Every (output, loss) pair the kernels have code for: those read off the output, the fused cross-entropies, then
# the outputs whose derivative reads Z_L (output_row's first branch).
PAIRS = [(o, loss) for o in OUTPUT_ACTIVATIONS if o in READ_OFF_OUTPUT for loss in LOSSES] + list(FUSED) + [
    (o, loss) for o in OUTPUT_ACTIVATIONS if o in OUTPUT_CODES and o not in READ_OFF_OUTPUT for loss in LOSSES]
# The hidden activations whose derivative reads the layer's input Z_i: forward_keep keeps it for backward.
KEEP_INPUT = tuple(a for a in HIDDEN_ACTIVATIONS if a in ACT_CODES and not ACTIVATIONS[a].from_output)
MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y: the rows of a product, in tiles
# Products of at least this many elements run register-tiled (R = RTILE: RTILE x RTILE elements a thread, a
# 64 x 64 tile a block): at least 128 such blocks. At one element a thread each product element costs a
# load from shared memory per multiply-add, which dominates large products (see docs/benchmarks.md).
BIG_PRODUCT = 1 << 19
ELEMENT_THREADS = 256  # gather_rows, output_delta: one thread per element or row
SOURCE = "gemm.cu"
DROPOUT_SOURCE = "fused.cu"  # dropout_apply, an elementwise kernel beside fused.cu's others
OPTIM_SOURCE = "optim.cu"  # flat_step, for momentum and Adam: fused.py's NAME_EXPRESSIONS has its instantiations


def _output_forward_act(output: str, loss: str) -> int:
    """The output layer's forward epilogue: the identity where output_delta applies the output activation
    itself, so A_L holds the logits Z_L there: softmax (it needs the whole row), every fused cross-entropy
    pair (its loss comes from Z_L, as in the plain path) and an output whose derivative reads Z_L; the output
    activation elsewhere."""
    if output == "softmax" or (output, loss) in FUSED or not ACTIVATIONS[output].from_output:
        return ACT_CODES["identity"]
    return ACT_CODES[output]


# Every template instantiation of gemm.cu GraphTrainer may load (gpunet.engines.name_expressions' convention);
# the shared compile test compiles exactly these.
EXPRESSIONS = [
    *(f"gather_rows<{t}>" for t in C_TYPES.values()),
    *(f"forward<{t}, {a}, {r}>" for t in C_TYPES.values()
      for a in sorted(c for name, c in ACT_CODES.items() if name in READ_OFF_OUTPUT) for r in (1, RTILE)),
    *(f"forward_keep<{t}, {ACT_CODES[a]}, {r}>" for t in C_TYPES.values() for a in KEEP_INPUT for r in (1, RTILE)),
    *(f"output_delta<{t}, {OUTPUT_CODES[o]}, {LOSS_CODES[loss]}>" for t in C_TYPES.values() for o, loss in PAIRS),
    *(f"loss_total<{t}>" for t in C_TYPES.values()),
    *(f"backward<{t}, {ACT_CODES[a]}, {r}>" for t in C_TYPES.values() for a in HIDDEN_ACTIVATIONS if a in ACT_CODES
      for r in (1, RTILE)),
    *(f"weight_grad<{t}, {m}, {r}>" for t in C_TYPES.values() for m in (GRAD_WRITE, SGD_FOLDED, SGD_DECAY)
      for r in (1, RTILE)),
    # the output layer's forward with its output delta; every layer's weight_grad in one launch
    *(f"forward_output<{t}, {_output_forward_act(o, loss)}, {OUTPUT_CODES[o]}, {LOSS_CODES[loss]}>"
      for t in C_TYPES.values() for o, loss in PAIRS),
    *(f"weight_grads<{t}, {m}, {r}>" for t in C_TYPES.values() for m in (GRAD_WRITE, SGD_FOLDED, SGD_DECAY)
      for r in (1, RTILE)),
]
DROPOUT_EXPRESSIONS = [f"dropout_apply<{t}>" for t in C_TYPES.values()]
NAME_EXPRESSIONS = {SOURCE: tuple(EXPRESSIONS), DROPOUT_SOURCE: tuple(DROPOUT_EXPRESSIONS)}


class Launch(NamedTuple):
    """One kernel launch of a step: the kernel, its template parameters, geometry and arguments."""

    kernel: str  # e.g. "forward"
    dtype: str  # "float32" or "float64": the first template parameter
    params: dict[str, int]  # the other template parameters, in order, by name
    grid: tuple[int, ...]
    block: tuple[int, ...]
    args: tuple[Any, ...]
    source: str = SOURCE  # the CUDA file that defines the kernel

    @property
    def expression(self) -> str:
        """The name expression NVRTC instantiates, e.g. "forward<float, 0, 1>"."""
        return f"{self.kernel}<{', '.join([C_TYPES[self.dtype], *map(str, self.params.values())])}>"

    def kernel_args(self) -> tuple[Any, ...]:
        """The arguments as the kernel takes them: ``args``, with weight_grads' layers packed into the struct
        it takes by value (a launcher gets ``args`` as they are)."""
        if self.kernel != "weight_grads":
            return self.args
        return (pack_layers(self.args[0]), *self.args[1:])


# gemm.cu's WeightGradLayer and WeightGradLayers, field for field, pointers as addresses (its static_asserts
# hold the sizes: 64 bytes a layer, 8 + 64 MAX_LAYERS in all).
LAYER_DTYPE = np.dtype([*((name, np.uint64) for name in ("A_prev", "delta", "W", "dW", "b", "db")),
                        *((name, np.int32) for name in ("n_prev", "n_i", "first_block", "tiles_x"))], align=True)
LAYERS_DTYPE = np.dtype([("layer", LAYER_DTYPE, (MAX_LAYERS,)), ("count", np.int32)], align=True)


def _address(a: Array) -> int:
    """Where ``a``'s first element lives: a CuPy array's device pointer (a NumPy array's host address)."""
    pointer = getattr(a.data, "ptr", None)  # cupy's MemoryPointer; NumPy's buffer is a memoryview
    return a.ctypes.data if pointer is None else pointer


def pack_layers(layers: tuple[WeightGradLayer, ...]) -> np.ndarray:
    """weight_grads' layers as the WeightGradLayers it takes by value: a one-element structured array, which
    CuPy passes by its bytes (unused layers stay zero)."""
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"weight_grads takes 1 to {MAX_LAYERS} layers; got {len(layers)}")
    table = np.zeros(1, dtype=LAYERS_DTYPE)
    for i, layer in enumerate(layers):
        table["layer"][0, i] = (*map(_address, layer[:6]), *layer[6:])
    table["count"] = len(layers)
    return table


def _blocks(count: int, per_block: int) -> int:
    return (count + per_block - 1) // per_block


def _tile_geometry(rows: int, cols: int) -> tuple[tuple[int, int], tuple[int, int], int]:
    """forward, backward, weight_grad: (grid, block, R). TILE x TILE threads a block, so each slice of k staged
    in shared memory is read by TILE threads of each row and column, and the 256 threads fill eight warps; x
    runs along the columns for coalesced stores. One element a thread (R = 1), or RTILE x RTILE of them for
    products of BIG_PRODUCT elements or more (R = RTILE), where one a thread would leave each thread a
    load from shared memory per multiply-add."""
    r = RTILE if rows * cols >= BIG_PRODUCT else 1
    return (_blocks(cols, TILE * r), _blocks(rows, TILE * r)), (TILE, TILE), r


class GraphTrainer:
    """Trains ``net`` in place a whole epoch at a time, each epoch one replay of a captured CUDA graph.

    ``X`` and ``T`` are the whole training set (inputs and target rows) on the network's backend, in
    its dtype. ``run_epoch(order, lr)`` trains on the batches ``order[lo : lo + batch_size]`` like
    ``gpunet.train``'s plain path and returns the epoch's summed per-sample loss (each row before its
    step) as a 0-d device array, without a host sync. Covers SGD (with or without weight decay), Momentum
    and Adam, every hidden activation, every (output, loss) pair, dropout and any depth; a subclass of an
    optimiser (which may change its rule) raises ValueError, and so does a run after the optimiser's
    hyperparameters changed (the graph holds them).

    ``launcher`` (a callable taking a :class:`Launch`), if given, runs each launch of an epoch in order instead
    of a compiled kernel in a captured graph, on any backend: how the tests run the kernels' NumPy
    transcriptions. Without one, graph mode needs the cupy backend.
    """

    def __init__(self, net: Network, optimizer: Optimizer, X: Array, T: Array, batch_size: int,
                 launcher: Callable[[Launch], None] | None = None) -> None:
        if not isinstance(net, Network):
            raise TypeError(f"net must be a gpunet Network; got {type(net).__name__}")
        if launcher is not None and not callable(launcher):
            raise TypeError(f"launcher must be a callable taking a Launch, or None; got {type(launcher).__name__}")
        if launcher is None and net.backend.name != "cupy":
            raise ValueError(f"graph mode needs the cupy backend, or a launcher for its launches; got backend "
                             f"{net.backend.name!r} and no launcher")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a gpunet Optimizer; got {type(optimizer).__name__}")
        uncoded = [a for a in (net.activation, net.output) if a not in OUTPUT_CODES]
        if uncoded:  # a table row with no C++ expressions
            raise ValueError(f"graph mode has no code for {uncoded[0]!r}")
        rule = checked_rule(optimizer, "graph mode")
        self.net, self.optimizer, self.launcher = net, optimizer, launcher
        self.hyperparameters = optimizer.hyperparameters()  # captured into the graph's launches
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.X, self.T = check_data(net, X, T)
        self.n = self.X.shape[0]
        rows = min(self.batch_size, self.n)
        # A product's rows, in tiles, fill gridDim.y: the batch, and a layer's inputs plus weight_grad's bias row.
        if max(_blocks(rows, TILE), _blocks(max(net.sizes[:-1]) + 1, TILE)) > MAX_GRID_Y:
            raise ValueError(
                f"graph mode covers batches of up to {MAX_GRID_Y * TILE} rows and layers of up to "
                f"{MAX_GRID_Y * TILE - 1} inputs; got batch {rows} and sizes {net.sizes}"
            )
        if rule != "sgd":  # gradients into the flat buffer, then one flat_step
            self.mode = GRAD_WRITE
        else:
            self.mode = SGD_FOLDED if optimizer.folds_lr else SGD_DECAY
        # The parameters the graph reads and writes: the network's own flat buffer, at addresses fixed for its life.
        self.flat = FlatParameters(net.params, net.backend.xp, net.packed)
        self.flat_optimizer = FlatOptimizer(self.flat) if self.mode == GRAD_WRITE else None
        # the layer inputs dropout drops (0: the network's inputs); a rate too small to drop a unit has no mask
        self.dropped = [layer for layer, rate in enumerate(net.dropout) if drop.keep_threshold(rate) < drop.WORD]
        self.buffers = self._allocate(rows)
        self._graphs: dict[int, Any] = {}  # start row -> the captured graph of that epoch's steps
        self._functions: dict[str, Any] = {}
        if launcher is None:  # compile and fetch the epoch's kernels now (a resume's, if new, before its
            self._load(self.launches())  # capture): nothing may compile during a capture
            self._stream = net.backend.xp.cuda.Stream(non_blocking=True)

    def _allocate(self, rows: int) -> dict[str, Array]:
        """Every buffer the steps use, sized for a full batch (a partial one uses its first rows)."""
        xp, dtype, sizes = self.net.backend.xp, self.net.dtype, self.net.sizes
        buffers = {
            "order": xp.zeros(self.n, dtype=np.int64),  # the epoch's permutation, rewritten each epoch
            "lr": xp.zeros(1, dtype=np.float64),  # the epoch's learning rate, rewritten each epoch
            "X": xp.zeros((rows, sizes[0]), dtype=dtype),  # the batch, gathered on the device
            "T": xp.zeros((rows, sizes[-1]), dtype=dtype),
        }
        for i, width in enumerate(sizes[1:], start=1):
            buffers[f"A{i}"] = xp.zeros((rows, width), dtype=dtype)
            buffers[f"delta{i}"] = xp.zeros((rows, width), dtype=dtype)
            if i < len(sizes) - 1 and self.net.activation in KEEP_INPUT:  # the hidden layer's input, for f'
                buffers[f"Z{i}"] = xp.zeros((rows, width), dtype=dtype)
        buffers["loss"] = xp.zeros(self.n, dtype=dtype)  # each row's loss, in the epoch's order
        buffers["loss_total"] = xp.zeros(1, dtype=dtype)  # the epoch's sum
        if self.dropped:
            buffers["step"] = xp.zeros(1, dtype=np.int64)  # the optimiser's step count before the epoch
            for layer in self.dropped:  # the dropped copy of each layer input that has a rate
                buffers[f"In{layer}"] = xp.zeros((rows, sizes[layer]), dtype=dtype)
        return buffers

    @property
    def workspace_bytes(self) -> int:
        """Device memory held by the buffers (the training set and the flat buffers not counted)."""
        return sum(int(a.nbytes) for a in self.buffers.values())

    def batches(self, start_row: int = 0) -> list[tuple[int, int]]:
        """(first row, rows) of each step of an epoch started at ``start_row``: the plain path's batches."""
        return [(lo, min(self.batch_size, self.n - lo)) for lo in range(start_row, self.n, self.batch_size)]

    def launches(self, start_row: int = 0) -> list[Launch]:
        """Every kernel launch of an epoch started at ``start_row``, in order: what one graph holds."""
        batches = enumerate(self.batches(start_row))  # k: the step's place in the epoch (its dropout masks)
        steps = itertools.chain.from_iterable(self._step(lo, N, k) for k, (lo, N) in batches)
        return [*steps, self._loss_total(start_row)]

    def _step(self, lo: int, N: int, k: int = 0) -> list[Launch]:
        """One step on rows order[lo : lo + N], the epoch's ``k``-th (its dropout masks: the step count before the
        epoch plus k): the plain path's Network.train_step_unchecked, kernel by kernel."""
        net, buf, L = self.net, self.buffers, self.net.n_layers
        P = self.flat.param_views
        # Where the products write each gradient: the flat gradient buffer for flat_step; in the SGD modes
        # the kernels update P themselves and write no gradient, so P stands in.
        G = self.flat.grad_views if self.mode == GRAD_WRITE else P
        hidden = ACT_CODES[net.activation]
        steps = [self._gather(lo, N)]
        A = [buf["X"]] + [buf[f"A{i}"] for i in range(1, L + 1)]
        Ins = [buf.get(f"In{i}", a) for i, a in enumerate(A)]  # what layer i + 1 multiplies: A_i, dropped
        keep = net.activation in KEEP_INPUT
        kept = [buf[f"Z{i}"] if keep and 0 < i < L else a for i, a in enumerate(A)]  # where backward reads f'
        if 0 in self.dropped:  # the inputs, dropped
            steps.append(self._dropout(A[0], Ins[0], 0, N, k))
        for i in range(1, L):
            if keep:  # A_i = f(Z_i), Z_i kept
                steps.append(self._forward_keep(Ins[i - 1], P[f"W{i}"], P[f"b{i}"], A[i], kept[i], N, hidden))
            else:
                steps.append(self._forward(Ins[i - 1], P[f"W{i}"], P[f"b{i}"], A[i], N, hidden))
            if i in self.dropped:  # In_i = A_i * mask_i
                steps.append(self._dropout(A[i], Ins[i], i, N, k))
        output = self._forward(Ins[L - 1], P[f"W{L}"], P[f"b{L}"], A[L], N,
                               _output_forward_act(net.output, net.loss_name))
        delta = self._output_delta(A[L], buf["T"], buf[f"delta{L}"], lo, N)
        if output.params["r"] == 1 and output.grid[0] == 1:  # one column tile: each block holds whole rows
            steps.append(self._forward_output(output, delta))
        else:  # the output product wider than a tile (or register-tiled): a block no longer holds whole rows
            steps += [output, delta]
        layers: list[LayerArguments] = []  # each layer's weight_grad arguments, from the top
        for i in range(L, 0, -1):  # W_i feeds delta_{i-1} before its own update
            if i > 1:
                steps.append(self._backward(buf[f"delta{i}"], P[f"W{i}"], kept[i - 1], buf[f"delta{i - 1}"], N,
                                            hidden))
                if i - 1 in self.dropped:  # d(A * mask)/dA = mask: applied after f' (the plain path, before it)
                    steps.append(self._dropout(buf[f"delta{i - 1}"], buf[f"delta{i - 1}"], i - 1, N, k))
            layers.append((Ins[i - 1], buf[f"delta{i}"], (P[f"W{i}"], G[f"W{i}"]), (P[f"b{i}"], G[f"b{i}"])))
        steps += self._weight_grads(layers, N)  # every backward has read its W_i: the updates are independent now
        if self.flat_optimizer is not None:
            steps.append(self._flat_step(self.flat_optimizer))
        return steps

    # --- one function per kernel: its geometry, with why, and its arguments ----------------------

    def _gather(self, lo: int, N: int) -> Launch:
        # One thread per element of the (N, wx) inputs and then the (N, wt) targets, in one launch:
        # consecutive threads copy consecutive columns of a row, so the reads and writes are coalesced.
        wx, wt = self.X.shape[1], self.T.shape[1]
        grid, block = (_blocks(N * (wx + wt), ELEMENT_THREADS),), (ELEMENT_THREADS,)
        args = (self.X, self.T, self.buffers["order"], np.int32(lo), np.int32(N), np.int32(wx), np.int32(wt),
                np.int32(self.n), self.buffers["X"], self.buffers["T"])
        return Launch("gather_rows", self.net.dtype.name, {}, grid, block, args)

    def _forward(self, A_prev: Array, W: Array, b: Array, A: Array, N: int, act: int) -> Launch:
        n_in, n_out = W.shape
        grid, block, r = _tile_geometry(N, n_out)  # A: (N, n_out)
        args = (A_prev, W, b, A, np.int32(N), np.int32(n_in), np.int32(n_out))
        return Launch("forward", self.net.dtype.name, {"act": act, "r": r}, grid, block, args)

    def _forward_keep(self, A_prev: Array, W: Array, b: Array, A: Array, Zk: Array, N: int, act: int) -> Launch:
        # forward's geometry and arguments, Z_i's buffer after A_i's: the epilogue writes both.
        n_in, n_out = W.shape
        grid, block, r = _tile_geometry(N, n_out)  # A, Zk: (N, n_out)
        args = (A_prev, W, b, A, Zk, np.int32(N), np.int32(n_in), np.int32(n_out))
        return Launch("forward_keep", self.net.dtype.name, {"act": act, "r": r}, grid, block, args)

    def _output_delta(self, Y: Array, T: Array, delta: Array, lo: int, N: int) -> Launch:
        # One thread per row: a row (n_out outputs, 10 for MNIST) is short, and softmax and the loss need
        # the whole row; the rows of a batch fill the 256-thread blocks. Each row's loss lands at its place
        # in the epoch's loss buffer.
        grid, block = (_blocks(N, ELEMENT_THREADS),), (ELEMENT_THREADS,)
        n_out = Y.shape[1]
        fold_lr = np.int32(self.mode == SGD_FOLDED)
        loss = self.buffers["loss"][lo : lo + N]
        args = (Y, T, delta, loss, self.buffers["lr"], fold_lr, np.int32(N), np.int32(n_out))
        params = {"out": OUTPUT_CODES[self.net.output], "loss_code": LOSS_CODES[self.net.loss_name]}
        return Launch("output_delta", self.net.dtype.name, params, grid, block, args)

    def _forward_output(self, forward: Launch, output_delta: Launch) -> Launch:
        # The two launches in one, on forward's geometry: where it is one column tile (n_out <= TILE) at R = 1,
        # each block holds whole rows of Y, and thread x = 0 of each of its TILE rows runs output_delta's
        # per-row code once the block has written them. The arguments: forward's, then output_delta's after Y.
        assert forward.params["r"] == 1 and forward.grid[0] == 1, (forward.grid, forward.params)
        A_prev, W, b, Y, _, n_in, _ = forward.args
        params = {"act": forward.params["act"], **output_delta.params}
        args = (A_prev, W, b, Y, n_in, *output_delta.args[1:])
        return Launch("forward_output", self.net.dtype.name, params, forward.grid, forward.block, args)

    def _loss_total(self, start_row: int) -> Launch:
        # Once an epoch, after its last step: one block sums the epoch's rows (from start_row) in a fixed
        # order with no atomics, so the total does not depend on scheduling.
        args = (self.buffers["loss"][start_row:], np.int32(self.n - start_row), np.int32(1),
                self.buffers["loss_total"])
        return Launch("loss_total", self.net.dtype.name, {}, (1,), (LOSS_THREADS,), args)

    def _backward(self, delta: Array, W: Array, A_prev: Array, delta_prev: Array, N: int, act: int) -> Launch:
        n_prev, n_i = W.shape
        grid, block, r = _tile_geometry(N, n_prev)  # delta_prev: (N, n_prev)
        args = (delta, W, A_prev, delta_prev, np.int32(N), np.int32(n_prev), np.int32(n_i))
        return Launch("backward", self.net.dtype.name, {"act": act, "r": r}, grid, block, args)

    def _weight_grad(self, A_prev: Array, delta: Array, weight: tuple[Array, Array], bias: tuple[Array, Array],
                     N: int) -> Launch:
        (W, dW), (b, db) = weight, bias
        n_prev, n_i = W.shape
        grid, block, r = _tile_geometry(n_prev + 1, n_i)  # [dW; db]: (n_prev + 1, n_i), the bias's row last
        args = (A_prev, delta, W, dW, b, db, self.buffers["lr"], self._weight_decay(), np.int32(N), np.int32(n_prev),
                np.int32(n_i))
        return Launch("weight_grad", self.net.dtype.name, {"mode": self.mode, "r": r}, grid, block, args)

    def _weight_grads(self, layers: list[LayerArguments], N: int) -> list[Launch]:
        """Every layer's weight_grad (``layers``: each one's arguments, from the top) in as few launches as
        hold them: one for the layers at R = 1, one for those at R = RTILE (a kernel with both forms would
        hold both's registers and shared memory in every block), MAX_LAYERS at most each. Each layer's tiles
        are weight_grad's grid, laid end to end in one 1-D grid; a launch of one layer is weight_grad itself."""
        by_r: dict[int, list[tuple[LayerArguments, tuple[int, int]]]] = {}  # R -> each layer's arguments and tiles
        for layer in layers:
            W = layer[2][0]
            tiles, _, r = _tile_geometry(W.shape[0] + 1, W.shape[1])  # weight_grad's geometry for the layer
            by_r.setdefault(r, []).append((layer, tiles))
        launches = []
        for r, part in by_r.items():
            for lo in range(0, len(part), MAX_LAYERS):
                chunk = part[lo : lo + MAX_LAYERS]
                if len(chunk) == 1:
                    launches.append(self._weight_grad(*chunk[0][0], N))
                    continue
                table, blocks = [], 0
                for (A_prev, delta, (W, dW), (b, db)), (tiles_x, tiles_y) in chunk:
                    n_prev, n_i = W.shape
                    table.append(WeightGradLayer(A_prev, delta, W, dW, b, db, n_prev, n_i, blocks, tiles_x))
                    blocks += tiles_x * tiles_y
                args = (tuple(table), self.buffers["lr"], self._weight_decay(), np.int32(N))
                launches.append(Launch("weight_grads", self.net.dtype.name, {"mode": self.mode, "r": r}, (blocks,),
                                       (TILE, TILE), args))
        return launches

    def _dropout(self, In: Array, Out: Array, layer: int, N: int, k: int) -> Launch:
        # One thread per element of the (N, n) rows (fused.py's elementwise geometry): Out = In * mask of layer
        # input ``layer``, in the epoch's k-th step (the count before the epoch, read from device memory, plus k).
        n = In.shape[1]
        rate = self.net.dropout[layer]
        seed_lo, seed_hi = drop.key_words(self.net.seed)
        grid, block = elementwise_geometry(N * n)
        args = (In, Out, np.int64(N), np.int32(n), np.uint32(seed_lo), np.uint32(seed_hi), np.uint32(layer),
                self.buffers["step"], np.uint32(k), np.uint64(drop.keep_threshold(rate)),
                self.net.dtype.type(drop.scale(rate)))
        return Launch("dropout_apply", self.net.dtype.name, {}, grid, block, args, DROPOUT_SOURCE)

    def _weight_decay(self) -> Any:
        """The SGD_DECAY update's weight decay, in the network's dtype (0 in the other modes, which ignore it)."""
        return self.net.dtype.type(self.optimizer.weight_decay if self.mode == SGD_DECAY else 0.0)

    def _flat_step(self, flat_optimizer: FlatOptimizer) -> Launch:
        # One thread per element of the flat buffers (fused.py's elementwise geometry): lr, the step count
        # and the state buffers are the FlatOptimizer's, read from device memory at every replay.
        rule, *arguments = flat_optimizer.arguments(self.optimizer)
        grid, block = elementwise_geometry(self.flat.params.size)
        args = flat_step_arguments(*arguments)
        return Launch("flat_step", self.net.dtype.name, {"rule": RULE_CODES[rule]}, grid, block, args, OPTIM_SOURCE)

    # --- running an epoch ------------------------------------------------------------------------

    def run_epoch(self, order: Array, lr: float, start_row: int = 0) -> Array:
        """Train one epoch on ``order`` (the permutation of the rows, on the device) at learning rate ``lr``;
        ``start_row`` > 0 resumes an epoch interrupted there. Returns the summed per-sample loss of the rows
        trained (a 0-d array on the device, each row's loss before its step); no host sync."""
        check_number("lr", lr, positive=True)
        check_int("start_row", start_row, 0)
        if self.optimizer.hyperparameters() != self.hyperparameters:
            raise ValueError(
                f"the optimizer's hyperparameters changed to {self.optimizer.hyperparameters()} after the graph "
                f"was made with {self.hyperparameters}; make a new GraphTrainer"
            )
        if start_row >= self.n:
            raise ValueError(f"start_row must be below the {self.n} training rows; got {start_row}")
        xp = self.net.backend.xp
        check_order(xp, order, self.n)
        self.flat.adopt(self.net.params)  # an entry rebound since the last epoch is copied in (no-op otherwise)
        if self.flat_optimizer is not None:  # its state adopted, lr and the step count where the device reads them
            self.flat_optimizer.prepare(self.optimizer, lr)
        if self.launcher is not None:  # each launch handed over in order, with no graph
            self.buffers["order"][...] = order
            self.buffers["lr"].fill(lr)
            if self.dropped:
                self.buffers["step"].fill(self.optimizer.t)
            for launch in self.launches(start_row):
                self.launcher(launch)
            loss = self.buffers["loss_total"].reshape(()).copy()
        else:
            caller = xp.cuda.get_current_stream()
            self._stream.wait_event(caller.record())  # after the caller's work: order's upload, parameter writes
            with self._stream:
                self.buffers["order"][...] = order
                self.buffers["lr"].fill(lr)
                if self.dropped:  # the masks' step count before the epoch, read by dropout_apply
                    self.buffers["step"].fill(self.optimizer.t)
                graph = self._graphs.get(start_row)
                if graph is None:
                    graph = self._graphs[start_row] = self._capture(start_row)
                graph.launch(self._stream)
                loss = self.buffers["loss_total"].reshape(()).copy()
            caller.wait_event(self._stream.record())  # the caller's next work sees the trained parameters
        steps = len(self.batches(start_row))
        if self.flat_optimizer is not None:
            self.flat_optimizer.advance(self.optimizer, steps)  # the device's count advanced by flat_step
        else:
            self.optimizer.count(steps)
        return loss

    def _load(self, launches: list[Launch]) -> None:
        """Compile and fetch every kernel of ``launches`` not fetched yet. A partial last batch may take a
        product's other form (R) than the full ones, and a resumed epoch has its own partial batch."""
        by_source: dict[str, set[str]] = {}
        for launch in launches:
            if launch.expression not in self._functions:
                by_source.setdefault(launch.source, set()).add(launch.expression)
        for source, expressions in by_source.items():
            module = load(self.net.backend, source, sorted(expressions))
            self._functions.update({e: module.get_function(e) for e in expressions})

    def _capture(self, start_row: int) -> Any:
        """The epoch's launches from ``start_row`` recorded into a CUDA graph, once (on self._stream)."""
        launches = self.launches(start_row)
        self._load(launches)  # before the capture begins
        self._stream.begin_capture()
        try:
            for launch in launches:
                self._functions[launch.expression](launch.grid, launch.block, launch.kernel_args())
        finally:
            graph = self._stream.end_capture()
        return graph


def check_order(xp: Any, order: Any, n: int) -> None:
    """``order``, an epoch's permutation of the ``n`` rows: a (n,) integer array on ``xp``, else ValueError."""
    if not isinstance(order, xp.ndarray) or order.shape != (n,) or order.dtype.kind not in "iu":
        shape, dtype = getattr(order, "shape", None), getattr(order, "dtype", None)
        got = f"{type(order).__name__} of shape {shape} dtype {dtype}"
        raise ValueError(f"order must be a permutation of the {n} rows as a {xp.__name__} integer array; got {got}")


def check_data(net: Network, X: Array, T: Array) -> tuple[Array, Array]:
    """X (n, n_in) and T (n, n_out): contiguous arrays on the network's backend, in its dtype."""
    xp = net.backend.xp
    for label, a, width in (("X", X, net.sizes[0]), ("T", T, net.sizes[-1])):
        if not isinstance(a, xp.ndarray):
            raise TypeError(f"{label} must be a {xp.__name__} array on the network's backend; got {type(a).__name__}")
        if a.ndim != 2 or a.shape[1] != width or a.shape[0] < 1:
            raise ValueError(f"{label} must have shape (n, {width}) with n >= 1; got {a.shape}")
        if a.dtype != net.dtype or not a.flags.c_contiguous:
            layout = "C-contiguous" if a.flags.c_contiguous else "not C-contiguous"
            raise ValueError(f"{label} must be C-contiguous {net.dtype.name} like the network; got {layout} {a.dtype}")
    if X.shape[0] != T.shape[0]:
        raise ValueError(f"T must have one row per row of X ({X.shape[0]}); got {T.shape[0]}")
    if X.shape[0] >= 2**31:
        raise ValueError(f"graph mode indexes rows with 32-bit ints; got {X.shape[0]} rows")
    return X, T


class GraphEngine(Engine):
    """Whole epochs by :class:`GraphTrainer`, one graph replay each; an epoch resumed mid-way runs its rest step by
    step on the fused engine (on the device). ``launcher``: the trainer's (tests)."""

    name = "graph"
    whole_epochs = True

    def __init__(self, net: Network, optimizer: Optimizer, X: Array, T: Array, rows: int,
                 launcher: Callable[[Launch], None] | None = None) -> None:
        super().__init__(net, optimizer, X, T, rows)
        self.trainer = GraphTrainer(net, optimizer, X, T, rows, launcher)
        self.rest: Engine | None = None  # made at a resume's first partial epoch

    def run_epoch(self, order: Array, lr: float, loss_sum: Array, start: int = 0, after_step: Any = None) -> None:
        if start:
            if self.rest is None:
                self.rest = FusedEngine(self.net, self.optimizer, self.X, self.T, self.rows)
            self.rest.run_epoch(order, lr, loss_sum, start, after_step)
            return
        loss_sum += self.trainer.run_epoch(order, lr)
        if after_step is not None:
            after_step(self.X.shape[0], loss_sum)
