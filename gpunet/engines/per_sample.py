"""Per-sample SGD on the GPU: the sequential loop of gpunet.engines.plain.gram_chunk, a chunk of rows a launch.

:func:`per_sample_chunk` has the contract of ``plain.gram_chunk`` (checked
device arrays in, parameters updated in place, the chunk's summed per-sample
loss returned as a 0-d array, each row's loss before its step) for a network
with one hidden layer on CuPy; :func:`supports` says whether a network is
covered. The kernel is ``per_sample.cu``. :class:`PerSampleEpochs` runs whole epochs on it with fewer
calls a chunk (``kernels="graph"``). Both take a ``launcher`` that runs each :class:`Launch` in place of the
kernel and cuBLAS: the CPU tests pass the kernel's NumPy transcription (tests/transcriptions.py), which
follows its exact loop order, and hold the result to ``Network.train_step``. Which paths
``kernels="auto"`` takes, and the device runs behind that: gpunet/engines/select.py.

Dropout draws plain.gram_chunk's masks (row t of a chunk is step ``optimizer.t + t``, the only row of its batch):
the inputs' mask multiplies X here, before the first layer's products and W1's update, as gram_chunk does; the
hidden layer's is the kernel's (per_sample.cu's ``_dropout`` kernels), keyed by the step count before the chunk.

:class:`ManyChunks` runs the same kernel body for many models of one shape at once, one block a model
(per_sample.cu's ``per_sample_many`` kernels): gpunet.many.train_many's ``kernels="per-sample"``.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .. import dropout as drop
from ..activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from ..checks import check_int, check_number
from ..network import Network
from ..optim import SGD
from .kernels import ACT_CODES, C_TYPES, LOSS_CODES, OUTPUT_CODES, load
from .engine import Engine, StepEngine
from .graph import check_data, check_order
from .plain import first_layer, update_first_layer

Array = Any

SOURCE = "per_sample.cu"
MAX_THREADS = 512
WARP = 32


def _kernel_name(output: str, dropout: bool = False) -> str:
    """per_sample_chunk for an output activation read off Y (softmax too); per_sample_chunk_z2 for one whose
    derivative reads Z2 (its code apart, so the first kernel's stays as it was verified); with ``dropout`` on the
    hidden layer, their ``_dropout`` forms (the same code, and the mask)."""
    name = "per_sample_chunk" if ACTIVATIONS[output].from_output else "per_sample_chunk_z2"
    return f"{name}_dropout" if dropout else name


def _expression(dtype_name: str, activation: str, in_kernel: bool = False, output: str = "softmax",
                dropout: bool = False) -> str:
    return (f"{_kernel_name(output, dropout)}<{C_TYPES[dtype_name]}, {ACT_CODES[activation]}, "
            f"{str(in_kernel).lower()}>")


# The hidden activations activations.cuh has code for (today all of gpunet's); one whose derivative reads its
# input keeps z1 in its row of D until delta1 replaces it.
HIDDEN = tuple(a for a in HIDDEN_ACTIVATIONS if a in ACT_CODES)
# Every instantiation load() compiles: one per kernel, dtype, hidden activation and IN_KERNEL (the output layer's
# activation and loss are run-time arguments: they run once a row, on 32 threads).
OUTPUT_KINDS = ("softmax", "silu")  # an output of each kernel: read off Y, or read at Z2
EXPRESSIONS = [_expression(d, a, i, o, dropped) for dropped, o, d, a, i
               in itertools.product((False, True), OUTPUT_KINDS, C_TYPES, HIDDEN, (False, True))]


def _many_name(output: str, dropout: bool = False) -> str:
    """per_sample_many (an output read off Y) or per_sample_many_z2 (one whose derivative reads Z2), each with
    ``_dropout`` where the hidden layer's output is dropped: per_sample_chunk's kernels, one block a model."""
    name = "per_sample_many" if ACTIVATIONS[output].from_output else "per_sample_many_z2"
    return f"{name}_dropout" if dropout else name


def _many_expression(dtype_name: str, activation: str, output: str = "softmax", dropout: bool = False) -> str:
    return f"{_many_name(output, dropout)}<{C_TYPES[dtype_name]}, {ACT_CODES[activation]}>"


# The many-model kernels' instantiations, compiled apart from the solo kernel's (a module of their own).
MANY_EXPRESSIONS = [_many_expression(d, a, o, dropped) for dropped, o, d, a
                    in itertools.product((False, True), OUTPUT_KINDS, C_TYPES, HIDDEN)]
NAME_EXPRESSIONS = {SOURCE: tuple(EXPRESSIONS + MANY_EXPRESSIONS)}  # gpunet.engines.name_expressions' convention


class Launch(NamedTuple):
    """One launch of a chunk, as a launcher gets it: the kernel ``"per_sample_chunk"`` (``"per_sample_chunk_z2"``
    for an output whose derivative reads Z2; each with ``"_dropout"`` after it where the hidden layer's output is
    dropped, its args followed by the mask's; ``params``: its template parameters after the element type,
    ``hidden`` (ACT_CODES) and ``in_kernel``; ``args``: the kernel's, in order; one block of ``block[0]``
    threads and ``shared`` dynamic shared bytes, from :func:`launch_geometry`),
    or :class:`ManyChunks`' ``"per_sample_many"`` (``_z2`` and ``_dropout`` likewise; ``params``: ``hidden``;
    one block a model, ``grid[0]`` models), or PerSampleEpochs' cuBLAS product ``"gemm"``: W1 = alpha X^T D +
    beta W1 (``args``: X, D, W1; ``params``: alpha and beta)."""

    kernel: str
    params: dict[str, Any]
    args: tuple[Any, ...]
    block: tuple[int, ...] = (1,)
    shared: int = 0
    grid: tuple[int, ...] = (1,)  # one block a model: row t needs every earlier row's update


Launcher = Callable[[Launch], None]


def launch_geometry(n_hidden: int, n_out: int, itemsize: int, threads: int | None = None) -> tuple[int, int]:
    """(threads, dynamic shared bytes) of the one block that runs a chunk.

    One block, because row t needs every earlier row's update. One thread per
    hidden unit, in whole warps, up to 512: each row ends in a reduction of
    the warps' partial sums of Z2 (done by warp 0, one add per warp) and two
    block-wide barriers, which cost more the more warps wait at them; past 512
    units a thread takes several (j, j + 512, ...). ``threads`` overrides the
    count (a multiple of 32), for tests. Shared memory holds the chunk's
    whole output layer: W2 (transposed), A1, each warp's partial Z2, delta2,
    Y_t and b2.
    """
    if threads is None:
        threads = min(MAX_THREADS, -(-n_hidden // WARP) * WARP)
    assert threads % WARP == 0 and 0 < threads <= 1024, threads
    n_warps = threads // WARP
    shared = (n_out * n_hidden + n_hidden + n_warps * n_out + 3 * n_out) * itemsize
    return threads, shared


def supports(net: Network) -> str | None:
    """None when the kernel covers ``net``, else the reason it takes the plain path."""
    reason = _covers(net)
    if reason is not None:
        return reason
    if net.backend.name != "cupy":
        return f"the kernel needs the cupy backend; this network is on {net.backend.name}"
    _, shared = launch_geometry(net.sizes[1], net.sizes[2], net.dtype.itemsize)
    limit = _shared_limit(net.backend)
    if shared > limit:
        return (f"a hidden layer of {net.sizes[1]} with {net.sizes[2]} outputs in {net.dtype.name} needs "
                f"{shared} bytes of shared memory; this device has {limit} per block")
    return None


def _covers(net: Network) -> str | None:
    """:func:`supports` less the device: the layers, activations, loss and dtype the kernel has code for."""
    if net.n_layers != 2:
        return f"the kernel covers networks with one hidden layer; this one has {net.n_layers - 1}"
    if net.activation not in HIDDEN or net.output not in OUTPUT_CODES or net.loss_name not in LOSS_CODES:
        return f"the kernel has no code for {net.activation}/{net.output}/{net.loss_name}"
    if net.dtype.name not in C_TYPES:
        return f"the kernel covers float32 and float64; this network is {net.dtype.name}"
    return None


def per_sample_chunk(net: Network, X: Array, T: Array, lr: float, optimizer: SGD | None = None,
                     launcher: Launcher | None = None) -> Array:
    """``plain.gram_chunk`` in one kernel launch (plus three products): ``X``
    (K, n_in) and ``T`` (K, n_out) checked device arrays of ``net``'s dtype; parameters updated in
    place; ``optimizer`` (plain SGD, default a fresh one) takes the first layer's K updates and
    counts them as K steps. Returns the summed per-sample loss, each row's before its step, as a
    0-d device array. ``launcher`` runs the kernel's :class:`Launch` instead of the device (any backend)."""
    reason = supports(net) if launcher is None else _covers(net)
    if reason is not None:
        raise ValueError(f"per_sample_chunk cannot run {net!r}: {reason}")
    Z2, Y = _kernel_chunk(net, X, T, lr, optimizer=optimizer, launcher=launcher)
    return net.per_sample_loss(Z2, Y, T).sum()


