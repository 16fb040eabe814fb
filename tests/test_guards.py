"""Every branch of the guards: each test fails when the branch it names is taken out.

The divergence guard (training._check_finite: the loss, then every parameter),
the refusals to save or export parameters no reader would take back, the sizes no
machine could hold, degenerate data files, download deadlines, and the run
folder's and resume's checks, each of which must refuse before anything is written.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet import onnx as gpunet_onnx
from gpunet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpunet.config import TrainConfig
from gpunet.datasets import DataError, load, load_mnist, load_mnist_test
from gpunet.download import download_mnist
from gpunet.memory import ADDRESS_SPACE, check_network_size, check_possible
from gpunet.optim import SGD
from gpunet.run import Run, RunFolderError
from gpunet.training import DivergenceError, train


def snapshot(folder):
    """Every file under ``folder`` with its bytes: a refused command must leave it equal."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def small_run(folder, epochs=2, **settings):
    config = TrainConfig(epochs=epochs, hidden=(8,), backend="numpy", **settings)
    run = Run.new(config, folder)
    run.train()
    run.close()
    return run


# --- the divergence guard --------------------------------------------------------------------


def diverging_net():
    """A network whose one step (8 rows, one batch) takes its output bias to infinity while the loss of that
    step, computed before the update, is finite: targets 1e6 give gradients ~1e6, times lr 1e303 (plain SGD,
    named: an adaptive optimiser would scale the step down to about lr)."""
    net = gpunet.Network([4, 5, 3], activation="tanh", output="identity", loss="squared", init="article",
                         backend="numpy", dtype="float64")
    X = np.random.default_rng(0).random((8, 4))
    return net, X, np.full((8, 3), 1e6)


def test_a_parameter_that_becomes_infinite_while_the_loss_stays_finite_stops_training():
    net, X, T = diverging_net()
    with pytest.raises(DivergenceError, match=r"training diverged in epoch 1: parameter ([Wb]\d) became NaN or "
                                              r"infinite between rows 0 and 8 of 8; try a smaller learning rate") as e:
        train(net, X, T, epochs=1, batch_size=8, lr=1e303, optimizer="sgd")
    named = re.search(r"parameter (\S+) became", str(e.value))[1]  # the one the guard names is not finite
    assert not np.isfinite(net.get_params()[named]).all()


def test_the_same_step_at_a_learning_rate_that_stays_finite_passes():
    net, X, T = diverging_net()  # the parameter branch above is the guard's, not the network's
    history = train(net, X, T, epochs=1, batch_size=8, lr=1e-3, optimizer="sgd")
    assert math.isfinite(history[0]["train_loss"]) and len(history) == 1


def test_a_loss_that_becomes_infinite_stops_training_before_the_parameters_are_read():
    net, X, T = diverging_net()  # two steps: the first takes b2 to infinity, the second's loss is not finite
    with pytest.raises(DivergenceError, match=r"in epoch 1: the training loss became (inf|nan) between rows 0 and 8 "):
        train(net, X, T, epochs=1, batch_size=4, lr=1e303, optimizer="sgd")


def test_a_diverged_run_says_which_checkpoint_is_kept(tmp_path):
    run = small_run(tmp_path / "run", epochs=1, lr=0.001)
    before = snapshot(tmp_path / "run")
    resumed = Run.resume(tmp_path / "run", epochs=2)
    resumed.net.params["b1"][...] = np.inf  # the parameter check at epoch 2's end sees it
    resumed.net.params["W2"][...] = 0.0  # ...while the output, and so the loss, stays finite
    with pytest.raises(DivergenceError, match=rf"run{os.sep}model.npz still holds epoch 1$"):
        resumed.train()
    resumed.close()
    assert snapshot(tmp_path / "run")[Path("model.npz")] == before[Path("model.npz")]
    assert run.history[0]["epoch"] == 1


def test_a_run_that_diverges_in_its_first_epoch_says_no_checkpoint_was_written(tmp_path, monkeypatch):
    def diverge(*args, **kwargs):
        raise DivergenceError("training diverged in epoch 1: the training loss became nan", 1)

    monkeypatch.setattr("gpunet.run.train", diverge)
    run = Run.new(TrainConfig(epochs=1, hidden=(8,), backend="numpy"), tmp_path / "run")
    with pytest.raises(DivergenceError, match=r"became nan; no checkpoint was written$"):
        run.train()
    run.close()
    memory = Run.new(TrainConfig(epochs=1, hidden=(8,), backend="numpy"), None)  # no folder: the error as it was
    with pytest.raises(DivergenceError, match=r"became nan$"):
        memory.train()


