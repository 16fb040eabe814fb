"""Backend parity: each body runs on every usable backend from identical starting parameters.

CuPy runs are compared with NumPy in the same dtype; the NumPy float32 run is
compared with NumPy float64. Tolerances (max-norm relative): float64 1e-9, float32 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet.engines.plain import train_per_sample

from conftest import TOLERANCE, assert_close, rel_diff

CONFIGS = {
    "original": dict(sizes=[12, 10, 4], activation="sigmoid", output="sigmoid", loss="squared", init="article"),
    "deep-relu-ce": dict(sizes=[12, 16, 8, 4], activation="relu", output="softmax", loss="cross-entropy", init="he"),
    "tanh-absolute": dict(sizes=[12, 8, 4], activation="tanh", output="identity", loss="absolute", init="xavier"),
    "leaky-bce": dict(sizes=[12, 8, 4], activation="leaky_relu", output="sigmoid", loss="cross-entropy", init="fan-in"),
}


def _data(n=64, n_in=12, n_out=4):
    rng = np.random.default_rng(11)
    X = rng.uniform(0.01, 1.0, (n, n_in))
    labels = rng.integers(0, n_out, n)
    T = np.full((n, n_out), 0.01)
    T[np.arange(n), labels] = 0.99
    return X, T, labels


def _net(config, backend, dtype):
    c = dict(CONFIGS[config])
    return gpunet.Network.article(c.pop("sizes"), seed=4, backend=backend, dtype=dtype, **c)


def _one_pass(config, backend, dtype):
    net = _net(config, backend, dtype)
    X, T, _ = _data()
    Xd = backend.to_device(X)  # device input on CuPy, host input on NumPy: both must work
    return {
        "initial": net.get_params(),
        "forward": backend.to_host(net.forward(Xd)),
        "forward_host_input": backend.to_host(net.forward(X)),
        "loss": np.array(net.loss(X, T)),
        "gradients": {k: backend.to_host(v) for k, v in net.gradients(Xd, T).items()},
    }


def _trajectory(config, optimizer, backend, dtype, steps=50):
    net = _net(config, backend, dtype)
    X, T, _ = _data()
    opt = gpunet.optim.make_optimizer(optimizer, weight_decay=1e-3)
    lr = {"sgd": 0.5, "momentum": 0.1, "adam": 0.01}[optimizer]
    order = np.random.default_rng(0).integers(0, len(X), (steps, 8))
    losses = [float(net.train_step(X[idx], T[idx], lr=lr, optimizer=opt)) for idx in order]
    return {"losses": np.array(losses), "params": net.get_params(), "predict": net.predict(X)}


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_loss_gradients(candidate, config):
    backend, dtype, ref_backend, ref_dtype = candidate
    got = _one_pass(config, backend, dtype)
    want = _one_pass(config, ref_backend, ref_dtype)
    assert got["forward"].dtype == np.dtype(dtype)
    for k in got["initial"]:  # identical starting parameters, up to the dtype's rounding
        np.testing.assert_array_equal(got["initial"][k], want["initial"][k].astype(dtype))
    assert_close(got, want, TOLERANCE[dtype])


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("config", ["original", "deep-relu-ce"])
def test_training_trajectory(candidate, config, optimizer):
    backend, dtype, ref_backend, ref_dtype = candidate
    got = _trajectory(config, optimizer, backend, dtype)
    want = _trajectory(config, optimizer, ref_backend, ref_dtype)
    assert want["losses"][-1] < want["losses"][0]  # the trajectory really trains
    assert_close({"losses": got["losses"], "params": got["params"]},
                 {"losses": want["losses"], "params": want["params"]}, TOLERANCE[dtype])
    np.testing.assert_array_equal(got["predict"], want["predict"])


def test_train_history(candidate):
    backend, dtype, ref_backend, ref_dtype = candidate
    X, _, labels = _data(n=200)

    def run(b, dt):
        net = _net("deep-relu-ce", b, dt)
        h = gpunet.train(net, X, labels, epochs=3, batch_size=16, lr=0.01, optimizer="adam",
                         seed=1, X_test=X[:50], y_test=labels[:50])
        return net.get_params(), [(r["train_loss"], r["test_loss"], r["test_accuracy"]) for r in h]

    got_params, got_hist = run(backend, dtype)
    want_params, want_hist = run(ref_backend, ref_dtype)
    assert_close(got_params, want_params, TOLERANCE[dtype])
    assert_close(np.array(got_hist), np.array(want_hist), TOLERANCE[dtype])


@pytest.mark.parametrize("sizes, activation, output, loss", [
    ([12, 9, 4], "tanh", "softmax", "cross-entropy"),
    ([12, 9, 7, 4], "relu", "sigmoid", "squared"),
    ([12, 4], "sigmoid", "identity", "absolute"),
])
def test_train_per_sample_is_train_step_row_by_row(backend, sizes, activation, output, loss):
    rng = np.random.default_rng(7)
    X = rng.random((70, sizes[0]))
    T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], 70)]
    fast, plain = (gpunet.Network(sizes, activation, output, loss, init="fan-in", backend=backend, dtype="float64")
                   for _ in range(2))
    total = float(train_per_sample(fast, X, T, lr=0.2))
    expected = sum(float(plain.train_step(X[i : i + 1], T[i : i + 1], lr=0.2)) for i in range(70))
    assert total == pytest.approx(expected, rel=1e-12)
    for k, v in plain.get_params().items():
        assert rel_diff(fast.get_params()[k], v) <= 1e-12, k
