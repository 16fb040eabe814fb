"""Per-sample SGD on the GPU: the sequential loop of Network.train_per_sample_unchecked, a chunk of rows a launch.

:func:`per_sample_chunk` has the contract of ``Network.train_per_sample_unchecked`` (checked
device arrays in, parameters updated in place, the chunk's summed per-sample
loss returned as a 0-d array, each row's loss before its step) for a network
with one hidden layer on CuPy; :func:`supports` says whether a network is
covered. The kernel is ``per_sample.cu``; :func:`per_sample_chunk_numpy` is a
NumPy transcription of its exact loop order, which the CPU tests hold to
``Network.train_step``. Equal to the CPU on an H100 (2026-11-27) and 38-66x the plain per-sample path
there, so ``kernels="auto"`` runs it on CuPy (gpunet/engines/select.py). :class:`PerSampleEpochs` runs
whole epochs on it with fewer calls a chunk (``kernels="graph"``; not yet run on a device).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from ..activations import ACTIVATIONS, HIDDEN_ACTIVATIONS, LOSSES
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


def _expression(dtype_name: str, activation: str, in_kernel: bool = False) -> str:
    return f"per_sample_chunk<{C_TYPES[dtype_name]}, {ACT_CODES[activation]}, {str(in_kernel).lower()}>"


# The hidden activations activations.cuh has code for (today all of gpunet's).
HIDDEN = tuple(a for a in HIDDEN_ACTIVATIONS if a in ACT_CODES)
# Every instantiation load() compiles: one per dtype, hidden activation and IN_KERNEL (the output layer's
# activation and loss are run-time arguments: they run once a row, on 32 threads).
EXPRESSIONS = [_expression(d, a, i) for d, a, i in itertools.product(C_TYPES, HIDDEN, (False, True))]
NAME_EXPRESSIONS = {SOURCE: tuple(EXPRESSIONS)}  # gpunet.engines.name_expressions' convention


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


def per_sample_chunk(net: Network, X: Array, T: Array, lr: float, optimizer: SGD | None = None) -> Array:
    """``Network.train_per_sample_unchecked`` in one kernel launch (plus three products): ``X``
    (K, n_in) and ``T`` (K, n_out) checked device arrays of ``net``'s dtype; parameters updated in
    place; ``optimizer`` (plain SGD, default a fresh one) takes the first layer's K updates and
    counts them as K steps. Returns the summed per-sample loss, each row's before its step, as a
    0-d device array."""
    reason = supports(net)
    if reason is not None:
        raise ValueError(f"per_sample_chunk cannot run {net!r}: {reason}")
    Z2, Y = _kernel_chunk(net, X, T, lr, optimizer=optimizer)
    return net.per_sample_loss(Z2, Y, T).sum()


def per_sample_chunk_numpy(net: Network, X: np.ndarray, T: np.ndarray, lr: float, threads: int | None = None
                           ) -> np.ndarray:
    """:func:`per_sample_chunk` transcribed to NumPy in the kernel's loop order, for a NumPy network
    with one hidden layer (threads as the kernel would have them, or ``threads``)."""
    if net.backend.name != "numpy" or net.n_layers != 2:
        raise ValueError(f"per_sample_chunk_numpy needs a numpy network with one hidden layer; got {net!r}")
    Z2, Y = _transcribed_chunk(net, X, T, lr, threads)
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

    On the NumPy backend the same steps run with :func:`_transcribed_launch` for the kernel: that is what
    the CPU tests hold to gpunet.train's plain per-sample path.
    """

    def __init__(self, net: Network, optimizer: Any, X: Array, T: Array, chunk: int) -> None:
        reason = supports(net) if net.backend.name == "cupy" else _covers(net)
        if reason is not None:
            raise ValueError(f"per-sample epochs cannot run {net!r}: {reason}")
        if not (isinstance(optimizer, SGD) and optimizer.folds_lr):
            raise ValueError(f"per-sample epochs need plain SGD without weight decay; got {optimizer!r}")
        self.net, self.optimizer = net, optimizer
        self.chunk = check_int("chunk", chunk, 1)
        self.X, self.T = check_data(net, X, T)
        self.n = self.X.shape[0]
        xp, O = net.backend.xp, net.sizes[-1]
        self.X_epoch, self.T_epoch = xp.empty_like(self.X), xp.empty_like(self.T)  # the rows in the epoch's order
        self.Y, self.Z2 = xp.empty((self.n, O), dtype=net.dtype), xp.empty((self.n, O), dtype=net.dtype)
        self.workspaces = {rows: self._workspace(rows) for rows in {min(self.chunk, self.n), self.n % self.chunk}
                           if rows}  # a full chunk and the epoch's last, shorter one
        if xp is np:
            self._launch, self._update_W1 = self._transcribed_launch, self._numpy_update_W1
        else:
            self._kernel = _kernel_function(net, in_kernel=True)
            self._cublas = net.backend.cublas
            self._launch, self._update_W1 = self._kernel_launch, self._cublas_update_W1

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
        W1 = self.net.params["W1"]
        for lo in range(0, self.n, self.chunk):
            hi = min(lo + self.chunk, self.n)
            work, X = self.workspaces[hi - lo], self.X_epoch[lo:hi]
            xp.matmul(X, W1, out=work["Z1"])  # X W1, b1 added in the kernel
            xp.matmul(X, X.T, out=work["G"])  # X X^T, scaled to lr (X X^T + 1) in the kernel
            self._launch(work["Z1"], work["G"], self.T_epoch[lo:hi], lr, work["D"], self.Y[lo:hi], self.Z2[lo:hi])
            self._update_W1(X, work["D"], W1, lr)
        self.optimizer.count(self.n)
        return self.net.per_sample_loss(self.Z2, self.Y, self.T_epoch).sum()

    def _kernel_launch(self, Z1: Array, G: Array, T: Array, lr: float, D: Array, Y: Array, Z2: Array) -> None:
        _launch(self.net, Z1, G, T, lr, D, Y, Z2, in_kernel=True, kernel=self._kernel)

    def _transcribed_launch(self, Z1: Array, G: Array, T: Array, lr: float, D: Array, Y: Array, Z2: Array
                            ) -> None:
        _transcribed_launch(self.net, Z1, G, T, lr, D, Y, Z2, in_kernel=True)

    def _cublas_update_W1(self, X: Array, D: Array, W1: Array, lr: float) -> None:
        self._cublas.gemm("T", "N", X, D, out=W1, alpha=-lr, beta=1.0)  # W1 = -lr X^T D + W1

    @staticmethod
    def _numpy_update_W1(X: np.ndarray, D: np.ndarray, W1: np.ndarray, lr: float) -> None:
        W1 += W1.dtype.type(-lr) * (X.T @ D)  # the product's alpha = -lr, beta = 1


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


