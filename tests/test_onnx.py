"""gpunet.onnx and `gpunet export`: the exported graph, run by onnxruntime on real inputs, gives gpunet's outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import gpunet
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.datasets import load_digits

from readme_examples import readme_example

onnx = pytest.importorskip("onnx", reason="onnx is in the test extra")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra")
gpunet_onnx = pytest.importorskip("gpunet.onnx")

TOLERANCE = 1e-5  # float32 on both sides


def run_onnx(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["X"] and [o.name for o in session.get_outputs()] == ["Y"]
    return session.run(None, {"X": np.asarray(X, dtype=np.float32)})[0]


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.mark.parametrize(
    "sizes, activation, output, loss",
    [
        ([64, 30, 10], "sigmoid", "sigmoid", "squared"),  # the article's network
        ([64, 40, 20, 10], "relu", "softmax", "cross-entropy"),
        ([64, 24, 10], "tanh", "identity", "squared"),
        ([64, 24, 16, 10], "leaky_relu", "tanh", "absolute"),
        ([64, 10], "sigmoid", "softmax", "cross-entropy"),  # no hidden layer
    ],
)
def test_onnxruntime_gives_gpunet_outputs(tmp_path, digits, sizes, activation, output, loss):
    net = gpunet.Network(sizes, activation=activation, output=output, loss=loss, init="xavier", seed=1,
                         backend="numpy")
    gpunet.train(net, digits.X_train, digits.y_train, epochs=3, lr=0.01, optimizer="adam")  # weights off their init
    path = gpunet_onnx.export(net, tmp_path / "net.onnx", preprocessing={"pixels": "original"})
    Y = run_onnx(path, digits.X_test)
    expected = net.forward(digits.X_test)
    assert Y.shape == expected.shape == (len(digits.X_test), 10)
    assert np.abs(Y - expected).max() <= TOLERANCE
    assert (Y.argmax(axis=1) == net.predict(digits.X_test)).mean() > 0.99  # ties aside, the same digits
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("Gemm") == net.n_layers


def test_a_network_trained_with_dropout_exports_without_it(tmp_path, digits):
    """Dropout belongs to training: the exported graph is the evaluation network, net.forward's outputs, no mask."""
    net = gpunet.Network([64, 40, 20, 10], seed=1, backend="numpy", dropout=[0.1, 0.5, 0.3])
    gpunet.train(net, digits.X_train, digits.y_train, epochs=2, lr=0.01, optimizer="adam")
    path = gpunet_onnx.export(net, tmp_path / "net.onnx", preprocessing={"pixels": "original"})
    Y = run_onnx(path, digits.X_test)
    assert np.abs(Y - net.forward(digits.X_test)).max() <= TOLERANCE
    assert np.abs(run_onnx(path, digits.X_test) - Y).max() == 0  # no random op: the same outputs every run
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "Dropout" not in ops and ops.count("Gemm") == net.n_layers
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(meta["gpunet.network"])["dropout"] == [0.1, 0.5, 0.3]  # recorded, not applied


def test_graph_and_metadata(tmp_path):
    net = gpunet.Network.article([4, 3, 2], activation="leaky_relu", output="softmax", loss="cross-entropy", backend="numpy")
    path = gpunet_onnx.export(net, tmp_path / "m.onnx", preprocessing={"pixels": "unit", "scale": 0.5})
    model = onnx.load(path)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "LeakyRelu", "Gemm", "Softmax"]
    assert model.graph.node[1].attribute[0].f == pytest.approx(0.01)
    meta = gpunet_onnx.metadata(path)
    assert meta["preprocessing"] == {"pixels": "unit", "scale": 0.5}
    assert meta["network"] == net.config() and meta["version"] == gpunet.__version__
    # The input's batch dimension is free: one row and a thousand rows both run.
    X = np.random.default_rng(0).normal(size=(1000, 4))
    assert np.abs(run_onnx(path, X) - net.forward(X)).max() <= TOLERANCE
    assert run_onnx(path, X[:1]).shape == (1, 2)


def test_float64_network_exports_in_float32(tmp_path, digits):
    net = gpunet.Network([64, 32, 10], activation="tanh", output="softmax", loss="cross-entropy", init="xavier",
                         backend="numpy", dtype="float64")
    gpunet.train(net, digits.X_train, digits.y_train, epochs=2, lr=0.01, optimizer="adam")
    path = gpunet_onnx.export(net, tmp_path / "m.onnx")
    assert gpunet_onnx.metadata(path)["preprocessing"] == gpunet_onnx.NO_PREPROCESSING
    assert np.abs(run_onnx(path, digits.X_test) - net.forward(digits.X_test)).max() <= TOLERANCE


def test_export_keeps_existing_files_and_writes_nothing_on_error(tmp_path):
    net = gpunet.Network.article([3, 2], backend="numpy")
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="already exists"):
        gpunet_onnx.export(net, existing)
    assert existing.read_bytes() == b"user data"
    gpunet_onnx.export(net, existing, overwrite=True)
    assert onnx.load(existing).graph.node[0].op_type == "Gemm"
    with pytest.raises(TypeError, match="preprocessing must be JSON-ready"):
        gpunet_onnx.export(net, tmp_path / "bad.onnx", preprocessing={"f": object()})
    with pytest.raises(TypeError, match="net must be a gpunet.Network; got str"):
        gpunet_onnx.export("net", tmp_path / "bad.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now fails as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "gpunet\[onnx\]"'):
        gpunet_onnx.export(gpunet.Network.article([3, 2], backend="numpy"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_command_line_export(tmp_path, monkeypatch, capsys, digits):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet", "--backend", "numpy", "--epochs", "2", "--hidden", "24", "--out", "run"]) == 0
    capsys.readouterr()
    assert main(["export", "run/model.npz", "model.onnx"]) == 0
    assert capsys.readouterr().out == "wrote model.onnx\n"
    net, _, meta = load_checkpoint("run/model.npz", "numpy")
    assert gpunet_onnx.metadata("model.onnx")["preprocessing"] == meta["preprocessing"]
    assert meta["preprocessing"]["pixels"] == "original"
    assert np.abs(run_onnx("model.onnx", digits.X_test) - net.forward(digits.X_test)).max() <= TOLERANCE


@pytest.mark.parametrize(
    "args, bad",
    [
        (["missing.npz", "out.onnx"], "missing.npz: no such file"),
        (["run/model.npz", "run/config.json"], "already exists"),  # never overwrites
        (["run/model.npz", "nowhere/out.onnx"], "nowhere: no such folder"),
    ],
)
def test_command_line_export_errors_in_one_line(tmp_path, monkeypatch, args, bad):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet", "--backend", "numpy", "--epochs", "1", "--hidden", "8", "--out", "run"]) == 0
    before = (tmp_path / "run/config.json").read_bytes()
    out = subprocess.run([sys.executable, "-m", "gpunet", "export", *args], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunet export: error: ") and bad in lines[0], out.stderr
    assert (tmp_path / "run/config.json").read_bytes() == before
    assert not (tmp_path / "out.onnx").exists()
    json.loads(before)  # still the run's config


def test_readme_example(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the example's temporary folder goes
    scope: dict = {}
    exec(compile(readme_example(1), "README.md", "exec"), scope)
    assert scope["difference"] <= TOLERANCE
    assert scope["recorded"] == "original"
    assert list(tmp_path.iterdir()) == []  # the example leaves nothing behind
