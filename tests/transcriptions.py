"""NumPy transcriptions of gpunet's CUDA kernels (fused.cu, optim.cu, gemm.cu, per_sample.cu), for the tests.

Each function does to its arguments what its kernel does, in the kernel's loop order and element type: what
runs in parallel on the device (the elements of a product, the rows of a batch) is vectorised here, what a
thread does in sequence is a Python loop in the same order. Each takes its kernel's arguments in order (NumPy
arrays for the pointers, which may be longer than the kernel reads: it uses their first rows, as the device
does) and the kernel's template parameters as keywords, as codes. The differences left are rounding: the CUDA
compiler may contract ``a * b + c`` into one fused multiply-add, and ``exp``, ``log``, ``log1p``, ``tanh`` and
``pow`` are the device's, not NumPy's.

Written from the CUDA sources alone, so that a test holding a transcription to the plain path of network.py
checks the kernels' formulas against gpunet's activation table and optimisers, not against themselves: the
activations and losses here are activations.cuh's, by code (:func:`act_forward`, :func:`act_backward`,
:func:`loss_grad`); from gpunet come only the codes (kernels.ACT_CODES, OUTPUT_CODES, LOSS_CODES,
fused.RULE_CODES), the defines (gemm.py), the launch geometry and the kernels' argument lists
(fused.delta_bias_geometry, fused.flat_step_arguments), never gpunet.activations or gpunet.optim. Dropout's
words come from gpunet.dropout.words, which tests/test_dropout.py holds bit for bit to dropout.cuh compiled for
the host; the decision and the value (:func:`dropout_mask`) are written here from the header's arguments.

How the production host code reaches them (none of it imports this module):

- :class:`NumpyKernels`: FusedStep's and FlatOptimizer's kernel set, ``FusedStep(net, NumpyKernels())``;
- :func:`graph_launch`: ``GraphTrainer(..., launcher=graph_launch)``, each gemm.cu/optim.cu launch of an epoch;
- :func:`per_sample_launch`: ``PerSampleEpochs(..., launcher=...)``, ``per_sample_chunk(..., launcher=...)`` and
  ``ManyChunks(..., launcher=...)`` (the many-model kernel, :func:`per_sample_many`).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from gpunet.dropout import words
from gpunet.engines.fused import RULE_CODES, delta_bias_geometry, flat_step_arguments
from gpunet.engines.gemm import (GRAD_WRITE, KTILE, KTILE_DOUBLE, LOSS_THREADS, SGD_FOLDED, WeightGradLayer)
from gpunet.engines.kernels import ACT_CODES, LOSS_CODES, OUTPUT_CODES, source

Array = Any
WARP = 32
SIGMOID, TANH, RELU, LEAKY_RELU, IDENTITY, SILU = (ACT_CODES[k] for k in ("sigmoid", "tanh", "relu", "leaky_relu",
                                                                          "identity", "silu"))
FROM_INPUT = {SILU}  # act_from_input<ACT>(): the derivative reads the layer's input z
SOFTMAX = OUTPUT_CODES["softmax"]
SQUARED, ABSOLUTE, CROSS_ENTROPY = (LOSS_CODES[k] for k in ("squared", "absolute", "cross-entropy"))
SGD, MOMENTUM, ADAM, ADAMW = (RULE_CODES[k] for k in ("sgd", "momentum", "adam", "adamw"))
# activations.cuh's GPUNET_LEAKY_SLOPE, read from the header the kernels include
LEAKY_SLOPE = float(re.search(r"#define GPUNET_LEAKY_SLOPE (\S+)", source("activations.cuh")).group(1))


# --- activations.cuh: the activations and the losses' gradients, by code ------------------------------------

def act_forward(act: int, Z: Array) -> Array:
    """act_forward<ACT>: A = f(Z); any other code (identity, and softmax, which the callers do row by row) is Z."""
    if act == SIGMOID:
        return 0.5 * np.tanh(0.5 * Z) + 0.5  # 1 / (1 + exp(-z)) without overflow
    if act == TANH:
        return np.tanh(Z)
    if act == RELU:
        return np.where(Z > 0, Z, 0).astype(Z.dtype)
    if act == LEAKY_RELU:
        return np.where(Z > 0, Z, LEAKY_SLOPE * Z)
    if act == SILU:
        return Z * (0.5 * np.tanh(0.5 * Z) + 0.5)  # z * act_forward<SIGMOID>(z)
    return Z


def act_backward_from_input(act: int, Z: Array, dA: Array) -> Array:
    """act_backward_from_input<ACT>: dZ = dA * f'(z), from the input z; any other code passes dA through."""
    if act == SILU:
        s = 0.5 * np.tanh(0.5 * Z) + 0.5
        return dA * s * (1 + Z * (1 - s))  # d/dz z sigma(z)
    return dA


