"""Activations and losses: small tables of (function, derivative) pairs looked up by name.

Arrays are batch-first, ``(N, features)``. Each activation's forward takes ``Z``
and may write ``A`` into ``out`` (pass ``out=Z`` to work in place); its backward
takes its *output* ``A`` and the upstream gradient ``dA``, may overwrite both
(backpropagation is done with them), and returns ``dZ``, so the derivative is
computed from outputs (sigma' = A * (1 - A)). The in-place forms allocate no
temporaries; they differ from the plain formulas at most by rounding.
Each loss gives the per-sample loss ``(N,)`` and its gradient with respect to
the prediction ``Y``; cross-entropy, fused with its output activation, is computed
from the output layer's pre-activation ``Z`` (the logits) instead.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from .backend import array_module

Array = Any
LEAKY_SLOPE = 0.01


class Activation(NamedTuple):
    forward: Callable[..., Array]  # (Z, out=None) -> A, possibly written into out
    backward: Callable[[Array, Array], Array]  # (A, dA) -> dZ, possibly written into dA


class Loss(NamedTuple):
    per_sample: Callable[[Array, Array], Array]  # (Y, T) -> (N,)
    grad: Callable[[Array, Array], Array]  # (Y, T) -> dLoss_n / dY, (N, out)


def sigmoid(Z: Array, out: Array | None = None) -> Array:
    # 1 / (1 + exp(-z)) without overflow in float32 or float64: 0.5 * tanh(0.5 * z) + 0.5
    xp = array_module(Z)
    A = xp.multiply(Z, 0.5, out=out)
    xp.tanh(A, out=A)
    A *= 0.5
    A += 0.5
    return A


def _sigmoid_backward(A: Array, dA: Array) -> Array:
    dA *= A  # dA * sigma', sigma' = A * (1 - A) read off the output
    array_module(A).subtract(1, A, out=A)  # A is spent: reuse it for 1 - A, no temporary
    dA *= A
    return dA


def _tanh_backward(A: Array, dA: Array) -> Array:
    A *= A  # tanh' = 1 - A^2, computed in A's memory (A is spent)
    array_module(A).subtract(1, A, out=A)
    dA *= A
    return dA


def _relu_backward(A: Array, dA: Array) -> Array:
    dA *= A > 0
    return dA


def softmax(Z: Array, out: Array | None = None) -> Array:
    xp = array_module(Z)
    E = xp.exp(Z - Z.max(axis=1, keepdims=True))  # shift: exp never overflows
    return E / E.sum(axis=1, keepdims=True)


def _softmax_backward(A: Array, dA: Array) -> Array:
    # Jacobian-vector product: dZ_i = A_i * (dA_i - sum_j dA_j A_j)
    return A * (dA - (dA * A).sum(axis=1, keepdims=True))


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(sigmoid, _sigmoid_backward),
    "tanh": Activation(lambda Z, out=None: array_module(Z).tanh(Z, out=out), _tanh_backward),
    "relu": Activation(lambda Z, out=None: array_module(Z).maximum(Z, 0, out=out), _relu_backward),
    # A > 0 exactly where Z > 0, so the derivative can still be read off the output.
    "leaky_relu": Activation(
        lambda Z, out=None: array_module(Z).where(Z > 0, Z, LEAKY_SLOPE * Z),
        lambda A, dA: array_module(A).where(A > 0, dA, LEAKY_SLOPE * dA),
    ),
    "identity": Activation(lambda Z, out=None: Z, lambda A, dA: dA),
    "softmax": Activation(softmax, _softmax_backward),
}
HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax", "identity", "tanh", "relu", "leaky_relu")


def softplus(Z: Array) -> Array:
    # log(1 + exp(z)) without overflow: max(z, 0) + log1p(exp(-|z|))
    xp = array_module(Z)
    return xp.maximum(Z, 0) + xp.log1p(xp.exp(-abs(Z)))


def _cross_entropy(Z: Array, T: Array) -> Array:
    # -sum t log softmax(z) = logsumexp(z) * sum(t) - sum(t z), from the logits: exact however sure the output
    xp = array_module(Z)
    top = Z.max(axis=1, keepdims=True)
    lse = top[:, 0] + xp.log(xp.exp(Z - top).sum(axis=1))  # shifted: exp never overflows
    return lse * T.sum(axis=1) - (T * Z).sum(axis=1)


def _binary_cross_entropy(Z: Array, T: Array) -> Array:
    # Sigmoid outputs, each unit its own Bernoulli: -t log sigma(z) - (1 - t) log(1 - sigma(z)) = softplus(z) - t z
    return (softplus(Z) - T * Z).sum(axis=1)


LOSSES: dict[str, Loss] = {
    # The original article's loss: 1/2 sum (t - y)^2 per sample.
    "squared": Loss(lambda Y, T: 0.5 * ((T - Y) ** 2).sum(axis=1), lambda Y, T: Y - T),
    "absolute": Loss(lambda Y, T: abs(T - Y).sum(axis=1), lambda Y, T: array_module(Y).sign(Y - T)),
}


class FusedLoss(NamedTuple):
    per_sample: Callable[[Array, Array], Array]  # (Z, T) -> (N,), from the output layer's pre-activation Z
    delta: Callable[[Array, Array], Array]  # (Y, T) -> dLoss_n / dZ of the output layer


# Cross-entropy exists only fused with its output activation: the loss is computed
# from the logits Z (log-sum-exp, softplus), so it stays exact where Y rounds to 0
# or 1, and the gradient with respect to Z collapses to a short, stable formula of Y.
FUSED: dict[tuple[str, str], FusedLoss] = {
    # d/dZ of -sum t log softmax(Z) = y * sum(t) - t  (= y - t for one-hot targets)
    ("softmax", "cross-entropy"): FusedLoss(
        _cross_entropy, lambda Y, T: Y * T.sum(axis=1, keepdims=True) - T
    ),
    # d/dZ of the binary cross-entropy through a sigmoid = y - t
    ("sigmoid", "cross-entropy"): FusedLoss(_binary_cross_entropy, lambda Y, T: Y - T),
}
LOSS_NAMES = (*LOSSES, "cross-entropy")
