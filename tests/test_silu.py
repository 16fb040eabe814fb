"""SiLU (x sigma(x)), one row of the activation table: its gradients against PyTorch's autograd, as a hidden
and an output activation, on the plain path, the per-sample path, ONNX export, the estimators and the
command line; the kernels have no code for it (its derivative needs the layer's input), and say so."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet.activations import ACTIVATIONS
from gpunet.engines import per_sample, select
from gpunet.engines.plain import train_per_sample


def _net(output="identity", loss="squared", sizes=(5, 6, 4, 3), seed=2):
    net = gpunet.Network(list(sizes), activation="silu", output=output, loss=loss, init="fan-in", seed=seed,
                         backend="numpy", dtype="float64")
    rng = np.random.default_rng(seed)
    net.set_params({k: v + 0.3 * rng.standard_normal(v.shape) for k, v in net.get_params().items()})
    return net, rng.standard_normal((7, sizes[0])), rng.uniform(0.05, 0.95, (7, sizes[-1]))


@pytest.mark.parametrize("output, loss", [("identity", "squared"), ("silu", "squared"), ("silu", "absolute"),
                                          ("softmax", "cross-entropy")])
def test_gradients_match_torch_autograd(output, loss):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'gpunet[bench]')")
    net, X, T = _net(output, loss)
    if loss == "cross-entropy":
        T = T / T.sum(axis=1, keepdims=True)
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in net.get_params().items()}
    A = torch.tensor(X)
    for i in range(1, net.n_layers + 1):
        Z = A @ params[f"W{i}"] + params[f"b{i}"]
        A = torch.nn.functional.silu(Z) if i < net.n_layers or output == "silu" else Z
    t = torch.tensor(T)
    if loss == "cross-entropy":
        per_row = -(t * torch.log_softmax(Z, dim=1)).sum(dim=1)
    elif loss == "squared":
        per_row = 0.5 * ((t - A) ** 2).sum(dim=1)
    else:
        per_row = (t - A).abs().sum(dim=1)
    per_row.mean().backward()
    assert net.loss(X, T) == pytest.approx(float(per_row.mean()), rel=1e-12)
    for k, g in net.gradients(X, T).items():
        np.testing.assert_allclose(g, params[k].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=k)


def test_silu_output_gradients_match_finite_differences():
    net, X, T = _net("silu", "squared")
    analytic, params, h = net.gradients(X, T), net.get_params(), 1e-6
    for k, p in params.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            net.set_params(params)
            up = net.loss(X, T)
            p[i] = old - h
            net.set_params(params)
            numeric[i] = (up - net.loss(X, T)) / (2 * h)
            p[i] = old
        net.set_params(params)
        np.testing.assert_allclose(analytic[k], numeric, rtol=1e-6, atol=1e-9, err_msg=k)


def test_the_table_reads_the_derivative_off_the_input_below_the_minimum():
    # silu(-3) and silu(-0.5) are close; their derivatives differ in sign: the output alone cannot tell them apart
    silu = ACTIVATIONS["silu"]
    z = np.array([[-3.0, -0.5]])
    assert not silu.from_output
    d = silu.backward(z, np.ones_like(z))
    assert d[0, 0] < 0 < d[0, 1]


@pytest.mark.parametrize("output", ["identity", "silu"])
def test_per_sample_path_is_train_step_row_by_row(output):
    net, X, T = _net(output, "squared", sizes=(5, 6, 3))
    rows, _, _ = _net(output, "squared", sizes=(5, 6, 3))
    total = float(train_per_sample(net, X, T, lr=0.2))
    losses = [float(rows.train_step(X[t : t + 1], T[t : t + 1], lr=0.2)) for t in range(len(X))]
    assert total == pytest.approx(sum(losses), rel=1e-12)
    for k, v in rows.get_params().items():
        np.testing.assert_allclose(net.get_params()[k], v, rtol=1e-11, atol=1e-13, err_msg=k)


def test_onnx_export_computes_silu(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra")
    from gpunet import onnx as gpunet_onnx

    net, X, _ = _net("silu", "squared", sizes=(5, 8, 6, 3))
    path = gpunet_onnx.export(net, tmp_path / "silu.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    Y = session.run(None, {session.get_inputs()[0].name: X.astype(np.float32)})[0]
    np.testing.assert_allclose(Y, net.forward(X), rtol=1e-5, atol=1e-6)
    ops = [n.op_type for n in __import__("onnx").load(path).graph.node]
    assert ops == ["Gemm", "Sigmoid", "Mul"] * 3


def test_estimator_and_command_line_take_silu(tmp_path, capsys):
    from gpunet.cli import main
    from gpunet.datasets import load_digits
    from gpunet.sklearn import GPUNetClassifier

    d = load_digits()
    clf = GPUNetClassifier(hidden_layer_sizes=(32,), activation="silu", epochs=30, lr=0.01, random_state=0)
    assert clf.fit(d.X_train, d.y_train).score(d.X_test, d.y_test) > 0.93
    assert clf.get_params()["activation"] == "silu"
    assert main(["train", "--activation", "silu", "--epochs", "3", "--out", str(tmp_path / "run")]) == 0
    assert "activation='silu'" in capsys.readouterr().out


class _CupyNet:
    backend = type("B", (), {"name": "cupy"})()
    sizes, n_layers, activation, output, loss_name, dtype = [4, 3, 2], 2, "silu", "softmax", "cross-entropy", np.float32


def test_fused_runs_it_when_asked_auto_takes_the_plain_path_and_graph_mode_refuses_it():
    """The fused kernels keep a layer's input for it (bias_act_keep); graph mode and the per-sample kernel keep
    outputs only. No device has run it, so auto trains it on the plain path (select.VERIFIED_ACTIVATIONS)."""
    net = _CupyNet()
    assert "silu" not in select.VERIFIED_ACTIVATIONS
    assert select.choose("auto", net, gpunet.Adam()) == "plain"
    assert select.choose("auto", net, gpunet.SGD(), per_sample=True) == "plain"
    assert select.choose("fused", net, gpunet.Adam()) == "fused"
    with pytest.raises(ValueError, match="graph mode has no code for 'silu' .its derivative needs the layer's input"):
        select.choose("graph", net, gpunet.Adam())
    assert "no code for silu" in per_sample._covers(net)  # per-sample SGD: the plain path under every choice


@pytest.mark.parametrize("output, loss", [("softmax", "cross-entropy"), ("silu", "squared"), ("identity", "absolute")])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fused_step_transcribed_is_the_plain_step(output, loss, optimizer):
    """FusedStep with silu hidden layers (their inputs kept by bias_act_keep, delta_bias reading f' there) and a
    silu output (output_layer's one-pass branch), on the transcriptions, against the plain path over 30 steps."""
    import transcriptions
    from gpunet.engines.fused import FusedStep

    plain, _, _ = _net(output, loss, sizes=(6, 7, 5, 4))
    fused, _, _ = _net(output, loss, sizes=(6, 7, 5, 4))
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 6))
    T = rng.dirichlet(np.ones(4), 40) if loss == "cross-entropy" else rng.uniform(0.05, 0.95, (40, 4))
    opts = [gpunet.optim.make_optimizer(optimizer) for _ in range(2)]
    step = FusedStep(fused, transcriptions.NumpyKernels())
    assert "Z1" in step.workspace(8) and "Z2" in step.workspace(8)  # the hidden layers' inputs, kept
    for t in range(30):
        rows = slice(8 * (t % 5), 8 * (t % 5) + 8)
        want = float(plain.train_step(X[rows], T[rows], lr=0.05, optimizer=opts[0]))
        got = float(step(X[rows], T[rows], 0.05, opts[1]))
        assert got == pytest.approx(want, rel=1e-11)
    for k, v in plain.get_params().items():
        np.testing.assert_allclose(fused.get_params()[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