def act_backward_at(act: int, kept: Array, dA: Array) -> Array:
    """act_backward_at<ACT>: the derivative at what the layer keeps, its input where FROM_INPUT, else its output."""
    return act_backward_from_input(act, kept, dA) if act in FROM_INPUT else act_backward(act, kept, dA)


def act_backward(act: int, A: Array, dA: Array) -> Array:
    """act_backward<ACT>: dZ = dA * f'(Z), f' read off the output A; any other code passes dA through."""
    if act == SIGMOID:
        return dA * A * (1 - A)
    if act == TANH:
        return dA * (1 - A * A)
    if act == RELU:
        return np.where(A > 0, dA, 0).astype(dA.dtype)
    if act == LEAKY_RELU:
        return np.where(A > 0, dA, LEAKY_SLOPE * dA)
    return dA


def loss_grad(loss: int, Y: Array, T: Array) -> Array:
    """fused.cu's and per_sample.cu's loss_grad: dL/dY of the unfused losses, y - t (squared) or sign(y - t)."""
    d = Y - T
    return d if loss == SQUARED else np.sign(d)


# --- dropout.cuh, and fused.cu's dropout_apply -----------------------------------------------------------

def dropout_mask(seed_lo: Any, seed_hi: Any, layer: Any, step: Any, row: Any, unit: Any, threshold: Any,
                 scale: Any) -> np.ndarray:
    """dropout_mask<T>, broadcast over step, row and unit (uint32 arrays or ints): ``scale`` (of the mask's type)
    where the unit's word is below ``threshold``, else 0."""
    seed = (int(seed_hi) << 32) | int(seed_lo)
    word = words(np, seed, int(layer), np.asarray(step, dtype=np.uint32), row, unit).astype(np.uint64)
    return np.where(word < np.uint64(threshold), scale, type(scale)(0))


def dropout_apply(In: Array, Out: Array, rows: Any, cols: Any, seed_lo: Any, seed_hi: Any, layer: Any,
                  step0: Array, offset: Any, threshold: Any, scale: Any) -> None:
    """dropout_apply<T>: Out = In * mask of step (uint32) step0[0] + offset, element (r, j) of the first
    ``rows`` rows; In may be Out."""
    rows, cols = int(rows), int(cols)
    step = np.uint32((int(step0[0]) + int(offset)) % 2**32)  # the kernel's unsigned int sum wraps
    mask = dropout_mask(seed_lo, seed_hi, layer, step, np.arange(rows, dtype=np.uint32)[:, None],
                        np.arange(cols, dtype=np.uint32)[None, :], threshold, scale)
    _rows(Out, rows, cols)[...] = _rows(In, rows, cols) * mask


# --- fused.cu ----------------------------------------------------------------------------------------------

def _warp_sum_xor(p: np.ndarray) -> np.ndarray:
    """fused.cu's warp_sum over the last axis (32 lanes): the xor butterfly, offsets 16, 8, 4, 2, 1."""
    lanes = np.arange(WARP)
    for o in (16, 8, 4, 2, 1):
        p = p + p[..., lanes ^ o]
    return p[..., 0]