class PerSampleEpochs:
    """Whole epochs of per-sample plain SGD on the kernel with the fewest calls a chunk: what
    ``kernels="graph"`` runs for per-sample SGD in gpunet.train (gpunet/engines/select.py; not a CUDA graph:
    its products are cuBLAS's, which CuPy will not capture).

    Each epoch first gathers the training rows in the epoch's order, once, on the device, into a copy of
    the training set (so the data takes twice its size there). Then, for each chunk of ``chunk`` rows in
    order, as :func:`per_sample_chunk` does but with b1, G's scaling and b1's update inside the kernel
    (per_sample.cu's IN_KERNEL): Z1 = X W1 and G = X X^T (two products), one launch, and W1 -= lr X^T D
    (one product with beta = 1). Each chunk's outputs land in epoch-long buffers, and the epoch's loss is
    computed from them once, at its end. Nothing is allocated, gathered or summed per chunk: the host issues
    four calls a chunk and can stay ahead of the device. ``gpunet.train`` calls ``on_batch`` once an epoch.

    ``launcher``, if given, runs each chunk's kernel launch and W1's product (each a :class:`Launch`) instead
    of the device, on any backend: the CPU tests pass the transcriptions and hold the epochs to gpunet.train's
    plain per-sample path. Without one, per-sample epochs need the cupy backend.
    """

    def __init__(self, net: Network, optimizer: Any, X: Array, T: Array, chunk: int,
                 launcher: Launcher | None = None) -> None:
        if launcher is not None and not callable(launcher):
            raise TypeError(f"launcher must be a callable taking a Launch, or None; got {type(launcher).__name__}")
        if launcher is None and net.backend.name != "cupy":
            raise ValueError(f"per-sample epochs need the cupy backend, or a launcher for their launches; got "
                             f"backend {net.backend.name!r} and no launcher")
        reason = supports(net) if launcher is None else _covers(net)
        if reason is not None:
            raise ValueError(f"per-sample epochs cannot run {net!r}: {reason}")
        if not (isinstance(optimizer, SGD) and optimizer.folds_lr):
            raise ValueError(f"per-sample epochs need plain SGD without weight decay; got {optimizer!r}")
        self.net, self.optimizer, self.launcher = net, optimizer, launcher
        self.chunk = check_int("chunk", chunk, 1)
        self.X, self.T = check_data(net, X, T)
        self.n = self.X.shape[0]
        xp, O = net.backend.xp, net.sizes[-1]
        self.X_epoch, self.T_epoch = xp.empty_like(self.X), xp.empty_like(self.T)  # the rows in the epoch's order
        self.Y, self.Z2 = xp.empty((self.n, O), dtype=net.dtype), xp.empty((self.n, O), dtype=net.dtype)
        self.workspaces = {rows: self._workspace(rows) for rows in {min(self.chunk, self.n), self.n % self.chunk}
                           if rows}  # a full chunk and the epoch's last, shorter one
        self._kernel = self._cublas = None
        if launcher is None:  # compiled now, before the first epoch
            self._kernel = _kernel_function(net, in_kernel=True)
            self._cublas = net.backend.cublas

    def _workspace(self, rows: int) -> dict[str, Array]:
        xp, H, dtype = self.net.backend.xp, self.net.sizes[1], self.net.dtype
        return {"Z1": xp.empty((rows, H), dtype=dtype), "G": xp.empty((rows, rows), dtype=dtype),
                "D": xp.empty((rows, H), dtype=dtype)}

    def run_epoch(self, order: Array, lr: float) -> Array:
        """Train one epoch on ``order`` (the permutation of the rows, on the device) at learning rate ``lr``.
        Returns the summed per-sample loss (a 0-d array on the device, each row's loss before its step); no
        host sync. The optimiser counts one step a row."""
        check_number("lr", lr, positive=True)
        xp = self.net.backend.xp
        check_order(xp, order, self.n)
        xp.take(self.X, order, axis=0, out=self.X_epoch)
        xp.take(self.T, order, axis=0, out=self.T_epoch)
        step = self.optimizer.t  # the count before the epoch: row r of the epoch is step step + r
        if _inputs_dropped(self.net):  # the epoch's rows times their masks, once, in the gathered copy
            self.X_epoch *= _input_mask(self.net, step, self.n)
        W1 = self.net.params["W1"]
        for lo in range(0, self.n, self.chunk):
            hi = min(lo + self.chunk, self.n)
            work, X = self.workspaces[hi - lo], self.X_epoch[lo:hi]
            xp.matmul(X, W1, out=work["Z1"])  # X W1, b1 added in the kernel
            xp.matmul(X, X.T, out=work["G"])  # X X^T, scaled to lr (X X^T + 1) in the kernel
            _launch(self.net, work["Z1"], work["G"], self.T_epoch[lo:hi], lr, work["D"], self.Y[lo:hi],
                    self.Z2[lo:hi], in_kernel=True, kernel=self._kernel, launcher=self.launcher, step=step + lo)
            update = Launch("gemm", {"alpha": -lr, "beta": 1.0}, (X, work["D"], W1))
            if self.launcher is not None:
                self.launcher(update)
            else:  # W1 = -lr X^T D + W1
                assert self._cublas is not None  # set in __init__ where there is no launcher
                self._cublas.gemm("T", "N", X, work["D"], out=W1, **update.params)
        self.optimizer.count(self.n)
        return self.net.per_sample_loss(self.Z2, self.Y, self.T_epoch).sum()


