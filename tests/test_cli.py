"""The gpunet command: the main job's accuracy, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.schedules import learning_rate

from conftest import Terminal


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/<timestamp> lands here, not in the checkout


def test_main_job_defaults_reach_97_percent(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    assert main(["train"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.jsonl", "model.npz"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("backend: numpy on cpu")
    epochs = [line for line in out if line.startswith("epoch ")]
    assert len(epochs) == 30
    accuracy = float(re.fullmatch(r"test accuracy ([\d.]+)% after 30 epochs \(.* s training\)", out[-1]).group(1))
    assert accuracy >= 97.5
    assert f"test acc {accuracy:.2f}%" in epochs[-1]


def test_python_dash_m_and_quiet(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gpunet", "train", "--epochs", "4", "--quiet", "--out", "run",
                          "--backend", "numpy", "--hidden", "32,16"], capture_output=True, text=True, timeout=300)
    assert out.stderr == ""  # --quiet: no progress bar either
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == "output: run" and lines[1].startswith("test accuracy ")
    assert float(lines[1].split()[2].rstrip("%")) > 50.0  # four epochs of Adam already learn


def test_original_network_from_the_command_line(capsys):
    args = ["train", "--hidden", "100", "--activation", "sigmoid", "--output", "sigmoid", "--loss", "squared",
            "--init", "article", "--optimizer", "sgd", "--lr", "0.5", "--lr-decay", "1", "--batch-size", "1",
            "--epochs", "5", "--backend", "numpy"]
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
        (["--early-stopping", "0"], "0"),
        (["--lr-decay", "1.5"], "1.5"),
        (["--validation", "1"], "1"),
        (["--pixels", "bytes"], "bytes"),
        (["--resume", "/nonexistent/model.npz"], "/nonexistent/model.npz"),
        (["--out", "/proc/gpunet-run"], "/proc/gpunet-run"),
        (["--data-dir", "m"], "--data-dir is only used with --dataset mnist"),  # options the dataset ignores
        (["--dataset", "mnist", "--train-csv", "a.csv"], "--train-csv is only used with --dataset csv"),
        (["--test-csv", "a.csv"], "--test-csv is only used with --dataset csv"),
        (["--lr", "0.5", "--resume", "x/model.npz", "--hidden", "3"], "cannot honour --hidden, --lr"),
    ],
)
def test_bad_options_fail_in_one_line(args, bad, tmp_path):
    out = subprocess.run([sys.executable, "-m", "gpunet", "train", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("gpunet") and "error" in lines[0] and bad in lines[0]


def _params(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k.startswith(("param/", "optim/"))}


# Resumed to more epochs, a run is the one that asked for them from the start where its schedule does not
# depend on the total (cosine, the default, anneals over the new total instead: docs/cli.md)
@pytest.mark.parametrize("schedule", [["--lr-decay", "0.9"], ["--lr-schedule", "step", "--lr-step", "3"]])
def test_resume_gives_the_same_run_as_uninterrupted(tmp_path, schedule):
    common = ["train", "--quiet", "--backend", "numpy", "--hidden", "40", "--lr", "0.003", *schedule]
    assert main([*common, "--epochs", "4", "--out", "whole"]) == 0
    assert main([*common, "--epochs", "2", "--out", "part"]) == 0
    assert main(["train", "--quiet", "--resume", "part/model.npz", "--epochs", "4"]) == 0
    whole, part = _params("whole/model.npz"), _params("part/model.npz")
    assert set(whole) == set(part) and any(k.startswith("optim/m.") for k in whole)  # Adam state saved
    for k in whole:
        np.testing.assert_array_equal(part[k], whole[k], err_msg=k)
    lines = [json.loads(x) for x in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (tmp_path / "whole/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    strip = lambda rs: [(r["train_loss"], r["test_loss"], r["test_accuracy"]) for r in rs]  # noqa: E731
    assert strip(lines) == strip(want)
    assert set(want[0]) >= {"epoch", "train_loss", "test_loss", "test_accuracy", "seconds", "samples_per_s", "backend"}


def test_a_cosine_run_resumed_to_more_epochs_anneals_over_the_new_total(tmp_path):
    common = ["train", "--quiet", "--backend", "numpy", "--hidden", "8", "--lr", "0.01"]
    assert main([*common, "--epochs", "2", "--out", "part"]) == 0
    assert main(["train", "--quiet", "--resume", "part/model.npz", "--epochs", "4"]) == 0
    rates = [json.loads(x)["lr"] for x in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    cosine = {"warmup_epochs": 0, "lr_min": 0.0}
    want = [learning_rate(e, total, 0.01, "cosine", **cosine) for e, total in ((1, 2), (2, 2), (3, 4), (4, 4))]
    assert rates == want and want[1] == want[2] == pytest.approx(0.005)  # half way down, twice


def test_resume_mends_metrics_written_past_the_checkpoint(tmp_path):
    assert main(["train", "--quiet", "--backend", "numpy", "--epochs", "2", "--out", "run"]) == 0
    metrics = tmp_path / "run/metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 3, "train_loss": 1.0}\n{"epo')  # a killed epoch 3
    assert main(["train", "--quiet", "--resume", "run/model.npz", "--epochs", "3"]) == 0
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == [1, 2, 3]
    assert json.loads(metrics.read_text().splitlines()[-1])["train_loss"] != 1.0


def test_csv_labels_out_of_range_fail_before_writing(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("3,0,255\n12,255,0\n")
    (tmp_path / "test.csv").write_text("1,0,255\n")
    assert main(["train", "--dataset", "csv", "--train-csv", "train.csv", "--test-csv", "test.csv",
                 "--backend", "numpy"]) == 2
    # read_csv names the line
    assert "train.csv: labels must be in 0..9; got 12 (line 2, cell 1)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.csv", "train.csv"]


def test_refuses_to_overwrite_a_run(tmp_path, capsys):
    assert main(["train", "--quiet", "--backend", "numpy", "--epochs", "1", "--out", "run"]) == 0
    before = (tmp_path / "run/model.npz").read_bytes()
    assert main(["train", "--quiet", "--backend", "numpy", "--epochs", "1", "--out", "run"]) == 2
    assert "run already holds a run; resume it from run/model.npz" in capsys.readouterr().err
    assert (tmp_path / "run/model.npz").read_bytes() == before


def test_early_stopping_holds_out_10_percent_keeps_the_best_and_says_so(tmp_path, capsys):
    # Adam at lr 0.01 overfits the small digits set within a few dozen epochs.
    assert main(["train", "--backend", "numpy", "--lr", "0.01", "--epochs", "100", "--early-stopping", "3",
                 "--out", "run"]) == 0
    captured = capsys.readouterr()
    assert "data: digits, 1294 train / 144 validation / 359 test images" in captured.out  # never the test set
    assert "early stopping selects on 144 training images held out for validation (10%, seeded" in captured.err
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [r["val_loss"] for r in records]
    best = int(np.argmin(losses))
    assert len(records) < 100
    assert len(records) - 1 - best == 3  # stopped exactly 3 epochs after the best one
    assert f"no better validation loss than epoch {best + 1}'s for 3 epochs" in captured.out
    _, _, best_meta = load_checkpoint(tmp_path / "run/best.npz")
    _, _, last_meta = load_checkpoint(tmp_path / "run/model.npz")
    assert best_meta["epoch"] == best + 1 and last_meta["epoch"] == len(records)
    assert last_meta["early_stopping"] == {"best_loss": losses[best], "best_epoch": best + 1, "patience_left": 0,
                                           "stopped": True}
    assert main(["evaluate", "run/best.npz", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == records[best]["test_accuracy"]  # the best weights


def test_resumed_early_stopping_stops_where_an_uninterrupted_run_does(tmp_path, capsys):
    # a constant rate: resumed to 100 epochs, the run is the one that asked for 100 from the start
    common = ["train", "--quiet", "--backend", "numpy", "--hidden", "100", "--lr", "0.01", "--lr-decay", "1",
              "--early-stopping", "3"]
    assert main([*common, "--epochs", "100", "--out", "whole"]) == 0
    whole = [json.loads(x) for x in (tmp_path / "whole/metrics.jsonl").read_text().splitlines()]
    best = int(np.argmin([r["val_loss"] for r in whole])) + 1
    # stop one epoch after the best: the patience is half used up when the run resumes
    assert main([*common, "--epochs", str(best + 1), "--out", "part"]) == 0
    assert main(["train", "--quiet", "--resume", "part/model.npz", "--epochs", "100"]) == 0
    part = [json.loads(x) for x in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["val_loss"]) for r in part] == [(r["epoch"], r["val_loss"]) for r in whole]
    assert (tmp_path / "part/best.npz").read_bytes() != b""
    np.testing.assert_array_equal(_params("part/best.npz")["param/W1"], _params("whole/best.npz")["param/W1"])
    capsys.readouterr()
    assert main(["train", "--resume", "part", "--epochs", "200"]) == 0  # a stopped run stays stopped
    assert capsys.readouterr().out == f"nothing to do: early stopping ended this run at epoch {len(whole)} " \
        f"(the best was epoch {best})\n"


def test_progress_bar_shows_the_epoch_and_the_running_mean_loss(monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["train", "--backend", "numpy", "--epochs", "2", "--batch-size", "8", "--out", "run"]) == 0
    bar = terminal.getvalue()
    assert "epoch 1/2" in bar and "epoch 2/2" in bar
    first = bar[: bar.index("epoch 2/2")]
    means = [float(m) for m in re.findall(r"mean_loss=([\d.]+)", first)]
    records = [json.loads(x) for x in open("run/metrics.jsonl")]
    # the running mean of epoch 1 so far: above the whole epoch's mean while the loss falls, and falling itself
    # (a single batch's loss would dip below the epoch's mean and jump about)
    assert len(means) >= 2 and all(m >= records[0]["train_loss"] for m in means), (means, records[0])
    assert means == sorted(means, reverse=True)


def test_library_errors_name_settings_and_the_cli_spells_them_as_options(monkeypatch):
    # The library says "batch_size=" and "dtype='float32'" (a Python user's words); the command line
    # reports the same error with its options, "--batch-size" and "--dtype float32".
    import gpunet.datasets
    from gpunet.cli import _one_line
    from gpunet.training import DeviceMemoryError

    library = "out of memory ...; reduce batch_size= or hidden=, or use dtype='float32'"
    assert _one_line(DeviceMemoryError(library)) == (
        "out of memory ...; reduce --batch-size or --hidden, or use --dtype float32")
    assert _one_line(ValueError("dataset='csv' needs train_csv= and test_csv= (the two CSV files)")) == (
        "--dataset csv needs --train-csv and --test-csv (the two CSV files)")
    assert _one_line(ValueError("not_a_setting= stays")) == "not_a_setting= stays"
    with pytest.raises(ValueError) as info:
        gpunet.datasets.check_dataset("csv")
    assert "--" not in str(info.value)  # the library itself names no option


# --- help -----------------------------------------------------------------------------------------

def _subparsers():
    from gpunet.cli import build_parser

    parser = build_parser()
    return parser, parser._subparsers._group_actions[0].choices


def test_a_bare_gpunet_prints_the_help_and_succeeds(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gpunet ")
    assert all(f"    {name} " in out for name in ("train", "evaluate", "predict", "plot", "bench", "export"))
    assert "gpunet COMMAND --help" in out


def test_each_command_shows_its_own_examples(capsys):
    from gpunet.cli import EXAMPLES, OVERVIEW

    _, commands = _subparsers()
    assert len(OVERVIEW.splitlines()) <= 6  # the top level keeps a short overview
    assert {"train", "evaluate", "predict", "plot", "bench", "export"} <= set(EXAMPLES) <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        shown = re.findall(r"^  (gpunet \S+)", text, flags=re.MULTILINE)
        assert set(shown) <= {f"gpunet {name}"}, (name, shown)  # another command's examples: none
        if name in EXAMPLES:
            assert text.endswith(EXAMPLES[name]) and len(shown) >= 2


# Source files, package paths and module.CONSTANT names; environment variables ($GPUNET_DATA) may be named.
INTERNAL = re.compile(r"\w\.py\b|\bgpunet/|\b[a-z_]+\.[A-Z][A-Z0-9_]+\b|(?<![$\w])[A-Z][A-Z0-9]*_[A-Z0-9_]+\b")


def test_the_help_names_no_source_paths_or_internal_names():
    assert INTERNAL.search("see gpunet/engines/select.py") and INTERNAL.search("select.GRAPH_MAX_PRODUCT")
    assert INTERNAL.search("up to GRAPH_MAX_PRODUCT") and not INTERNAL.search("$GPUNET_BACKEND, else auto")
    parser, commands = _subparsers()
    for name, sub in {"gpunet": parser, **commands}.items():
        for action in sub._actions:
            assert not INTERNAL.search(action.help or ""), (name, action.dest, action.help)
        assert not INTERNAL.search(sub.description or "") and not INTERNAL.search(sub.epilog or ""), name


def test_every_positional_argument_has_help():
    _, commands = _subparsers()
    for name, sub in commands.items():
        positionals = [a for a in sub._actions if not a.option_strings]
        assert all(a.help for a in positionals), (name, [a.dest for a in positionals if not a.help])
    assert "IMAGE" in commands["predict"].format_help() and "PNG, JPEG" in commands["predict"].format_help()


# --- --preset -------------------------------------------------------------------------------------

def test_the_article_preset_trains_the_articles_network_and_options_override_it(capsys, tmp_path):
    # the preset's MNIST replaced by the digits, its 5 epochs by 2: the rest is the article's
    assert main(["train", "--preset", "article", "--dataset", "digits", "--epochs", "2", "--backend", "numpy",
                 "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert ("network: Network([64, 100, 10], activation='sigmoid', output='sigmoid', loss='squared', "
            "backend='numpy', dtype='float32')") in out
    assert re.search(r"test accuracy [\d.]+% after 2 epochs ", out)
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert {k: config[k] for k in ("hidden", "activation", "output", "loss", "init", "optimizer", "lr",
                                   "batch_size", "epochs", "dataset", "pixels")} == {
        "hidden": [100], "activation": "sigmoid", "output": "sigmoid", "loss": "squared", "init": "article",
        "optimizer": "sgd", "lr": 0.1, "batch_size": 1, "epochs": 2, "dataset": "digits", "pixels": "original"}


def test_resume_refuses_a_preset(capsys):
    assert main(["train", "--resume", "x/model.npz", "--preset", "article"]) == 2
    assert capsys.readouterr().err == ("gpunet train: error: --resume takes every setting from the checkpoint; it "
                                       "cannot honour --preset\n")


# --- --force, and what plot needs ----------------------------------------------------------------

def _tiny_run(folder, seed=0):
    assert main(["train", "--quiet", "--backend", "numpy", "--epochs", "1", "--hidden", "8", "--seed", str(seed),
                 "--out", folder]) == 0


def test_export_keeps_an_existing_file_unless_forced(tmp_path, capsys):
    pytest.importorskip("onnx", reason="the onnx package is not installed (the onnx extra)")
    _tiny_run("a")
    _tiny_run("b", seed=1)
    assert main(["export", "b", "b.onnx"]) == 0
    assert main(["export", "a", "model.onnx"]) == 0
    before = (tmp_path / "model.onnx").read_bytes()
    capsys.readouterr()
    assert main(["export", "b", "model.onnx"]) == 2
    assert capsys.readouterr().err == "gpunet export: error: model.onnx already exists; use --force to replace it\n"
    assert (tmp_path / "model.onnx").read_bytes() == before
    assert main(["export", "b", "model.onnx", "--force"]) == 0
    assert (tmp_path / "model.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "b.onnx", "model.onnx"]  # no temporary left
    capsys.readouterr()
    assert main(["export", "a/model.npz", "a/model.npz", "--force"]) == 2  # never over its own input
    assert "a/model.npz is also an input of this command" in capsys.readouterr().err


def test_force_is_offered_where_files_are_replaced():
    _, commands = _subparsers()
    for name in ("train", "plot", "export", "bench"):
        assert "--force" in commands[name]._option_string_actions, name
    assert "--force" not in commands["evaluate"]._option_string_actions  # it writes nothing


def test_plot_says_it_needs_a_run_folder(tmp_path, capsys):
    _tiny_run("run")
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.npz").write_bytes((tmp_path / "run/model.npz").read_bytes())
    needs = "; plot needs a run folder written by gpunet train --out DIR, which holds metrics.jsonl\n"
    for model, what in (("models/model.npz", "models/model.npz is a model file with no metrics.jsonl beside it"),
                        ("models", "models is a folder without metrics.jsonl"),
                        ("nothing", "nothing: no such folder or file")):
        capsys.readouterr()
        assert main(["plot", model]) == 2
        assert capsys.readouterr().err == f"gpunet plot: error: {what}{needs}"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.npz"]


# --- Ctrl-C and exit statuses --------------------------------------------------------------------

def test_ctrl_c_on_the_cpu_names_the_step_not_graph_mode(monkeypatch, capsys, tmp_path):
    import os
    import signal

    from gpunet.run import Run

    train = Run.train

    def pressed_once(self, *, on_batch, **kwargs):
        def first(rows, loss):
            if not hasattr(first, "sent"):
                first.sent = True
                os.kill(os.getpid(), signal.SIGINT)  # handled by the command's Ctrl-C handler, in this thread
            on_batch(rows, loss)
        return train(self, on_batch=first, **kwargs)

    monkeypatch.setattr(Run, "train", pressed_once)
    assert main(["train", "--backend", "numpy", "--epochs", "2", "--out", "run"]) == 130
    err = capsys.readouterr().err
    assert "stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)" in err
    assert "graph" not in err.lower()
    assert "resume with: gpunet train --resume run/model.npz" in err


def test_ctrl_c_names_whole_epochs_only_where_they_may_run():
    from gpunet.cli import _CtrlC

    cpu, gpu = _CtrlC(False, whole_epochs_possible=False), _CtrlC(False, whole_epochs_possible=True)
    assert cpu.message() == "stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)"
    assert gpu.message() == ("stopping after this step, or after this epoch if it runs as one CUDA graph, and "
                             "saving a checkpoint (Ctrl-C again to stop at once)")
    gpu.whole_epochs = True
    assert gpu.message().startswith("stopping after this epoch (it runs as one CUDA graph) and saving")


def _failing_run(monkeypatch, exc):
    from gpunet.run import Run

    def new(*args, **kwargs):
        raise exc

    monkeypatch.setattr(Run, "new", new)


@pytest.mark.parametrize("exc, status, line", [
    # what another machine could not hold either: the request is at fault
    (ValueError("layers [64, 10**23, 10] need 3e+24 bytes, more than any machine holds; reduce hidden="), 2,
     "layers [64, 10**23, 10] need 3e+24 bytes, more than any machine holds; reduce --hidden"),
    (TypeError("hidden must hold integers; got 'x'"), 2, "hidden must hold integers; got 'x'"),
    # a valid request that this machine could not run: the run failed
    (MemoryError("Unable to allocate 3.00 GiB for an array with shape (1000, 802816)"), 1,
     "out of memory: Unable to allocate 3.00 GiB for an array with shape (1000, 802816)"),
    (MemoryError(), 1, "out of memory"),
])
def test_library_errors_end_in_one_line_with_their_status(monkeypatch, capsys, exc, status, line):
    _failing_run(monkeypatch, exc)
    assert main(["train", "--backend", "numpy"]) == status
    captured = capsys.readouterr()
    assert captured.err == f"gpunet train: error: {line}\n" and captured.out == ""


def test_an_error_both_usage_and_memory_is_a_usage_error():
    from gpunet.cli import exit_status
    from gpunet.training import DeviceMemoryError, DivergenceError

    class TooLarge(ValueError, MemoryError):
        pass

    assert exit_status(TooLarge("no machine holds this")) == 2
    assert exit_status(DeviceMemoryError("out of memory")) == exit_status(DivergenceError("nan", 3)) == 1


def test_train_into_another_runs_folder_needs_force(tmp_path, capsys):
    _tiny_run("a")
    before = (tmp_path / "a" / "model.npz").read_bytes()
    capsys.readouterr()
    assert main(["train", "--quiet", "--backend", "numpy", "--epochs", "1", "--hidden", "8", "--seed", "1",
                 "--out", "a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpunet train: error: ") and err.count("\n") == 1 and "--force" in err, err
    assert (tmp_path / "a" / "model.npz").read_bytes() == before
    assert main(["train", "--quiet", "--backend", "numpy", "--epochs", "1", "--hidden", "8", "--seed", "1",
                 "--out", "a", "--force"]) == 0
    assert (tmp_path / "a" / "model.npz").read_bytes() != before


def test_plot_keeps_its_pictures_unless_forced(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the plot extra)")
    _tiny_run("a")
    assert main(["plot", "a", "--out", "pictures"]) == 0
    curves = tmp_path / "pictures" / "curves.png"
    curves.write_bytes(b"mine")
    capsys.readouterr()
    assert main(["plot", "a", "--out", "pictures"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert curves.read_bytes() == b"mine"
    assert main(["plot", "a", "--out", "pictures", "--force"]) == 0
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("value", ["0", "-5", "nan", "soon"])
def test_download_deadline_must_be_positive_seconds(capsys, value):
    with pytest.raises(SystemExit) as info:  # argparse's refusal: exit status 2, one line
        main(["train", "--download-deadline", value])
    assert info.value.code == 2
    assert capsys.readouterr().err == (f"gpunet train: error: argument --download-deadline: expected a number of "
                                       f"seconds > 0; got {value!r}\n")


def test_a_network_no_machine_could_hold_is_a_usage_error(capsys):
    assert main(["train", "--backend", "numpy", "--hidden", "100000000000000000000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than any machine can address" in err and err.endswith("reduce --hidden\n")
