"""scripts/sweep_bench.py --backends: a sweep on two backends, each on the same number of Dask workers of this host."""

from __future__ import annotations

import json

import pytest
from conftest import load_script

pytest.importorskip("distributed", reason="Dask's distributed is not installed (the test extra)")


@pytest.mark.slow
def test_backends_run_on_the_same_workers_and_their_records_are_compared(tmp_path, capsys):
    """numpy against numpy: the mechanics of the comparison (a GPU machine runs cupy,numpy), results equal."""
    bench = load_script("sweep_bench")
    out = tmp_path / "bench.json"
    assert bench.main(["--backends", "numpy,numpy", "--workers", "1", "--runs", "2", "--hidden", "8", "--epochs", "1",
                       "--repeats", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 runs on 1 local Dask workers: backend numpy against numpy" in printed
    assert "2 of 2 test accuracies equal, final losses within 0" in printed
    doc = json.loads(out.read_text())
    assert doc["same_host"] is True and doc["workers"] == 1 and doc["args"]["backends"] == ["numpy", "numpy"]
    (r,) = doc["repeats"]
    assert r["equal_test_accuracy"] == r["runs"] == 2 and r["max_train_loss_difference"] == 0.0
    assert r["ratio"] > 0 and doc["median_ratio"] == r["ratio"]


@pytest.mark.parametrize("args, message", [
    (["--backends", "cupy"], "--backends must be two of numpy and cupy, as A,B; got 'cupy'"),
    (["--backends", "cupy,torch"], "got 'cupy,torch'"),
    (["--sweep", "{tmp}/none.toml"], "--sweep '{tmp}/none.toml': "),
])
def test_bad_arguments_are_named(tmp_path, capsys, args, message):
    bench = load_script("sweep_bench")
    with pytest.raises(SystemExit) as exit_:
        bench.main([a.format(tmp=tmp_path) for a in args])
    assert exit_.value.code == 2 and message.format(tmp=tmp_path) in capsys.readouterr().err
