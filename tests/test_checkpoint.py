"""Checkpoints: a round trip restores parameters and optimiser state; damaged files give CheckpointError."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet.checkpoint import CheckpointError, load_checkpoint, meta_field, save_checkpoint


def _trained(tmp_path):
    net = gpunet.Network.article([6, 5, 3], activation="tanh", backend="numpy", seed=2)
    opt = gpunet.Adam(beta1=0.8, weight_decay=0.01)
    X, T = np.random.default_rng(0).uniform(size=(8, 6)), np.full((8, 3), 0.5)
    for _ in range(3):
        net.train_step(X, T, lr=0.01, optimizer=opt)
    path = tmp_path / "model.npz"
    save_checkpoint(path, net, opt, {"epoch": 3, "note": "x"})
    return net, opt, path, X, T


def test_round_trip_continues_identically(tmp_path):
    net, opt, path, X, T = _trained(tmp_path)
    net2, opt2, meta = load_checkpoint(path, "numpy")
    assert meta == {"epoch": 3, "note": "x"}
    assert (opt2.name, opt2.beta1, opt2.weight_decay, opt2.t) == ("adam", 0.8, 0.01, 3)
    assert net2.config() == net.config()
    for a, b in ((net, opt), (net2, opt2)):
        a.train_step(X, T, lr=0.01, optimizer=b)
    for k, v in net.get_params().items():
        np.testing.assert_array_equal(net2.get_params()[k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary file left


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda b: b[: len(b) // 2], r"not a readable gpunet checkpoint"),
        (lambda b: b"not a zip at all", r"not a readable gpunet checkpoint"),
    ],
)
def test_damaged_checkpoints(tmp_path, damage, match):
    _, _, path, _, _ = _trained(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_checkpoint_without_the_needed_fields(tmp_path):
    path = tmp_path / "old.npz"
    np.savez(path, W1=np.zeros((2, 2)))
    with pytest.raises(CheckpointError, match=r"old.npz: not a readable gpunet checkpoint \(it has no header\)"):
        load_checkpoint(path)
    np.savez(path, header=np.array('{"format": 99}'))
    with pytest.raises(CheckpointError, match=r"checkpoint format 99; expected 1"):
        load_checkpoint(path)


def test_a_checkpoint_naming_the_old_init_seed_still_loads(tmp_path):
    # Before the rename the article's initialisation was called "seed"; such checkpoints must still load.
    import json

    net = gpunet.Network.article([6, 5, 3], init="article", seed=3, backend="numpy", dtype="float64")
    save_checkpoint(tmp_path / "m.npz", net, gpunet.SGD(), {})
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["header"]))
    header["network"]["init"] = "seed"
    arrays["header"] = np.array(json.dumps(header))
    np.savez(tmp_path / "old.npz", **arrays)
    loaded, _, _ = load_checkpoint(tmp_path / "old.npz", backend="numpy")
    assert loaded.init == "article"
    np.testing.assert_array_equal(loaded.get_params()["W1"], net.get_params()["W1"])
    assert gpunet.Network.article([6, 5, 3], init="seed", seed=3, backend="numpy", dtype="float64").init == "article"


def test_meta_fields_are_checked_for_the_caller(tmp_path):
    _, _, path, _, _ = _trained(tmp_path)
    _, _, meta = load_checkpoint(path)
    assert meta_field(path, meta, "epoch", int) == 3
    with pytest.raises(CheckpointError, match=r"model.npz: the header's meta.note must be an integer; got 'x'"):
        meta_field(path, meta, "note", int)
    with pytest.raises(CheckpointError, match=r"model.npz: the header has no field meta.position"):
        meta_field(path, meta, "position", dict)
    with pytest.raises(CheckpointError, match=r"model.npz: the header's meta.epoch must be an integer; got True"):
        meta_field(path, {"epoch": True}, "epoch", int)