def _warp_max_xor(p: np.ndarray) -> np.ndarray:
    lanes = np.arange(WARP)
    for o in (16, 8, 4, 2, 1):
        p = np.maximum(p, p[..., lanes ^ o])
    return p[..., 0]


def _lane_sums(terms: np.ndarray) -> np.ndarray:
    """Each lane's running sum over its columns l, l + 32, ... in order, then the warp's butterfly: (N, C) -> (N,)."""
    n, cols = terms.shape
    part = np.zeros((n, WARP), dtype=terms.dtype)
    for j in range(cols):
        part[:, j % WARP] += terms[:, j]
    return _warp_sum_xor(part)


def bias_act(Z: np.ndarray, b: np.ndarray, *, act: int) -> None:
    """bias_act<T, ACT>: Z = f(Z + b), element by element."""
    Z[...] = act_forward(act, Z + b)


def bias_act_keep(Z: np.ndarray, b: np.ndarray, Zk: np.ndarray, *, act: int) -> None:
    """bias_act_keep<T, ACT>: Zk = Z + b, Z = f(Zk), element by element."""
    Zk[...] = Z + b
    Z[...] = act_forward(act, Zk)


def output_layer(Z: np.ndarray, b: np.ndarray, T: np.ndarray, loss: np.ndarray, scale: float, *, out: int,
                 loss_code: int) -> None:
    """output_layer<T, OUT, LOSS>: Z becomes delta_L (scale * dL/dZ), loss[n] the row's loss; one warp per row.
    Cross-entropy comes from the logits z = Z + b: logsumexp(z) sum t - sum t z, or sum softplus(z) - t z."""
    dtype = Z.dtype.type
    scale = dtype(scale)
    logits = Z + b  # the kernel's z[j] + b[j], read before Y overwrites it
    cross_entropy = loss_code == CROSS_ENTROPY
    if out in FROM_INPUT:  # one pass: each column's y, its loss term and its delta from z
        Y = act_forward(out, logits)
        terms = (T - Y) * (T - Y) if loss_code == SQUARED else np.abs(T - Y)
        loss[:] = (dtype(0.5) if loss_code == SQUARED else dtype(1)) * _lane_sums(terms)
        Z[...] = act_backward_from_input(out, logits, loss_grad(loss_code, Y, T) * scale)
        return
    if out == SOFTMAX:
        n, cols = Z.shape
        part = np.broadcast_to(logits[:, :1], (n, WARP)).copy()  # every lane starts from column 0
        for j in range(cols):
            part[:, j % WARP] = np.maximum(part[:, j % WARP], logits[:, j])
        m = _warp_max_xor(part)
        np.exp(logits - m[:, None], out=Z)
        s = _lane_sums(Z)
        if cross_entropy:  # logsumexp(z) * sum t - sum t z, shifted by the row's max
            t_sum = _lane_sums(T)
            loss[:] = (m + np.log(s)) * t_sum - _lane_sums(T * logits)
        Z /= s[:, None]
    else:
        if cross_entropy:  # sigmoid: softplus(z) - t z, softplus(z) = max(z, 0) + log1p(exp(-|z|))
            loss[:] = _lane_sums((np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits)))) - T * logits)
        Z[...] = act_forward(out, logits)  # Y = f(z)
    Y = Z
    if loss_code == SQUARED:
        loss[:] = dtype(0.5) * _lane_sums((T - Y) * (T - Y))
    elif loss_code == ABSOLUTE:
        loss[:] = _lane_sums(np.abs(T - Y))
    if cross_entropy and out == SOFTMAX:
        Z[...] = (Y * t_sum[:, None] - T) * scale  # y sum(t) - t
    elif cross_entropy:
        Z[...] = (Y - T) * scale  # sigmoid: y - t
    else:
        dA = loss_grad(loss_code, Y, T) * scale
        if out == SOFTMAX:  # Y_j (dA_j - sum_k dA_k Y_k)
            Z[...] = Y * (dA - _lane_sums(dA * Y)[:, None])
        else:
            Z[...] = act_backward(out, Y, dA)