def _kernel_chunk(net: Network, X: Array, T: Array, lr: float, threads: int | None = None,
                  optimizer: SGD | None = None) -> tuple[Array, Array]:
    """Run the chunk through the kernel; returns (Z2, Y), each (K, n_out): each row's output
    layer pre-activation and output before its step."""
    T = net.backend.xp.ascontiguousarray(T, dtype=net.dtype)  # the kernel indexes it as (K, O), row-major
    return _chunk(net, X, T, lr, _launch, threads, optimizer)


def _chunk(net: Network, X: Array, T: Array, lr: float, launch: Callable[..., None], threads: int | None,
           optimizer: SGD | None) -> tuple[Array, Array]:
    """A chunk as :func:`per_sample_chunk` runs it, its launch by ``launch`` (:func:`_launch`, or
    :func:`_transcribed_launch` on NumPy): the first layer's products, the launch, then W1's and b1's
    update through ``optimizer`` (default a fresh SGD). Returns (Z2, Y)."""
    Z1, G = first_layer(net, X, lr)
    xp, K, (H, O) = net.backend.xp, X.shape[0], net.params["W2"].shape
    D, Y, Z2 = (xp.empty(shape, dtype=net.dtype) for shape in ((K, H), (K, O), (K, O)))
    launch(net, Z1, G, T, lr, D, Y, Z2, in_kernel=False, threads=threads)
    update_first_layer(net, X, D, lr, optimizer or SGD())
    return Z2, Y


