"""Failure behaviour: bad input fails in one line with nothing written, divergence and out-of-memory are
reported, Ctrl-C saves a checkpoint, and runs killed with SIGKILL resume to exactly the same result."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet.backend import Backend, cupy_unavailable_reason
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.cli import main
from gpunet.download import MNIST_MD5
from gpunet.training import DeviceMemoryError, DivergenceError

from test_datasets import idx_bytes, write_mnist
from test_download import Handler, server  # noqa: F401  (the 127.0.0.1 HTTP server fixture)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "cache"))


def gpunet_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "gpunet", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_one_line_error(out, bad, status=2, stdout=""):
    assert out.returncode == status, (out.returncode, out.stderr)
    assert out.stdout == stdout
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("gpunet ") and "error: " in lines[0] and bad in lines[0], lines[0]


def write_csv(path: Path, rows: list[str]) -> str:
    path.write_text("".join(row + "\n" for row in rows))
    return str(path)


# --- bad input: one parametrised test per group ------------------------------------------


def _arrays(tmp: Path, case: str) -> tuple[list[str], str]:
    good = [f"{k % 10}," + ",".join(str((k * 7 + j) % 256) for j in range(16)) for k in range(30)]
    csv = ["--dataset", "csv", "--train-csv", "train.csv", "--test-csv", "test.csv"]
    if case == "features":  # test images narrower than the training images
        write_csv(tmp / "train.csv", good)
        write_csv(tmp / "test.csv", [row.rsplit(",", 1)[0] for row in good])
        return csv, "test images have 15 pixels"
    if case == "nan":
        write_csv(tmp / "train.csv", good[:5] + ["3," + ",".join(["nan"] * 16)] + good[5:])
        write_csv(tmp / "test.csv", good)
        return csv, "train.csv: contains NaN or infinity"
    if case == "empty":
        write_csv(tmp / "train.csv", [])
        write_csv(tmp / "test.csv", good)
        return csv, "train.csv: no data rows"
    if case == "label-range":
        write_csv(tmp / "train.csv", good + ["12," + ",".join(["0"] * 16)])
        write_csv(tmp / "test.csv", good)
        return csv, "labels must be in 0..9; got 12"
    if case == "label-integer":
        write_csv(tmp / "train.csv", good + ["2.5," + ",".join(["0"] * 16)])
        write_csv(tmp / "test.csv", good)
        return csv, "labels must be integers >= 0; got 2.5"
    if case == "count-mismatch":
        (tmp / "m").mkdir()
        write_mnist(tmp / "m")
        (tmp / "m/t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.arange(3))))
        return ["--dataset", "mnist", "--data-dir", "m"], "4 test images but 3 labels"
    if case == "rank":
        (tmp / "m").mkdir()
        write_mnist(tmp / "m")
        (tmp / "m/train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((6, 2)))))
        return ["--dataset", "mnist", "--data-dir", "m"], "labels 1-D; got (6, 28, 28) and (6, 2)"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["features", "nan", "empty", "label-range", "label-integer", "count-mismatch", "rank"])
def test_bad_arrays_from_the_command_line(tmp_path, case):
    args, bad = _arrays(tmp_path, case)
    before = files_under(tmp_path)
    out = gpunet_cli("train", *args, "--out", "run")
    assert_one_line_error(out, bad)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    "call, error, bad",
    [
        (lambda net, X, y: net.forward(X[:, :60]), ValueError, "X must have 64 columns; got shape (5, 60)"),
        (lambda net, X, y: net.forward(X[None]), ValueError, "X must be 2-D (N, 64); got shape (1, 5, 64)"),
        (lambda net, X, y: net.forward(X.astype(str)), TypeError, "X must hold numbers; got dtype <U"),
        (lambda net, X, y: net.forward(X[:0]), ValueError, "X must have at least one row; got shape (0, 64)"),
        (lambda net, X, y: gpunet.train(net, np.where(X > 0.5, np.nan, X), y), ValueError,
         "X_train contains NaN or infinity"),
        (lambda net, X, y: gpunet.train(net, X, y + 10), ValueError, "labels must be in 0..9; got 1"),
        (lambda net, X, y: gpunet.train(net, X, y + 0.5), TypeError, "labels must be integers; got dtype float64"),
        (lambda net, X, y: gpunet.train(net, X, y[:3]), ValueError,
         "y_train must have one entry per row of X_train (5)"),
        (lambda net, X, y: net.train_step(X, np.ones((5, 9))), ValueError, "T must have 10 columns; got shape (5, 9)"),
    ],
)
def test_bad_arrays_from_python(call, error, bad):
    net = gpunet.Network.article([64, 8, 10], backend="numpy")
    X, y = np.random.default_rng(0).random((5, 64)), np.arange(5)
    with pytest.raises(error) as info:
        call(net, X, y)
    assert bad in str(info.value)


def _files(tmp: Path, case: str) -> tuple[list[str], str]:
    (tmp / "m").mkdir()
    write_mnist(tmp / "m", compress=False)
    mnist = ["train", "--dataset", "mnist", "--data-dir", "m", "--out", "run"]
    images = tmp / "m/train-images-idx3-ubyte"
    raw = images.read_bytes()
    if case == "missing":
        return ["train", "--dataset", "mnist", "--data-dir", "nowhere"], "nowhere: no such folder"
    if case == "directory":
        (tmp / "dir.csv").mkdir()
        return ["train", "--dataset", "csv", "--train-csv", "dir.csv", "--test-csv", "dir.csv"], "dir.csv: not a file"
    if case == "gzip":
        images.unlink()
        (tmp / "m/train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw)[:-40])
        return mnist, "train-images-idx3-ubyte.gz: cannot read"
    if case == "truncated":
        images.write_bytes(raw[:-100])
        return mnist, f"train-images-idx3-ubyte: {len(raw) - 100} bytes, but dimensions (6, 28, 28) need {len(raw)}"
    if case == "magic":
        images.write_bytes(b"\x01\x02" + raw[2:])
        return mnist, "not an IDX file (expected two zero bytes, got b'\\x01\\x02')"
    if case == "type-byte":
        images.write_bytes(raw[:2] + b"\x0b" + raw[3:])
        return mnist, "IDX type byte 0x0b; expected 0x08"
    if case == "dimensions":
        images.write_bytes(raw[:4] + (7).to_bytes(4, "big") + raw[8:])
        return mnist, "dimensions (7, 28, 28) need"
    if case == "ragged":
        write_csv(tmp / "a.csv", ["1,2,3", "4,5"])
        return ["train", "--dataset", "csv", "--train-csv", "a.csv", "--test-csv", "a.csv"], "line 2: 2 cells"
    if case == "non-numeric":
        write_csv(tmp / "a.csv", ["1,2,3", "4,x7,5"])
        return ["train", "--dataset", "csv", "--train-csv", "a.csv", "--test-csv", "a.csv"], "non-numeric cell 'x7'"
    if case == "image":
        net = gpunet.Network.article([64, 4, 10], backend="numpy")
        save_checkpoint(tmp / "model.npz", net, gpunet.SGD(), {"epoch": 0})
        (tmp / "digit.png").write_bytes(b"\x89PNG not really")
        return ["predict", "model.npz", "digit.png"], "digit.png: not a readable image"
    if case in ("checkpoint-corrupt", "checkpoint-version", "checkpoint-architecture"):
        assert main(["train", "--quiet", "--epochs", "1", "--hidden", "8", "--out", "good"]) == 0
        data = (tmp / "good/model.npz").read_bytes()
        if case == "checkpoint-corrupt":
            (tmp / "model.npz").write_bytes(data[: len(data) // 2])
            bad = "model.npz: not a readable gpunet checkpoint"
        else:
            with np.load(tmp / "good/model.npz") as z:
                arrays = {k: z[k] for k in z.files}
            header = json.loads(str(arrays["header"]))
            if case == "checkpoint-version":
                del header["format"]
                bad = "checkpoint format None; expected 1"
            else:
                header["network"]["sizes"] = [64, 9, 10]
                bad = "params['W1'] must have shape (64, 9); got (64, 8)"
            arrays["header"] = np.array(json.dumps(header))
            np.savez(tmp / "model.npz", **arrays)
        return ["evaluate", "model.npz"], bad
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "directory", "gzip", "truncated", "magic", "type-byte", "dimensions",
                                  "ragged", "non-numeric", "image", "checkpoint-corrupt", "checkpoint-version",
                                  "checkpoint-architecture"])
def test_bad_files(tmp_path, case):
    args, bad = _files(tmp_path, case)
    before = files_under(tmp_path)
    out = gpunet_cli(*args)
    assert_one_line_error(out, bad)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    "args, bad",
    [
        (["--lr", "0"], "0"), (["--lr", "-1"], "-1"), (["--lr", "inf"], "inf"), (["--batch-size", "0"], "0"),
        (["--epochs", "0"], "0"), (["--hidden", "100,0"], "100,0"), (["--activation", "swish"], "'swish'"),
        (["--loss", "hinge"], "'hinge'"), (["--optimizer", "lbfgs"], "'lbfgs'"), (["--init", "ones"], "'ones'"),
        (["--dtype", "int8"], "'int8'"), (["--backend", "metal"], "'metal'"), (["--out", "/proc/x"], "/proc/x"),
        (["--out", "plain/run"], "plain/run"),
    ],
)
def test_bad_configuration(tmp_path, args, bad):
    (tmp_path / "plain").write_text("a file, so plain/run cannot be a folder (even for root)")
    before = files_under(tmp_path)
    out = gpunet_cli("train", *args)
    assert_one_line_error(out, bad)
    assert files_under(tmp_path) == before
    if bad.startswith("'"):  # an unknown name: the valid ones are listed
        assert "choose from" in out.stderr


def _environment(tmp: Path, case: str, url: str, refused: str) -> tuple[list[str], dict[str, str], str]:
    mnist = ["train", "--dataset", "mnist", "--out", "run", "--quiet"]  # --quiet: no "downloading ..." lines
    if case == "cupy":
        if cupy_unavailable_reason() is None:
            pytest.skip("a usable GPU is here: --backend cupy works")
        return ["train", "--backend", "cupy"], {}, "backend 'cupy' is unavailable"
    if case == "checksum":
        Handler.content = {name: b"not mnist" for name in MNIST_MD5}
        return mnist, {"GPUNET_MNIST_MIRRORS": f"{url}/good/"}, f"expected {next(iter(MNIST_MD5.values()))}"
    if case == "offline":
        return mnist, {"GPUNET_MNIST_MIRRORS": refused}, "Offline? Place the four files"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["cupy", "checksum", "offline"])
def test_bad_environment(tmp_path, server, refused_url, case):  # noqa: F811
    args, env, bad = _environment(tmp_path, case, server, refused_url)
    before = files_under(tmp_path)
    out = gpunet_cli(*args, env=env)
    assert_one_line_error(out, bad)
    assert files_under(tmp_path) == before  # not even the cache folder
    if case == "cupy":  # the library says backend='numpy'; the command line names its option
        assert out.stderr.rstrip().endswith("or use --backend numpy") and "backend='numpy'" not in out.stderr


def test_debug_shows_the_traceback(tmp_path):
    out = gpunet_cli("--debug", "train", "--lr", "-1")
    assert out.returncode == 1 and "Traceback" in out.stderr and "lr must be a finite number > 0" in out.stderr


# --- divergence and out-of-memory -----------------------------------------------------------


def test_divergence_stops_with_the_epoch_and_a_remedy(tmp_path):
    out = gpunet_cli("train", "--activation", "relu", "--output", "identity", "--loss", "squared",
                     "--optimizer", "sgd", "--lr", "50", "--epochs", "3", "--out", "run", "--quiet")
    assert_one_line_error(out, "training diverged in epoch 1", status=1, stdout="output: run\n")  # --quiet says where
    assert "smaller learning rate (this epoch used 50)" in out.stderr and "no checkpoint was written" in out.stderr
    assert not (tmp_path / "run/model.npz").exists() and (tmp_path / "run/metrics.jsonl").read_text() == ""


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    assert main(["train", "--quiet", "--hidden", "16", "--epochs", "2", "--out", "run"]) == 0
    net, opt, meta = load_checkpoint("run/model.npz")
    params = net.get_params()
    params["W1"][:] = 3e38  # finite, but X @ W1 overflows: epoch 3 explodes
    net.set_params(params)
    save_checkpoint("run/model.npz", net, opt, meta)
    good = (tmp_path / "run/model.npz").read_bytes()
    out = gpunet_cli("train", "--resume", "run/model.npz", "--epochs", "4", "--quiet")
    assert_one_line_error(out, "training diverged in epoch 3", status=1, stdout="output: run\n")
    assert "run/model.npz still holds epoch 2" in out.stderr
    assert (tmp_path / "run/model.npz").read_bytes() == good
    assert [json.loads(x)["epoch"] for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_divergence_from_python_names_the_rows():
    d = gpunet.datasets.load_digits()
    net = gpunet.Network.article([64, 16, 10], "relu", "identity", "squared", backend="numpy")
    seen = []
    diverged = r"in epoch 1: the training loss became (nan|inf) between rows \d+ and \d+"
    with pytest.raises(DivergenceError, match=diverged):
        gpunet.train(net, d.X_train, d.y_train, epochs=2, batch_size=4, lr=100.0, callback=seen.append, optimizer="sgd")
    assert seen == []


def test_out_of_memory_is_explained_and_memory_freed(monkeypatch, capsys):
    freed = []
    monkeypatch.setattr(Backend, "free_memory", lambda self: freed.append(self.name))

    def no_room(self, X, T, lr, optimizer):
        raise MemoryError("Out of memory allocating 1,073,741,824 bytes (allocated so far: 0 bytes)")

    monkeypatch.setattr(gpunet.Network, "train_step_unchecked", no_room)
    d = gpunet.datasets.load_digits()
    net = gpunet.Network.article([64, 32, 10], backend="numpy")
    with pytest.raises(DeviceMemoryError) as info:
        gpunet.train(net, d.X_train, d.y_train, batch_size=128)
    text = str(info.value)
    for part in ("128 rows at a time", "[64, 32, 10]", "1,073,741,824 bytes", "reduce batch_size= or hidden="):
        assert part in text
    assert freed == ["numpy"]
    assert main(["train", "--batch-size", "128", "--out", "run"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "out of memory on numpy" in err[0]


def test_out_of_memory_while_planning_a_fast_path_is_explained(monkeypatch):
    # Graph mode's buffers and per-sample epochs' copy of the training set are allocated by select.engine.
    def no_room(*args):
        raise MemoryError("Out of memory allocating 376,320,000 bytes (allocated so far: 0 bytes)")

    monkeypatch.setattr(gpunet.training.select, "engine", no_room)
    d = gpunet.datasets.load_digits()
    with pytest.raises(DeviceMemoryError, match=r"64 rows at a time .* 376,320,000 bytes"):
        gpunet.train(gpunet.Network.article([64, 32, 10], backend="numpy"), d.X_train, d.y_train, batch_size=1,
                     optimizer="sgd")


# --- Ctrl-C and SIGKILL --------------------------------------------------------------------

RUN = ["--hidden", "24", "--batch-size", "8", "--lr", "0.003", "--lr-decay", "0.95", "--epochs", "12", "--seed", "3"]
# A run interrupted or killed at a moment the machine's load decides is given more epochs than any test waits for
# (tens of milliseconds each), so it is still training whenever the signal lands, however slow the machine. Its
# resume then stops a couple of epochs after its checkpoint, and the uninterrupted run it is compared with trains
# that many epochs too (no setting depends on the run's length).
ENDLESS = "1000000"


def _final(folder: Path):
    with np.load(folder / "model.npz") as z:
        params = {k: z[k] for k in z.files if k.startswith(("param/", "optim/"))}
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return params, [(r["epoch"], r["lr"], r["train_loss"], r["test_loss"], r["test_accuracy"]) for r in records]


def _same(a, b):
    (pa, ra), (pb, rb) = a, b
    assert set(pa) == set(pb)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert ra == rb


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.005)


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "gpunet", "train", *RUN, "--epochs", ENDLESS, "--out", "part"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lines(tmp_path / "part/metrics.jsonl", 2, proc)
        time.sleep(0.01)  # somewhere inside an epoch, or between two: the checkpoint says which
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "resume with: gpunet train --resume part/model.npz" in err
    _, _, meta = load_checkpoint(tmp_path / "part/model.npz")
    assert meta["position"] is None or 0 < meta["position"]["row"] < 1438
    epochs = str(meta["epoch"] + 2)  # the interrupted epoch, if any, and one more
    assert main(["train", "--quiet", "--resume", "part/model.npz", "--epochs", epochs]) == 0
    assert main(["train", "--quiet", *RUN, "--epochs", epochs, "--out", "whole"]) == 0
    _same(_final(tmp_path / "part"), _final(tmp_path / "whole"))


def test_sigkill_at_random_moments_never_loses_or_changes_the_run(tmp_path):
    """At least 20 kills, half of them timed to land while a checkpoint is being written, and 10 of resumed runs."""
    # ~35 ms/epoch; a schedule of no total: the killed run asks for endless epochs, the whole one for its count
    args = ["--hidden", "16", "--batch-size", "4", "--lr", "0.001", "--lr-decay", "0.95", "--seed", "5"]
    folder, rng = tmp_path / "killed", random.Random(0)
    kills = write_kills = resumes = 0
    while (kills < 20 or resumes < 10) and kills < 60:  # resumes lag only while no checkpoint has been written
        resume = (folder / "model.npz").exists()
        cmd = ["train", "--quiet", *(["--resume", "killed/model.npz"] if resume
                                     else [*args, "--epochs", ENDLESS, "--out", "killed"])]
        resumes += resume
        proc = subprocess.Popen([sys.executable, "-m", "gpunet", *cmd], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            if kills % 2:  # kill as soon as a temporary checkpoint file appears: mid-write
                deadline = time.monotonic() + 60
                while proc.poll() is None and time.monotonic() < deadline:
                    if folder.is_dir() and any(p.name.startswith(".model.npz.") for p in folder.iterdir()):
                        break
            elif kills % 4 == 2:  # inside training, wherever the machine's load has put it: after an epoch's line
                metrics = folder / "metrics.jsonl"
                lines = metrics.read_text().count("\n") if metrics.exists() else 0
                _wait_for_lines(metrics, lines + 1, proc, timeout=60)
                time.sleep(rng.uniform(0.0, 0.05))
            else:
                time.sleep(rng.uniform(0.5, 2.0))  # start-up takes 1-5 s: these land before training or early in it
            assert proc.poll() is None, proc.stderr.read()  # an endless run that stopped has failed
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        write_kills += kills % 2
        kills += 1
        if (folder / "model.npz").exists():
            load_checkpoint(folder / "model.npz")  # every checkpoint left behind loads
        if (folder / "metrics.jsonl").exists():
            [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]  # whole lines only
    assert kills >= 20 and write_kills >= 10 and resumes >= 10, (kills, write_kills, resumes)
    _, _, meta = load_checkpoint(folder / "model.npz")
    epochs = str(meta["epoch"] + 2)
    assert main(["train", "--quiet", "--resume", "killed/model.npz", "--epochs", epochs]) == 0  # to the end
    assert not any(p.name.endswith(".tmp") for p in folder.iterdir())
    assert main(["train", "--quiet", *args, "--epochs", epochs, "--out", "whole"]) == 0
    _same(_final(folder), _final(tmp_path / "whole"))
    print(f"kills {kills} (during checkpoint writes {write_kills}), resumes {resumes + 1}, mismatches 0")


def test_resume_of_an_interrupted_run_with_fewer_epochs_has_nothing_to_do(tmp_path, capsys):
    assert main(["train", "--quiet", "--hidden", "8", "--epochs", "2", "--out", "run"]) == 0
    net, opt, meta = load_checkpoint("run/model.npz")
    save_checkpoint("run/model.npz", net, opt, {**meta, "position": {"epoch": 3, "row": 64, "loss_sum": 1.5}})
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", "run/model.npz", "--epochs", "2"]) == 0
    assert "nothing to do: the checkpoint already holds 2 epochs" in capsys.readouterr().out


# --- run folders: one owner, never mixed (issue 14, class 1) and exact, write-nothing-on-failure resumes (class 2) --


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gpunet", "train", "--quiet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_folder_in_use_is_refused_and_left_alone(tmp_path):
    from gpunet.config import TrainConfig
    from gpunet.run import Run

    with Run.new(TrainConfig(epochs=1), "taken"):  # this process holds the folder
        out = gpunet_cli("train", "--epochs", "1", "--out", "taken")
        assert_one_line_error(out, "taken: another gpunet process is training in this folder")
        assert list((tmp_path / "taken").iterdir()) == []
    assert main(["train", "--quiet", "--epochs", "1", "--out", "taken"]) == 0  # let go: usable


def test_concurrent_runs_into_one_folder_one_wins_and_a_kill_frees_it(tmp_path):
    """Two processes, one folder: the second (and a resume) is refused in one line while the first trains, the
    first is not disturbed, and once the first is killed the folder's lock has died with it."""
    args = [*RUN, "--epochs", ENDLESS]
    first = _start(*args, "--out", "shared")
    try:
        _wait_for_lines(tmp_path / "shared/metrics.jsonl", 1, first)
        second = _start(*args, "--out", "shared")
        third = _start("--resume", "shared/model.npz")
        for proc in (second, third):
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 2 and out == "" and err.count("\n") == 1, err
            assert "shared: another gpunet process is training in this folder" in err
        assert first.poll() is None, "the first run should still be going"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    _, _, meta = load_checkpoint(tmp_path / "shared/model.npz")
    epochs = str(meta["epoch"] + 2)
    assert main(["train", "--quiet", "--resume", "shared/model.npz", "--epochs", epochs]) == 0  # the lock died
    assert main(["train", "--quiet", *args, "--epochs", epochs, "--out", "whole"]) == 0
    _same(_final(tmp_path / "shared"), _final(tmp_path / "whole"))


