"""Backpropagation against central finite differences, in float64, for every combination."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet.activations import FUSED, HIDDEN_ACTIVATIONS, LOSSES

OUTPUTS_FOR_LOSS = {
    "squared": ("sigmoid", "softmax", "identity"),
    "absolute": ("sigmoid", "softmax", "identity"),
    "cross-entropy": tuple(o for o, _ in FUSED),
}
CASES = [
    (act, out, loss, depth)
    for act in HIDDEN_ACTIVATIONS
    for loss, outs in OUTPUTS_FOR_LOSS.items()
    for out in outs
    for depth in (1, 2, 3)
]


def _problem(act: str, out: str, loss: str, depth: int):
    sizes = [5, 6, 4, 5][: depth + 1] + [3]
    net = gpunet.Network(sizes, activation=act, output=out, loss=loss, init="fan-in",
                         seed=depth, backend="numpy", dtype="float64")
    rng = np.random.default_rng(7)
    params = net.get_params()
    for k in params:  # non-zero biases so every term of the gradient is exercised
        if k.startswith("b"):
            params[k] = 0.3 * rng.standard_normal(params[k].shape)
    net.set_params(params)
    X = rng.standard_normal((4, sizes[0]))
    if loss == "cross-entropy" and out == "softmax":
        T = rng.dirichlet(np.ones(sizes[-1]), size=4)  # rows sum to 1
    else:
        T = rng.uniform(0.05, 0.95, (4, sizes[-1]))
    return net, X, T


def test_every_loss_and_output_is_covered():
    assert set(OUTPUTS_FOR_LOSS) == {*LOSSES, "cross-entropy"}
    assert len(CASES) == len(HIDDEN_ACTIVATIONS) * 8 * 3


@pytest.mark.parametrize("act,out,loss,depth", CASES)
def test_gradients_match_finite_differences(act, out, loss, depth):
    net, X, T = _problem(act, out, loss, depth)
    analytic = {k: np.asarray(v) for k, v in net.gradients(X, T).items()}
    params = net.get_params()
    h = 1e-6
    for k, p in params.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            net.set_params(params)
            up = net.loss(X, T)
            p[i] = old - h
            net.set_params(params)
            down = net.loss(X, T)
            p[i] = old
            numeric[i] = (up - down) / (2 * h)
        net.set_params(params)
        err = np.linalg.norm(numeric - analytic[k]) / max(np.linalg.norm(numeric) + np.linalg.norm(analytic[k]), 1e-12)
        assert err <= 1e-6, f"{k}: relative error {err:.2e}"
        assert np.linalg.norm(analytic[k]) > 0, f"{k}: gradient is identically zero"