# --- saving and exporting what no reader would take back --------------------------------------


def test_save_refuses_non_finite_parameters_unless_allowed(tmp_path):
    net = gpunet.Network([4, 3, 2], backend="numpy")
    net.params["W2"][0, 0] = np.nan
    with pytest.raises(CheckpointError, match=r"cannot save the network to .*m.npz: parameter W2 holds 1 NaN or "
                                              r"infinite values .*pass allow_non_finite=True"):
        gpunet.save(net, tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match=r"parameter W2 holds 1 NaN"):
        save_checkpoint(tmp_path / "c.npz", net, SGD(), {})
    assert list(tmp_path.iterdir()) == []
    gpunet.save(net, tmp_path / "m.npz", allow_non_finite=True)
    with np.load(tmp_path / "m.npz") as saved:
        assert np.isnan(saved["param/W2"][0, 0])
    with pytest.raises(CheckpointError, match=r"m.npz: not a readable gpunet checkpoint .*W2.* NaN or infinity"):
        load_checkpoint(tmp_path / "m.npz")  # the loader still refuses it, as documented


def test_save_checks_its_flags():
    with pytest.raises(TypeError, match=r"overwrite and allow_non_finite must be True or False; got 'yes'"):
        gpunet.save(gpunet.Network([4, 3, 2], backend="numpy"), "never.npz", overwrite="yes")


@pytest.mark.parametrize("value, match", [
    (np.inf, r"parameter b1 holds NaN or infinity; a diverged network cannot be exported"),
    (1e39, r"parameter b1 has a value of magnitude 1e\+39, beyond float32's largest \(3.40282e\+38\)"),
    (-4e38, r"parameter b1 has a value of magnitude 4e\+38, beyond float32's largest"),
])
def test_export_refuses_parameters_float32_cannot_hold(tmp_path, value, match):
    pytest.importorskip("onnx")
    net = gpunet.Network([4, 3, 2], backend="numpy", dtype="float64")
    net.params["b1"][1] = value
    with pytest.raises(ValueError, match=match):
        gpunet_onnx.export(net, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    net.params["b1"][1] = 3.4e38  # the largest float32 magnitude is still exported
    gpunet_onnx.export(net, tmp_path / "m.onnx")


# --- sizes no machine could hold ----------------------------------------------------------------


def test_a_network_no_machine_could_hold_is_a_usage_error():
    with pytest.raises(ValueError, match=r"layers \[784, 100000000000000000000000, 10\] \(79,500,.* parameters\) "
                                         r"would need .* GiB, more than any machine can address \(256 TiB\); "
                                         r"reduce hidden="):
        check_network_size([784, 10**23, 10], 4)
    check_network_size([784, 1000, 10], 4)  # a reasonable one passes, whatever this machine's memory
    check_possible("hidden", "x", ADDRESS_SPACE)  # the limit itself is possible; one byte more is not
    with pytest.raises(ValueError, match="reduce batch_size="):
        check_possible("batch_size", "x", ADDRESS_SPACE + 1)


def test_a_checkpoint_declaring_more_than_any_machine_holds_is_a_checkpoint_error(tmp_path):
    net = gpunet.Network([4, 3, 2], backend="numpy")
    save_checkpoint(tmp_path / "m.npz", net, SGD(), {})
    with zipfile.ZipFile(tmp_path / "m.npz") as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    header = json.loads(str(np.load(tmp_path / "m.npz")["header"]))
    header["network"]["sizes"] = [4, 2**47, 2]
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(json.dumps(header)))
    members["header.npy"] = buf.getvalue()
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"big.npz: the header's layers \[4, 140737488355328, 2\] have "
                                              r"985,162,418,487,298 parameters, more than any machine can address"):
        load_checkpoint(tmp_path / "big.npz")


# --- degenerate data files ----------------------------------------------------------------------


def idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def mnist_folder(folder, images_train, images_test, n_labels_train=None, n_labels_test=None):
    folder.mkdir()
    idx(folder / "train-images-idx3-ubyte.gz", images_train)
    idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(n_labels_train or images_train.shape[0]))
    idx(folder / "t10k-images-idx3-ubyte.gz", images_test)
    idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(n_labels_test or images_test.shape[0]))
    return folder