def delta_bias(dA: np.ndarray, A: np.ndarray, db: np.ndarray, rows_per_block: int, *, act: int,
               update: bool) -> None:
    """delta_bias<T, ACT, UPDATE>: dA becomes dA * f'(A); db = its column sums (update: b -= them).

    Thread y of a column sums rows y, y + R, ... (R = rows_per_block); the R partial sums then meet by halving.
    """
    d = act_backward_at(act, A, dA)  # A: the layer's output, or its input where FROM_INPUT
    if act != IDENTITY:
        dA[...] = d
    part = np.zeros((rows_per_block, dA.shape[1]), dtype=dA.dtype)
    for r in range(dA.shape[0]):
        part[r % rows_per_block] += d[r]
    h = rows_per_block // 2
    while h > 0:
        part[:h] += part[h : 2 * h]
        h //= 2
    if update:
        db -= part[0]
    else:
        db[...] = part[0]


# --- optim.cu ----------------------------------------------------------------------------------------------

def flat_step(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, size: int, n_weights: int,
              lr: np.ndarray, step: np.ndarray, done: np.ndarray, weight_decay: float, beta1: float, beta2: float,
              eps: float, *, rule: int) -> None:
    """flat_step<T, RULE>: one optimiser step over the flat buffers' first ``size`` entries; reads lr[0] and
    step[0] and advances step[0]. m and v are p where the rule has none (momentum's buffer is m); ``done`` is
    the device's count of finished blocks, 0 before and after a launch."""
    T = p.dtype.type
    size, n_weights = int(size), int(n_weights)
    p, g, m, v = p[:size], g[:size], m[:size], v[:size]
    t = int(step[0]) + 1
    rate, decay = T(lr[0]), T(weight_decay)
    # Adam's and AdamW's bias corrections in double (v's rounded to T once); beta1 is mu for momentum
    m_hat_scale = 1.0 / (1.0 - beta1 ** float(t)) if rule in (ADAM, ADAMW) else 1.0
    v_hat_scale = T(1.0 / (1.0 - beta2 ** float(t))) if rule in (ADAM, ADAMW) else T(1)
    step_size = T(float(lr[0]) * m_hat_scale)
    gk = g.copy()
    if rule == ADAMW:  # decoupled: each weight shrinks by 1 - lr wd, its gradient is left alone
        p[:n_weights] *= T(1.0 - float(lr[0]) * weight_decay)
    else:
        gk[:n_weights] += decay * p[:n_weights]  # d/dW of (wd / 2) ||W||^2, for the weights only
    if rule == SGD:
        p -= rate * gk
    elif rule == MOMENTUM:
        bk = T(beta1) * m + gk
        m[...] = bk
        p -= rate * bk
    else:
        mk = T(beta1) * m + T(1.0 - beta1) * gk
        vk = T(beta2) * v + T(1.0 - beta2) * (gk * gk)
        m[...] = mk
        v[...] = vk
        p -= mk / (np.sqrt(vk * v_hat_scale) + T(eps)) * step_size
    step[0] = t


