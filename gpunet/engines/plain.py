"""The plain engines, in plain ``xp`` code on NumPy or CuPy: batch steps through network.py, and per-sample SGD
by the Gram-chunk algorithm. Every other engine is tested against these.

Per-sample plain SGD takes one row at a time, in order: the article's update, the same maths as
``Network.train_step`` on each row, in fewer and larger array operations. Row ``t`` of a chunk sees
the first layer as updated by rows ``0..t-1``:
``Z1_t = x_t W1 + b1 - lr * sum_k (x_t . x_k + 1) delta1_k``, so one product gives every row's
``x_t W1 + b1`` and one Gram matrix gives the corrections; ``W1`` and ``b1`` take all the updates in
one product at the end. The other layers are small and are updated row by row.
"""

from __future__ import annotations

from typing import Any

from ..activations import ACTIVATIONS, FUSED, LOSSES
from ..checks import check_number
from ..optim import SGD, Optimizer
from .engine import Array, StepEngine


class PlainEngine(StepEngine):
    """The plain path: :meth:`gpunet.Network.train_step_unchecked`, the array operations every engine is held to."""

    name = "plain"

    def step(self, X: Array, T: Array, lr: float) -> Array:
        return self.net.train_step_unchecked(X, T, lr, self.optimizer)


class PlainPerSample(StepEngine):
    """Per-sample plain SGD, a chunk of ``rows`` rows a step by :func:`gram_chunk`; the optimiser counts a step a row."""

    name = "plain"

    def step(self, X: Array, T: Array, lr: float) -> Array:
        return gram_chunk(self.net, X, T, lr, self.optimizer)


def train_per_sample(net: Any, X: Array, T: Array, lr: float = 0.1, optimizer: Optimizer | None = None) -> Array:
    """Plain SGD on one row of ``X`` at a time, in order (targets ``T``), by :func:`gram_chunk`: the same maths as
    ``net.train_step`` on each row. ``optimizer`` (default a fresh :class:`~gpunet.SGD`) must be SGD without
    weight decay; it counts one step a row. Returns the summed per-sample loss (each row's before its step) as a
    0-d array on the network's backend."""
    check_number("lr", lr, positive=True)
    if optimizer is not None and not (isinstance(optimizer, Optimizer) and optimizer.folds_lr):
        raise ValueError(f"train_per_sample needs plain SGD without weight decay (or None); got {optimizer!r}")
    X = net.checked_input(X)
    return gram_chunk(net, X, net.checked_targets(T, X), lr, optimizer or SGD())


def gram_chunk(net: Any, X: Array, T: Array, lr: float, optimizer: Optimizer) -> Array:
    """Plain SGD on each row of the chunk ``X`` (K, n_in), targets ``T`` (K, n_out), in order: checked device
    arrays of the network's dtype. ``optimizer`` must be plain SGD (``optimizer.folds_lr``), whose rule
    p -= lr * g is written out below; it counts the K rows as K steps when it applies the first layer's K
    folded updates. Returns the summed per-sample loss (each row's before its step) as a 0-d array. With dropout,
    row t takes the masks of step ``optimizer.t + t`` (a batch of one): the same numbers as ``net.train_step``
    on each row in turn."""
    xp, L, P = net.backend.xp, net.n_layers, net.params
    hidden, out = ACTIVATIONS[net.activation], ACTIVATIONS[net.output]
    fused = FUSED.get((net.output, net.loss_name))
    # dropout: row t is step optimizer.t + t, as K train_steps on one row each would draw its masks
    masks = net.dropout_masks(optimizer.t, X.shape[0], per_sample=True) if net.has_dropout else [None] * L
    X_in = X if masks[0] is None else X * masks[0]  # the inputs as layer 1 sees them, in Z1, G and W1's update
    Z1, G = first_layer(net, X_in, lr)
    D = xp.empty_like(Z1)  # (K, n_1): each row's delta1
    ZL = xp.empty((X.shape[0], net.sizes[-1]), dtype=net.dtype)  # each row's output logits before its step
    Y = xp.empty_like(ZL)  # ... and its output
    for t in range(X.shape[0]):
        z = Z1[t : t + 1] - G[t : t + 1, :t] @ D[:t]  # (1, n_1)
        As, Ins, Zs = [X[t : t + 1]], [X_in[t : t + 1]], [None]  # Ins[i - 1]: layer i's input, dropped
        for i in range(1, L + 1):
            if i > 1:
                m = masks[i - 1]
                Ins.append(As[-1] if m is None else As[-1] * m[t : t + 1])
                z = Ins[-1] @ P[f"W{i}"] + P[f"b{i}"]  # (1, n_{i-1}) @ (n_{i-1}, n_i)
            Zs.append(z)
            As.append((out if i == L else hidden).forward(z))
        ZL[t], Y[t] = z[0], As[-1][0]
        delta = fused.delta(As[-1], T[t : t + 1]) if fused else out.backward(
            As[-1] if out.from_output else z, LOSSES[net.loss_name].grad(As[-1], T[t : t + 1]))
        for i in range(L, 1, -1):
            dA = delta @ P[f"W{i}"].T  # (1, n_i) @ (n_i, n_{i-1}), with W_i before its update
            P[f"W{i}"] -= lr * (Ins[i - 1].T @ delta)  # (n_{i-1}, 1) @ (1, n_i)
            P[f"b{i}"] -= lr * delta[0]
            m = masks[i - 1]
            if m is not None:  # d(A * mask)/dA = mask
                dA *= m[t : t + 1]
            delta = hidden.backward(As[i - 1] if hidden.from_output else Zs[i - 1], dA)
        D[t] = delta[0]
    update_first_layer(net, X_in, D, lr, optimizer)
    return net.per_sample_loss(ZL, Y, T).sum()


def first_layer(net: Any, X: Array, lr: float) -> tuple[Array, Array]:
    """Z1 = X W1 + b1 (K, n_1), every row's as W1 is now, and G = lr (X X^T + 1) (K, K), how row k's update
    moves row t's Z1: the per-sample engines' (this one's, and the CUDA kernel's) first layer."""
    Z1 = X @ net.params["W1"] + net.params["b1"]  # (K, n_in) @ (n_in, n_1)
    G = X @ X.T  # (K, K): x_t . x_k, how row k's update to W1 moves row t's Z1
    G += 1  # ... and its update to b1
    G *= lr
    return Z1, G


def update_first_layer(net: Any, X: Array, D: Array, lr: float, optimizer: Optimizer) -> None:
    """W1 -= lr X^T D, b1 -= lr sum_t D_t: (n_in, K) @ (K, n_1), the K first-layer updates of a per-sample
    chunk (D: each row's delta1) at once, through ``optimizer``, counted as K steps."""
    optimizer.step_scaled({"W1": net.params["W1"], "b1": net.params["b1"]},
                          {"W1": lr * (X.T @ D), "b1": lr * D.sum(axis=0)}, steps=X.shape[0])
