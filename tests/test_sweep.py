"""Sweep files and scripts/sweep.py: grids expand as documented, results reproduce from their commands."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gpunet.cli import main
from gpunet.config import TrainConfig
from gpunet.sweep import load_grid

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


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


def test_run_sweep_appends_rows_and_skips_the_ones_done(tmp_path, monkeypatch):
    import gpunet.sweep as sweep

    configs = [TrainConfig(hidden=(8,), epochs=1, seed=s, backend="numpy") for s in range(3)]
    ran = []
    real = sweep.run_config
    monkeypatch.setattr(sweep, "run_config", lambda c, data=None: ran.append(c.seed) or real(c, data))
    rows = sweep.run_sweep(configs[:2], tmp_path / "rows.jsonl")
    assert ran == [0, 1] and [r["config"]["seed"] for r in rows] == [0, 1]
    with open(tmp_path / "rows.jsonl", "a") as f:
        f.write('{"config": {"torn')  # a sweep killed mid-line
    seen = []
    rows = sweep.run_sweep(configs, tmp_path / "rows.jsonl", lambda k, row, before: seen.append((k, before)))
    assert ran == [0, 1, 2] and seen == [(1, True), (2, True), (3, False)]
    assert [r["config"]["seed"] for r in rows] == [0, 1, 2]
    assert [r["config"]["seed"] for r in sweep.read_rows(tmp_path / "rows.jsonl")] == [0, 1, 2]
