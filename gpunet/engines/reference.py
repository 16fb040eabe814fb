"""NumPy transcriptions of the kernels in fused.cu and optim.cu: the same loops, in the same order, in the same dtype.

Each function does what its kernel does to its arguments (in place), so the host
code of fused.py and flat.py runs unchanged on NumPy through :class:`NumpyKernels`
and the tests hold the result to the plain path of network.py and optim.py. Two
differences from the device remain, both rounding: the CUDA compiler may contract
``a * b + c`` into one fused multiply-add, and ``exp``, ``log``, ``log1p``, ``tanh`` and
``pow`` are the device's, not NumPy's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..activations import ACTIVATIONS
from .fused import RULE_CODES, delta_bias_geometry

WARP = 32
RULE_NAMES = {code: name for name, code in RULE_CODES.items()}  # optim.cu's rule codes -> "sgd", "momentum", "adam"


def bias_act(Z: np.ndarray, b: np.ndarray, act: str) -> None:
    """bias_act<T, ACT>: Z = f(Z + b), element by element."""
    Z += b
    A = ACTIVATIONS[act].forward(Z, out=Z)
    if A is not Z:  # leaky_relu's forward ignores out
        Z[...] = A


def _warp_sum(p: np.ndarray) -> np.ndarray:
    """warp_sum over the last axis (32 lanes): the xor butterfly, offsets 16, 8, 4, 2, 1."""
    lanes = np.arange(WARP)
    for o in (16, 8, 4, 2, 1):
        p = p + p[..., lanes ^ o]
    return p[..., 0]


def _warp_max(p: np.ndarray) -> np.ndarray:
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
    return _warp_sum(part)


def output_layer(Z: np.ndarray, b: np.ndarray, T: np.ndarray, loss: np.ndarray, output: str, loss_name: str,
                 scale: float) -> None:
    """output_layer<T, OUT, LOSS>: Z becomes delta_L (scale * dL/dZ), loss[n] the row's loss; one warp per row.
    Cross-entropy comes from the logits Z + b, term by term as activations.py's FUSED losses."""
    dtype = Z.dtype.type
    scale = dtype(scale)
    logits = Z + b  # the kernel's z[j] + b[j], read before Y overwrites it
    cross_entropy = loss_name == "cross-entropy"
    if output == "softmax":
        n, cols = Z.shape
        part = np.broadcast_to(logits[:, :1], (n, WARP)).copy()  # every lane starts from column 0
        for j in range(cols):
            part[:, j % WARP] = np.maximum(part[:, j % WARP], logits[:, j])
        m = _warp_max(part)
        np.exp(logits - m[:, None], out=Z)
        s = _lane_sums(Z)
        if cross_entropy:  # logsumexp(z) * sum t - sum t z, shifted by the row's max
            t_sum = _lane_sums(T)
            loss[:] = (m + np.log(s)) * t_sum - _lane_sums(T * logits)
        Z /= s[:, None]
    else:
        if cross_entropy:  # sigmoid: softplus(z) - t z, softplus(z) = max(z, 0) + log1p(exp(-|z|))
            loss[:] = _lane_sums((np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits)))) - T * logits)
        Z[...] = ACTIVATIONS[output].forward(logits)  # Y = f(z)
    Y = Z
    if loss_name == "squared":
        loss[:] = dtype(0.5) * _lane_sums((T - Y) * (T - Y))
    elif loss_name == "absolute":
        loss[:] = _lane_sums(np.abs(T - Y))
    if cross_entropy and output == "softmax":
        Z[...] = (Y * t_sum[:, None] - T) * scale
    elif cross_entropy:
        Z[...] = (Y - T) * scale
    else:
        dA = (Y - T if loss_name == "squared" else np.sign(Y - T)) * scale
        if output == "softmax":
            Z[...] = Y * (dA - _lane_sums(dA * Y)[:, None])
        else:
            Z[...] = ACTIVATIONS[output].backward(Y, dA)


