"""gpunet.save and gpunet.load: round trips, refusals, and the command line reading what Python saved."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import gpunet
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.datasets import load_digits
from gpunet.images import image_inputs


@pytest.fixture(scope="module")
def trained():
    d = load_digits(pixels="unit")
    net = gpunet.Network([64, 40, 10], activation="relu", output="softmax", loss="cross-entropy", init="he",
                         backend="numpy", seed=3)
    opt = gpunet.Adam(weight_decay=1e-4)
    gpunet.train(net, d.X_train, d.y_train, epochs=8, batch_size=16, lr=0.003, optimizer=opt)
    return net, opt, d


def test_save_and_load_round_trip(trained, tmp_path):
    net, opt, _ = trained
    gpunet.save(net, tmp_path / "m.npz", optimizer=opt, pixels="unit")
    back = gpunet.load(tmp_path / "m.npz", backend="numpy")
    assert back.config() == net.config() and back.sizes == [64, 40, 10]
    for k, v in net.get_params().items():
        np.testing.assert_array_equal(back.get_params()[k], v)
    _, opt2, meta = load_checkpoint(tmp_path / "m.npz", "numpy")
    assert (opt2.name, opt2.t, opt2.weight_decay) == ("adam", opt.t, 1e-4)
    np.testing.assert_array_equal(opt2.state["m.W1"], opt.state["m.W1"])
    assert meta["saved_by"] == "gpunet.save"
    assert meta["preprocessing"] == {"pixels": "unit", "pixel_scaling": "0..max scaled to [0, 1]", "targets": "one-hot"}
    assert meta["train_config"]["dataset"] == "digits" and meta["train_config"]["hidden"] == [40]


def test_save_refuses_to_overwrite_and_checks_its_arguments(trained, tmp_path):
    net = trained[0]
    path = tmp_path / "m.npz"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match=r"m.npz already exists; pass overwrite=True"):
        gpunet.save(net, path)
    assert path.read_bytes() == b"user data"
    gpunet.save(net, path, overwrite=True)
    assert gpunet.load(path).sizes == net.sizes
    with pytest.raises(ValueError, match=r"dataset must be one of digits, mnist; got 'cifar'"):
        gpunet.save(net, tmp_path / "a.npz", dataset="cifar")
    with pytest.raises(ValueError, match=r"pixels must be one of original, unit; got 'raw'"):
        gpunet.save(net, tmp_path / "a.npz", pixels="raw")
    with pytest.raises(TypeError, match=r"net must be a gpunet.Network; got dict"):
        gpunet.save({}, tmp_path / "a.npz")
    with pytest.raises(FileNotFoundError, match=r"no such folder"):
        gpunet.save(net, tmp_path / "missing" / "a.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # nothing half-written


def test_cli_evaluate_reads_a_network_saved_from_python(trained, tmp_path, capsys):
    net, _, d = trained
    gpunet.save(net, tmp_path / "m.npz", pixels="unit")
    assert main(["evaluate", str(tmp_path / "m.npz"), "--json", "--backend", "numpy"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the CLI loads the digits scaled to [0, 1], as recorded, and so agrees with the network on them
    assert report["accuracy"] == pytest.approx(np.mean(net.predict(d.X_test) == d.y_test))
    assert report["accuracy"] >= 0.9
    assert np.array(report["confusion_matrix"]).sum() == len(d.y_test)


def test_cli_predict_reads_a_network_saved_from_python(trained, tmp_path, capsys):
    net, _, d = trained
    gpunet.save(net, tmp_path / "m.npz", pixels="unit")
    paths = []
    for k in range(4):
        grey = 255 - np.kron(d.X_test[k].reshape(8, 8), np.ones((6, 6))) * 255  # dark ink on white paper
        path = tmp_path / f"d{k}.png"
        Image.fromarray(np.pad(grey, 5, constant_values=255).round().astype(np.uint8)).save(path)
        paths.append(str(path))
    assert main(["predict", str(tmp_path / "m.npz"), *paths, "--json", "--backend", "numpy"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = net.predict_proba(image_inputs(paths, 64, "unit"))  # scaled as recorded in the file
    np.testing.assert_allclose([r["probabilities"] for r in rows], want, atol=2e-6)
    assert [r["digit"] for r in rows] == list(want.argmax(axis=1))