@pytest.mark.parametrize("part, shape, match", [
    ("train", (0, 28, 28), r"train-images-idx3-ubyte.gz: no images \(dimensions \(0, 28, 28\)\); expected at least one"),
    ("test", (0, 28, 28), r"t10k-images-idx3-ubyte.gz: no images"),
    ("train", (3, 28, 0), r"train-images-idx3-ubyte.gz: images of 28x0 pixels \(dimensions \(3, 28, 0\)\); "
                          r"expected a height and width of at least 1"),
    ("test", (3, 0, 28), r"t10k-images-idx3-ubyte.gz: images of 0x28 pixels"),
])
def test_idx_files_with_no_images_or_no_pixels_are_refused_by_name(tmp_path, part, shape, match):
    good = np.zeros((3, 28, 28))
    images = {"train": good, "test": good, part: np.zeros(shape)}
    folder = mnist_folder(tmp_path / "m", images["train"], images["test"], n_labels_train=3, n_labels_test=3)
    if shape[0] == 0:  # labels to match, so that the count check is not what refuses it
        idx(folder / ("train-labels-idx1-ubyte.gz" if part == "train" else "t10k-labels-idx1-ubyte.gz"),
            np.zeros(0))
    with pytest.raises(DataError, match=match):
        load_mnist(folder)
    if part == "test":
        with pytest.raises(DataError, match=match):
            load_mnist_test(folder)


# --- download deadlines ---------------------------------------------------------------------------


@pytest.mark.parametrize("setting, value", [("deadline", 0), ("deadline", -1.0), ("deadline", float("nan")),
                                            ("timeout", 0), ("deadline", "600")])
def test_download_deadlines_must_be_positive_numbers(tmp_path, setting, value):
    with pytest.raises((ValueError, TypeError), match=setting):
        download_mnist(tmp_path / "d", mirrors=["http://127.0.0.1:9/"], **{setting: value})
    assert not (tmp_path / "d").exists()


def test_datasets_load_checks_its_download_deadline_before_downloading(tmp_path):
    with pytest.raises((ValueError, TypeError), match="download_deadline"):
        load("mnist", download_deadline=-5)


def test_the_download_deadline_reaches_the_downloader(monkeypatch, tmp_path):
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise gpunet.download.DownloadError("offline")

    monkeypatch.setattr("gpunet.download.download_mnist", fake)
    with pytest.raises(gpunet.download.DownloadError):
        load("mnist", download_deadline=12.5)
    assert seen["deadline"] == 12.5
    with pytest.raises(gpunet.download.DownloadError):
        load("mnist")
    assert seen["deadline"] == gpunet.download.DEADLINE


# --- the run folder and resume: refused before anything is written -----------------------------


def test_a_new_run_into_a_folder_holding_a_run_is_refused_unless_overwrite(tmp_path):
    small_run(tmp_path / "run", epochs=1)
    (tmp_path / "run" / "best.npz").write_bytes(b"an older run's best")
    before = snapshot(tmp_path)
    config = TrainConfig(epochs=1, hidden=(8,), backend="numpy", seed=5)
    with pytest.raises(RunFolderError, match=r"already holds a run; resume it from .*model.npz, or choose another "
                                             r"folder \(or pass overwrite=True, --force on the command line"):
        Run.new(config, tmp_path / "run").open()
    assert snapshot(tmp_path) == before
    run = Run.new(config, tmp_path / "run", overwrite=True)
    run.train()
    run.close()
    assert not (tmp_path / "run" / "best.npz").exists()  # the replaced run's best is not this run's
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 5


def test_a_users_file_in_the_folder_is_not_overwritten(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("my notes\n")
    with pytest.raises(FileExistsError, match=r"metrics.jsonl already exists; it is not this run's"):
        Run.new(TrainConfig(epochs=1, hidden=(8,), backend="numpy"), folder).open()
    assert snapshot(tmp_path) == {Path("mine/metrics.jsonl"): b"my notes\n"}


def test_an_input_of_the_run_is_refused_even_with_overwrite(tmp_path):
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    rows = "".join(f"{k % 10}," + ",".join(str((k * 7 + j) % 256) for j in range(16)) + "\n" for k in range(40))
    train_csv.write_text(rows)
    test_csv.write_text(rows)
    (tmp_path / "run").mkdir()
    os.symlink(train_csv, tmp_path / "run" / "metrics.jsonl")
    config = TrainConfig(epochs=1, hidden=(8,), backend="numpy", dataset="csv", train_csv=str(train_csv),
                         test_csv=str(test_csv))
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"metrics.jsonl is also an input of this command \(.*train.csv\)"):
        Run.new(config, tmp_path / "run", overwrite=True).open()
    assert snapshot(tmp_path) == before


