"""NumPy transcriptions of gemm.cu, kernel by kernel, in each kernel's loop order.

Each function takes its kernel's arguments in order (NumPy arrays for the pointers, which may be longer
than the kernel reads: it uses the first rows, as the device does) and the kernel's template parameters
as keywords, and writes where the kernel writes. What runs in parallel on the device (the elements of a
product, the rows of output_delta) is vectorised here; what a thread does in
sequence is a Python loop in the same order. The one difference left: the device may contract
``acc + a * b`` into a fused multiply-add, one rounding instead of two.
GraphTrainer runs these on the NumPy backend, so the CPU tests hold the device's arithmetic against the
plain path of network.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..activations import LEAKY_SLOPE
from .kernels import ACT_CODES, LOSS_CODES, OUTPUT_CODES

Array = Any
TILE = 16  # gemm.cu's defines
KTILE = 256  # float's slice of k; double's is KTILE_DOUBLE
KTILE_DOUBLE = 128
RTILE = 4  # the register-tiled products' RTILE x RTILE elements a thread (template parameter R)
KTILE_R = 32
LOSS_THREADS = 256
MAX_LAYERS = 8  # weight_grads: the most layers one launch takes
SOFTMAX = OUTPUT_CODES["softmax"]
GRAD_WRITE, SGD_FOLDED, SGD_DECAY = 0, 1, 2
SIGMOID, TANH, RELU, LEAKY_RELU = (ACT_CODES[k] for k in ("sigmoid", "tanh", "relu", "leaky_relu"))


def _rows(a: Array, N: int, width: int) -> Array:
    """The first N rows of a contiguous buffer read as (N, width), a view: what a kernel's pointer reaches."""
    return a.reshape(-1)[: N * width].reshape(N, width)


def act_forward(act: int, Z: Array) -> Array:
    """activations.cuh act_forward<ACT>."""
    if act == SIGMOID:
        return 0.5 * np.tanh(0.5 * Z) + 0.5
    if act == TANH:
        return np.tanh(Z)
    if act == RELU:
        return np.where(Z > 0, Z, 0).astype(Z.dtype)
    if act == LEAKY_RELU:
        return np.where(Z > 0, Z, LEAKY_SLOPE * Z)
    return Z


def act_backward(act: int, A: Array, dA: Array) -> Array:
    """activations.cuh act_backward<ACT>: dA * f'(Z), f' read off the output A."""
    if act == SIGMOID:
        return dA * A * (1 - A)
    if act == TANH:
        return dA * (1 - A * A)
    if act == RELU:
        return np.where(A > 0, dA, 0).astype(dA.dtype)
    if act == LEAKY_RELU:
        return np.where(A > 0, dA, LEAKY_SLOPE * dA)
    return dA


def tile_product(A: Array, B: Array, M: int, Nc: int, K: int, trans_a: bool, trans_b: bool,
                 ones_row: bool = False) -> Array:
    """tile_product for every element at once: C (M, Nc) = A (M, K) @ B (K, Nc), A stored (K, M) when
    trans_a, B stored (Nc, K) when trans_b. Each element adds its products in order k = 0, 1, ..., K - 1,
    slice by slice of KTILE (KTILE_DOUBLE for float64); staging through shared memory moves values, not
    arithmetic. ``ones_row`` (with trans_a): A gets a row M of ones, and C a row M, the column sums of B
    (M + 1 rows in all)."""
    A = _rows(A, K, M).T if trans_a else _rows(A, M, K)
    if ones_row:
        A = np.concatenate([A, np.ones((1, K), dtype=A.dtype)])
        M += 1
    B = _rows(B, Nc, K).T if trans_b else _rows(B, K, Nc)
    acc = np.zeros((M, Nc), dtype=A.dtype)
    width = KTILE if acc.dtype == np.float32 else KTILE_DOUBLE
    for k0 in range(0, K, width):
        for k in range(k0, min(k0 + width, K)):
            acc += A[:, k, None] * B[None, k, :]
    return acc


def gather_rows(X: Array, Tg: Array, order: Array, lo: int, N: int, wx: int, wt: int, n_rows: int, Xb: Array,
                Tb: Array) -> None:
    src = order[lo : lo + N]
    valid = (src >= 0) & (src < n_rows)
    for source, width, out in ((X, wx, Xb), (Tg, wt, Tb)):
        rows = _rows(out, N, width)
        rows[...] = _rows(source, n_rows, width)[np.where(valid, src, 0)]
        rows[~valid] = np.nan  # an index out of range: a NaN row, which the loss reports


# The product kernels' template parameter R (1, or RTILE for large products) picks which thread computes an
# element, not its arithmetic: each element adds its products in order k = 0, 1, ... either way. The
# transcriptions take it and compute the same numbers for both.


def forward(A_prev: Array, W: Array, b: Array, A: Array, N: int, n_in: int, n_out: int, *, act: int,
            r: int = 1) -> None:
    Z = tile_product(A_prev, W, N, n_out, n_in, False, False)
    _rows(A, N, n_out)[...] = act_forward(act, Z + b[:n_out])


def forward_output(
    A_prev: Array, W: Array, b: Array, Y: Array, n_in: int, Tg: Array, delta: Array, loss: Array, lr: Array,
    fold_lr: int, N: int, n_out: int, *, act: int, out: int, loss_code: int,
) -> None:
    """forward (R = 1), then output_delta on the rows it wrote: the kernel's two parts, in its order."""
    forward(A_prev, W, b, Y, N, n_in, n_out, act=act)
    output_delta(Y, Tg, delta, loss, lr, fold_lr, N, n_out, out=out, loss_code=loss_code)