def _kernel_function(net: Network, in_kernel: bool, threads: int | None = None) -> tuple[Any, int, int]:
    """(the compiled kernel for ``net``, threads, dynamic shared bytes) of a chunk's launch."""
    H, O = net.params["W2"].shape
    threads, shared = launch_geometry(H, O, net.dtype.itemsize, threads)
    kernel = load(net.backend, SOURCE, EXPRESSIONS).get_function(
        _expression(net.dtype.name, net.activation, in_kernel))
    if shared > kernel.max_dynamic_shared_size_bytes:  # above the default 48 KiB: opt in (supports() checked)
        kernel.max_dynamic_shared_size_bytes = shared
    return kernel, threads, shared


def _launch(net: Network, Z1: Array, G: Array, T: Array, lr: float, D: Array, Y: Array, Z2: Array,
            in_kernel: bool, threads: int | None = None, kernel: tuple[Any, int, int] | None = None) -> None:
    """The kernel's one launch for a chunk, from its first layer's ``Z1`` and ``G`` and its contiguous
    targets ``T``, into D, Y and Z2 (each row's delta1, output and output pre-activation); W2, b2 updated.
    ``in_kernel``: Z1 without b1 and G as X X^T, b1 added, G scaled and b1 updated by the kernel.
    ``kernel``: :func:`_kernel_function`'s result, where the caller keeps it."""
    P = net.params
    K, (H, O) = Z1.shape[0], P["W2"].shape
    kernel, threads, shared = kernel or _kernel_function(net, in_kernel, threads)
    i32 = np.int32
    kernel((1,), (threads,), (Z1, G, T, P["W2"], P["b2"], P["b1"], D, Y, Z2, i32(K), i32(H), i32(O),
                              net.dtype.type(lr), i32(OUTPUT_CODES[net.output]), i32(LOSS_CODES[net.loss_name])),
           shared_mem=shared)


_SHARED_LIMITS: dict[int, int] = {}


def _shared_limit(backend: Any) -> int:
    """Dynamic shared memory one block may opt in to on the current device (227 KiB on an H100)."""
    device = backend.xp.cuda.Device()
    if device.id not in _SHARED_LIMITS:
        _SHARED_LIMITS[device.id] = int(device.attributes["MaxSharedMemoryPerBlockOptin"])
    return _SHARED_LIMITS[device.id]


# --- the NumPy transcription -------------------------------------------------------------
# Arrays indexed by thread are (per_thread, threads): entry [i, tid] is hidden unit tid + i * threads,
# padded with zeros past H (adding 0 to a partial sum leaves it as it was, as skipping it does).


def _warp_sum(v: np.ndarray) -> np.ndarray:
    """warp_sum of per_sample.cu over the last axis (32 lanes): lane 0's total after __shfl_down_sync."""
    v = v.copy()
    for offset in (16, 8, 4, 2, 1):
        v[..., : WARP - offset] = v[..., : WARP - offset] + v[..., offset:]
    return v[..., 0]