def test_resume_into_another_folder_after_kills_matches_and_leaves_the_source(tmp_path):
    """Kill a run, resume it into a new folder, kill that, resume again: the end is the uninterrupted run, and
    the first folder is never written by the resumes."""
    args = ["--hidden", "16", "--batch-size", "4", "--lr", "0.001", "--epochs", "60", "--seed", "5",
            "--early-stopping", "50"]
    assert main(["train", "--quiet", *args, "--out", "whole"]) == 0
    first = _start(*args, "--out", "a")
    _wait_for_lines(tmp_path / "a/metrics.jsonl", 3, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    source = _snapshot(tmp_path / "a")
    second = _start("--resume", "a/model.npz", "--out", "b")
    _wait_for_lines(tmp_path / "b/metrics.jsonl", 6, second)
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert _snapshot(tmp_path / "a") == source
    assert main(["train", "--quiet", "--resume", "b"]) == 0
    _same(_final(tmp_path / "b"), _final(tmp_path / "whole"))
    assert (tmp_path / "b/best.npz").read_bytes() and _snapshot(tmp_path / "a") == source
    _, _, best = load_checkpoint(tmp_path / "b/best.npz")
    _, _, want = load_checkpoint(tmp_path / "whole/best.npz")
    assert best["epoch"] == want["epoch"] and best["early_stopping"] == want["early_stopping"]


def test_resume_into_a_folder_holding_another_run_changes_nothing(tmp_path):
    assert main(["train", "--quiet", "--epochs", "1", "--hidden", "8", "--out", "a"]) == 0
    assert main(["train", "--quiet", "--epochs", "1", "--hidden", "9", "--out", "b"]) == 0
    before = files_under(tmp_path), _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    out = gpunet_cli("train", "--resume", "a/model.npz", "--epochs", "2", "--out", "b")
    assert_one_line_error(out, "b already holds a run (b/model.npz)")
    out = gpunet_cli("train", "--resume", "a/best.npz", "--out", "c")  # no such checkpoint: still nothing written
    assert_one_line_error(out, "a/best.npz: no such file")
    assert (files_under(tmp_path), _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")) == before


@pytest.mark.parametrize("case", ["option", "data", "folder", "nothing-to-do"])
def test_a_resume_that_fails_writes_nothing(tmp_path, case):
    good = [f"{k % 10}," + ",".join(str((k * 7 + j) % 256) for j in range(16)) for k in range(40)]
    write_csv(tmp_path / "train.csv", good)
    write_csv(tmp_path / "test.csv", good[:10])
    assert main(["train", "--quiet", "--epochs", "2", "--hidden", "8", "--dataset", "csv", "--train-csv",
                 "train.csv", "--test-csv", "test.csv", "--out", "run"]) == 0
    args, bad = {
        "option": (["--epochs", "3", "--batch-size", "4"], "it cannot honour --batch-size"),
        "data": (["--epochs", "3"], "train.csv: no data rows"),
        "folder": (["--epochs", "3", "--out", "/proc/elsewhere"], "/proc/elsewhere"),
        "nothing-to-do": (["--epochs", "2"], None),
    }[case]
    if case == "data":
        write_csv(tmp_path / "train.csv", [])
    before = files_under(tmp_path), _snapshot(tmp_path / "run")
    out = gpunet_cli("train", "--resume", "run/model.npz", *args)
    if bad is None:
        assert out.returncode == 0 and out.stdout.startswith("nothing to do: the checkpoint already holds 2 epochs")
    else:
        assert_one_line_error(out, bad)
    assert (files_under(tmp_path), _snapshot(tmp_path / "run")) == before  # config.json included


# --- the command line refuses what it would ignore, and checks before it writes (class 6) --------------------


def test_predict_reports_each_bad_image_and_prints_the_good_ones(tmp_path):
    from PIL import Image

    assert main(["train", "--quiet", "--epochs", "2", "--out", "run"]) == 0
    img = np.full((40, 40), 255, np.uint8)
    img[8:32, 18:22] = 0  # a "1"
    Image.fromarray(img).save(tmp_path / "one.png")
    Image.new("L", (30, 30), 255).save(tmp_path / "blank.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    out = gpunet_cli("predict", "run", "junk.png", "one.png", "blank.png", "one.png", "--json")
    assert out.returncode == 2
    assert [json.loads(line)["image"] for line in out.stdout.splitlines()] == ["one.png", "one.png"]
    errors = out.stderr.splitlines()
    assert len(errors) == 2 and "junk.png: not a readable image" in errors[0] and "no digit found" in errors[1]
    assert all(e.startswith("gpunet predict: error: ") for e in errors)


def test_plot_checks_everything_before_writing(tmp_path):
    good = [f"{k % 10}," + ",".join(str((k * 7 + j) % 256) for j in range(15)) for k in range(40)]  # 15 pixels
    write_csv(tmp_path / "train.csv", good)
    write_csv(tmp_path / "test.csv", good[:10])
    assert main(["train", "--quiet", "--epochs", "1", "--hidden", "8", "--dataset", "csv", "--train-csv",
                 "train.csv", "--test-csv", "test.csv", "--out", "run"]) == 0
    before = files_under(tmp_path)
    out = gpunet_cli("plot", "run", "--out", "plots")
    assert_one_line_error(out, "first-layer weights have 15 inputs, not a square image")
    assert files_under(tmp_path) == before  # not curves.png, not even the folder


def test_bench_checks_its_json_path_first(tmp_path):
    (tmp_path / "taken.json").write_text("{}")
    # gpunet bench with a benchmark that, started, exits with status 1 and its own line: refused before that.
    never_started = ("import sys, gpunet.bench\n"
                     "def started(**kwargs):\n"
                     "    sys.exit('the benchmark started')\n"
                     "gpunet.bench.run_benchmark = started\n"
                     "from gpunet.cli import main\n"
                     "sys.exit(main(sys.argv[1:]))\n")
    for path, bad in (("nowhere/b.json", "nowhere: no such folder"), ("taken.json", "taken.json already exists")):
        out = subprocess.run([sys.executable, "-c", never_started, "bench", "--quick", "--json", path],
                             capture_output=True, text=True, timeout=300)
        assert_one_line_error(out, bad)
    assert (tmp_path / "taken.json").read_text() == "{}"


@pytest.mark.parametrize("dataset", ["csv", "mnist"])
def test_evaluate_reads_only_the_test_files(tmp_path, capsys, dataset):
    if dataset == "csv":
        good = [f"{k % 10}," + ",".join(str((k * 7 + j) % 256) for j in range(16)) for k in range(40)]
        write_csv(tmp_path / "train.csv", good)
        write_csv(tmp_path / "test.csv", good[:10])
        data, train_files = ["--train-csv", "train.csv", "--test-csv", "test.csv"], ["train.csv"]
    else:
        (tmp_path / "m").mkdir()
        write_mnist(tmp_path / "m")
        data = ["--data-dir", "m"]
        train_files = [p for p in (tmp_path / "m").iterdir() if p.name.startswith("train-")]
    assert main(["train", "--quiet", "--epochs", "1", "--hidden", "8", "--dataset", dataset, *data,
                 "--out", "run"]) == 0
    for path in train_files:
        (tmp_path / path).unlink()
    capsys.readouterr()
    assert main(["evaluate", "run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    last = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[-1])
    assert report["model"] == "run/model.npz" and report["accuracy"] == last["test_accuracy"]
    assert sum(report["support"]) == (10 if dataset == "csv" else 4)


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    from gpunet.config import TrainConfig
    from gpunet.run import Run

    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")  # every default name is the same
    first = Run.new(TrainConfig(epochs=1), "runs/20260101-000000", fresh_name=True)
    second = Run.new(TrainConfig(epochs=1), "runs/20260101-000000", fresh_name=True)
    with first, second:  # both took their folders before either trained
        assert (first.folder.name, second.folder.name) == ("20260101-000000", "20260101-000000-2")
    assert main(["train", "--quiet", "--epochs", "1", "--out", str(first.folder)]) == 0  # free again