class KernelPerSample(StepEngine):
    """Per-sample plain SGD, a chunk a step by :func:`per_sample_chunk` (the kernel, on CuPy)."""

    name = "fused"

    def step(self, X: Array, T: Array, lr: float) -> Array:
        return per_sample_chunk(self.net, X, T, lr, self.optimizer)


class PerSampleEpochEngine(Engine):
    """Whole epochs of per-sample plain SGD by :class:`PerSampleEpochs`; an epoch resumed mid-way runs its rest
    chunk by chunk through :class:`KernelPerSample`."""

    name = "graph"
    whole_epochs = True

    def __init__(self, net: Network, optimizer: Any, X: Array, T: Array, rows: int) -> None:
        super().__init__(net, optimizer, X, T, rows)
        self.epochs = PerSampleEpochs(net, optimizer, X, T, rows)
        self.rest = KernelPerSample(net, optimizer, X, T, rows)

    def run_epoch(self, order: Array, lr: float, loss_sum: Array, start: int = 0,
                  after_step: Any = None) -> None:
        if start:
            self.rest.run_epoch(order, lr, loss_sum, start, after_step)
            return
        loss = self.epochs.run_epoch(order, lr)
        loss_sum += loss
        if after_step is not None:
            after_step(self.X.shape[0], loss_sum)


