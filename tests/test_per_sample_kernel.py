"""The per-sample SGD kernel (gpunet/engines/per_sample.*): its NumPy transcription (transcriptions.py) run as the
kernel's launcher against train_step here, the kernel itself against NumPy on a device (gpu marker)."""

from __future__ import annotations

import functools
import itertools
import re
from types import SimpleNamespace

import numpy as np
import pytest

import gpunet
from gpunet.engines.plain import train_per_sample
from gpunet.activations import FUSED, LOSSES, OUTPUT_ACTIVATIONS
from gpunet.engines.kernels import READ_OFF_OUTPUT
from gpunet.engines import per_sample
from gpunet.datasets import load_mnist
from gpunet.training import TrainingInterrupted

import transcriptions
from conftest import rel_diff, require

# Every output/loss pair a Network accepts: any output with squared or absolute, cross-entropy fused.
# The activations and (output, loss) pairs the kernel has code for: every one; the outputs whose derivative reads
# Z2 (silu) last, so the pairs read off the output keep their places in the GPU test's turns.
HIDDEN_ACTIVATIONS = tuple(a for a in per_sample.HIDDEN)
PAIRS = [(o, loss) for o, loss in itertools.product(OUTPUT_ACTIVATIONS, LOSSES) if o in READ_OFF_OUTPUT] + list(
    FUSED) + [(o, loss) for o, loss in itertools.product(OUTPUT_ACTIVATIONS, LOSSES) if o not in READ_OFF_OUTPUT]
CPU_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}  # transcription vs train_step
GPU_TOLERANCE = {"float64": 1e-9, "float32": 1e-4}  # kernel vs NumPy's train_step
# On random data: small enough that no pair's trajectory amplifies rounding (sigmoid/tanh/absolute at
# 0.05 doubles a difference every row), so a difference is the code's, not the dynamics'.
LR = 0.01


def _random_net(sizes, activation, output, loss, dtype, backend="numpy", seed=3, dropout=None):
    """A network with random weights and non-zero biases (the article's init starts every bias at 0)."""
    net = gpunet.Network.article(sizes, activation, output, loss, backend=backend, dtype=dtype)
    if dropout is not None:  # the article's constructor takes none: the same network, with dropout
        net = gpunet.Network(sizes, activation, output, loss, init="article", seed=net.seed, backend=backend,
                             dtype=dtype, dropout=dropout)
    rng = np.random.default_rng(seed)
    net.set_params({k: 0.1 * rng.standard_normal(v.shape) for k, v in net.get_params().items()})
    return net


def _random_data(n, sizes, seed=4):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.01, 1.0, (n, sizes[0])), rng.random((n, sizes[-1]))  # targets in [0, 1], sums != 1


def _case(rows, sizes, activation, output, loss, dtype, backend="numpy", dropout=None):
    """(X, T, fast, plain): ``rows`` random rows, and two networks with the same random weights, ``fast`` on
    ``backend`` (the path under test) and ``plain`` on NumPy (the reference)."""
    X, T = _random_data(rows, sizes)
    fast = _random_net(sizes, activation, output, loss, dtype, backend=backend, dropout=dropout)
    return X, T, fast, _random_net(sizes, activation, output, loss, dtype, dropout=dropout)


def _row_by_row(net, X, T, lr):
    """train_step on one row at a time: each row's output before its step, its loss, params after each chunk."""
    Y, losses = [], []
    for t in range(X.shape[0]):
        Y.append(net.forward(X[t : t + 1])[0])
        losses.append(float(net.train_step(X[t : t + 1], T[t : t + 1], lr=lr)))
    return np.array(Y), np.array(losses)


def _assert_trajectory(run_chunk, fast, plain, X, T, lr, chunk, tolerance):
    """run_chunk(fast, Xc, Tc) -> (Y, loss) equals train_step on ``plain`` row by row, chunk by chunk."""
    for lo in range(0, X.shape[0], chunk):
        Xc, Tc = X[lo : lo + chunk], T[lo : lo + chunk]
        want_Y, want_losses = _row_by_row(plain, Xc, Tc, lr)
        got_Y, got_loss = run_chunk(fast, Xc, Tc)
        assert rel_diff(got_Y, want_Y) <= tolerance, ("outputs", lo)
        assert abs(got_loss - want_losses.sum()) <= tolerance * abs(want_losses.sum()), ("loss", lo)
        for k, v in plain.get_params().items():
            assert rel_diff(fast.get_params()[k], v) <= tolerance, (k, lo)


def _transcribed(threads=None):
    def run(net, Xc, Tc):
        X, T = net.checked_input(Xc), net.checked_targets(Tc, Xc)
        Z2, Y = per_sample._kernel_chunk(net, X, T, LR, threads, launcher=transcriptions.per_sample_launch)
        return Y, float(net.per_sample_loss(Z2, Y, T).sum())
    return run


# --- here: the NumPy transcription ------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("output, loss", PAIRS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_transcription_is_train_step_row_by_row(activation, output, loss, dtype):
    # H = 70 on 64 threads: two warps, the first 6 threads own two units each, the rest one.
    X, T, fast, plain = _case(48, [16, 70, 5], activation, output, loss, dtype)
    _assert_trajectory(_transcribed(threads=64), fast, plain, X, T, LR, 24, CPU_TOLERANCE[dtype])