def _output_sum(v: np.ndarray) -> Any:
    """output_sum of per_sample.cu: lane l sums v[l], v[l + 32], ... in order, then warp_sum."""
    lanes = np.zeros(-(-v.shape[0] // WARP) * WARP, dtype=v.dtype)
    lanes[: v.shape[0]] = v
    lanes = lanes.reshape(-1, WARP)
    s = np.zeros(WARP, dtype=v.dtype)
    for row in lanes:
        s += row
    return _warp_sum(s)


def _by_thread(a: np.ndarray, per_thread: int, threads: int) -> np.ndarray:
    """(..., H) -> (..., per_thread, threads), zero-padded: unit tid + i * threads at [..., i, tid]."""
    padded = np.zeros((*a.shape[:-1], per_thread * threads), dtype=a.dtype)
    padded[..., : a.shape[-1]] = a
    return padded.reshape(*a.shape[:-1], per_thread, threads)


def _transcribed_chunk(net: Network, X: np.ndarray, T: np.ndarray, lr: float, threads: int | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_kernel_chunk` in NumPy, the launch by :func:`_transcribed_launch`; returns (Z2, Y)."""
    return _chunk(net, X, T, lr, _transcribed_launch, threads, None)


def _transcribed_launch(net: Network, Z1: np.ndarray, G: np.ndarray, T: np.ndarray, lr: float, D: np.ndarray,
                        Y: np.ndarray, Z2: np.ndarray, in_kernel: bool, threads: int | None = None) -> None:
    """:func:`_launch` in NumPy: per_sample.cu's loop, row by row, in the kernel's order."""
    P, dtype = net.params, net.dtype
    K, (H, O) = Z1.shape[0], P["W2"].shape
    threads, _ = launch_geometry(H, O, dtype.itemsize, threads)
    per_thread, n_warps = -(-H // threads), threads // WARP
    hidden, out = ACTIVATIONS[net.activation], ACTIVATIONS[net.output]
    lr_f, one = dtype.type(lr), dtype.type(1)
    W2s, b2s = P["W2"].T.copy(), P["b2"].copy()  # (O, H) and (O,): the kernel's shared copies
    for t in range(K):
        correction = np.zeros(H, dtype=dtype)
        for k in range(t):  # each unit j sums its column of D in the order of the rows
            correction += (lr_f * (G[t, k] + one) if in_kernel else G[t, k]) * D[k]
        A1 = hidden.forward((Z1[t] + P["b1"] if in_kernel else Z1[t]) - correction)  # (H,)
        # Z2 = A1 W2: each thread's units in order, each warp's lanes by warp_sum, then the warps in order.
        partial = np.zeros((O, threads), dtype=dtype)
        A1t, W2t = _by_thread(A1, per_thread, threads), _by_thread(W2s, per_thread, threads)
        for i in range(per_thread):
            partial += A1t[i] * W2t[:, i]
        red = _warp_sum(partial.reshape(O, n_warps, WARP))  # (O, n_warps)
        z2 = red[:, 0].copy()
        for w in range(1, n_warps):
            z2 += red[:, w]
        z2 += b2s
        Z2[t] = z2
        if net.output == "softmax":
            e = np.exp(z2 - z2.max())
            y = e / _output_sum(e)
        else:
            y = out.forward(z2)
        if net.loss_name == "cross-entropy":  # fused: y sum(t) - t for softmax, y - t for sigmoid
            t_sum = _output_sum(T[t]) if net.output == "softmax" else dtype.type(1)
            delta2 = y * t_sum - T[t]
        elif net.output == "softmax":  # dZ_o = y_o (g_o - sum_p g_p y_p)
            g = LOSSES[net.loss_name].grad(y, T[t])
            delta2 = y * (g - _output_sum(g * y))
        else:
            delta2 = out.backward(y.copy(), LOSSES[net.loss_name].grad(y, T[t]))
        Y[t] = y
        b2s -= lr * delta2
        dA = np.zeros(H, dtype=dtype)
        for o in range(O):  # dA1 = delta2 W2^T, W2 before its update, each unit summing over o in order
            dA += delta2[o] * W2s[o]
        W2s -= lr * (delta2[:, None] * A1)  # (O, 1) * (H,) -> (O, H): the transposed A1^T delta2
        D[t] = hidden.backward(A1, dA)
    P["W2"][...] = W2s.T
    P["b2"][...] = b2s
    if in_kernel:  # b1 -= lr sum_t D_t, each unit summing its column in row order
        column_sums = np.zeros(H, dtype=dtype)
        for t in range(K):
            column_sums += D[t]
        P["b1"] -= lr_f * column_sums