class ManyChunks:
    """Per-sample plain SGD on a chunk for many networks of one shape at once (gpunet.many.train_many's
    ``kernels="per-sample"``): per_sample.cu's ``per_sample_many`` kernels, one block a model, each block running
    its model's chunk in the solo kernel's loop order (the solo launch of :func:`per_sample_chunk`, without
    IN_KERNEL: the first layer is the caller's, as gpunet/engines/stack.py's gram_chunk computes it).

    ``nets``: the models, in the stack's order (one shape: :func:`supports` is checked on the first). Each
    model's hidden-layer dropout is its own (its seed, rate and scale, on the device once, here); a model that
    drops nothing there runs the dropout form with every unit kept, times 1, where another model drops. ``launcher``
    runs each :class:`Launch` instead of the device, on any backend (the CPU tests pass the transcription);
    ``threads`` a block overrides :func:`launch_geometry`'s count (a multiple of 32), for tests.
    """

    def __init__(self, nets: Sequence[Network], launcher: Launcher | None = None, threads: int | None = None) -> None:
        if launcher is not None and not callable(launcher):
            raise TypeError(f"launcher must be a callable taking a Launch, or None; got {type(launcher).__name__}")
        first = nets[0]
        reason = supports(first) if launcher is None else _covers(first)
        if reason is not None:
            raise ValueError(f"the per-sample kernel cannot run {first!r}: {reason}")
        self.nets, self.launcher, self.models = list(nets), launcher, len(nets)
        self.dtype, self.xp = first.dtype, first.backend.xp
        H, O = first.sizes[1], first.sizes[2]
        self.threads, self.shared = launch_geometry(H, O, first.dtype.itemsize, threads)
        self.dropout = any(_hidden_dropped(net) for net in self.nets)
        self.mask: tuple[Any, ...] = ()
        if self.dropout:  # each model's key words, threshold and scale: uploaded once
            rates = [net.dropout[1] for net in self.nets]
            to = first.backend.to_device
            self.mask = (to(np.array([drop.key_words(net.seed) for net in self.nets], dtype=np.uint32)),
                         to(np.array([drop.keep_threshold(r) for r in rates], dtype=np.uint64)),
                         to(np.array([drop.scale(r) for r in rates], dtype=first.dtype)))
        self.name = _many_name(first.output, self.dropout)
        self.params = {"hidden": ACT_CODES[first.activation]}
        self.codes = (np.int32(OUTPUT_CODES[first.output]), np.int32(LOSS_CODES[first.loss_name]))
        self._lrs: tuple[tuple[float, ...], Array] | None = None
        self._function = None
        if launcher is None:  # compiled now, before the first chunk
            self._function = load(first.backend, SOURCE, MANY_EXPRESSIONS).get_function(
                _many_expression(first.dtype.name, first.activation, first.output, self.dropout))
            # above the default 48 KiB: opt in (supports() checked)
            self._function.max_dynamic_shared_size_bytes = max(self.shared,
                                                               self._function.max_dynamic_shared_size_bytes)

    def _lr(self, lrs: Sequence[float]) -> Array:
        """The models' learning rates as a device array of the dtype (each rounded as the solo kernel's ``lr``),
        uploaded when they change (once an epoch)."""
        key = tuple(float(v) for v in lrs)
        if self._lrs is None or self._lrs[0] != key:
            self._lrs = (key, self.xp.asarray(np.array(key, dtype=self.dtype)))
        return self._lrs[1]

    def run(self, Z1: Array, G: Array, T: Array, W2: Array, b2: Array, p_stride: int, lrs: Sequence[float],
            step: int) -> tuple[Array, Array, Array]:
        """One launch for a chunk of C rows: ``Z1`` (models, C, H) each model's X W1 + b1; ``G`` (1 or models, C, C)
        lr (X X^T + 1), one for all or each model's; ``T`` the targets, (C, O) shared or (models, C, O); ``W2``
        and ``b2`` the stacked parameters' (models, H, O) and (models, O) views, rows ``p_stride`` elements apart,
        updated in place; ``lrs`` each model's rate; ``step`` the models' step count before the chunk (the hidden
        layer's masks). Returns (D, Z2, Y): each model's delta1, logits and outputs, row by row before its step."""
        xp, models = self.xp, self.models
        C, H = Z1.shape[1], Z1.shape[2]
        O = W2.shape[-1]
        Z1, G, T = (xp.ascontiguousarray(a, dtype=self.dtype) for a in (Z1, G, T))
        assert Z1.shape == (models, C, H) and G.shape[1:] == (C, C) and G.shape[0] in (1, models), (Z1.shape, G.shape)
        assert W2.shape == (models, H, O) and b2.shape == (models, O), (W2.shape, b2.shape)
        itemsize = self.dtype.itemsize
        # the kernel reaches model m's W2 and b2 at m p_stride elements from model 0's, each contiguous (a
        # dimension of one model has no stride to check)
        assert W2.strides[1:] == (O * itemsize, itemsize) and b2.strides[1:] == (itemsize,), (W2.strides, b2.strides)
        assert models == 1 or W2.strides[0] == b2.strides[0] == p_stride * itemsize, (W2.strides, b2.strides)
        D, Z2, Y = xp.empty_like(Z1), xp.empty((models, C, O), dtype=self.dtype), xp.empty((models, C, O),
                                                                                            dtype=self.dtype)
        i32, i64 = np.int32, np.int64
        g_stride, t_stride = (0 if G.shape[0] == 1 else C * C), (0 if T.ndim == 2 else C * O)
        args: tuple[Any, ...] = (Z1, G, T, W2, b2, D, Y, Z2, i32(C), i32(H), i32(O), i64(g_stride), i64(t_stride),
                                 i64(p_stride), self._lr(lrs), *self.codes)
        if self.dropout:  # the step count mod 2**32, the key's word
            args += (*self.mask, np.uint32(step % drop.WORD))
        launch = Launch(self.name, self.params, args, (self.threads,), self.shared, (models,))
        if self.launcher is not None:
            self.launcher(launch)
        else:
            assert self._function is not None  # compiled in __init__ where there is no launcher
            self._function(launch.grid, launch.block, launch.args, shared_mem=launch.shared)
        return D, Z2, Y