class NumpyKernels:
    """The kernel launches of fused.py and flat.py (CudaKernels' methods), run by the transcriptions above."""

    xp = np

    def bias_act(self, Z: Any, b: Any, act: str) -> None:
        bias_act(Z, b, act=ACT_CODES[act])

    def bias_act_keep(self, Z: Any, b: Any, Zk: Any, act: str) -> None:
        bias_act_keep(Z, b, Zk, act=ACT_CODES[act])

    def output_layer(self, Z: Any, b: Any, T: Any, loss: Any, output: str, loss_name: str, scale: float) -> None:
        output_layer(Z, b, T, loss, scale, out=OUTPUT_CODES[output], loss_code=LOSS_CODES[loss_name])

    def delta_bias(self, dA: Any, A: Any, db: Any, act: str, update: bool) -> None:
        delta_bias(dA, A, db, delta_bias_geometry(*dA.shape)[1][1], act=ACT_CODES[act], update=update)

    def gemm_update(self, A: Any, delta: Any, W: Any) -> None:
        W -= A.T @ delta  # cuBLAS gemm with alpha = -1, beta = 1 on the device

    def flat_step(self, rule: str, p: Any, g: Any, m: Any, v: Any, n_weights: int, lr: Any, step: Any,
                  done: Any, weight_decay: float, beta1: float, beta2: float, eps: float) -> None:
        flat_step(*flat_step_arguments(p, g, m, v, n_weights, lr, step, done, weight_decay, beta1, beta2, eps),
                  rule=RULE_CODES[rule])


# --- gemm.cu -----------------------------------------------------------------------------------------------
# What runs in parallel (the elements of a product, the rows of output_delta) is vectorised; each product
# element adds its terms in order k = 0, 1, ..., K - 1 whichever thread computes it, so the template parameter
# R (1, or RTILE for large products) changes nothing here: the functions take it and compute the same numbers.

def _rows(a: Array, N: int, width: int) -> Array:
    """The first N rows of a contiguous buffer read as (N, width), a view: what a kernel's pointer reaches."""
    return a.reshape(-1)[: N * width].reshape(N, width)


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
    for source_rows, width, out in ((X, wx, Xb), (Tg, wt, Tb)):
        rows = _rows(out, N, width)
        rows[...] = _rows(source_rows, n_rows, width)[np.where(valid, src, 0)]
        rows[~valid] = np.nan  # an index out of range: a NaN row, which the loss reports


def forward(A_prev: Array, W: Array, b: Array, A: Array, N: int, n_in: int, n_out: int, *, act: int,
            r: int = 1) -> None:
    Z = tile_product(A_prev, W, N, n_out, n_in, False, False)
    _rows(A, N, n_out)[...] = act_forward(act, Z + b[:n_out])


def forward_keep(A_prev: Array, W: Array, b: Array, A: Array, Zk: Array, N: int, n_in: int, n_out: int, *, act: int,
                 r: int = 1) -> None:
    """forward, with Z = A_prev W + b kept in Zk beside A = f(Z)."""
    Z = tile_product(A_prev, W, N, n_out, n_in, False, False) + b[:n_out]
    _rows(Zk, N, n_out)[...] = Z
    _rows(A, N, n_out)[...] = act_forward(act, Z)


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
    """output_row for each row r < N (one thread a row): its loss, delta = s dL/dZ, s = lr / N or 1 / N."""
    y, t, d = _rows(Y, N, n_out), _rows(Tg, N, n_out), _rows(delta, N, n_out)
    dtype = y.dtype.type
    s = dtype(lr[0] / N if fold_lr else 1.0 / N)
    cross_entropy = loss_code == CROSS_ENTROPY
    if out in FROM_INPUT:  # y holds Z on entry: Y = f(Z) in place, Z kept in d
        for j in range(n_out):
            d[:, j] = y[:, j]
            y[:, j] = act_forward(out, d[:, j])
    elif out == SOFTMAX:  # y holds Z on entry
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
    if loss_code == SQUARED:
        L = np.zeros(N, dtype=dtype)
        for j in range(n_out):
            err = t[:, j] - y[:, j]
            L += err * err
        loss[:N] = 0.5 * L
    elif loss_code == ABSOLUTE:
        L = np.zeros(N, dtype=dtype)
        for j in range(n_out):
            L += np.abs(t[:, j] - y[:, j])
        loss[:N] = L
    if out in FROM_INPUT:  # f'(Z), Z read from d
        for j in range(n_out):
            d[:, j] = act_backward_from_input(out, d[:, j], loss_grad(loss_code, y[:, j], t[:, j]) * s)
    elif not cross_entropy:
        for j in range(n_out):
            d[:, j] = loss_grad(loss_code, y[:, j], t[:, j]) * s
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
    _rows(delta_prev, N, n_prev)[...] = act_backward_at(act, _rows(A_prev, N, n_prev), dA)  # A_prev: Z where FROM_INPUT


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


