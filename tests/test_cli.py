"""The gpunet command: the main job's accuracy, and one-line errors with exit status 2."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from gpunet.cli import main


def test_main_job_defaults_reach_97_percent(capsys, monkeypatch):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    assert main(["train"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("backend: numpy on cpu")
    epochs = [line for line in out if line.startswith("epoch ")]
    assert len(epochs) == 30
    accuracy = float(re.fullmatch(r"test accuracy ([\d.]+)% after 30 epochs \(.* s training\)", out[-1]).group(1))
    assert accuracy >= 97.0
    assert f"test acc {accuracy:.2f}%" in epochs[-1]


def test_python_dash_m_and_quiet():
    out = subprocess.run([sys.executable, "-m", "gpunet", "train", "--epochs", "2", "--quiet",
                          "--backend", "numpy", "--hidden", "32,16"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("test accuracy ")
    assert float(lines[0].split()[2].rstrip("%")) > 50.0  # two epochs of Adam already learn


def test_original_network_from_the_command_line(capsys):
    args = ["train", "--activation", "sigmoid", "--output", "sigmoid", "--loss", "squared", "--init", "seed",
            "--optimizer", "sgd", "--lr", "0.5", "--batch-size", "1", "--epochs", "5", "--backend", "numpy"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "activation='sigmoid', output='sigmoid', loss='squared'" in out
    assert float(re.search(r"test accuracy ([\d.]+)%", out).group(1)) > 90.0


def test_one_real_mnist_epoch(capsys, mnist_dir):
    assert main(["train", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--epochs", "1",
                 "--batch-size", "32", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "data: mnist, 60000 train / 10000 test images" in out
    assert float(re.search(r"test accuracy ([\d.]+)% after 1 epoch ", out).group(1)) >= 90.0


def test_csv_dataset_end_to_end(tmp_path, capsys):
    from gpunet.datasets import load_digits

    d = load_digits()
    for name, X, y in (("train.csv", d.X_train, d.y_train), ("test.csv", d.X_test, d.y_test)):
        pixels = np.rint((X - 0.01) / 0.99 * 255).astype(int)  # back to 0..255
        np.savetxt(tmp_path / name, np.column_stack([y, pixels]), fmt="%d", delimiter=",")
    assert main(["train", "--dataset", "csv", "--train-csv", str(tmp_path / "train.csv"),
                 "--test-csv", str(tmp_path / "test.csv"), "--quiet", "--backend", "numpy"]) == 0
    assert float(re.search(r"test accuracy ([\d.]+)%", capsys.readouterr().out).group(1)) >= 97.0


@pytest.mark.parametrize(
    "args, bad",
    [
        (["--lr", "-1"], "-1"),
        (["--lr", "nan"], "nan"),
        (["--lr", "fast"], "fast"),
        (["--epochs", "0"], "0"),
        (["--batch-size", "0"], "0"),
        (["--hidden", "100,x"], "100,x"),
        (["--hidden", "0"], "0"),
        (["--activation", "swish"], "swish"),
        (["--loss", "hinge"], "hinge"),
        (["--optimizer", "rmsprop"], "rmsprop"),
        (["--init", "zeros"], "zeros"),
        (["--dtype", "float16"], "float16"),
        (["--backend", "tpu"], "tpu"),
        (["--weight-decay", "-0.5"], "-0.5"),
        (["--output", "identity", "--loss", "cross-entropy"], "identity"),
        (["--dataset", "imagenet"], "imagenet"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
        (["--dataset", "csv", "--train-csv", "/nonexistent.csv", "--test-csv", "/x.csv"], "/nonexistent.csv"),
        (["--dataset", "csv"], "--train-csv"),
    ],
)
def test_bad_options_fail_in_one_line(args, bad):
    out = subprocess.run([sys.executable, "-m", "gpunet", "train", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("gpunet") and "error" in lines[0] and bad in lines[0]