def _kernel_chunk(net: Network, X: Array, T: Array, lr: float, threads: int | None = None,
                  optimizer: SGD | None = None, launcher: Launcher | None = None) -> tuple[Array, Array]:
    """A chunk as :func:`per_sample_chunk` runs it: the first layer's products, the kernel's launch (by
    ``launcher`` where given; ``threads`` a block, default launch_geometry's), then W1's and b1's update through
    ``optimizer`` (default a fresh SGD). Returns (Z2, Y), each (K, n_out): each row's output layer
    pre-activation and output before its step. With dropout, row t is step ``optimizer.t + t``."""
    optimizer = optimizer or SGD()
    step = optimizer.t  # the count before the chunk, which the first layer's update advances by K
    T = net.backend.xp.ascontiguousarray(T, dtype=net.dtype)  # the kernel indexes it as (K, O), row-major
    if _inputs_dropped(net):  # the inputs as layer 1 sees them, in Z1, G and W1's update
        X = X * _input_mask(net, step, X.shape[0])
    Z1, G = first_layer(net, X, lr)
    xp, K, (H, O) = net.backend.xp, X.shape[0], net.params["W2"].shape
    D, Y, Z2 = (xp.empty(shape, dtype=net.dtype) for shape in ((K, H), (K, O), (K, O)))
    _launch(net, Z1, G, T, lr, D, Y, Z2, in_kernel=False, threads=threads, launcher=launcher, step=step)
    update_first_layer(net, X, D, lr, optimizer)
    return Z2, Y


