"""Sweep files and scripts/sweep.py: grids expand as documented, results reproduce from their commands."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import numpy as np
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
        ('[grid]\nlr = 0.1\n', r"grid setting lr must be a non-empty list of values, like lr = \[...\]; got 0.1"),
        ('[grid]\n', "grid is empty; give it settings with lists of values"),
        ('[grid]\nhidden = []\n', (r"grid setting hidden must be a non-empty list of values, like hidden = \[...\]; "
                                   r"got \[\]")),
        ('runs = []\n', (r"runs must be a non-empty list of tables of settings \(\[\[runs\]\] in TOML\), or left out; "
                        r"got \[\]")),
        ('base = 3\n', r"base must be a table of settings \(\[base\] in TOML\); got 3"),
        ('grid = [1, 2]\n', r"grid must be a table of settings, each with a list of values .*; got \[1, 2\]"),
        ('runs = [{lr = 0.1}, 5]\n', "runs entry 2 must be a table of settings; got 5"),
        ('[[runs]]\nlr = 0.1\n[[runs]]\nlearning_rate = 0.1\n', "runs entry 2: unknown setting 'learning_rate'"),
        ('[grid]\nlearnin_rate = [0.1]\n', "grid: unknown setting 'learnin_rate'"),
        ('name = "../results"\n', r"name must be a name for the results file .*; got '../results'"),
        ('name = 3\n', r"name must be a name for the results file .*; got 3"),
        ('description = ["a"]\n', r"description must be a text; got \['a'\]"),
        # the run is named by its place in the grid and its settings there, as the file spells them
        ('[grid]\ninit = ["he", "xavier"]\nlr = [0.1, -1.0]\n',
         r'bad.toml: run 2 of 4 \(init = "he", lr = -1.0\): lr must be a finite number > 0; got -1.0$'),
        ('[base]\nhidden = [8]\n[[runs]]\nseed = 1\n[[runs]]\nbatch_size = 0\n',
         r"bad.toml: run 2 of 2 \(batch_size = 0\): batch_size must be an integer >= 1; got 0$"),
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
    monkeypatch.setattr(sweep, "load_data", lambda config, *rest: loaded.append(config.seed) or real_load(config))
    rows = sweep.run_sweep(configs[:2], tmp_path / "rows.jsonl", batch=False)
    assert ran == [0, 1] and [r["config"]["seed"] for r in rows] == [0, 1]
    assert loaded == [0]  # runs that differ only in seed share one dataset in-process
    assert sweep._shared is None  # and nothing is kept after the sweep
    with open(tmp_path / "rows.jsonl", "a") as f:
        f.write('{"key": "torn')  # a sweep killed mid-line
    calls = []
    rows = sweep.run_sweep(configs, tmp_path / "rows.jsonl", on_progress=lambda *a: calls.append(a), batch=False)
    assert ran == [0, 1, 2] and calls == [(2, 1, 0, 3), (3, 0, 0, 3)]
    assert [r["config"]["seed"] for r in rows] == [0, 1, 2] and [r["status"] for r in rows] == ["ok"] * 3
    assert [json.loads(x)["config"]["seed"] for x in (tmp_path / "rows.jsonl").read_text().splitlines()] == [0, 1, 2]
    # a validation share makes the seed pick the held-out rows: then each seed loads its own
    loaded.clear()
    sweep.run_sweep([TrainConfig(hidden=(8,), epochs=1, seed=s, backend="numpy", validation=0.1)
                     for s in range(2)], tmp_path / "val.jsonl", batch=False)
    assert loaded == [0, 1]


BATCHED_RUNS = [  # seeds, learning rates and weight decays: one group; the sgd runs split by weight decay
    {"seed": s, "lr": lr, "optimizer": "adam", "weight_decay": wd, "validation": 0.2}
    for s, lr, wd in [(0, 0.001, 0.0), (1, 0.002, 0.001), (2, 0.003, 0.0)]
] + [{"seed": s, "optimizer": "sgd", "lr": 0.5, "weight_decay": wd, "early_stopping": 1}
     for s, wd in [(0, 0.0), (1, 0.0), (2, 0.001)]
] + [{"seed": s, "lr": lr, "dropout": 0.2, "augment_shift": 1, "lr_schedule": "cosine", "warmup_epochs": 1}
     for s, lr in [(0, 0.002), (1, 0.003)]]


def test_a_batched_sweep_gives_each_run_its_solo_row(tmp_path, monkeypatch):
    from gpunet import sweep

    configs = [TrainConfig(hidden=(12,), epochs=6, batch_size=32, backend="numpy", **r) for r in BATCHED_RUNS]
    assert len({sweep.group_key(c) for c in configs}) == 4  # adam; sgd; sgd with weight decay; adam with the rest
    groups = []
    real = sweep.run_group
    monkeypatch.setattr(sweep, "run_group", lambda cs: groups.append([c.seed for c in cs]) or real(cs))
    batched = sweep.run_sweep(configs, tmp_path / "batched.jsonl")
    assert groups == [[0, 1, 2], [0, 1], [2], [0, 1]]
    solo = sweep.run_sweep(configs, tmp_path / "solo.jsonl", batch=False)
    assert any(r["epochs"] < 6 for r in solo)  # early stopping ended a run: each run stops on its own
    timing = ("seconds", "samples_per_s", "started", "finished", "wall_seconds", "batched")
    for b, s in zip(batched, solo):
        assert b["status"] == s["status"] == "ok"
        c = b["config"]
        assert b["batched"] == (2 if c["dropout"] else 3 if c["optimizer"] == "adam" else 2 - (c["seed"] == 2))
        for key in ("epochs", "test_accuracy", "best_epoch", "best_val_accuracy", "early_stopping"):
            assert b.get(key) == s.get(key), key
        for rb, rs in zip(b["history"], s["history"]):
            assert {k: v for k, v in rb.items() if k not in timing} == {k: v for k, v in rs.items() if k not in timing}


def test_a_batched_group_resumes_without_its_finished_runs_and_a_diverging_run_fails_alone(tmp_path, monkeypatch):
    from gpunet import sweep

    configs = [TrainConfig(hidden=(12,), epochs=2, batch_size=16, optimizer="sgd", output="identity",
                           loss="squared", lr=lr, seed=s, backend="numpy") for s, lr in [(0, 0.01), (1, 1e6), (2, 0.01)]]
    groups = []
    real = sweep.run_group
    monkeypatch.setattr(sweep, "run_group", lambda cs: groups.append([c.seed for c in cs]) or real(cs))
    sweep.run_sweep(configs[:1], tmp_path / "r.jsonl")
    with np.errstate(all="ignore"):
        rows = sweep.run_sweep(configs, tmp_path / "r.jsonl")
    assert groups == [[0], [1, 2]]  # the finished run is not run again
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"].startswith("DivergenceError: training diverged in epoch 1")


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


@pytest.mark.parametrize("options,running", [([], 2), (["--no-batch"], 1)])  # the two seeds train together
def test_gpunet_sweep_draws_a_bar_over_the_runs(tmp_path, monkeypatch, capsys, options, running):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(TINY)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["sweep", "s.toml", *options]) == 0
    bar = terminal.getvalue()
    assert re.search(rf"tiny: +0%.*0/2 .*running={running}, failed=0", bar), bar
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


def no_training(monkeypatch):
    """Make any run that starts fail the test: the checks must stop the sweep before the first one."""
    from gpunet.run import Run

    def train(self, *args, **kwargs):
        raise AssertionError(f"a run started: {self.config.command()}")

    monkeypatch.setattr(Run, "train", train)


CSV_RUN = '[[runs]]\n[[runs]]\ndataset = "csv"\ntrain_csv = "missing.csv"\ntest_csv = "missing.csv"\n'


@pytest.mark.parametrize("text, args, message", [
    # one probe for every run: no GPU fails before the first run, not once per run
    (TINY, ["--backend", "cupy"], "s.toml: every run: backend 'cupy' is unavailable: no CUDA device here. Install "),
    (TINY + 'kernels = ["auto", "fused"]\n', [],
     ('s.toml: run 2 of 4 (seed = 0, kernels = "fused"): --kernels fused needs the cupy backend; got backend '
     "'numpy' (use --kernels auto or --kernels plain)")),
    # the data each run needs is loaded once before the first run: the good run does not run first
    ('name = "tiny"\n[base]\nhidden = [16]\nepochs = 2\nbackend = "numpy"\n' + CSV_RUN, [],
     ('s.toml: run 2 of 2 (dataset = "csv", train_csv = "missing.csv", test_csv = "missing.csv"): missing.csv: '
     'no such file')),
    ('name = "tiny"\n[base]\nhidden = [16]\nepochs = 2\nbackend = "numpy"\nvalidation = 0.9999\n', [],
     "s.toml: run 1 of 1: validation fraction 0.9999 of 1438 training rows leaves no validation or no training"),
    (TINY, ["--epochs", "0"], "--epochs must be an integer >= 1; got 0"),
])
def test_gpunet_sweep_checks_every_run_before_the_first_and_writes_nothing(tmp_path, monkeypatch, capsys, text,
                                                                           args, message):
    import gpunet.backend

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gpunet.backend, "cupy_unavailable_reason", lambda: "no CUDA device here")
    no_training(monkeypatch)
    (tmp_path / "s.toml").write_text(text)
    assert main(["sweep", "s.toml", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpunet sweep: error: {message}") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]  # nothing written


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "r.json").mkdir(), "r.json is a folder; expected the name of a file to write"),
    (lambda d: (d / "r.jsonl").mkdir(), "r.jsonl is a folder; expected the name of a file to write"),
    (lambda d: (d / "r.json").write_text('{"name": "other", "results": []}\n'),
     ("r.json already exists; it holds no results of a sweep called 'tiny'; pass overwrite=True (--force on the "
     "command line) to replace it, or name another")),
    (lambda d: (d / "r.json").symlink_to(d / "nowhere"), "r.json is a symbolic link to nothing"),
    (lambda d: (d / "r.jsonl").write_text("my notes\n"), "r.jsonl: line 1 is not a gpunet results record"),
])
def test_gpunet_sweep_checks_its_outputs_before_the_first_run(tmp_path, monkeypatch, capsys, make, message):
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    (tmp_path / "s.toml").write_text(TINY)
    make(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert main(["sweep", "s.toml", "--out", "r.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpunet sweep: error: {message}") and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_gpunet_sweep_never_writes_its_results_over_the_sweep_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    text = json.dumps({"base": {"hidden": [8], "epochs": 1, "backend": "numpy"}})
    (tmp_path / "s.json").write_text(text)  # named s: its results would be s.json
    assert main(["sweep", "s.json", "--force"]) == 2
    assert capsys.readouterr().err == "gpunet sweep: error: s.json is also an input of this command (s.json); " \
                                      "name another output\n"
    assert (tmp_path / "s.json").read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_the_results_json_is_replaced_when_it_is_the_same_sweeps_else_only_with_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(TINY)
    assert main(["sweep", "s.toml", "--out", "r.json"]) == 0
    first = json.loads((tmp_path / "r.json").read_text())
    assert main(["sweep", "s.toml", "--out", "r.json"]) == 0  # the same sweep: its own results, rewritten
    assert json.loads((tmp_path / "r.json").read_text())["results"] == first["results"]
    (tmp_path / "t.toml").write_text(TINY.replace('name = "tiny"', 'name = "other"'))
    capsys.readouterr()
    assert main(["sweep", "t.toml", "--out", "r.json"]) == 2  # another sweep's: refused, kept
    assert "r.json already exists; it holds no results of a sweep called 'other'" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["name"] == "tiny"
    assert main(["sweep", "t.toml", "--out", "r.json", "--force"]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["name"] == "other" and [r["key"] for r in doc["results"]] == [r["key"] for r in first["results"]]


DIVERGING = TINY + 'lr = [0.1, 1e30]\nactivation = ["relu"]\noptimizer = ["sgd"]\n'


def test_a_failed_run_is_retried_by_default_keeping_its_errors_and_skip_failed_leaves_it(tmp_path, monkeypatch,
                                                                                         capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(DIVERGING)
    error = ("DivergenceError: training diverged in epoch 1: the training loss became nan between rows 0 and 1438 "
             "of 1438; try a smaller learning rate (this epoch used 1e+30)")
    assert main(["sweep", "s.toml", "--out", "r.json"]) == 1
    out = capsys.readouterr().out
    assert "\n2 failed; the same command runs them again (the errors stay in r.jsonl)\n" in out
    assert main(["sweep", "s.toml", "--out", "r.json"]) == 1  # both diverge again
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("failed: ")] == [
        f"failed: gpunet train --hidden 16 --optimizer sgd --lr 1e+30 --epochs 2{seed}: {error} (failed 2 times)"
        for seed in ("", " --seed 1")]
    records = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "failed", "ok", "failed", "failed", "failed"]  # ok runs kept
    assert [r.get("previous_errors") for r in records[4:]] == [[error], [error]]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [r.get("previous_errors") for r in doc["results"]] == [None, [error], None, [error]]
    before = (tmp_path / "r.jsonl").read_bytes()
    assert main(["sweep", "s.toml", "--out", "r.json", "--skip-failed"]) == 1
    out = capsys.readouterr().out
    assert "\n2 failed before and skipped (--skip-failed); run again without it to retry them\n" in out
    assert (tmp_path / "r.jsonl").read_bytes() == before  # nothing ran


def fails_once(config: TrainConfig) -> dict:
    """A run_one whose first call for each seed fails, as a transient problem would."""
    fails_once.calls.append(config.seed)
    if fails_once.calls.count(config.seed) == 1:
        raise RuntimeError(f"transient trouble {config.seed}")
    return {"network": "[64, 8, 10]", "test_accuracy": 0.5}


fails_once.calls = []


def test_distributed_retries_a_failed_run_and_the_ok_record_wins(tmp_path):
    from gpunet import distributed as gd

    configs = [TrainConfig(hidden=(8,), seed=s) for s in range(2)]
    path, fails_once.calls[:] = tmp_path / "r.jsonl", []
    assert [r["status"] for r in gd.run_sweep(configs, fails_once, path)] == ["failed", "failed"]
    assert [r["status"] for r in gd.run_sweep(configs, fails_once, path, skip_failed=True)] == ["failed", "failed"]
    assert fails_once.calls == [0, 1]  # skipped
    rows = gd.run_sweep(configs, fails_once, path)
    assert fails_once.calls == [0, 1, 0, 1]
    assert [(r["status"], r["previous_errors"]) for r in rows] == [
        ("ok", ["RuntimeError: transient trouble 0"]), ("ok", ["RuntimeError: transient trouble 1"])]
    assert gd.run_sweep(configs, fails_once, path) == rows and fails_once.calls == [0, 1, 0, 1]  # done: not rerun
    assert len(path.read_text().splitlines()) == 4


def test_selection_is_on_validation_accuracy_and_never_on_test_accuracy():
    from gpunet.sweep import best_run, selected_epoch

    history = [{"epoch": 1, "val_accuracy": 0.90, "test_accuracy": 0.80},
               {"epoch": 2, "val_accuracy": 0.95, "test_accuracy": 0.85},
               {"epoch": 3, "val_accuracy": 0.95, "test_accuracy": 0.99},  # the test's best: not chosen
               {"epoch": 4, "val_accuracy": 0.93, "test_accuracy": 0.90}]
    assert selected_epoch(history) == {"selected_on": "val_accuracy", "best_epoch": 2, "best_val_accuracy": 0.95,
                                       "test_accuracy_at_best": 0.85}
    no_val = [{k: v for k, v in r.items() if k != "val_accuracy"} for r in history]
    assert selected_epoch(no_val) == {"selected_on": "final epoch", "best_epoch": 4, "best_val_accuracy": None,
                                      "test_accuracy_at_best": 0.90}
    runs = [{"status": "ok", "command": f"c{i}", **selected_epoch(h)}
            for i, h in enumerate([no_val, history, [dict(r, val_accuracy=0.94, test_accuracy=1.0) for r in history]])]
    assert best_run(runs) == (1, ("best run by validation accuracy (among the 2 runs with a validation split): c1 "
                                 "(val acc 95.00% in epoch 2, test acc 85.00% there)"))
    assert best_run(runs[:1]) == (None, ("no run holds out validation images, so none is picked as best (the test "
                                        "accuracy does not choose); add validation = 0.1 to the sweep file's base to "
                                        "select on held-out training images"))


def test_gpunet_sweep_table_says_what_each_column_is_and_selects_on_validation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(TINY + "validation = [0.0, 0.2]\n")
    assert main(["sweep", "s.toml"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert re.split(r"  +", lines[1]) == ["network", "command", "backend", "epochs", "seconds", "best epoch",
                                          "best val acc", "test acc at best epoch", "final test acc", "status"]
    doc = json.loads((tmp_path / "tiny.json").read_text())
    rows = doc["results"]
    assert [r["selected_on"] for r in rows] == ["final epoch", "val_accuracy"] * 2
    assert all("best_epoch_accuracy" not in r for r in rows)  # the best test accuracy: a selection on test
    for row in rows:
        scored = [(e["val_accuracy"], -e["epoch"]) for e in row["history"] if "val_accuracy" in e]
        best = -max(scored)[1] if scored else row["epochs"]
        assert row["best_epoch"] == best
        assert row["test_accuracy_at_best"] == row["history"][best - 1]["test_accuracy"]
    best = max((1, 3), key=lambda i: rows[i]["best_val_accuracy"])
    assert doc["best_run"] == best
    assert f"best run by validation accuracy (among the 2 runs with a validation split): {rows[best]['command']} " \
           f"(val acc {rows[best]['best_val_accuracy']:.2%}" in out
    assert "best epoch: the epoch of the best validation accuracy" in out


def test_sweep_help_documents_the_file_and_example_prints_a_valid_one(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "scripts/" not in text and ".py" not in text and "TrainConfig" not in text
    for words in ("TOML (.toml) or JSON (.json)", "base (the settings every run shares)",
                  "grid (settings, each with a list of values: every combination runs)", "runs (a list of tables",
                  "gpunet train's options spelled with _ for -", "--example prints a starter file", "--force",
                  "--skip-failed"):
        assert words in text, words
    assert main(["sweep", "--example"]) == 0
    (tmp_path / "example.toml").write_text(capsys.readouterr().out)
    name, configs = load_grid(tmp_path / "example.toml")
    assert name == "example" and len(configs) == 12 and all(c.validation == 0.1 for c in configs)
    assert {c.hidden for c in configs} == {(64,), (256, 128)}
    assert main(["sweep"]) == 2
    assert capsys.readouterr().err == ("gpunet sweep: error: expected a sweep file (FILE); gpunet sweep --example "
                                       "prints a starter file\n")


DELETE = object()  # the field is left out
RECORD = {"key": "k1", "status": "ok", "command": "gpunet train", "network": "[64, 8, 10]", "backend": "numpy",
          "epochs": 1, "seconds": 0.1, "test_accuracy": 0.5, "history": [{"epoch": 1, "test_accuracy": 0.5}]}


@pytest.mark.parametrize("change, message", [
    ({"status": "done"}, "status must be ok or failed; got 'done'"),
    ({"command": DELETE}, "command must be the run's command (text); got nothing"),
    ({"history": DELETE}, ("history must be a non-empty list of epochs, each with its epoch and test_accuracy; "
                          "got nothing")),
    ({"test_accuracy": "97%"}, "test_accuracy must be a number; got '97%'"),
    ({"test_accuracy": None}, "test_accuracy must be a number; got None"),
    ({"history": []}, "history must be a non-empty list of epochs, each with its epoch and test_accuracy; got []"),
    ({"epochs": True}, "epochs must be an integer; got True"),
    ({"status": "failed"}, "error must be the failed run's reason (text); got nothing"),
    ({"previous_errors": "oops"}, "previous_errors must be a list of texts, where present; got 'oops'"),
    ({"best_val_accuracy": "high"}, "best_val_accuracy must be a number or null, where present; got 'high'"),
])
def test_a_hand_edited_results_line_is_named_by_file_line_and_field(tmp_path, monkeypatch, capsys, change, message):
    from gpunet import distributed as gd
    from gpunet.sweep import ROW_FIELDS

    path = tmp_path / "r.jsonl"
    bad = {k: v for k, v in {**RECORD, "key": "k2", **change}.items() if v is not DELETE}
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps(bad) + "\n" + '{"key": "k3", "sta')  # and a torn tail
    with pytest.raises(ValueError) as info:
        gd.read_results(path, ROW_FIELDS)
    assert str(info.value) == f"{path}: line 2: {message} (fix the line, or delete it to run that config again)"
    # on the command line: one line, exit status 2, before any run
    monkeypatch.chdir(tmp_path)
    no_training(monkeypatch)
    (tmp_path / "s.toml").write_text(TINY)
    assert main(["sweep", "s.toml", "--out", "r.json"]) == 2
    assert capsys.readouterr().err == f"gpunet sweep: error: {str(info.value).replace(str(path), 'r.jsonl')}\n"
    assert gd.read_results(path.with_name("fine.jsonl")) == {}
    path.write_text(json.dumps(RECORD) + "\n" + '{"key": "k3", "sta')
    assert list(gd.read_results(path, ROW_FIELDS)) == ["k1"]  # a torn last line is still tolerated
