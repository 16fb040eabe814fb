"""Every public path on CuPy (the ``gpu`` marker), held against NumPy; the NumPy half of each body runs everywhere.

Issue 11 §3: the Network API; gpunet.train with every optimiser at batch 1, 64
and with a partial last batch; evaluate; predict on images; checkpoints across
backends; resume bit-identical; the divergence guard; the out-of-memory error.
test_parity.py already holds forward, loss, gradients, 50-step trajectories and
train_per_sample against NumPy; these tests do not repeat them. A "cupy" case
compares CuPy with NumPy in the same dtype; its "numpy" twin compares NumPy
float32 with NumPy float64, so the body and its tolerances run here too.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

import gpunet
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.cli import main
from gpunet.datasets import load_digits
from gpunet.training import DeviceMemoryError, DivergenceError, TrainingInterrupted

from conftest import TOLERANCE, assert_close, require


def _data(n=128, n_in=12, n_out=4, seed=5):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.01, 1.0, (n, n_in)), rng.integers(0, n_out, n)


def test_network_api_on_the_backend(candidate):
    backend, dtype, ref_backend, ref_dtype = candidate
    X, labels = _data(n=40)
    start = gpunet.Network([12, 9, 4], "tanh", "softmax", "cross-entropy", init="xavier", seed=2,
                           backend="numpy", dtype="float64").get_params()
    nets = []
    for b, dt in ((backend, dtype), (ref_backend, ref_dtype)):
        net = gpunet.Network([12, 9, 4], "tanh", "softmax", "cross-entropy", init="xavier", seed=7, backend=b, dtype=dt)
        net.set_params(start)  # host parameters in, kept on the device
        nets.append(net)
    net, ref = nets
    assert repr(net).endswith(f"backend={backend.name!r}, dtype={dtype!r})") and net.backend is backend
    assert all(type(p) is type(backend.xp.empty(0)) and p.dtype == np.dtype(dtype) for p in net.params.values())
    Y = net.forward(backend.to_device(X))  # device input stays on the device
    assert type(Y) is type(backend.xp.empty(0)) and Y.dtype == np.dtype(dtype)
    assert_close(backend.to_host(Y), ref.forward(X), TOLERANCE[dtype], "forward")
    T = net.targets_from_labels(labels)
    assert isinstance(T, np.ndarray) and T.sum() == len(labels)  # one-hot for softmax + cross-entropy
    assert isinstance(net.loss(X, T), float)
    assert_close(net.loss(X, T), ref.loss(X, T), TOLERANCE[dtype], "loss")
    for _ in range(5):
        net.train_step(X, T, lr=0.3, optimizer=None)
        ref.train_step(X, T, lr=0.3, optimizer=None)
    predicted = net.predict(X)
    assert predicted.dtype == np.int64 and isinstance(predicted, np.ndarray)
    np.testing.assert_array_equal(predicted, ref.predict(X))
    got = net.get_params()
    assert all(isinstance(v, np.ndarray) for v in got.values())
    for k, v in ref.get_params().items():
        assert_close(got[k], v, TOLERANCE[dtype], k)


@pytest.mark.parametrize("batch", [1, 64, 48])  # 128 rows: 48 leaves a partial last batch of 32
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_train_every_optimiser_and_batch(candidate, optimizer, batch):
    backend, dtype, ref_backend, ref_dtype = candidate
    X, labels = _data()
    lr = {"sgd": 0.2, "momentum": 0.05, "adam": 0.003}[optimizer] / (4 if batch == 1 else 1)

    def run(b, dt):
        net = gpunet.Network.article([12, 10, 4], "sigmoid", "sigmoid", "squared", seed=3, backend=b, dtype=dt)
        seen = []
        history = gpunet.train(net, X, labels, epochs=2, batch_size=batch, lr=lr, optimizer=optimizer, seed=4,
                               X_test=X[:50], y_test=labels[:50], on_batch=lambda rows, loss: seen.append(rows))
        losses = [(r["train_loss"], r["test_loss"]) for r in history]
        return net.get_params(), np.array(losses), [r["test_accuracy"] for r in history], seen

    got, got_losses, got_acc, got_rows = run(backend, dtype)
    want, want_losses, want_acc, want_rows = run(ref_backend, ref_dtype)
    chunk = 64 if batch == 1 and optimizer == "sgd" else batch  # plain SGD at batch 1: the per-sample path
    expected_rows = list(range(chunk, 128, chunk)) + [128]
    assert got_rows == want_rows == expected_rows * 2
    assert want_losses[-1, 0] < want_losses[0, 0]  # it trains
    assert_close(got_losses, want_losses, TOLERANCE[dtype], "losses")
    for k in want:
        assert_close(got[k], want[k], TOLERANCE[dtype], k)
    assert abs(got_acc[-1] - want_acc[-1]) <= 1 / 50  # at most one borderline test row may flip


@pytest.mark.gpu
@pytest.mark.parametrize("batch,optimizer", [(16, "adam"), (1, "sgd")])  # batches; per-sample plain SGD
def test_auto_trains_in_graphs_on_cupy_unless_asked_to_call_every_step(batch, optimizer):
    """select.VERIFIED holds "graph" and "per-sample-epochs": auto's run is kernels="graph"'s, bit for bit; given
    on_batch it is kernels="fused"'s, with a call every step, and with every_step=False graph's again."""
    cupy = require("cupy")
    X, labels = _data(n=200)

    def run(kernels, **calls):
        net = gpunet.Network([12, 10, 4], "relu", "softmax", "cross-entropy", init="he", seed=1, backend=cupy)
        history = gpunet.train(net, X, labels, epochs=2, batch_size=batch, lr=0.01, optimizer=optimizer, seed=9,
                               kernels=kernels, **calls)
        return net.get_params(), [r["train_loss"] for r in history]

    rows = []
    runs = {"auto": run("auto"), "graph": run("graph"), "fused": run("fused"),
            "auto, on_batch": run("auto", on_batch=lambda n, loss: rows.append(n)),
            "auto, every_step=False": run("auto", on_batch=lambda n, loss: None, every_step=False)}
    chunk = 64 if batch == 1 else batch
    assert rows == (list(range(chunk, 200, chunk)) + [200]) * 2
    for name, twin in (("auto", "graph"), ("auto, on_batch", "fused"), ("auto, every_step=False", "graph")):
        got, want = runs[name], runs[twin]
        assert got[1] == want[1], name
        assert all(np.array_equal(got[0][k], v) for k, v in want[0].items()), name
    if batch > 1:  # graph mode's products round unlike cuBLAS's: the test can tell the two apart
        assert runs["graph"][1] != runs["fused"][1]


def test_evaluate_and_the_cli_evaluate(candidate, tmp_path, capsys, monkeypatch):
    backend, dtype, ref_backend, ref_dtype = candidate
    d = load_digits()
    results = []
    for b, dt in ((backend, dtype), (ref_backend, ref_dtype)):
        net = gpunet.Network([64, 32, 10], "relu", "softmax", "cross-entropy", init="he", backend=b, dtype=dt)
        gpunet.train(net, d.X_train, d.y_train, epochs=2, batch_size=32, lr=0.003, lr_decay=1.0, optimizer="adam")
        Xd, Td = b.to_device(d.X_test, net.dtype), b.to_device(net.targets_from_labels(d.y_test))
        results.append((net, gpunet.evaluate(net, Xd, Td, d.y_test)))
    (_, got), (_, want) = results
    assert want["test_accuracy"] >= 0.9
    assert_close(got["test_loss"], want["test_loss"], TOLERANCE[dtype], "test_loss")
    assert abs(got["test_accuracy"] - want["test_accuracy"]) <= 2 / len(d.y_test)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet", "--epochs", "3", "--backend", backend.name, "--dtype", dtype, "--out", "run"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "run/model.npz", "--json", "--backend", backend.name]) == 0
    report = json.loads(capsys.readouterr().out)
    reloaded, _, _ = load_checkpoint(tmp_path / "run/model.npz", "numpy")
    assert report["accuracy"] == pytest.approx(np.mean(reloaded.predict(d.X_test) == d.y_test), abs=2 / 359)
    assert report["accuracy"] >= 0.9


def test_predict_on_images(backend, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet", "--backend", "numpy", "--out", "run"]) == 0
    d = load_digits()
    paths = []
    for k in range(12):
        ink = np.kron((d.X_test[k].reshape(8, 8) - 0.01) / 0.99, np.ones((6, 6)))
        canvas = np.zeros((64, 64))
        canvas[8:56, 8:56] = ink
        Image.fromarray(((1 - canvas) * 255).round().astype(np.uint8)).save(tmp_path / f"d{k}.png")
        paths.append(f"d{k}.png")
    capsys.readouterr()
    assert main(["predict", "run/model.npz", *paths, "--json", "--backend", backend.name]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", "run/model.npz", *paths, "--json", "--backend", "numpy"]) == 0
    want = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["digit"] for r in rows] == [r["digit"] for r in want]
    assert sum(r["digit"] == y for r, y in zip(rows, d.y_test[:12])) >= 9
    for r, w in zip(rows, want):
        assert_close(r["probabilities"], w["probabilities"], 1e-4, r["image"])


@pytest.mark.parametrize("direction", ["gpu-to-cpu", "cpu-to-gpu"])
def test_checkpoint_across_backends_gives_the_same_numbers(backend, direction, tmp_path):
    """Written on one backend, loaded on the other: the same parameters, optimiser state and outputs."""
    first, second = (backend, require("numpy")) if direction == "gpu-to-cpu" else (require("numpy"), backend)
    X, labels = _data()
    net = gpunet.Network([12, 10, 4], "relu", "softmax", "cross-entropy", init="he", backend=first, dtype="float64")
    opt = gpunet.Adam()
    gpunet.train(net, X, labels, epochs=2, batch_size=16, lr=0.01, optimizer=opt)
    save_checkpoint(tmp_path / "m.npz", net, opt, {"epoch": 2})
    loaded, loaded_opt, meta = load_checkpoint(tmp_path / "m.npz", second)
    assert meta == {"epoch": 2} and loaded.backend.name == second.name and loaded_opt.t == opt.t
    for k, v in net.get_params().items():
        np.testing.assert_array_equal(loaded.get_params()[k], v)
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(loaded_opt.state_dict()[k], v)
    assert_close(second.to_host(loaded.forward(X)), first.to_host(net.forward(X)), 1e-12, "forward")
    # one more epoch on each side from the saved state: still the same numbers
    for n, o in ((net, opt), (loaded, loaded_opt)):
        gpunet.train(n, X, labels, epochs=3, start_epoch=3, batch_size=16, lr=0.01, optimizer=o)
    for k, v in net.get_params().items():
        assert_close(loaded.get_params()[k], v, 1e-9, k)


def test_resume_is_bit_identical_to_an_uninterrupted_run(backend, tmp_path):
    X, labels = _data(n=200)
    # One path throughout: on CuPy, auto trains the uninterrupted run in CUDA graphs but passes them over for
    # the run given should_stop (it wants asking every step), and graph mode's products round differently.
    options = dict(batch_size=16, lr=0.01, seed=9, kernels="fused" if backend.name == "cupy" else "plain")

    def fresh():
        return gpunet.Network([12, 10, 4], "relu", "softmax", "cross-entropy", init="he", seed=1, backend=backend)

    whole, whole_opt = fresh(), gpunet.Adam()
    whole_history = gpunet.train(whole, X, labels, epochs=3, optimizer=whole_opt, **options)

    net, opt, steps = fresh(), gpunet.Adam(), []
    with pytest.raises(TrainingInterrupted) as info:
        gpunet.train(net, X, labels, epochs=3, optimizer=opt, should_stop=lambda: steps.append(1) or len(steps) == 20,
                     **options)
    stop = info.value
    assert (stop.epoch, stop.rows) == (2, 128)  # asked after each step but an epoch's last: 12 in epoch 1, 8 in 2
    save_checkpoint(tmp_path / "m.npz", net, opt, {})
    net, opt, _ = load_checkpoint(tmp_path / "m.npz", backend)
    history = gpunet.train(net, X, labels, epochs=3, optimizer=opt, start_epoch=stop.epoch, start_row=stop.rows,
                           start_loss=stop.loss_sum, **options)
    assert [r["epoch"] for r in history] == [2, 3]
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in whole_history[1:]]
    for k, v in whole.get_params().items():
        np.testing.assert_array_equal(net.get_params()[k], v)


def test_divergence_guard(backend):
    d = load_digits()
    net = gpunet.Network.article([64, 16, 10], "relu", "identity", "squared", backend=backend)
    seen = []
    with pytest.raises(DivergenceError, match=r"in epoch 1: the training loss became (nan|inf) between rows \d+ and"):
        gpunet.train(net, d.X_train, d.y_train, epochs=2, batch_size=4, lr=100.0, callback=seen.append, optimizer="sgd")
    assert seen == []


@pytest.mark.gpu
def test_out_of_memory_is_one_line_and_the_process_goes_on():
    """Ask for more than any GPU holds: 32,768 rows x 2**21 hidden units in float32 is 256 GiB per activation."""
    backend = require("cupy")
    rng = np.random.default_rng(0)
    X, labels = rng.random((32768, 4)), rng.integers(0, 2, 32768)
    net = gpunet.Network.article([4, 2**21, 2], backend=backend)
    with pytest.raises(DeviceMemoryError) as info:
        gpunet.train(net, X, labels, epochs=1, batch_size=32768, optimizer="sgd", lr=0.1)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"out of memory on cupy ({backend.device}) while training 32768 rows")
    assert "[4, 2097152, 2]" in text and "reduce batch_size= or hidden=" in text
    del net
    backend.free_memory()
    small = gpunet.Network.article([4, 8, 2], backend=backend)  # the process goes on: the device still trains
    history = gpunet.train(small, X[:256], labels[:256], epochs=2, batch_size=32, lr=0.5, optimizer="sgd")
    assert all(math.isfinite(r["train_loss"]) for r in history)