def _inputs_dropped(net: Network) -> bool:
    return drop.keep_threshold(net.dropout[0]) < drop.WORD


def _hidden_dropped(net: Network) -> bool:
    return drop.keep_threshold(net.dropout[1]) < drop.WORD


def _input_mask(net: Network, step: int, rows: int) -> Array:
    """The (rows, n_in) mask of the inputs of ``rows`` per-sample rows from step ``step`` (gram_chunk's)."""
    return drop.sample_mask(net.backend.xp, net.seed, 0, step, rows, net.sizes[0], net.dropout[0], net.dtype)


def _kernel_function(net: Network, in_kernel: bool, threads: int | None = None) -> tuple[Any, int, int]:
    """(the compiled kernel for ``net``, threads, dynamic shared bytes) of a chunk's launch."""
    H, O = net.params["W2"].shape
    threads, shared = launch_geometry(H, O, net.dtype.itemsize, threads)
    kernel = load(net.backend, SOURCE, EXPRESSIONS).get_function(
        _expression(net.dtype.name, net.activation, in_kernel, net.output, _hidden_dropped(net)))
    if shared > kernel.max_dynamic_shared_size_bytes:  # above the default 48 KiB: opt in (supports() checked)
        kernel.max_dynamic_shared_size_bytes = shared
    return kernel, threads, shared