@pytest.mark.parametrize("output, loss", [("softmax", "cross-entropy"), ("softmax", "squared"), ("tanh", "absolute")])
def test_transcription_with_more_outputs_than_lanes(output, loss):
    # 40 outputs: warp 0's lanes 0-7 own two outputs each; the default geometry (H = 600: 512 threads).
    X, T, fast, plain = _case(30, [10, 600, 40], "tanh", output, loss, "float64")
    _assert_trajectory(_transcribed(), fast, plain, X, T, LR, 30, CPU_TOLERANCE["float64"])


@pytest.mark.parametrize("hidden, activation", [(100, "sigmoid"), (600, "relu")])
def test_transcription_is_per_sample_on_mnist(mnist_dir, hidden, activation):
    # The article's network on real rows, four chunks of 64, against Network._per_sample (train_per_sample).
    data = load_mnist(mnist_dir)
    X, T = data.X_train[:256], None
    nets = [gpunet.Network.article([784, hidden, 10], activation, "sigmoid", "squared", seed=1, dtype="float64")
            for _ in range(2)]
    T = nets[0].targets_from_labels(data.y_train[:256])
    for lo in range(0, 256, 64):
        got = float(per_sample.per_sample_chunk(nets[0], X[lo : lo + 64], T[lo : lo + 64], 0.1,
                                                launcher=transcriptions.per_sample_launch))
        want = float(train_per_sample(nets[1], X[lo : lo + 64], T[lo : lo + 64], 0.1))
        assert got == pytest.approx(want, rel=1e-12)
    for k, v in nets[1].get_params().items():
        assert rel_diff(nets[0].get_params()[k], v) <= 1e-12, k
    assert np.abs(nets[0].params["W1"] - gpunet.Network.article([784, hidden, 10], seed=1, dtype="float64").params["W1"]
                  ).max() > 1e-4  # the first layer did move


def _transcribed_launches(threads=None):
    """PerSampleEpochs' launcher on NumPy: the transcriptions, on ``threads`` threads (default the launch's)."""
    return functools.partial(transcriptions.per_sample_launch, threads=threads)