def test_a_link_to_nothing_in_the_folder_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "run").mkdir()
    os.symlink(tmp_path / "nowhere", tmp_path / "run" / "model.npz")
    with pytest.raises(FileExistsError, match=r"model.npz is a symbolic link to nothing"):
        Run.new(TrainConfig(epochs=1, hidden=(8,), backend="numpy"), tmp_path / "run", overwrite=True).open()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model.npz"]


def test_a_folder_made_for_a_refused_run_is_removed_again(tmp_path, monkeypatch):
    original = gpunet.run.output_path

    def refuse_best(path, **kwargs):  # the last of the run's files decided: the folder exists by then
        if path.name == "best.npz":
            raise FileExistsError(f"{path}: refused")
        return original(path, **kwargs)

    monkeypatch.setattr("gpunet.run.output_path", refuse_best)
    with pytest.raises(FileExistsError, match="best.npz: refused"):
        Run.new(TrainConfig(epochs=1, hidden=(8,), backend="numpy"), tmp_path / "made").open()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    with pytest.raises(FileExistsError, match="best.npz: refused"):
        Run.new(TrainConfig(epochs=1, hidden=(8,), backend="numpy"), tmp_path / "kept").open()
    assert (tmp_path / "kept").is_dir()


def test_a_resume_into_another_folder_never_writes_over_its_checkpoint(tmp_path):
    small_run(tmp_path / "run", epochs=1)
    (tmp_path / "other").mkdir()
    os.symlink(tmp_path / "run" / "model.npz", tmp_path / "other" / "best.npz")
    before = snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match=r"best.npz is also an input of this command \(.*run.model.npz\)"):
        Run.resume(tmp_path / "run", folder=tmp_path / "other", epochs=2, overwrite=True).open()
    assert snapshot(tmp_path / "run") == before


def edit_meta(path, change):
    """``path``'s checkpoint with its metadata changed by ``change(meta)``, written back as gpunet would."""
    net, opt, meta = load_checkpoint(path, "numpy")
    change(meta)
    path.unlink()
    save_checkpoint(path, net, opt, meta)


@pytest.mark.parametrize("change, match", [
    (lambda m: m["record"].update(epoch=7), r"meta.record.epoch \(7\) must be meta.epoch \(2\)"),
    (lambda m: m.pop("early_stopping"), r"has no field meta.early_stopping; the run stops early \(patience 3\)"),
    (lambda m: m.update(position={"row": 10**6, "loss_sum": 0.0}),
     r"meta.position.row must be below the 1\d+ training rows; got 1000000"),
    (lambda m: m.pop("epoch"), r"the header has no field meta.epoch"),
    (lambda m: m.pop("record"), r"the header has no field meta.record"),
    (lambda m: m.update(position={"row": -1, "loss_sum": 0.0}), r"meta.position.row must be >= 0; got -1"),
    (lambda m: m.update(epoch=-2), r"meta.epoch must be >= 0; got -2"),
])
def test_a_resume_refuses_inconsistent_metadata_before_writing(tmp_path, change, match):
    small_run(tmp_path / "run", epochs=2, validation=0.2, early_stopping=3)
    edit_meta(tmp_path / "run" / "model.npz", change)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=match):
        Run.resume(tmp_path / "run", epochs=3).train()
    assert snapshot(tmp_path) == before


def test_a_resume_refuses_a_damaged_metrics_line_before_writing(tmp_path):
    small_run(tmp_path / "run", epochs=2)
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("[1, 2]\n" + lines[1] + "\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 1: the record must be a JSON object; got \[1, 2\]"):
        Run.resume(tmp_path / "run", epochs=3)
    assert snapshot(tmp_path) == before
    metrics.write_text(lines[0] + "\n" + lines[1] + "\n" + '{"epoch": 3, "tr')  # a torn last line: dropped
    resumed = Run.resume(tmp_path / "run", epochs=3)
    assert [r["epoch"] for r in resumed.kept_records] == [1, 2]
