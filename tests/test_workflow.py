"""The experiment workflow: pixel scalings, validation split, evaluate, predict, plot, metrics and configs."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gpunet.checkpoint import load_checkpoint
from gpunet.cli import build_parser, main
from gpunet.datasets import Split, hold_out, load_digits, read_idx
from gpunet.images import ImageError, digit_frame, image_inputs
from gpunet.metrics import classification_report, confusion_matrix
from gpunet.config import TrainConfig


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--quiet", "--backend", "numpy", "--out", str(out)]) == 0
    return out


def run(*args):
    return subprocess.run([sys.executable, "-m", "gpunet", *args], capture_output=True, text=True, timeout=300)


# --- data ------------------------------------------------------------------------------


def test_pixel_scalings_and_dtype():
    original, unit = load_digits("original", np.float32), load_digits("unit", np.float64)
    assert original.X_train.dtype == np.float32 and unit.X_train.dtype == np.float64
    assert original.X_train.min() == pytest.approx(0.01) and original.X_train.max() == pytest.approx(1.0)
    assert unit.X_train.min() == 0.0 and unit.X_train.max() == 1.0
    np.testing.assert_allclose(original.X_train, unit.X_train * 0.99 + 0.01, rtol=1e-6)


def test_hold_out_is_a_seeded_partition_of_the_training_rows():
    d = load_digits()
    a, b, c = hold_out(d, 0.25, seed=1), hold_out(d, 0.25, seed=1), hold_out(d, 0.25, seed=2)
    assert len(a.y_val) == round(len(d.y_train) * 0.25) and len(a.y_train) + len(a.y_val) == len(d.y_train)
    np.testing.assert_array_equal(a.X_val, b.X_val)
    assert not np.array_equal(a.X_val, c.X_val)
    together = np.vstack([a.X_train, a.X_val])  # nothing lost, nothing duplicated
    assert sorted(map(bytes, together)) == sorted(map(bytes, d.X_train))
    np.testing.assert_array_equal(a.X_test, d.X_test)
    assert hold_out(d, 0.0) is d
    with pytest.raises(ValueError, match="validation fraction must be in"):
        hold_out(d, 1.0)
    with pytest.raises(ValueError, match="leaves no validation"):
        hold_out(Split(d.X_train[:3], d.y_train[:3], d.X_test, d.y_test), 0.1)


def test_train_with_validation_reports_it_and_stops_on_it(tmp_path, capsys):
    assert main(["train", "--validation", "0.2", "--lr", "0.01", "--epochs", "100", "--early-stopping", "2",
                 "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert "data: digits, 1150 train / 288 validation / 359 test images" in out
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert all(0.5 < r["val_accuracy"] <= 1 and r["val_loss"] > 0 for r in records)
    best = int(np.argmin([r["val_loss"] for r in records]))
    assert len(records) - 1 - best == 2 and len(records) < 100
    assert f"no better validation loss than epoch {best + 1}'s" in out


def test_lr_decay_schedule_is_recorded_and_resumes(tmp_path):
    common = ["train", "--quiet", "--hidden", "30", "--lr", "0.004", "--lr-decay", "0.5"]
    assert main([*common, "--epochs", "4", "--out", "whole"]) == 0
    assert main([*common, "--epochs", "2", "--out", "part"]) == 0
    assert main(["train", "--quiet", "--resume", "part/model.npz", "--epochs", "4"]) == 0
    whole = [json.loads(x) for x in (tmp_path / "whole/metrics.jsonl").read_text().splitlines()]
    part = [json.loads(x) for x in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in whole] == [0.004, 0.002, 0.001, 0.0005]
    assert [(r["lr"], r["train_loss"], r["test_loss"]) for r in part] == [
        (r["lr"], r["train_loss"], r["test_loss"]) for r in whole]


# --- metrics and evaluate ----------------------------------------------------------------


def test_report_matches_scikit_learn():
    from sklearn.metrics import confusion_matrix as sk_confusion
    from sklearn.metrics import precision_score, recall_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 500)
    predicted = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 9, 500))  # class 9 rarely predicted
    predicted[predicted == 9] = 8
    report = classification_report(labels, predicted, 10)
    np.testing.assert_array_equal(report["confusion_matrix"], sk_confusion(labels, predicted, labels=range(10)))
    np.testing.assert_allclose(report["precision"], precision_score(labels, predicted, average=None, zero_division=0))
    np.testing.assert_allclose(report["recall"], recall_score(labels, predicted, average=None, zero_division=0))
    assert report["precision"][9] == 0.0 and report["accuracy"] == np.mean(labels == predicted)
    with pytest.raises(ValueError, match=r"predictions must be in 0..9; got 1..10"):
        confusion_matrix(labels, np.minimum(labels + 1, 10), 10)


def test_evaluate_agrees_with_the_network(digits_model, capsys):
    assert main(["evaluate", str(digits_model / "model.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    net, _, _ = load_checkpoint(digits_model / "model.npz", "numpy")
    d = load_digits(dtype=np.float32)
    predicted = net.predict(d.X_test)
    assert report["accuracy"] == pytest.approx(np.mean(predicted == d.y_test)) and report["accuracy"] >= 0.97
    last = json.loads((digits_model / "metrics.jsonl").read_text().splitlines()[-1])
    assert report["accuracy"] == pytest.approx(last["test_accuracy"])
    C = np.array(report["confusion_matrix"])
    assert C.sum() == 359 and np.trace(C) == np.sum(predicted == d.y_test)
    assert main(["evaluate", str(digits_model / "model.npz")]) == 0
    text = capsys.readouterr().out
    assert f"accuracy {report['accuracy']:.2%} on 359 images" in text and "confusion matrix" in text


def test_evaluate_rejects_a_dataset_of_another_shape(digits_model, tmp_path):
    out = run("evaluate", str(digits_model / "model.npz"), "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "t10k-images-idx3-ubyte.gz: no such file" in out.stderr


# --- images and predict ------------------------------------------------------------------


def _render(ink: np.ndarray, scale: int, dark_on_light: bool, colour=(1.0, 0.9, 0.8), pad=(13, 29)) -> Image.Image:
    """A big picture of a digit frame (ink 0..1): scaled up, on a margin, in a colour."""
    big = np.kron(ink, np.ones((scale, scale)))
    canvas = np.zeros((big.shape[0] + pad[0] + 7, big.shape[1] + pad[1] + 3))
    canvas[pad[0] : pad[0] + big.shape[0], pad[1] : pad[1] + big.shape[1]] = big
    grey = 1.0 - canvas if dark_on_light else canvas
    return Image.fromarray(np.stack([grey * 255 * c for c in colour], axis=-1).round().astype(np.uint8))


def test_mnist_images_come_back_as_they_were_made(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:100] / 255.0
    corr = [np.corrcoef(digit_frame(1.0 - np.kron(im, np.ones((4, 4)))).ravel(), im.ravel())[0, 1] for im in images]
    assert np.median(corr) > 0.99 and np.percentile(corr, 10) > 0.95


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_either_polarity_and_any_colour_give_the_same_frame(tmp_path, fmt):
    ink = load_digits().X_test[0].reshape(8, 8)
    ink = (ink - ink.min()) / (ink.max() - ink.min())
    for name, dark in (("dark", True), ("light", False)):
        _render(ink, 12, dark).save(tmp_path / f"{name}.{fmt}")
    X = image_inputs([str(tmp_path / f"dark.{fmt}"), str(tmp_path / f"light.{fmt}")], 64, "unit")
    tolerance = 0.02 if fmt == "png" else 0.1  # a tinted colour is not quite symmetric; JPEG is lossy
    assert np.abs(X[0] - X[1]).max() < tolerance
    assert X.min() == 0.0 and 0.8 < X.max() <= 1.0
    assert (X[0].reshape(8, 8).max(axis=1) > 0.2).all()  # the digit is as tall as the frame, as the 8x8 digits are


def test_transparent_png_is_read_on_white(tmp_path):
    a = np.zeros((40, 40, 4), dtype=np.uint8)
    a[10:30, 18:22] = (0, 0, 0, 255)  # a black bar, "1", on transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "one.png")
    frame = image_inputs([str(tmp_path / "one.png")], 784, "unit").reshape(28, 28)
    rows, cols = np.nonzero(frame > 0.5)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 <= 5  # 20 tall, thin, centred
    assert abs((rows.min() + rows.max()) / 2 - 14) <= 1 and abs((cols.min() + cols.max()) / 2 - 14) <= 1


@pytest.mark.parametrize(
    "content, match",
    [(b"not an image", "not a readable image"), (None, "no digit found")],
)
def test_bad_images_raise_image_error(tmp_path, content, match):
    path = tmp_path / "x.png"
    if content is None:
        Image.new("L", (30, 30), 255).save(path)  # white paper, no ink
    else:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        image_inputs([str(path)], 784)
    with pytest.raises(ValueError, match="784 .* or 64 .*; this network has 10"):
        image_inputs([str(path)], 10)


def test_predict_reads_rendered_digits(digits_model, tmp_path, capsys):
    d = load_digits()
    paths, labels = [], []
    for k in range(30):
        ink = d.X_test[k].reshape(8, 8)
        ink = (ink - 0.01) / 0.99
        path = tmp_path / f"digit{k}.{'png' if k % 2 else 'jpeg'}"
        _render(ink, 5 + k, dark_on_light=k % 3 != 0, colour=(1.0, 1.0, 1.0) if k % 4 else (0.3, 0.8, 1.0)).save(path)
        paths.append(str(path))
        labels.append(int(d.y_test[k]))
    assert main(["predict", str(digits_model / "model.npz"), *paths, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == paths
    for r in rows:
        assert abs(sum(r["probabilities"]) - 1) < 1e-4 and r["digit"] == int(np.argmax(r["probabilities"]))
    correct = sum(r["digit"] == y for r, y in zip(rows, labels))
    assert correct >= 24, correct  # 8x8 digits do not all fill their frame, so a few are read differently
    assert main(["predict", str(digits_model / "model.npz"), paths[1]]) == 0
    assert capsys.readouterr().out.startswith(f"{paths[1]}: {rows[1]['digit']} (")


def test_predict_bad_image_fails_in_one_line(digits_model, tmp_path):
    (tmp_path / "x.png").write_text("hello")
    out = run("predict", str(digits_model / "model.npz"), str(tmp_path / "x.png"))
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert "x.png: not a readable image" in out.stderr


# --- plot ----------------------------------------------------------------------------------


def test_plot_writes_three_pngs(digits_model, tmp_path, capsys):
    assert main(["plot", str(digits_model), "--out", "plots"]) == 0
    for name in ("curves", "confusion", "weights"):
        with Image.open(tmp_path / "plots" / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 300
            assert np.asarray(image.convert("L")).std() > 5  # something was drawn
    assert "wrote plots/curves.png" in capsys.readouterr().out


def test_plot_without_matplotlib_says_how_to_install(digits_model, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from gpunet.cli import main; "
            f"sys.exit(main(['plot', {str(digits_model)!r}, '--out', 'plots']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert 'pip install "gpunet[plot]"' in out.stderr
    assert not (tmp_path / "plots").exists() or list((tmp_path / "plots").iterdir()) == []


def test_plot_of_a_folder_without_a_run(tmp_path):
    out = run("plot", str(tmp_path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "metrics.jsonl" in out.stderr  # named, one line


# --- configs -------------------------------------------------------------------------------


def test_config_command_parses_back_to_the_same_config():
    config = TrainConfig(hidden=(256, 128), activation="sigmoid", lr=0.5, batch_size=1, pixels="unit",
                         validation=0.1, dataset="mnist", data_dir="/data", epochs=5)
    args = build_parser().parse_args(shlex.split(config.command())[1:])
    settings = {f.name for f in dataclasses.fields(TrainConfig)}  # the command's other options are not settings
    again = TrainConfig(**{k: v for k, v in vars(args).items() if k in settings})
    assert again == config
    assert TrainConfig.from_dict({"hidden": 30, "lr": 3.0}) == TrainConfig(hidden=(30,), lr=3.0)
    with pytest.raises(ValueError, match="unknown setting 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_curves_give_each_series_one_colour_and_show_train_accuracy(monkeypatch, tmp_path):
    import gpunet.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    records = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5 + e / 20, "val_loss": 1.2 / e,
                "val_accuracy": 0.4 + e / 20, "test_loss": 1.1 / e, "test_accuracy": 0.45 + e / 20} for e in (1, 2, 3)]
    plots.plot_curves(records, tmp_path / "curves.png")
    loss_ax, acc_ax = figures[0].axes
    for ax in (loss_ax, acc_ax):
        assert {line.get_label(): line.get_color() for line in ax.get_lines()} == plots.SERIES
    train = [line for line in acc_ax.get_lines() if line.get_label() == "train"][0]
    assert list(train.get_ydata()) == pytest.approx([55.0, 60.0, 65.0])


def test_weights_share_one_colour_scale_with_a_bar(monkeypatch, tmp_path):
    import gpunet.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    W1 = np.random.default_rng(0).standard_normal((64, 5))
    W1[:, 2] *= 10  # one unit with big weights: on a shared scale it stands out
    plots.plot_weights(W1, tmp_path / "weights.png")
    images = [im for ax in figures[0].axes for im in ax.get_images()]
    assert len(images) == 5 and {im.get_clim() for im in images} == {(-np.abs(W1).max(), np.abs(W1).max())}
    assert any(ax.get_label() == "<colorbar>" for ax in figures[0].axes)


def test_train_records_hold_train_accuracy_and_evaluate_takes_a_folder(digits_model, capsys):
    records = [json.loads(x) for x in (digits_model / "metrics.jsonl").read_text().splitlines()]
    assert all(0.1 < r["train_accuracy"] <= 1 for r in records) and records[-1]["train_accuracy"] > 0.97
    assert main(["evaluate", str(digits_model), "--json"]) == 0
    by_folder = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(digits_model / "model.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == by_folder
    assert main(["plot", str(digits_model / "model.npz"), "--out", "p"]) == 0  # plot takes either too