def _epochs_against_train(fast, plain, X, T, epochs, lr, seed=5, launcher=None):
    """PerSampleEpochs on ``fast`` (its launches by ``launcher``, or the device's) against gpunet.train's per-sample
    path on ``plain`` (kernels="plain"), epoch by epoch with train's own permutations; returns the largest relative
    differences seen."""
    optimizer = gpunet.SGD()
    to = fast.backend.to_device
    runner = per_sample.PerSampleEpochs(fast, optimizer, to(X, fast.dtype), to(T, fast.dtype), 64, launcher)
    arrays, losses = dict(fast.params), []
    history = gpunet.train(plain, X, T, epochs=epochs, batch_size=1, lr=lr, lr_decay=1.0, seed=seed, kernels="plain", optimizer="sgd")
    for epoch in range(1, epochs + 1):
        order = to(np.random.default_rng([seed, epoch]).permutation(X.shape[0]))
        losses.append(float(runner.run_epoch(order, lr)) / X.shape[0])
    assert all(fast.params[k] is a for k, a in arrays.items())  # stepped in place
    assert optimizer.t == epochs * X.shape[0]  # a step a row
    return {"loss": rel_diff(np.array(losses), np.array([r["train_loss"] for r in history])),
            "params": max(rel_diff(fast.get_params()[k], v) for k, v in plain.get_params().items())}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("output, loss", PAIRS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_per_sample_epochs_transcribed_are_train_per_sample(activation, output, loss, dtype):
    # 150 rows: chunks of 64, 64 and 22; H = 70 on 64 threads; two epochs, each in train's own order.
    X, T, fast, plain = _case(150, [16, 70, 5], activation, output, loss, dtype)
    diffs = _epochs_against_train(fast, plain, X, T, 2, LR, launcher=_transcribed_launches(threads=64))
    assert diffs["loss"] <= CPU_TOLERANCE[dtype] and diffs["params"] <= CPU_TOLERANCE[dtype], diffs


def test_per_sample_epochs_transcribed_on_mnist(mnist_dir):
    # The article's network on 300 real rows (4 full chunks and one of 44), lr 0.1, every parameter moving.
    data = load_mnist(mnist_dir)
    X, y = data.X_train[:300], data.y_train[:300]
    fast, plain = (gpunet.Network.article([784, 100, 10], seed=1, dtype="float64") for _ in range(2))
    start = fast.get_params()
    diffs = _epochs_against_train(fast, plain, X, fast.targets_from_labels(y), 2, 0.1, launcher=_transcribed_launches())
    assert diffs["loss"] <= 1e-12 and diffs["params"] <= 1e-12, diffs
    assert all(np.abs(fast.get_params()[k] - v).max() > 1e-4 for k, v in start.items())  # b1 and W1 too


def test_per_sample_epochs_refuse_what_they_cannot_run():
    X, T = np.ones((4, 8)), np.ones((4, 3))
    launcher = transcriptions.per_sample_launch
    deep = gpunet.Network.article([8, 6, 5, 3], backend="numpy", dtype="float64")
    with pytest.raises(ValueError, match="per-sample epochs cannot run .* one hidden layer; this one has 2"):
        per_sample.PerSampleEpochs(deep, gpunet.SGD(), X, T, 64, launcher)
    net = gpunet.Network.article([8, 6, 3], backend="numpy", dtype="float64")
    with pytest.raises(ValueError, match="per-sample epochs need the cupy backend, or a launcher for their launches; "
                                         "got backend 'numpy' and no launcher"):
        per_sample.PerSampleEpochs(net, gpunet.SGD(), X, T, 64)
    with pytest.raises(TypeError, match="launcher must be a callable taking a Launch, or None; got int"):
        per_sample.PerSampleEpochs(net, gpunet.SGD(), X, T, 64, 1)
    with pytest.raises(ValueError, match="need plain SGD without weight decay; got .*Momentum"):
        per_sample.PerSampleEpochs(net, gpunet.Momentum(), X, T, 64, launcher)
    with pytest.raises(ValueError, match="need plain SGD without weight decay"):
        per_sample.PerSampleEpochs(net, gpunet.SGD(weight_decay=0.1), X, T, 64, launcher)
    with pytest.raises(ValueError, match="X must be C-contiguous float64 like the network; got C-contiguous float32"):
        per_sample.PerSampleEpochs(net, gpunet.SGD(), X.astype(np.float32), T, 64, launcher)
    runner = per_sample.PerSampleEpochs(net, gpunet.SGD(), X, T, 64, launcher)
    with pytest.raises(ValueError, match="order must be a permutation of the 4 rows as a numpy integer array"):
        runner.run_epoch(np.arange(3), 0.1)
    with pytest.raises(ValueError, match="lr must be"):
        runner.run_epoch(np.arange(4), -1.0)


def test_sums_add_in_the_kernels_tree_order():
    # 1 + 2^-53 rounds to 1, so the order shows: lanes 8 and 24 meet first (offset 16), then lane 0 (offset 8).
    v = np.zeros(32)
    v[0], v[8], v[24] = 1.0, 2.0**-53, 2.0**-53
    assert transcriptions.warp_sum(v) == 1.0 + 2.0**-52  # left to right it would be 1.0
    # output_sum: lane 8 adds entries 8 and 40 before the tree.
    v = np.zeros(41)
    v[0], v[8], v[40] = 1.0, 2.0**-53, 2.0**-53
    assert transcriptions.output_sum(v) == 1.0 + 2.0**-52
    assert transcriptions.warp_sum(np.arange(64.0).reshape(2, 32)).tolist() == [496.0, 1520.0]


def test_launch_geometry():
    assert per_sample.launch_geometry(100, 10, 4) == (128, (10 * 100 + 100 + 4 * 10 + 30) * 4)
    assert per_sample.launch_geometry(1024, 10, 8) == (512, (10 * 1024 + 1024 + 16 * 10 + 30) * 8)
    assert per_sample.launch_geometry(1, 10, 4)[0] == 32
    # The README's limits: 784-H-10 fits an H100's 227 KiB of shared memory per block up to these H.
    h100 = 227 * 1024
    for itemsize, widest in ((4, 5265), (8, 2624)):
        assert per_sample.launch_geometry(widest, 10, itemsize)[1] <= h100
        assert per_sample.launch_geometry(widest + 1, 10, itemsize)[1] > h100


def test_supports_names_what_it_cannot_cover():
    assert "one hidden layer; this one has 2" in per_sample.supports(gpunet.Network.article([8, 6, 5, 3], backend="numpy"))
    assert "has 0" in per_sample.supports(gpunet.Network.article([8, 3], backend="numpy"))
    assert "needs the cupy backend; this network is on numpy" in per_sample.supports(
        gpunet.Network.article([8, 6, 3], backend="numpy"))
    net = gpunet.Network.article([8, 6, 3], backend="numpy")
    with pytest.raises(ValueError, match="per_sample_chunk cannot run .* cupy backend"):
        per_sample.per_sample_chunk(net, np.ones((2, 8)), np.ones((2, 3)), 0.1)
    with pytest.raises(ValueError, match="per_sample_chunk cannot run .* one hidden layer"):  # with a launcher too
        per_sample.per_sample_chunk(gpunet.Network.article([8, 3], backend="numpy"), np.ones((2, 8)), np.ones((2, 3)), 0.1,
                                    launcher=transcriptions.per_sample_launch)


def test_supports_says_when_the_output_layer_does_not_fit_in_shared_memory(monkeypatch):
    monkeypatch.setattr(per_sample, "_shared_limit", lambda backend: 227 * 1024)  # an H100's
    net = SimpleNamespace(n_layers=2, sizes=[784, 2624, 10], activation="tanh", output="softmax",
                          loss_name="cross-entropy", dtype=np.dtype("float64"), backend=SimpleNamespace(name="cupy"))
    assert per_sample.supports(net) is None
    net.sizes = [784, 2625, 10]
    assert per_sample.supports(net) == ("a hidden layer of 2625 with 10 outputs in float64 needs 232520 bytes of "
                                        "shared memory; this device has 232448 per block")
    net.sizes, net.dtype = [784, 2625, 10], np.dtype("float32")
    assert per_sample.supports(net) is None


def test_codes_match_the_kernels_defines():
    from gpunet.engines.kernels import source
    defines = dict(re.findall(r"#define GPUNET_(\w+) (\d+)", source("per_sample.cu") + source("activations.cuh")))
    for name, code in per_sample.OUTPUT_CODES.items():
        assert int(defines[name.upper()]) == code, name
    for name, code in per_sample.LOSS_CODES.items():
        assert int(defines["LOSS_" + name.upper().replace("-", "_")]) == code, name


def test_name_expressions_cover_every_kernel_it_loads():
    assert per_sample.HIDDEN == gpunet.activations.HIDDEN_ACTIVATIONS  # silu's z1 kept in D
    assert sorted(per_sample.EXPRESSIONS) == sorted(  # per_sample_chunk_z2: an output whose derivative reads Z2
        f"{k}{d}<{c}, {a}, {i}>" for k in ("per_sample_chunk", "per_sample_chunk_z2") for d in ("", "_dropout")
        for c in ("float", "double") for a in (0, 1, 2, 3, 6) for i in ("false", "true"))
    for dtype, activation, in_kernel, (output, _), dropout in itertools.product(
            ("float32", "float64"), HIDDEN_ACTIVATIONS, (False, True), PAIRS, (False, True)):
        assert per_sample._expression(dtype, activation, in_kernel, output, dropout) in per_sample.EXPRESSIONS
    assert per_sample._expression("float32", "tanh", False, "silu") == "per_sample_chunk_z2<float, 1, false>"
    assert per_sample._expression("float32", "silu", True, "softmax") == "per_sample_chunk<float, 6, true>"
    assert (per_sample._expression("float64", "relu", True, "softmax", True)
            == "per_sample_chunk_dropout<double, 2, true>")


# --- on a device: the kernel --------------------------------------------------------------


def _kernel(threads=None, lr=LR):
    def run(net, Xc, Tc):
        X, T = net.checked_input(Xc), net.checked_targets(Tc, Xc)
        Z2, Y = per_sample._kernel_chunk(net, X, T, lr, threads)
        return net.backend.to_host(Y), float(net.per_sample_loss(Z2, Y, T).sum())
    return run


@pytest.mark.gpu
@pytest.mark.parametrize("hidden, dtype", [(100, "float64"), (100, "float32"), (1024, "float64")])
def test_kernel_is_train_step_row_by_row_on_mnist(mnist_dir, hidden, dtype):
    # 2,048 real rows, the article's network; 1024 units in float64 need 90 KiB of shared memory (opt-in).
    cupy = require("cupy")
    data = load_mnist(mnist_dir)
    X = data.X_train[:2048]
    fast = gpunet.Network.article([784, hidden, 10], seed=1, backend=cupy, dtype=dtype)
    plain = gpunet.Network.article([784, hidden, 10], seed=1, backend="numpy", dtype=dtype)
    assert per_sample.supports(fast) is None
    _assert_trajectory(_kernel(lr=0.1), fast, plain, X, plain.targets_from_labels(data.y_train[:2048]), 0.1, 64,
                       GPU_TOLERANCE[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("output, loss", PAIRS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_kernel_is_train_step_row_by_row(activation, output, loss, dtype):
    cupy = require("cupy")
    X, T, fast, plain = _case(128, [16, 70, 5], activation, output, loss, dtype, backend=cupy)
    _assert_trajectory(_kernel(threads=64), fast, plain, X, T, LR, 64, GPU_TOLERANCE[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("output, loss", [("softmax", "cross-entropy"), ("softmax", "absolute"), ("relu", "squared")])
def test_kernel_matches_its_transcription_with_more_outputs_than_lanes(output, loss):
    cupy = require("cupy")
    X, T, fast, plain = _case(64, [10, 600, 40], "leaky_relu", output, loss, "float64", backend=cupy)
    got = float(per_sample.per_sample_chunk(fast, fast.checked_input(X), fast.checked_targets(T, X), LR))
    want = float(per_sample.per_sample_chunk(plain, X, T, LR, launcher=transcriptions.per_sample_launch))
    assert got == pytest.approx(want, rel=1e-11)  # the same order; only exp/tanh and fused multiply-adds differ
    for k, v in plain.get_params().items():
        assert rel_diff(fast.get_params()[k], v) <= 1e-11, k


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["fused", "graph"])
def test_a_network_the_kernel_does_not_cover_trains_per_sample_on_the_plain_path(kernels):
    # Two hidden layers: supports() refuses it, so per-sample SGD in gpunet.train takes the plain path under
    # "fused" and "graph" alike, and trains exactly as kernels="plain" does (the same operations).
    cupy = require("cupy")
    sizes = [16, 12, 8, 5]
    X, T = _random_data(150, sizes)
    params = {}
    for k in ("plain", kernels):
        net = _random_net(sizes, "tanh", "softmax", "cross-entropy", "float64", backend=cupy)
        assert "one hidden layer; this one has 2" in per_sample.supports(net)
        gpunet.train(net, X, T, epochs=2, batch_size=1, lr=LR, lr_decay=1.0, seed=5, kernels=k, optimizer="sgd")
        params[k] = net.get_params()
    for key, want in params["plain"].items():
        assert np.array_equal(params[kernels][key], want), key


# The hidden activations read off the output take turns over the pairs (silu's outputs last), then silu hidden
# layers (z1 kept in D) with two outputs.
_TURNS = [a for a in HIDDEN_ACTIVATIONS if a in READ_OFF_OUTPUT]
EPOCH_CASES = [(_TURNS[k % len(_TURNS)], o, loss) for k, (o, loss) in enumerate(PAIRS)] + [
    ("silu", "softmax", "cross-entropy"), ("silu", "identity", "squared")]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation, output, loss", EPOCH_CASES)
def test_gpu_per_sample_epochs_are_train_per_sample(activation, output, loss, dtype):
    # The IN_KERNEL launch, the cuBLAS update of W1 and the epoch's loss, against NumPy's plain path; the
    # hidden activations take turns (the launch differs from the verified one in the first layer only).
    cupy = require("cupy")
    X, T, fast, plain = _case(150, [16, 70, 5], activation, output, loss, dtype, backend=cupy)
    diffs = _epochs_against_train(fast, plain, X, T, 2, LR)
    assert diffs["loss"] <= GPU_TOLERANCE[dtype] and diffs["params"] <= GPU_TOLERANCE[dtype], diffs


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpu_train_with_graph_kernels_runs_per_sample_epochs_on_mnist(mnist_dir, dtype):
    # gpunet.train(kernels="graph") at batch 1: 2,048 real rows, two epochs, against NumPy's plain path;
    # then a resumed epoch (its remaining rows on the per-sample kernel, as train does) lands on the same numbers.
    cupy = require("cupy")
    data = load_mnist(mnist_dir)
    X, y = data.X_train[:2048], data.y_train[:2048]
    fast = gpunet.Network.article([784, 100, 10], seed=1, backend=cupy, dtype=dtype)
    plain = gpunet.Network.article([784, 100, 10], seed=1, backend="numpy", dtype=dtype)
    options = dict(epochs=2, batch_size=1, lr=0.1, optimizer="sgd", seed=3)
    got = gpunet.train(fast, X, y, kernels="graph", **options)
    want = gpunet.train(plain, X, y, kernels="plain", **options)
    tol = GPU_TOLERANCE[dtype]
    assert rel_diff(np.array([r["train_loss"] for r in got]), np.array([r["train_loss"] for r in want])) <= tol
    for k, v in plain.get_params().items():
        assert rel_diff(fast.get_params()[k], v) <= tol, k
    resumed = gpunet.Network.article([784, 100, 10], seed=1, backend=cupy, dtype=dtype)
    gpunet.train(resumed, X, y, kernels="graph", **dict(options, epochs=1))
    gpunet.train(resumed, X, y, kernels="graph", start_epoch=2, start_row=1000, **options)  # rows 1000-2047
    straight = gpunet.Network.article([784, 100, 10], seed=1, backend="numpy", dtype=dtype)
    gpunet.train(straight, X, y, kernels="plain", **dict(options, epochs=1))
    gpunet.train(straight, X, y, kernels="plain", start_epoch=2, start_row=1000, **options)
    for k, v in straight.get_params().items():
        assert rel_diff(resumed.get_params()[k], v) <= tol, k
        assert rel_diff(resumed.get_params()[k], fast.get_params()[k]) > 0, k  # rows 0-999 skipped: it differs


# --- dropout: the inputs' mask by the host, the hidden layer's in the kernel's _dropout forms -----------------

# (inputs' rate, hidden layer's rate): both, the hidden layer's alone (gpunet's one-rate form), the inputs' alone
# (the kernel without DROP), and a rate whose scale is no power of two.
DROPOUTS = [[0.2, 0.5], 0.5, [0.3, 0.0], [0.0, 0.875]]


def _assert_dropout_trajectory(run_chunk, fast, plain, X, T, lr, chunk, tolerance):
    """:func:`_assert_trajectory` with dropout: each chunk's summed loss and the parameters after it against
    train_step on one row at a time (whose outputs before each step are dropout's, not ``forward``'s)."""
    for lo in range(0, X.shape[0], chunk):
        Xc, Tc = X[lo : lo + chunk], T[lo : lo + chunk]
        want = sum(float(plain.train_step(Xc[t : t + 1], Tc[t : t + 1], lr=lr)) for t in range(Xc.shape[0]))
        _, got = run_chunk(fast, Xc, Tc)
        assert abs(got - want) <= tolerance * abs(want), ("loss", lo)
        for k, v in plain.get_params().items():
            assert rel_diff(fast.get_params()[k], v) <= tolerance, (k, lo)


def _chunks_with_dropout(launcher=None, threads=None):
    """per_sample_chunk through one optimiser for every chunk (its count keys the masks), the transcription's
    launches or the device's."""
    optimizer = gpunet.SGD()

    def run(net, Xc, Tc):
        X, T = net.checked_input(Xc), net.checked_targets(Tc, Xc)
        Z2, Y = per_sample._kernel_chunk(net, X, T, LR, threads, optimizer=optimizer, launcher=launcher)
        return net.backend.to_host(Y), float(net.per_sample_loss(Z2, Y, T).sum())
    return run


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dropout", DROPOUTS, ids=str)
@pytest.mark.parametrize("activation, output, loss", [("sigmoid", "softmax", "cross-entropy"),
                                                      ("silu", "tanh", "squared"), ("relu", "silu", "absolute")])
def test_transcription_with_dropout_is_train_step_row_by_row(activation, output, loss, dropout, dtype):
    """Three chunks (24, 24 and 8 rows) against train_step on one row at a time, through the network's own SGD:
    row t of a chunk is step optimizer.t + t, as in train_step; silu keeps z1 in D, the others A1."""
    X, T, fast, plain = _case(56, [16, 70, 5], activation, output, loss, dtype, dropout=dropout)
    launcher = functools.partial(transcriptions.per_sample_launch, threads=64)
    _assert_dropout_trajectory(_chunks_with_dropout(launcher), fast, plain, X, T, LR, 24, CPU_TOLERANCE[dtype])


def test_dropout_changes_the_per_sample_numbers() -> None:
    """The comparison above can fail: the same chunks with other masks (another seed), or with none, end far from
    train_step with dropout."""
    X, T, _, plain = _case(48, [16, 70, 5], "sigmoid", "softmax", "cross-entropy", "float64", dropout=[0.2, 0.5])
    for t in range(48):
        plain.train_step(X[t : t + 1], T[t : t + 1], lr=0.5)
    launcher = functools.partial(transcriptions.per_sample_launch, threads=64)
    for dropout, seed in ((None, 3), ([0.2, 0.5], 4)):
        net = _random_net([16, 70, 5], "sigmoid", "softmax", "cross-entropy", "float64", dropout=dropout)
        net.seed = seed  # the same weights, another seed's masks
        optimizer = gpunet.SGD()
        for lo in (0, 24):
            per_sample.per_sample_chunk(net, X[lo : lo + 24], T[lo : lo + 24], 0.5, optimizer, launcher)
        assert max(rel_diff(net.get_params()[k], v) for k, v in plain.get_params().items()) > 1e-3


def test_a_chunk_s_launch_with_dropout():
    """The _dropout kernel where the hidden layer's output is dropped, its last five arguments the mask's: the key's
    words, the count before the chunk (mod 2**32), the threshold and the scale; the kernel without where only the
    inputs are."""
    net = gpunet.Network([6, 40, 3], "relu", seed=2**33 + 5, backend="numpy", dtype="float32", dropout=[0.25, 0.5])
    launches = []
    optimizer = gpunet.SGD()
    optimizer.count(2**32 + 9)
    X, T = _random_data(7, [6, 40, 3])
    per_sample.per_sample_chunk(net, X.astype(np.float32), T.astype(np.float32), 0.1, optimizer, launches.append)
    (launch,) = launches
    assert launch.kernel == "per_sample_chunk_dropout" and len(launch.args) == 20
    seed_lo, seed_hi, step0, threshold, scale = launch.args[15:]
    assert (int(seed_lo), int(seed_hi), int(step0), int(threshold)) == (5, 2, 9, 2**31)
    assert scale.dtype == np.float32 and scale == 2 and optimizer.t == 2**32 + 16
    inputs_only = gpunet.Network([6, 40, 3], "relu", seed=1, backend="numpy", dtype="float32", dropout=[0.25, 0])
    per_sample.per_sample_chunk(inputs_only, X.astype(np.float32), T.astype(np.float32), 0.1, None, launches.append)
    assert launches[-1].kernel == "per_sample_chunk" and len(launches[-1].args) == 15


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dropout", DROPOUTS, ids=str)
@pytest.mark.parametrize("activation, output, loss", [("tanh", "softmax", "cross-entropy"),
                                                      ("silu", "sigmoid", "squared")])
def test_per_sample_epochs_with_dropout_transcribed_are_train_per_sample(activation, output, loss, dropout, dtype):
    # 150 rows: chunks of 64, 64 and 22, two epochs: each chunk's masks from the count before the epoch plus its row.
    X, T, fast, plain = _case(150, [16, 70, 5], activation, output, loss, dtype, dropout=dropout)
    diffs = _epochs_against_train(fast, plain, X, T, 2, LR, launcher=_transcribed_launches(threads=64))
    assert diffs["loss"] <= CPU_TOLERANCE[dtype] and diffs["params"] <= CPU_TOLERANCE[dtype], diffs


GPU_DROPOUT_CASES = [("sigmoid", "softmax", "cross-entropy", [0.2, 0.5]), ("silu", "identity", "squared", 0.5),
                     ("relu", "silu", "absolute", [0.0, 0.875])]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation, output, loss, dropout", GPU_DROPOUT_CASES)
def test_kernel_with_dropout_is_train_step_row_by_row(activation, output, loss, dropout, dtype):
    cupy = require("cupy")
    X, T, fast, plain = _case(128, [16, 70, 5], activation, output, loss, dtype, backend=cupy, dropout=dropout)
    _assert_dropout_trajectory(_chunks_with_dropout(threads=64), fast, plain, X, T, LR, 64, GPU_TOLERANCE[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation, output, loss, dropout", GPU_DROPOUT_CASES)
def test_gpu_per_sample_epochs_with_dropout_are_train_per_sample(activation, output, loss, dropout, dtype):
    cupy = require("cupy")
    X, T, fast, plain = _case(150, [16, 70, 5], activation, output, loss, dtype, backend=cupy, dropout=dropout)
    diffs = _epochs_against_train(fast, plain, X, T, 2, LR)
    assert diffs["loss"] <= GPU_TOLERANCE[dtype] and diffs["params"] <= GPU_TOLERANCE[dtype], diffs


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["fused", "graph"])
def test_gpu_train_per_sample_with_dropout_on_the_kernel_is_the_plain_path_and_resumes(mnist_dir, kernels):
    """gpunet.train at batch 1 with dropout, the per-sample kernel named (chunk by chunk, or whole epochs) on
    1,000 real rows against NumPy's plain path; a run interrupted mid-epoch and resumed ends on the same bits as
    the run without the interruption (the rest of the epoch by the kernel, chunk by chunk, in both)."""
    cupy = require("cupy")
    data = load_mnist(mnist_dir)
    X, y = data.X_train[:1000], data.y_train[:1000]
    make = functools.partial(gpunet.Network, [784, 100, 10], init="article", seed=1, dtype="float64",
                             dropout=[0.2, 0.5])
    fast, plain = make(backend=cupy), make(backend="numpy")
    options = {"epochs": 2, "batch_size": 1, "lr": 0.1, "optimizer": "sgd", "seed": 3}
    got = gpunet.train(fast, X, y, kernels=kernels, **options)
    want = gpunet.train(plain, X, y, kernels="plain", **options)
    assert rel_diff(np.array([r["train_loss"] for r in got]), np.array([r["train_loss"] for r in want])) <= 1e-9
    for k, v in plain.get_params().items():
        assert rel_diff(fast.get_params()[k], v) <= 1e-9, k
    whole, resumed = make(backend=cupy), make(backend=cupy)
    gpunet.train(whole, X, y, kernels="fused", **options)
    optimizer, asked = gpunet.SGD(), []  # the resumed run's, kept across the interruption as a checkpoint keeps it
    with pytest.raises(TrainingInterrupted) as stop:  # asked after every chunk of 64 rows but an epoch's last
        gpunet.train(resumed, X, y, kernels="fused", should_stop=lambda: asked.append(1) or len(asked) == 20,
                     **{**options, "optimizer": optimizer})
    assert (stop.value.epoch, stop.value.rows) == (2, 320)
    gpunet.train(resumed, X, y, kernels="fused", start_epoch=2, start_row=320, start_loss=stop.value.loss_sum,
                 **{**options, "optimizer": optimizer})
    assert optimizer.t == 2000
    for k, v in whole.get_params().items():
        np.testing.assert_array_equal(resumed.get_params()[k], v, err_msg=k)


# --- many models, one block each (per_sample.cu's per_sample_many kernels, per_sample.ManyChunks) ------------

def _many_against_solo(backend, dtype, activation, output, loss, shared_g, shared_t, dropout=None, launcher=None,
                       threads=None, models=3, rows=24):
    """One ManyChunks launch for ``models`` networks (their parameters stacked as gpunet.many stacks them) and, for
    each model, the solo kernel's launch (per_sample._launch) on copies of its network with the same inputs: Z1,
    G (one for all where ``shared_g``), T (one for all where ``shared_t``), each model's lr; returns both results
    as host arrays, {name: (models, ...)}."""
    from gpunet.engines.stack import Stack
    sizes = [16, 70, 5]
    dropouts = dropout if isinstance(dropout, list) and isinstance(dropout[0], list) else [dropout] * models
    make = [functools.partial(_random_net, sizes, activation, output, loss, dtype, backend=backend, seed=3 + m,
                              dropout=dropouts[m]) for m in range(models)]
    group, solos = [f() for f in make], [f() for f in make]
    for m, net in enumerate(group + solos):
        net.seed = 10 + m % models  # each model its own masks
    xp, to = group[0].backend.xp, group[0].backend.to_device
    rng = np.random.default_rng(8)
    H, O = sizes[1], sizes[2]
    Z1 = to(rng.standard_normal((models, rows, H)), group[0].dtype)
    G = to(0.01 * rng.standard_normal((1 if shared_g else models, rows, rows)), group[0].dtype)
    T = to(rng.random((rows, O) if shared_t else (models, rows, O)), group[0].dtype)
    lrs = [0.01, 0.02, 0.005, 0.03][:models]
    stack = Stack(group, [gpunet.SGD() for _ in group])
    step = 2**32 + 7  # the count before the chunk: its word mod 2**32
    chunks = per_sample.ManyChunks(group, launcher, threads)
    D, Z2, Y = chunks.run(Z1, G, T, stack.params["W2"], stack.params["b2"], stack.P.shape[1], lrs, step)
    got = {"D": D, "Z2": Z2, "Y": Y, "W2": stack.params["W2"], "b2": stack.params["b2"]}
    want = {k: [] for k in got}
    for m, net in enumerate(solos):
        D_m, Y_m, Z2_m = (xp.empty((rows, n), dtype=net.dtype) for n in (H, O, O))
        per_sample._launch(net, xp.ascontiguousarray(Z1[m]), xp.ascontiguousarray(G[0 if shared_g else m]),
                           xp.ascontiguousarray(T if shared_t else T[m]), lrs[m], D_m, Y_m, Z2_m, in_kernel=False,
                           threads=threads, launcher=launcher, step=step)
        for k, v in (("D", D_m), ("Z2", Z2_m), ("Y", Y_m), ("W2", net.params["W2"]), ("b2", net.params["b2"])):
            want[k].append(v)
    host = group[0].backend.to_host
    return {k: host(v) for k, v in got.items()}, {k: np.stack([host(a) for a in v]) for k, v in want.items()}


MANY_DROPOUTS = [None, [[0.2, 0.5], [0.0, 0.0], [0.0, 0.875]]]  # none, or each model its own (one drops nothing)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dropout", MANY_DROPOUTS, ids=["no-dropout", "dropout-per-model"])
@pytest.mark.parametrize("shared_g, shared_t", [(True, True), (False, True), (False, False)],
                         ids=["one-G-one-T", "own-G", "own-G-own-T"])
@pytest.mark.parametrize("activation, output, loss", [("tanh", "softmax", "cross-entropy"),
                                                      ("silu", "silu", "squared")])
def test_many_transcription_is_each_models_solo_transcription(activation, output, loss, shared_g, shared_t,
                                                              dropout, dtype):
    # Block m reaches model m's rows of the stacked parameters and its inputs: to the bit the solo launch.
    got, want = _many_against_solo("numpy", dtype, activation, output, loss, shared_g, shared_t, dropout,
                                   launcher=transcriptions.per_sample_launch, threads=64)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert np.abs(want["W2"][0] - want["W2"][1]).max() > 1e-3  # the models differ


def test_a_many_launch():
    """The many-model kernel's launch: one block a model, the solo geometry; the strides (0 where one G or T serves
    all); lr one value a model in the dtype; with dropout, each model's key words, threshold and scale, and the
    step count mod 2**32."""
    def stacked(dtype):  # two models' flat buffers of 200, W2 at 10 and b2 at 130: (2, 40, 3) and (2, 3) views
        P = np.zeros((2, 200), dtype=dtype)
        return P[:, 10:130].reshape(2, 40, 3), P[:, 130:133]

    nets = [gpunet.Network([6, 40, 3], "relu", "silu", "squared", seed=2**33 + m, backend="numpy", dtype="float32",
                           dropout=[0.0, 0.5 if m else 0.0]) for m in range(2)]
    launches = []
    chunks = per_sample.ManyChunks(nets, launches.append)
    Z1, G, T = np.ones((2, 7, 40), np.float32), np.ones((1, 7, 7), np.float32), np.ones((7, 3), np.float32)
    chunks.run(Z1, G, T, *stacked(np.float32), 200, [0.1, 0.2], 2**32 + 9)
    (launch,) = launches
    assert launch.kernel == "per_sample_many_z2_dropout" and launch.params == {"hidden": 2}
    assert launch.grid == (2,) and (launch.block[0], launch.shared) == per_sample.launch_geometry(40, 3, 4)
    assert len(launch.args) == 21 and [int(a) for a in launch.args[8:14]] == [7, 40, 3, 0, 0, 200]
    lr = launch.args[14]
    assert lr.dtype == np.float32 and lr.tolist() == [np.float32(0.1), np.float32(0.2)]
    seeds, thresholds, scales, step0 = launch.args[17:]
    assert seeds.tolist() == [[0, 2], [1, 2]] and thresholds.tolist() == [2**32, 2**31]
    assert scales.dtype == np.float32 and scales.tolist() == [1.0, 2.0] and int(step0) == 9
    chunks.run(Z1, np.ones((2, 7, 7), np.float32), np.ones((2, 7, 3), np.float32), *stacked(np.float32), 200,
               [0.1, 0.2], 0)
    assert [int(a) for a in launches[-1].args[11:13]] == [49, 21]  # own G and T: a model's K K and K O apart
    plain = [gpunet.Network([6, 40, 3], "relu", seed=m, backend="numpy", dtype="float64") for m in range(2)]
    per_sample.ManyChunks(plain, launches.append).run(Z1.astype(np.float64), G.astype(np.float64),
                                                       T.astype(np.float64), *stacked(np.float64), 200, [0.1, 0.1], 0)
    assert launches[-1].kernel == "per_sample_many" and len(launches[-1].args) == 17


def test_many_chunks_refuse_what_they_cannot_run():
    deep = [gpunet.Network.article([8, 6, 5, 3], backend="numpy") for _ in range(2)]
    with pytest.raises(ValueError, match="the per-sample kernel cannot run .* one hidden layer; this one has 2"):
        per_sample.ManyChunks(deep, transcriptions.per_sample_launch)
    nets = [gpunet.Network.article([8, 6, 3], backend="numpy") for _ in range(2)]
    with pytest.raises(ValueError, match="the per-sample kernel cannot run .* needs the cupy backend"):
        per_sample.ManyChunks(nets)
    with pytest.raises(TypeError, match="launcher must be a callable taking a Launch, or None; got int"):
        per_sample.ManyChunks(nets, 1)


def test_many_name_expressions():
    assert sorted(per_sample.MANY_EXPRESSIONS) == sorted(
        f"per_sample_many{z}{d}<{c}, {a}>" for z in ("", "_z2") for d in ("", "_dropout") for c in ("float", "double")
        for a in (0, 1, 2, 3, 6))
    assert per_sample._many_expression("float64", "silu", "silu", True) == "per_sample_many_z2_dropout<double, 6>"
    assert set(per_sample.NAME_EXPRESSIONS[per_sample.SOURCE]) == set(per_sample.EXPRESSIONS + per_sample.MANY_EXPRESSIONS)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dropout", MANY_DROPOUTS, ids=["no-dropout", "dropout-per-model"])
@pytest.mark.parametrize("shared_g, shared_t", [(True, True), (False, False)], ids=["one-G-one-T", "own-G-own-T"])
@pytest.mark.parametrize("activation, output, loss", [("tanh", "softmax", "cross-entropy"),
                                                      ("silu", "silu", "squared"), ("relu", "sigmoid", "absolute")])
def test_gpu_many_kernel_is_each_models_solo_kernel(activation, output, loss, shared_g, shared_t, dropout, dtype):
    # On the device: block m runs the solo kernel's body at model m's offsets, so each model's numbers are its solo
    # launch's to the bit (the same code in the same order, on the same geometry); and both are the transcription's
    # to the device's exp/tanh and fused multiply-adds.
    cupy = require("cupy")
    got, want = _many_against_solo(cupy, dtype, activation, output, loss, shared_g, shared_t, dropout, threads=64)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    host, _ = _many_against_solo("numpy", dtype, activation, output, loss, shared_g, shared_t, dropout,
                                 launcher=transcriptions.per_sample_launch, threads=64)
    for k, v in host.items():
        assert rel_diff(got[k], v) <= GPU_TOLERANCE[dtype], k