def _launch(net: Network, Z1: Array, G: Array, T: Array, lr: float, D: Array, Y: Array, Z2: Array,
            in_kernel: bool, threads: int | None = None, kernel: tuple[Any, int, int] | None = None,
            launcher: Launcher | None = None, step: int = 0) -> None:
    """The kernel's one launch for a chunk, from its first layer's ``Z1`` and ``G`` and its contiguous
    targets ``T``, into D, Y and Z2 (each row's delta1, output and output pre-activation); W2, b2 updated.
    ``in_kernel``: Z1 without b1 and G as X X^T, b1 added, G scaled and b1 updated by the kernel.
    ``kernel``: :func:`_kernel_function`'s result, where the caller keeps it; ``launcher``: runs the
    :class:`Launch` instead. ``step``: the optimiser's step count before the chunk's row 0 (the hidden layer's
    dropout masks)."""
    P = net.params
    K, (H, O) = Z1.shape[0], P["W2"].shape
    threads, shared = launch_geometry(H, O, net.dtype.itemsize, threads)
    i32 = np.int32
    args: tuple[Any, ...] = (Z1, G, T, P["W2"], P["b2"], P["b1"], D, Y, Z2, i32(K), i32(H), i32(O),
                             net.dtype.type(lr), i32(OUTPUT_CODES[net.output]), i32(LOSS_CODES[net.loss_name]))
    dropout = _hidden_dropped(net)
    if dropout:  # the mask's key words, the step count mod 2**32 (the key's word), threshold and scale
        rate = net.dropout[1]
        seed_lo, seed_hi = drop.key_words(net.seed)
        args += (np.uint32(seed_lo), np.uint32(seed_hi), np.uint32(step % drop.WORD),
                 np.uint64(drop.keep_threshold(rate)), net.dtype.type(drop.scale(rate)))
    launch = Launch(_kernel_name(net.output, dropout), {"hidden": ACT_CODES[net.activation], "in_kernel": in_kernel},
                    args, (threads,), shared)
    if launcher is not None:
        launcher(launch)
        return
    function, _, _ = kernel or _kernel_function(net, in_kernel, threads)
    function(launch.grid, launch.block, launch.args, shared_mem=launch.shared)


_SHARED_LIMITS: dict[int, int] = {}


def _shared_limit(backend: Any) -> int:
    """Dynamic shared memory one block may opt in to on the current device (227 KiB on an H100)."""
    device = backend.xp.cuda.Device()
    if device.id not in _SHARED_LIMITS:
        _SHARED_LIMITS[device.id] = int(device.attributes["MaxSharedMemoryPerBlockOptin"])
    return _SHARED_LIMITS[device.id]