def weight_grads(layers: tuple[WeightGradLayer, ...], lr: Array, weight_decay: Any, N: int, *, mode: int,
                 r: int = 1) -> None:
    """Each layer's weight_grad, as the one launch runs it (the layers read and write disjoint memory)."""
    for layer in layers:
        weight_grad(layer.A_prev, layer.delta, layer.W, layer.dW, layer.b, layer.db, lr, weight_decay, N,
                    layer.n_prev, layer.n_i, mode=mode, r=r)


# What runs each of graph mode's launches: its kernel's transcription, by kernel name (optim.cu's flat_step too).
GRAPH_KERNELS: dict[str, Callable[..., None]] = {
    "gather_rows": gather_rows, "forward": forward, "forward_keep": forward_keep, "forward_output": forward_output,
    "output_delta": output_delta,
    "loss_total": loss_total, "backward": backward, "weight_grad": weight_grad, "weight_grads": weight_grads,
    "flat_step": flat_step, "dropout_apply": dropout_apply,
}


def graph_launch(launch: Any) -> None:
    """GraphTrainer's launcher: a graph.Launch run by its kernel's transcription, with the launch's own arguments
    and template parameters."""
    GRAPH_KERNELS[launch.kernel](*launch.args, **launch.params)


# --- per_sample.cu -----------------------------------------------------------------------------------------
# Arrays indexed by thread are (per_thread, threads): entry [i, tid] is hidden unit tid + i * threads,
# padded with zeros past H (adding 0 to a partial sum leaves it as it was, as skipping it does).

def warp_sum(v: np.ndarray) -> np.ndarray:
    """per_sample.cu's warp_sum over the last axis (32 lanes): lane 0's total after __shfl_down_sync."""
    v = v.copy()
    for offset in (16, 8, 4, 2, 1):
        v[..., : WARP - offset] = v[..., : WARP - offset] + v[..., offset:]
    return v[..., 0]