def delta_bias(dA: np.ndarray, A: np.ndarray, db: np.ndarray, act: str, update: bool, rows_per_block: int) -> None:
    """delta_bias<T, ACT, UPDATE>: dA becomes dA * f'(A); db = its column sums (update: b -= them).

    Thread y of a column sums rows y, y + R, ... (R = rows_per_block); the R partial sums then meet by halving.
    """
    if act != "identity":
        dA[...] = ACTIVATIONS[act].backward(A.copy(), dA.copy())
    part = np.zeros((rows_per_block, dA.shape[1]), dtype=dA.dtype)
    for r in range(dA.shape[0]):
        part[r % rows_per_block] += dA[r]
    h = rows_per_block // 2
    while h > 0:
        part[:h] += part[h : 2 * h]
        h //= 2
    if update:
        db -= part[0]
    else:
        db[...] = part[0]


def flat_step(rule: str, p: np.ndarray, g: np.ndarray, m: np.ndarray | None, v: np.ndarray | None,
              n_weights: int, lr: np.ndarray, step: np.ndarray, weight_decay: float, beta1: float, beta2: float,
              eps: float) -> None:
    """flat_step<T, RULE>: one optimiser step over the flat buffers; reads lr[0] and step[0], advances step[0]."""
    T = p.dtype.type
    t = int(step[0]) + 1
    rate = T(lr[0])
    g[:n_weights] += T(weight_decay) * p[:n_weights]
    if rule == "sgd":
        p -= rate * g
    elif rule == "momentum":  # m is the buffer buf
        m[...] = T(beta1) * m + g
        p -= rate * m
    else:
        m_hat_scale = 1.0 / (1.0 - beta1**t)
        v_hat_scale = T(1.0 / (1.0 - beta2**t))
        m[...] = T(beta1) * m + T(1.0 - beta1) * g
        v[...] = T(beta2) * v + T(1.0 - beta2) * (g * g)
        p -= m / (np.sqrt(v * v_hat_scale) + T(eps)) * T(float(lr[0]) * m_hat_scale)
    step[0] = t


def flat_step_kernel(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, size: int, n_weights: int,
                     lr: np.ndarray, step: np.ndarray, done: np.ndarray, weight_decay: float, beta1: float,
                     beta2: float, eps: float, *, rule: int) -> None:
    """flat_step<T, RULE> called with the kernel's own arguments and template parameter (optim.cu's rule code),
    as graph mode's launches hold them; m and v are p where the rule has no such state."""
    flat_step(RULE_NAMES[rule], p[:size], g[:size], m[:size], v[:size], n_weights, lr, step, weight_decay, beta1,
              beta2, eps)


class NumpyKernels:
    """The kernel launches of fused.py and flat.py, run by the transcriptions above on NumPy arrays."""

    xp = np

    def bias_act(self, Z: Any, b: Any, act: str) -> None:
        bias_act(Z, b, act)

    def output_layer(self, Z: Any, b: Any, T: Any, loss: Any, output: str, loss_name: str, scale: float) -> None:
        output_layer(Z, b, T, loss, output, loss_name, scale)

    def delta_bias(self, dA: Any, A: Any, db: Any, act: str, update: bool) -> None:
        delta_bias(dA, A, db, act, update, delta_bias_geometry(*dA.shape)[1][1])

    def gemm_update(self, A: Any, delta: Any, W: Any) -> None:
        W -= A.T @ delta  # cuBLAS gemm with alpha = -1, beta = 1 on the device

    def flat_step(self, rule: str, p: Any, g: Any, m: Any, v: Any, n_weights: int, lr: Any, step: Any,
                  done: Any, weight_decay: float, beta1: float, beta2: float, eps: float) -> None:
        flat_step(rule, p, g, m, v, n_weights, lr, step, weight_decay, beta1, beta2, eps)