def output_delta(
    Y: Array, Tg: Array, delta: Array, loss: Array, lr: Array, fold_lr: int, N: int, n_out: int, *, out: int,
    loss_code: int,
) -> None:
    y, t, d = _rows(Y, N, n_out), _rows(Tg, N, n_out), _rows(delta, N, n_out)
    dtype = y.dtype.type
    s = dtype(lr[0] / N if fold_lr else 1.0 / N)
    cross_entropy = loss_code == LOSS_CODES["cross-entropy"]
    if out == SOFTMAX:  # y holds Z on entry
        m = y[:, 0].copy()
        for j in range(1, n_out):
            m = np.where(y[:, j] > m, y[:, j], m)
        e, tsum, tz = (np.zeros(N, dtype=dtype) for _ in range(3))
        for j in range(n_out):
            tsum += t[:, j]
            tz += t[:, j] * y[:, j]
            y[:, j] = np.exp(y[:, j] - m)
            e += y[:, j]
        for j in range(n_out):
            y[:, j] = y[:, j] / e
        if cross_entropy:  # logsumexp(z) sum(t) - sum(t z)
            loss[:N] = (m + np.log(e)) * tsum - tz
            for j in range(n_out):
                d[:, j] = (y[:, j] * tsum - t[:, j]) * s
    elif cross_entropy:  # sigmoid, y holds Z on entry: sum softplus(z) - t z
        L = np.zeros(N, dtype=dtype)
        for j in range(n_out):
            z = y[:, j].copy()
            softplus = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
            L += softplus - t[:, j] * z
            y[:, j] = act_forward(SIGMOID, z)
            d[:, j] = (y[:, j] - t[:, j]) * s
        loss[:N] = L
    if loss_code == LOSS_CODES["squared"]:
        L = np.zeros(N, dtype=dtype)
        for j in range(n_out):
            err = t[:, j] - y[:, j]
            L += err * err
        loss[:N] = 0.5 * L
    elif loss_code == LOSS_CODES["absolute"]:
        L = np.zeros(N, dtype=dtype)
        for j in range(n_out):
            L += np.abs(t[:, j] - y[:, j])
        loss[:N] = L
    if not cross_entropy:
        for j in range(n_out):
            err = y[:, j] - t[:, j]
            d[:, j] = (err if loss_code == LOSS_CODES["squared"] else np.sign(err)) * s
        if out == SOFTMAX:
            dot = np.zeros(N, dtype=dtype)
            for j in range(n_out):
                dot += d[:, j] * y[:, j]
            for j in range(n_out):
                d[:, j] = y[:, j] * (d[:, j] - dot)
        else:
            for j in range(n_out):
                d[:, j] = act_backward(out, y[:, j], d[:, j])


def loss_total(loss: Array, N: int, first: int, total: Array) -> None:
    part = np.zeros(LOSS_THREADS, dtype=loss.dtype)  # thread t's sum of rows t, t + LOSS_THREADS, ...
    for r0 in range(0, N, LOSS_THREADS):
        chunk = loss[r0 : min(r0 + LOSS_THREADS, N)]
        part[: len(chunk)] += chunk
    half = LOSS_THREADS // 2
    while half > 0:  # the tree: part[t] += part[t + half]
        part[:half] += part[half : 2 * half]
        half //= 2
    total[0] = (0 if first else total[0]) + part[0]


def backward(
    delta: Array, W: Array, A_prev: Array, delta_prev: Array, N: int, n_prev: int, n_i: int, *, act: int,
    r: int = 1,
) -> None:
    dA = tile_product(delta, W, N, n_prev, n_i, False, True)
    _rows(delta_prev, N, n_prev)[...] = act_backward(act, _rows(A_prev, N, n_prev), dA)


def weight_grad(
    A_prev: Array, delta: Array, W: Array, dW: Array, b: Array, db: Array, lr: Array, weight_decay: Any, N: int,
    n_prev: int, n_i: int, *, mode: int, r: int = 1,
) -> None:
    g = tile_product(A_prev, delta, n_prev, n_i, N, True, False, ones_row=True)
    gW, gb = g[:n_prev], g[n_prev]  # the weights' rows, then the bias's: the column sums of delta in row order
    if mode == GRAD_WRITE:
        dW[...] = gW
        db[...] = gb
    elif mode == SGD_FOLDED:
        W -= gW
        b -= gb
    else:
        W -= W.dtype.type(lr[0]) * (gW + weight_decay * W)
        b -= b.dtype.type(lr[0]) * gb


class WeightGradLayer(NamedTuple):
    """gemm.cu's WeightGradLayer: one layer's weight_grad arguments, and its tiles' place in weight_grads' grid."""

    A_prev: Array
    delta: Array
    W: Array
    dW: Array
    b: Array
    db: Array
    n_prev: int
    n_i: int
    first_block: int  # its (tiles_x, tiles_y) tiles are blocks first_block, first_block + 1, ..., row by row
    tiles_x: int


def weight_grads(layers: tuple[WeightGradLayer, ...], lr: Array, weight_decay: Any, N: int, *, mode: int,
                 r: int = 1) -> None:
    """Each layer's weight_grad, as the one launch runs it (the layers read and write disjoint memory)."""
    for layer in layers:
        weight_grad(layer.A_prev, layer.delta, layer.W, layer.dW, layer.b, layer.db, lr, weight_decay, N,
                    layer.n_prev, layer.n_i, mode=mode, r=r)


TRANSCRIPTIONS: dict[str, Callable[..., None]] = {
    "gather_rows": gather_rows, "forward": forward, "forward_output": forward_output, "output_delta": output_delta,
    "loss_total": loss_total, "backward": backward, "weight_grad": weight_grad, "weight_grads": weight_grads,
}