def output_sum(v: np.ndarray) -> Any:
    """per_sample.cu's output_sum: lane l sums v[l], v[l + 32], ... in order, then warp_sum."""
    lanes = np.zeros(-(-v.shape[0] // WARP) * WARP, dtype=v.dtype)
    lanes[: v.shape[0]] = v
    lanes = lanes.reshape(-1, WARP)
    s = np.zeros(WARP, dtype=v.dtype)
    for row in lanes:
        s += row
    return warp_sum(s)


def _by_thread(a: np.ndarray, per_thread: int, threads: int) -> np.ndarray:
    """(..., H) -> (..., per_thread, threads), zero-padded: unit tid + i * threads at [..., i, tid]."""
    padded = np.zeros((*a.shape[:-1], per_thread * threads), dtype=a.dtype)
    padded[..., : a.shape[-1]] = a
    return padded.reshape(*a.shape[:-1], per_thread, threads)


def per_sample_chunk(Z1: np.ndarray, G: np.ndarray, T: np.ndarray, W2: np.ndarray, b2: np.ndarray, b1: np.ndarray,
                     D: np.ndarray, Y: np.ndarray, Z2o: np.ndarray, K: int, H: int, O: int, lr: Any, out_act: int,
                     loss: int, *dropout: Any, hidden: int, in_kernel: bool, threads: int) -> None:
    """per_sample_chunk<F, HIDDEN, IN_KERNEL> on one block of ``threads`` threads: the rows t = 0, 1, ... in
    order, each in the kernel's order. ``dropout``: the _dropout kernels' last five arguments (seed_lo, seed_hi,
    step0, threshold, scale), the hidden layer's output dropped (DROP); none for the kernels without."""
    K, H, O, out_act, loss = int(K), int(H), int(O), int(out_act), int(loss)
    dtype = Z1.dtype.type
    lr, one = dtype(lr), dtype(1)
    per_thread, n_warps = -(-H // threads), threads // WARP
    W2s, b2s = W2.T.copy(), b2.copy()  # (O, H) and (O,): the kernel's shared copies
    assert len(dropout) in (0, 5), dropout
    units = np.arange(H, dtype=np.uint32)

    def mask(t: int) -> np.ndarray:  # HiddenDropout::mask of row t: layer input 1, step step0 + t, row 0
        seed_lo, seed_hi, step0, threshold, scale = dropout
        return dropout_mask(seed_lo, seed_hi, 1, np.uint32((int(step0) + t) % 2**32), 0, units, threshold,
                            dtype(scale))

    for t in range(K):
        correction = np.zeros(H, dtype=dtype)
        for k in range(t):  # each unit j sums its column of D in the order of the rows
            correction += (lr * (G[t, k] + one) if in_kernel else G[t, k]) * D[k]
        z1 = (Z1[t] + b1 if in_kernel else Z1[t]) - correction
        if hidden in FROM_INPUT:  # z1 kept in row t of D until delta1_t replaces it
            D[t] = z1
        A1 = act_forward(hidden, z1)  # (H,)
        if dropout:  # A1 kept in D_t where f' reads it; the shared A1 holds In1 = A1 * m1_t
            if hidden not in FROM_INPUT:
                D[t] = A1
            A1 = A1 * mask(t)
        # Z2 = A1 W2: each thread's units in order, each warp's lanes by warp_sum, then the warps in order.
        partial = np.zeros((O, threads), dtype=dtype)
        A1t, W2t = _by_thread(A1, per_thread, threads), _by_thread(W2s, per_thread, threads)
        for i in range(per_thread):
            partial += A1t[i] * W2t[:, i]
        red = warp_sum(partial.reshape(O, n_warps, WARP))  # (O, n_warps)
        z2 = red[:, 0].copy()
        for w in range(1, n_warps):
            z2 += red[:, w]
        z2 += b2s
        Z2o[t] = z2
        y = act_forward(out_act, z2)  # softmax's code passes z2 through: the row's softmax follows
        if out_act == SOFTMAX:
            e = np.exp(y - y.max())
            y = e / output_sum(e)
        Tt = T[t]
        if loss == CROSS_ENTROPY:  # fused: y sum(t) - t for softmax, y - t for sigmoid
            t_sum = output_sum(Tt) if out_act == SOFTMAX else one
            delta2 = y * t_sum - Tt
        elif out_act == SOFTMAX:  # dZ_o = y_o (g_o - sum_p g_p y_p)
            g = loss_grad(loss, y, Tt)
            delta2 = y * (g - output_sum(g * y))
        else:  # g' at y, or at z2 where FROM_INPUT
            delta2 = act_backward_at(out_act, Z2o[t] if out_act in FROM_INPUT else y, loss_grad(loss, y, Tt))
        Y[t] = y
        b2s -= lr * delta2
        dA = np.zeros(H, dtype=dtype)
        for o in range(O):  # dA1 = delta2 W2^T, W2 before its update, each unit summing over o in order
            dA += delta2[o] * W2s[o]
        W2s -= lr * (delta2[:, None] * A1)  # (O, 1) * (H,) -> (O, H): the transposed A1^T delta2
        if dropout:  # f' at what D_t keeps, of dA1 times the mask
            D[t] = act_backward_at(hidden, D[t], dA * mask(t))
        else:
            D[t] = act_backward_at(hidden, D[t] if hidden in FROM_INPUT else A1, dA)
    W2[...] = W2s.T
    b2[...] = b2s
    if in_kernel:  # b1 -= lr sum_t D_t, each unit summing its column in row order
        column_sums = np.zeros(H, dtype=dtype)
        for t in range(K):
            column_sums += D[t]
        b1 -= lr * column_sums


def _reach(a: np.ndarray, stride: Any, models: int, shape: tuple[int, ...]) -> np.ndarray:
    """What a kernel reaches from pointer ``a`` for each model: model m's contiguous ``shape`` at ``m * stride``
    elements from ``a``'s first (stride 0: one for all), as a (models, *shape) view of ``a``'s memory."""
    itemsize = a.dtype.itemsize
    inner = tuple(int(np.prod(shape[i + 1 :], dtype=np.int64)) * itemsize for i in range(len(shape)))
    return np.lib.stride_tricks.as_strided(a, (models, *shape), (int(stride) * itemsize, *inner))


def per_sample_many(Z1: np.ndarray, G: np.ndarray, T: np.ndarray, W2: np.ndarray, b2: np.ndarray, D: np.ndarray,
                    Y: np.ndarray, Z2o: np.ndarray, K: int, H: int, O: int, g_stride: Any, t_stride: Any,
                    p_stride: Any, lr: np.ndarray, out_act: int, loss: int, *dropout: Any, hidden: int, threads: int,
                    models: int) -> None:
    """per_sample_many<F, HIDDEN> (and its _z2 and _dropout forms) on ``models`` blocks: block m runs
    :func:`per_sample_chunk` (without IN_KERNEL) on model m's arguments, each pointer advanced by m of its stride
    (Z1 and D K H, Y and Z2o K O, G ``g_stride``, T ``t_stride``, W2 and b2 ``p_stride``), at rate lr[m].
    ``dropout``: the _dropout forms' seeds (models, 2), thresholds and scales (models,), and step0."""
    K, H, O, models = int(K), int(H), int(O), int(models)
    assert len(dropout) in (0, 4), dropout
    blocks = [_reach(a, stride, models, shape) for a, stride, shape in (
        (Z1, K * H, (K, H)), (G, g_stride, (K, K)), (T, t_stride, (K, O)), (W2, p_stride, (H, O)),
        (b2, p_stride, (O,)), (D, K * H, (K, H)), (Y, K * O, (K, O)), (Z2o, K * O, (K, O)))]
    for m in range(models):  # the blocks are independent: each reads and writes its own model's memory
        mask = ()
        if dropout:
            seeds, thresholds, scales, step0 = dropout
            mask = (seeds[m, 0], seeds[m, 1], step0, thresholds[m], scales[m])
        z1, g, t, w2, b, d, y, z2 = (a[m] for a in blocks)
        per_sample_chunk(z1, g, t, w2, b, None, d, y, z2, K, H, O, lr[m], out_act, loss, *mask, hidden=hidden,
                         in_kernel=False, threads=threads)


def cublas_gemm_tn(X: np.ndarray, D: np.ndarray, W: np.ndarray, *, alpha: float, beta: float) -> None:
    """cuBLAS gemm("T", "N"): W = alpha X^T D + beta W, in W's dtype."""
    T = W.dtype.type
    W[...] = T(alpha) * (X.T @ D) + T(beta) * W


def per_sample_launch(launch: Any, threads: int | None = None) -> None:
    """per_sample.py's launcher: a per_sample.Launch run by the kernel's transcription (on the launch's threads,
    or ``threads``: a geometry the tests choose, e.g. 64 threads for 70 units, two units for some threads), or
    W1's cuBLAS product by :func:`cublas_gemm_tn`."""
    if launch.kernel == "gemm":
        cublas_gemm_tn(*launch.args, **launch.params)
    elif launch.kernel.startswith("per_sample_many"):
        per_sample_many(*launch.args, **launch.params, threads=threads or launch.block[0], models=launch.grid[0])
    else:
        per_sample_chunk(*launch.args, **launch.params, threads=threads or launch.block[0])
