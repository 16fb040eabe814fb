"""The per-sample paths (train_step, train_per_sample, gpunet.train with batch 1) against the
original article's update, written here independently."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet.engines.plain import train_per_sample
from gpunet.datasets import load_mnist

from conftest import rel_diff


def original_step(W, A, V, B, x, t, lr):
    """One update in the article's column-vector notation (arrays updated in place)."""
    sigma = lambda s: 1.0 / (1.0 + np.exp(-s))  # noqa: E731  the article's own sigmoid
    X, T = x.reshape(-1, 1), t.reshape(-1, 1)  # (N, 1), (10, 1)
    P = W @ X + A
    Q = sigma(P)
    O = V @ Q + B
    Y = sigma(O)
    G = (T - Y) * Y * (1 - Y)
    E = Q * (1 - Q) * (V.T @ G)
    V += lr * G @ Q.T
    W += lr * E @ X.T
    B += lr * G
    A += lr * E


def _compare(X, T, hidden, lr, seed, how="train_step"):
    n_in, n_out = X.shape[1], T.shape[1]
    rng = np.random.default_rng(seed)
    # Any starting point, non-zero biases included, in the article's shapes.
    W = 0.05 * rng.standard_normal((hidden, n_in))
    A = 0.5 * rng.standard_normal((hidden, 1))
    V = 0.3 * rng.standard_normal((n_out, hidden))
    B = 0.5 * rng.standard_normal((n_out, 1))
    net = gpunet.Network.article([n_in, hidden, n_out], activation="sigmoid", output="sigmoid", loss="squared",
                         backend="numpy", dtype="float64")
    net.set_params({"W1": W.T, "b1": A[:, 0], "W2": V.T, "b2": B[:, 0]})
    if how == "train_step":
        for x, t in zip(X, T):
            net.train_step(x[None, :], t[None, :], lr=lr)
    elif how == "train_per_sample":
        train_per_sample(net, X, T, lr=lr)
    else:  # gpunet.train visits epoch 1's seeded order, in chunks of PER_SAMPLE_CHUNK rows
        gpunet.train(net, X, T, epochs=1, batch_size=1, lr=lr, optimizer="sgd", seed=seed)
        order = np.random.default_rng([seed, 1]).permutation(len(X))
        X, T = X[order], T[order]
    for x, t in zip(X, T):
        original_step(W, A, V, B, x, t, lr)
    p = net.get_params()
    diffs = {"W": rel_diff(p["W1"].T, W), "A": rel_diff(p["b1"], A[:, 0]),
             "V": rel_diff(p["W2"].T, V), "B": rel_diff(p["b2"], B[:, 0])}
    return diffs


def _targets(labels, n_out=10):
    T = np.full((len(labels), n_out), 0.01)
    T[np.arange(len(labels)), labels] = 0.99
    return T


HOW = ["train_step", "train_per_sample", "train"]


@pytest.mark.parametrize("how", HOW)
def test_matches_original_on_random_data(how):
    rng = np.random.default_rng(3)
    X = rng.uniform(0.01, 1.0, (150, 30))
    T = _targets(rng.integers(0, 10, 150))
    diffs = _compare(X, T, hidden=20, lr=0.3, seed=1, how=how)
    assert max(diffs.values()) <= 1e-12, diffs


@pytest.mark.parametrize("how", HOW)
def test_matches_original_on_mnist_rows(mnist_dir, how):
    data = load_mnist(mnist_dir)
    X, y = data.X_train[:200], data.y_train[:200]
    assert X.min() >= 0.01 and X.max() <= 1.0
    diffs = _compare(X, _targets(y), hidden=100, lr=0.1, seed=2, how=how)
    assert max(diffs.values()) <= 1e-12, diffs


def test_original_steps_really_move_the_parameters():
    # Guards the comparison above: 150 steps must change every parameter block noticeably.
    rng = np.random.default_rng(3)
    X = rng.uniform(0.01, 1.0, (150, 30))
    T = _targets(rng.integers(0, 10, 150))
    net = gpunet.Network.article([30, 20, 10], backend="numpy", dtype="float64", seed=5)
    before = net.get_params()
    for x, t in zip(X, T):
        net.train_step(x[None, :], t[None, :], lr=0.3)
    after = net.get_params()
    for k in before:
        assert np.abs(after[k] - before[k]).max() > 1e-3, k
