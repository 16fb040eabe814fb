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
    """One row of the table: the NumPy/CuPy pair, the kernels' code and C++ expressions, and the ONNX operators.

    ``cuda_forward`` is a C++ expression of ``z`` (of type ``T``), ``cuda_backward`` one of the output ``a``
    and the upstream gradient ``da`` (or, where ``from_output`` is False, of the input ``z`` and ``da``);
    gpunet/engines/kernels.py builds the kernels' device functions from them. ``onnx`` lists the operators
    that compute it from Z, each ``(op, attributes)``, ``("Mul", "Z")`` meaning Z times the last result.
    """

    forward: Callable[..., Array]  # (Z, out=None) -> A, possibly written into out
    backward: Callable[[Array, Array], Array]  # (A, dA) -> dZ, possibly written into dA; (Z, dA) if not from_output
    code: int = -1  # the kernels' GPUNET_<NAME> code
    cuda_forward: str | None = None  # None: not elementwise (softmax, a row operation)
    cuda_backward: str | None = None
    onnx: tuple[tuple[str, Any], ...] = ()
    hidden: bool = True  # may be a hidden layer's activation
    from_output: bool = True  # the derivative is read off the output A (else it needs the input Z)


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


def _silu(Z: Array, out: Array | None = None) -> Array:
    return Z * sigmoid(Z)  # z sigma(z), a new array: the derivative reads Z


def _silu_backward(Z: Array, dA: Array) -> Array:
    s = sigmoid(Z)
    return dA * s * (1 + Z * (1 - s))  # d/dz z sigma(z) = sigma(z) (1 + z (1 - sigma(z)))


# The table: every activation gpunet knows, by name. The codes are the kernels' (GPUNET_<NAME>); the C++
# expressions become activations.cuh's device functions (gpunet/engines/kernels.py), the same arithmetic
# as the NumPy pair: a test compiles them for the host and holds them to it over a grid of inputs.
ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(sigmoid, _sigmoid_backward, 0,
                          "T(0.5) * tanh(T(0.5) * z) + T(0.5)", "da * a * (T(1) - a)", (("Sigmoid", {}),)),
    "tanh": Activation(lambda Z, out=None: array_module(Z).tanh(Z, out=out), _tanh_backward, 1,
                       "tanh(z)", "da * (T(1) - a * a)", (("Tanh", {}),)),
    "relu": Activation(lambda Z, out=None: array_module(Z).maximum(Z, 0, out=out), _relu_backward, 2,
                       "z > T(0) ? z : T(0)", "a > T(0) ? da : T(0)", (("Relu", {}),)),
    # A > 0 exactly where Z > 0, so the derivative can still be read off the output.
    "leaky_relu": Activation(
        lambda Z, out=None: array_module(Z).where(Z > 0, Z, LEAKY_SLOPE * Z),
        lambda A, dA: array_module(A).where(A > 0, dA, LEAKY_SLOPE * dA), 3,
        "z > T(0) ? z : T(GPUNET_LEAKY_SLOPE) * z", "a > T(0) ? da : T(GPUNET_LEAKY_SLOPE) * da",
        (("LeakyRelu", {"alpha": LEAKY_SLOPE}),)),
    "identity": Activation(lambda Z, out=None: Z, lambda A, dA: dA, 4, "z", "da", (), hidden=False),
    # SiLU (swish): z sigma(z). Its output does not determine z below the minimum, so its derivative reads Z.
    "silu": Activation(_silu, _silu_backward, 6, "z * act_forward<GPUNET_SIGMOID>(z)",
                       "da * act_forward<GPUNET_SIGMOID>(z) * (T(1) + z * (T(1) - act_forward<GPUNET_SIGMOID>(z)))",
                       (("Sigmoid", {}), ("Mul", {})), from_output=False),
    "softmax": Activation(softmax, _softmax_backward, 5, onnx=(("Softmax", {"axis": 1}),), hidden=False),
}
HIDDEN_ACTIVATIONS = tuple(name for name, a in ACTIVATIONS.items() if a.hidden)
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax", "identity", *(n for n in HIDDEN_ACTIVATIONS if n != "sigmoid"))


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
