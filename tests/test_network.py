"""The Network and train API: hand-worked numbers, optimisers, in-place updates, determinism, checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpunet
from gpunet.engines.plain import train_per_sample
from gpunet.datasets import load_digits
from gpunet.activations import ACTIVATIONS, sigmoid


def _tiny(output="sigmoid", loss="squared", dtype="float64"):
    return gpunet.Network.article([1, 1, 2 if output == "softmax" else 1], output=output, loss=loss,
                          backend="numpy", dtype=dtype)


def test_hand_worked_sigmoid_squared():
    # W1 = 0, b1 = 0 -> A1 = 0.5; W2 = 2, b2 = -1 -> Z2 = 0, Y = 0.5; T = 1.
    net = _tiny()
    net.set_params({"W1": [[0.0]], "b1": [0.0], "W2": [[2.0]], "b2": [-1.0]})
    X, T = np.array([[1.0]]), np.array([[1.0]])
    assert net.loss(X, T) == 0.125  # 1/2 (1 - 0.5)^2
    g = net.gradients(X, T)
    # delta2 = (Y - T) Y (1 - Y) = -0.125; dW2 = A1 delta2; delta1 = W2 delta2 A1 (1 - A1) = -0.0625
    assert g["b2"].tolist() == [-0.125]
    assert g["W2"].tolist() == [[-0.0625]]
    assert g["b1"].tolist() == [-0.0625]
    assert g["W1"].tolist() == [[-0.0625]]
    net.train_step(X, T, lr=2.0)
    assert net.get_params()["b2"].tolist() == [-0.75]  # -1 - 2 * (-0.125)


def test_hand_worked_softmax_cross_entropy():
    # A1 = 0.5; W2 = [0, 2 ln 3] -> Z2 = [0, ln 3] -> Y = [1/4, 3/4]; T = [0, 1].
    net = _tiny(output="softmax", loss="cross-entropy")
    net.set_params({"W1": [[0.0]], "b1": [0.0], "W2": [[0.0, 2 * math.log(3)]], "b2": [0.0, 0.0]})
    X, T = np.array([[1.0]]), np.array([[0.0, 1.0]])
    np.testing.assert_allclose(net.forward(X), [[0.25, 0.75]], rtol=1e-15)
    assert net.loss(X, T) == pytest.approx(-math.log(0.75), rel=1e-15)
    np.testing.assert_allclose(net.gradients(X, T)["W2"], [[0.125, -0.125]], rtol=1e-14)  # A1 (Y - T)


def test_sigmoid_is_overflow_free_and_exact_at_the_ends():
    for dtype in (np.float32, np.float64):
        z = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=dtype)
        with np.errstate(all="raise"):
            s = sigmoid(z)
        assert s.dtype == dtype
        np.testing.assert_allclose(s, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-30)
        np.testing.assert_allclose(sigmoid(np.array([1.0], dtype)), [1 / (1 + math.e**-1)], rtol=1e-6)


def test_activation_derivatives_from_outputs():
    z = np.array([[-2.0, -0.5, 0.5, 2.0]])
    dA = np.ones_like(z)
    want = {"sigmoid": sigmoid(z) * (1 - sigmoid(z)), "tanh": 1 - np.tanh(z) ** 2,
            "relu": (z > 0) * 1.0, "leaky_relu": np.where(z > 0, 1.0, 0.01)}
    for name, d in want.items():
        act = ACTIVATIONS[name]
        np.testing.assert_allclose(act.backward(act.forward(z), dA.copy()), d,  # backward may overwrite dA
                                   rtol=1e-12, err_msg=name)


def test_softmax_is_shift_invariant_and_stable():
    z = np.array([[1000.0, 1001.0, 1002.0], [-5.0, -4.0, -3.0]])
    y = ACTIVATIONS["softmax"].forward(z)
    np.testing.assert_allclose(y[0], y[1], rtol=1e-12)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-15)


def _reference_optimizer(name, p, grads, lr, wd=0.0, mu=0.9, b1=0.9, b2=0.999, eps=1e-8):
    """Textbook formulas, written independently of gpunet.optim."""
    p, v, m, s = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g + wd * p
        if name == "sgd":
            p = p - lr * g
        elif name == "momentum":  # PyTorch's convention: buf = mu buf + g, p -= lr buf
            v = mu * v + g
            p = p - lr * v
        else:
            m = b1 * m + (1 - b1) * g
            s = b2 * s + (1 - b2) * g * g
            p = p - lr * (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_optimizers_match_textbook_formulas(name, wd):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 4))
    b = rng.standard_normal(4)
    grads = [rng.standard_normal((3, 4)) for _ in range(6)]
    opt = gpunet.optim.make_optimizer(name, weight_decay=wd)
    params = {"W1": W.copy(), "b1": b.copy()}
    for g in grads:
        opt.step(params, {"W1": g.copy(), "b1": np.ones(4)}, lr=0.05)
    np.testing.assert_allclose(params["W1"], _reference_optimizer(name, W, grads, 0.05, wd), rtol=1e-12)
    # biases are never decayed
    np.testing.assert_allclose(params["b1"], _reference_optimizer(name, b, [np.ones(4)] * 6, 0.05), rtol=1e-12)


@pytest.mark.parametrize("optimizer", [None, gpunet.SGD(), gpunet.Momentum(), gpunet.Adam(weight_decay=0.01)])
def test_train_step_updates_parameters_in_place(backend, optimizer):
    net = gpunet.Network.article([6, 5, 3], backend=backend, seed=1)
    arrays = {k: v for k, v in net.params.items()}
    before = net.get_params()
    X, T = np.random.default_rng(0).uniform(size=(4, 6)), np.full((4, 3), 0.5)
    for _ in range(3):
        net.train_step(X, T, lr=0.5, optimizer=optimizer)
    after = net.get_params()
    for k, a in arrays.items():
        assert net.params[k] is a  # same array object, never rebound
        assert np.abs(after[k] - before[k]).max() > 0, k


def test_same_seed_same_start_and_trajectory():
    X = np.random.default_rng(0).uniform(size=(40, 8))
    y = np.arange(40) % 3

    def run(seed):
        net = gpunet.Network.article([8, 7, 3], seed=seed, backend="numpy")
        start = net.get_params()
        h = gpunet.train(net, X, y, epochs=2, batch_size=5, lr=0.5, optimizer="sgd", seed=seed)
        return start, net.get_params(), [r["train_loss"] for r in h]

    a, b, c = run(3), run(3), run(4)
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])
        np.testing.assert_array_equal(a[1][k], b[1][k])
        assert not np.array_equal(a[0][k], c[0][k]) or k.startswith("b")
    assert a[2] == b[2] and a[2] != c[2]


def test_init_schemes_have_their_documented_scale():
    n_in, n_out = 400, 300
    std = {"article": 0.01, "he": math.sqrt(2 / n_in), "fan-in": n_in**-0.5, "xavier": math.sqrt(2 / (n_in + n_out))}
    for init, want in std.items():
        p = gpunet.Network.article([n_in, n_out], init=init, backend="numpy", dtype="float64").get_params()
        assert p["W1"].std() == pytest.approx(want, rel=0.02), init
        assert not p["b1"].any()


def test_float32_network_keeps_float32():
    net = gpunet.Network.article([4, 3, 2], backend="numpy", dtype="float32")
    Y = net.forward(np.ones((2, 4), dtype=np.float64))
    assert Y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in net.gradients(np.ones((2, 4)), np.ones((2, 2))).values())
    assert net.predict(np.ones((2, 4))).dtype == np.int64


def test_targets_follow_output_and_loss():
    labels = np.array([2, 0])
    orig = gpunet.Network.article([3, 4, 3], backend="numpy").targets_from_labels(labels)
    np.testing.assert_allclose(orig, [[0.01, 0.01, 0.99], [0.99, 0.01, 0.01]], rtol=1e-6)
    ce = gpunet.Network.article([3, 4, 3], output="softmax", loss="cross-entropy", backend="numpy")
    np.testing.assert_array_equal(ce.targets_from_labels(labels), [[0, 0, 1], [1, 0, 0]])
    with pytest.deprecated_call(match="use Network.targets_from_labels"):
        old = ce.targets(labels)  # the old name still works
    np.testing.assert_array_equal(old, ce.targets_from_labels(labels))


def _one_unit(output, dtype="float64", n_out=1):
    """No hidden layer: Z = x * W1 + b1, so X = [[1]] and W1 = [[z]] give the logits z."""
    return gpunet.Network.article([1, n_out], output=output, loss="cross-entropy", backend="numpy", dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_cross_entropy_is_computed_from_the_logit(dtype):
    net = _one_unit("sigmoid", dtype)
    net.set_params({"W1": [[40.0]], "b1": [0.0]})
    X = np.array([[1.0]])
    # softplus(40) - 0 * 40 = 40 + log1p(exp(-40)); -log(1 - sigmoid(40)) of the rounded output gave 708 (float64)
    assert net.loss(X, np.array([[0.0]])) == pytest.approx(40.0, rel=1e-7)
    assert net.loss(X, np.array([[1.0]])) == pytest.approx(np.exp(-40.0), rel=1e-6)  # softplus(-40)
    assert net.gradients(X, np.array([[0.0]]))["W1"].tolist() == [[1.0]]  # unchanged: x (y - t), y = 1
    net.set_params({"W1": [[-40.0]], "b1": [0.0]})
    assert net.loss(X, np.array([[1.0]])) == pytest.approx(40.0, rel=1e-7)
    # the per-sample path reports the same loss (before its step)
    assert float(train_per_sample(net, X, np.array([[1.0]]), lr=1e-9)) == pytest.approx(40.0, rel=1e-7)


def test_softmax_cross_entropy_is_computed_from_the_logits():
    net = _one_unit("softmax", n_out=2)
    net.set_params({"W1": [[0.0, 1000.0]], "b1": [0.0, 0.0]})
    X = np.array([[1.0]])
    assert net.loss(X, np.array([[1.0, 0.0]])) == pytest.approx(1000.0, rel=1e-15)  # logsumexp - z_0
    assert net.loss(X, np.array([[0.0, 1.0]])) == 0.0
    # soft targets that do not sum to 1: -sum t log softmax(z) = logsumexp(z) sum(t) - sum(t z)
    net.set_params({"W1": [[0.0, np.log(3.0)]], "b1": [0.0, 0.0]})
    assert net.loss(X, np.array([[0.5, 1.0]])) == pytest.approx(-0.5 * np.log(0.25) - np.log(0.75), rel=1e-14)
    np.testing.assert_allclose(net.gradients(X, np.array([[0.5, 1.0]]))["b1"], [0.25 * 1.5 - 0.5, 0.75 * 1.5 - 1],
                               rtol=1e-14)  # y sum(t) - t


def test_predict_proba():
    X = np.random.default_rng(0).uniform(size=(5, 4))
    soft = gpunet.Network.article([4, 6, 3], output="softmax", loss="cross-entropy", backend="numpy", seed=1)
    P = soft.predict_proba(X)
    assert P.dtype == np.float64 and P.shape == (5, 3)
    np.testing.assert_allclose(P, soft.forward(X), rtol=1e-6)
    sig = gpunet.Network.article([4, 6, 3], backend="numpy", dtype="float64", seed=1)
    Y = sig.forward(X)
    np.testing.assert_allclose(sig.predict_proba(X), Y / Y.sum(axis=1, keepdims=True), rtol=1e-14)
    # every output rounds to 0 in float32 (logits -100, -101, -102): still a distribution, from the logits
    low = _one_unit("sigmoid", "float32", n_out=3)
    low.set_params({"W1": [[-100.0, -101.0, -102.0]], "b1": [0.0, 0.0, 0.0]})
    assert not low.forward(np.ones((1, 1))).any()
    e = np.exp([0.0, -1.0, -2.0])
    np.testing.assert_allclose(low.predict_proba(np.ones((1, 1))), [e / e.sum()], rtol=1e-6)
    with pytest.raises(ValueError, match="predict_proba needs a softmax or sigmoid output; this network's is 'identity'"):
        gpunet.Network.article([4, 3], output="identity", backend="numpy").predict_proba(X)


def test_train_reaches_high_accuracy_on_digits_and_reports_history():
    d = load_digits()
    net = gpunet.Network([64, 50, 10], activation="relu", output="softmax", loss="cross-entropy",
                         init="he", backend="numpy")
    seen = []
    h = gpunet.train(net, d.X_train, d.y_train, epochs=8, batch_size=16, lr=0.003, optimizer="adam",
                     X_test=d.X_test, y_test=d.y_test, callback=seen.append)
    assert seen == h and [r["epoch"] for r in h] == list(range(1, 9))
    assert set(h[0]) == {"epoch", "lr", "train_loss", "test_loss", "test_accuracy", "seconds", "samples_per_s"}
    assert h[-1]["train_loss"] < h[0]["train_loss"] / 3
    assert h[-1]["test_accuracy"] >= 0.95
    assert h[-1]["samples_per_s"] == pytest.approx(len(d.y_train) / h[-1]["seconds"])
    assert (net.predict(d.X_test) == d.y_test).mean() == h[-1]["test_accuracy"]


def test_callback_returning_true_stops_training():
    X, y = np.random.default_rng(0).uniform(size=(20, 4)), np.arange(20) % 2
    net = gpunet.Network.article([4, 3, 2], backend="numpy")
    h = gpunet.train(net, X, y, epochs=10, callback=lambda r: r["epoch"] == 3)
    assert len(h) == 3 and h[-1]["test_accuracy"] is None


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sizes=[784]), ValueError, r"at least an input and an output size; got \[784\]"),
        (dict(sizes=[784, 0, 10]), ValueError, r"layer size .* integer >= 1; got 0"),
        (dict(sizes="784"), TypeError, r"sizes must be a list"),
        (dict(activation="swish"), ValueError, r"activation must be one of sigmoid, tanh, relu, leaky_relu, silu; got 'swish'"),
        (dict(output="softplus"), ValueError, r"output must be one of .*; got 'softplus'"),
        (dict(loss="hinge"), ValueError, r"loss must be one of squared, absolute, cross-entropy; got 'hinge'"),
        (dict(init="zeros"), ValueError, r"init must be one of article, xavier, he, fan-in; got 'zeros'"),
        (dict(dtype="float16"), ValueError, r"dtype must be one of float32, float64; got 'float16'"),
        (dict(seed=-1), ValueError, r"seed must be an integer >= 0; got -1"),
        (dict(output="identity", loss="cross-entropy"), ValueError, r"needs output 'softmax' or 'sigmoid'; got output 'identity'"),
        (dict(backend="tpu"), ValueError, r"backend must be one of auto, numpy, cupy; got 'tpu'"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    kwargs = {"sizes": [4, 3, 2], **kwargs}
    with pytest.raises(error, match=match):
        gpunet.Network.article(kwargs.pop("sizes"), **kwargs)


def test_bad_arrays_are_named():
    net = gpunet.Network.article([4, 3, 2], backend="numpy")
    with pytest.raises(ValueError, match=r"X must have 4 columns; got shape \(2, 5\)"):
        net.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"X must be 2-D \(N, 4\); got shape \(4,\)"):
        net.forward(np.ones(4))
    with pytest.raises(TypeError, match=r"X must hold numbers; got dtype <U1"):
        net.forward(np.array([["a"] * 4]))
    with pytest.raises(ValueError, match=r"T must have one row per row of X \(2\); got 3"):
        net.loss(np.ones((2, 4)), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0; got -0.1"):
        net.train_step(np.ones((2, 4)), np.ones((2, 2)), lr=-0.1)
    with pytest.raises(ValueError, match=r"y_train: labels must be in 0..1; got 5"):
        gpunet.train(net, np.ones((2, 4)), np.array([0, 5]))
    with pytest.raises(TypeError, match=r"y_train: labels must be integers; got dtype float64"):
        gpunet.train(net, np.ones((2, 4)), np.array([0, 0.5]))
    with pytest.raises(ValueError, match=r"X_train contains NaN or infinity"):
        gpunet.train(net, np.array([[0, 1, np.nan, 0], [0, 0, 0, 0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1; got 0"):
        gpunet.train(net, np.ones((2, 4)), np.array([0, 1]), batch_size=0)
    with pytest.raises(ValueError, match=r"optimizer must be one of sgd, momentum, adam, adamw; got 'rmsprop'"):
        gpunet.train(net, np.ones((2, 4)), np.array([0, 1]), optimizer="rmsprop")


def test_set_params_is_all_or_nothing():
    net = gpunet.Network.article([4, 3, 2], backend="numpy")
    good = net.get_params()
    bad = {**good, "W1": np.ones((4, 3)), "b2": np.array([np.inf, 0.0])}
    with pytest.raises(ValueError, match=r"params\['b2'\] contains NaN or infinity"):
        net.set_params(bad)
    np.testing.assert_array_equal(net.get_params()["W1"], good["W1"])  # untouched
    with pytest.raises(ValueError, match=r"params\['W2'\] must have shape \(3, 2\); got \(2, 3\)"):
        net.set_params({**good, "W2": np.ones((2, 3))})
    with pytest.raises(ValueError, match=r"must have keys \['W1', 'W2', 'b1', 'b2'\]"):
        net.set_params({"W1": good["W1"]})
