"""Sweep files and scripts/sweep.py: grids expand as documented, results reproduce from their commands."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from gpunet.cli import main
from gpunet.config import TrainConfig
from gpunet.sweep import load_grid

from conftest import SCRIPTS, Terminal


def test_grid_expands_base_grid_and_runs(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[base]\nlr = 0.5\n[grid]\nhidden = [10, 20]\nseed = [1, 2, 3]\n'
                    '[[runs]]\nactivation = "tanh"\n[[runs]]\nactivation = "relu"\n')
    name, configs = load_grid(path)
    assert name == "s" and len(configs) == 2 * 2 * 3
    assert {(c.activation, c.hidden, c.seed) for c in configs} == {
        (a, (h,), s) for a in ("tanh", "relu") for h in (10, 20) for s in (1, 2, 3)}
    assert all(c.lr == 0.5 for c in configs)
    (tmp_path / "s.json").write_text(json.dumps({"base": {"hidden": [5, 5]}, "grid": {"lr": [0.1, 0.2]}}))
    name, configs = load_grid(tmp_path / "s.json")
    assert name == "s" and configs == [TrainConfig(hidden=(5, 5), lr=0.1), TrainConfig(hidden=(5, 5), lr=0.2)]


@pytest.mark.parametrize(
    "text, match",
    [
        ('[base]\nlearning_rate = 0.1\n', "unknown setting 'learning_rate'"),
        ('[grid]\nlr = 0.1\n', "every grid setting must be a non-empty list"),
        ('[base]\nlr = -1.0\n', r"lr must be a finite number > 0; got -1.0"),
        ('[bsae]\nlr = 0.1\n', r"holds name, description, base, grid and runs; got \['bsae'\]"),
        ('[base\n', "not a valid toml sweep file"),
    ],
)
def test_bad_sweep_files_are_named(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_grid(path)


def test_shipped_sweep_files_parse():
    for path in (SCRIPTS / "sweeps").iterdir():
        name, configs = load_grid(path)
        assert name == path.stem and configs


def test_sweep_script_writes_a_table_and_json_that_reproduce(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text('name = "tiny"\n[base]\nhidden = [32]\nepochs = 3\nbackend = "numpy"\n'
                                     '[grid]\nactivation = ["tanh", "relu"]\n')
    out = subprocess.run([sys.executable, str(SCRIPTS / "sweep.py"), "s.toml", "--out", "r.json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["name"] == "tiny" and {"numpy", "python", "cpus", "gpunet"} <= set(doc["machine"])
    rows = doc["results"]
    assert [r["config"]["activation"] for r in rows] == ["tanh", "relu"]
    for row in rows:
        assert row["backend"] == "numpy" and row["epochs"] == 3 and len(row["history"]) == 3
        assert 0.5 < row["test_accuracy"] <= 1 and row["test_accuracy"] == row["history"][-1]["test_accuracy"]
        assert f"{row['test_accuracy']:.2%}" in out.stdout
    # the recorded command gives the same run
    words = shlex.split(rows[1]["command"])
    assert words[:2] == ["gpunet", "train"]
    assert main([*words[1:], "--backend", "numpy", "--quiet", "--out", "again"]) == 0
    last = json.loads((tmp_path / "again/metrics.jsonl").read_text().splitlines()[-1])
    assert last["test_accuracy"] == rows[1]["test_accuracy"]


def test_sweep_script_bad_file_exits_2(tmp_path):
    (tmp_path / "s.toml").write_text("[grid]\nhidden = 3\n")
    out = subprocess.run([sys.executable, str(SCRIPTS / "sweep.py"), str(tmp_path / "s.toml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "s.toml" in out.stderr
    assert re.search("non-empty list", out.stderr)


def test_a_sweep_honours_early_stopping_as_gpunet_train_does(tmp_path, monkeypatch):
    from gpunet.sweep import run_config

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(lr=0.01, epochs=100, early_stopping=2, backend="numpy")
    row = run_config(config)
    assert main([*shlex.split(row["command"])[1:], "--backend", "numpy", "--quiet", "--out", "cli"]) == 0
    records = [json.loads(x) for x in (tmp_path / "cli/metrics.jsonl").read_text().splitlines()]
    assert row["epochs"] == len(records) < 100  # stopped, at the same epoch
    assert [r["val_loss"] for r in row["history"]] == [r["val_loss"] for r in records]
    assert row["early_stopping"]["stopped"] and row["early_stopping"]["best_epoch"] == len(records) - 2


def test_run_sweep_appends_rows_skips_the_ones_done_and_loads_shared_data_once(tmp_path, monkeypatch):
    from gpunet import sweep

    configs = [TrainConfig(hidden=(8,), epochs=1, seed=s, backend="numpy") for s in range(3)]
    ran, loaded = [], []
    real_run, real_load = sweep.Run.new, sweep.load_data
    monkeypatch.setattr(sweep.Run, "new", lambda config, folder, data=None: ran.append(config.seed)
                        or real_run(config, folder, data=data))
    monkeypatch.setattr(sweep, "load_data", lambda config: loaded.append(config.seed) or real_load(config))
    rows = sweep.run_sweep(configs[:2], tmp_path / "rows.jsonl")
    assert ran == [0, 1] and [r["config"]["seed"] for r in rows] == [0, 1]
    assert loaded == [0]  # runs that differ only in seed share one dataset in-process
    assert sweep._shared is None  # and nothing is kept after the sweep
    with open(tmp_path / "rows.jsonl", "a") as f:
        f.write('{"key": "torn')  # a sweep killed mid-line
    calls = []
    rows = sweep.run_sweep(configs, tmp_path / "rows.jsonl", on_progress=lambda *a: calls.append(a))
    assert ran == [0, 1, 2] and calls == [(2, 1, 0, 3), (3, 0, 0, 3)]
    assert [r["config"]["seed"] for r in rows] == [0, 1, 2] and [r["status"] for r in rows] == ["ok"] * 3
    assert [json.loads(x)["config"]["seed"] for x in (tmp_path / "rows.jsonl").read_text().splitlines()] == [0, 1, 2]
    # a validation share makes the seed pick the held-out rows: then each seed loads its own
    loaded.clear()
    sweep.run_sweep([TrainConfig(hidden=(8,), epochs=1, seed=s, backend="numpy", validation=0.1)
                     for s in range(2)], tmp_path / "val.jsonl")
    assert loaded == [0, 1]


def test_without_timing_keeps_the_numbers_and_drops_the_clock_at_every_depth(tmp_path):
    from gpunet.sweep import run_sweep, without_timing

    config = TrainConfig(hidden=(8,), epochs=2, seed=3, backend="numpy")
    first, again = (run_sweep([config], tmp_path / f"{name}.jsonl")[0] for name in ("a", "b"))
    assert first != again  # started, finished and the timings differ between two runs
    assert without_timing(first) == without_timing(again)
    kept = without_timing(first)
    assert not {"seconds", "wall_seconds", "started", "finished", "host", "worker"} & set(kept)
    assert [set(epoch) & {"seconds", "samples_per_s"} for epoch in kept["history"]] == [set(), set()]
    assert kept["history"][1]["test_accuracy"] == first["history"][1]["test_accuracy"]
    assert kept["config"] == first["config"] and kept["key"] == first["key"]


TINY = 'name = "tiny"\n[base]\nhidden = [16]\nepochs = 2\nbackend = "numpy"\n[grid]\nseed = [0, 1]\n'


def test_gpunet_sweep_draws_a_bar_over_the_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(TINY)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["sweep", "s.toml"]) == 0
    bar = terminal.getvalue()
    assert re.search(r"tiny: +0%.*0/2 .*running=1, failed=0", bar), bar
    assert re.search(r"tiny: +100%.*2/2 .*running=0, failed=0", bar), bar
    out = capsys.readouterr().out
    assert "wrote tiny.json" in out and out.count("numpy") == 2
    terminal.truncate(0)
    assert main(["sweep", "s.toml"]) == 0  # all done before: the bar starts full and nothing runs
    assert "running=1" not in terminal.getvalue() and "2/2" in terminal.getvalue()


def test_gpunet_sweep_records_a_failed_run_lists_it_and_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(TINY + 'lr = [0.1, 1e30]\nactivation = ["relu"]\noptimizer = ["sgd"]\n')
    assert main(["sweep", "s.toml", "--out", "r.json"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("failed: ")]
    assert failed == [f"failed: gpunet train --hidden 16 --optimizer sgd --lr 1e+30 --epochs 2"
                      f"{seed}: DivergenceError: training diverged in epoch 1: the training loss became nan between "
                      "rows 0 and 1438 of 1438; try a smaller learning rate (this epoch used 1e+30)"
                      for seed in ("", " --seed 1")]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [r["status"] for r in doc["results"]] == ["ok", "failed", "ok", "failed"]
    assert [json.loads(x)["status"] for x in (tmp_path / "r.jsonl").read_text().splitlines()] == [
        "ok", "failed", "ok", "failed"]
    assert doc["results"][0]["test_accuracy"] > 0.5


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], 'Dask is not installed: pip install "gpunet[dask]"'),
    (["--scheduler", "tcp://127.0.0.1:8786"], 'Dask is not installed: pip install "gpunet[dask]"'),
    (["--workers", "0"], "workers must be an integer >= 1; got 0"),
    (["--workers", "2", "--gpus"], "choose one of workers, scheduler and gpus; got workers and gpus"),
    (["--out", "r.jsonl"], "--out r.jsonl: expected a name not ending in .jsonl (the runs go to FILE with .jsonl)"),
])
def test_gpunet_sweep_dask_options_without_dask_or_wrong_say_so_in_one_line(tmp_path, monkeypatch, capsys, args,
                                                                           message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    (tmp_path / "s.toml").write_text(TINY)
    assert main(["sweep", "s.toml", *args]) == 2
    assert capsys.readouterr().err == f"gpunet sweep: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]  # nothing written
