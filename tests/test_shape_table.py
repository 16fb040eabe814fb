"""scripts/shape_table.py: its quick CPU mode end to end (the JSON's shape and its verdicts agree with its own
figures; no times asserted), and the verdict on a GPU table's figures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import SCRIPTS, load_script

from gpunet.backend import cupy_unavailable_reason

SCRIPT = SCRIPTS / "shape_table.py"


def test_quick_table_writes_every_shape_and_says_which_path_auto_took(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(tmp_path / "s.json")],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["quick"] is True and doc["repeats"] == 6 and doc["rows"] == 256 and doc["clocks"] == {
        "cpu": "perf_counter"}
    assert [(s["batch"], s["hidden"]) for s in doc["shapes"]] == [(16, 8), (32, 8), (16, 16), (32, 16)]
    expected = ["gpunet-numpy-auto", "torch-cpu", "torch-cpu-graph-fn", "jax-jit-cpu", "jax-scan-cpu"]
    for shape in doc["shapes"]:
        contenders = shape["contenders"]
        assert list(contenders) == expected and shape["sizes"] == [784, shape["hidden"], 10]
        timed = {n: r for n, r in contenders.items() if "epoch_seconds" in r}
        assert "gpunet-numpy-auto" in timed  # the others may be skipped where their library is missing
        for r in timed.values():
            assert len(r["seconds"]) == 6
            low, high = r["epoch_seconds_interval"]  # six rounds: the extremes
            assert low == pytest.approx(min(r["seconds"]) * 60000 / 256)
            assert high == pytest.approx(max(r["seconds"]) * 60000 / 256)
            assert low <= r["epoch_seconds"] <= high
        assert contenders["gpunet-numpy-auto"]["path"] == shape["auto_path"] == "plain"  # auto on NumPy
        fastest = min(timed, key=lambda n: timed[n]["epoch_seconds"])
        assert shape["fastest"] == fastest and shape["auto_fastest"] == (fastest == "gpunet-numpy-auto")
        assert shape["auto_fastest_gpunet"] is True and shape["auto_clearly_slower"] == []  # its only path
        line = next(x for x in out.stdout.splitlines() if x.split()[:2] == [str(shape["batch"]), str(shape["hidden"])])
        assert line.split()[2] == "plain" and line.split()[4] == fastest


def test_the_verdict_compares_auto_with_gpunets_other_paths():
    verdict = load_script("shape_table").verdict

    def timed(median, low, high, path=None):
        r = {"epoch_seconds": median, "epoch_seconds_interval": [low, high]}
        return {**r, "path": path} if path else r

    entry = {"contenders": {
        "gpunet-auto": timed(0.030, 0.029, 0.031, "graph"), "gpunet-cupy": timed(0.2, 0.19, 0.21),
        "gpunet-cupy-fused": timed(0.020, 0.019, 0.021), "gpunet-cupy-graph": timed(0.0305, 0.029, 0.032),
        "torch-cuda-graph": timed(0.025, 0.02, 0.03), "jax-scan": {"skipped": "JAX sees no GPU"}}}
    assert verdict(entry, "gpunet-auto") == {
        "auto_path": "graph", "fastest": "gpunet-cupy-fused", "auto_fastest": False, "auto_fastest_gpunet": False,
        "auto_clearly_slower": ["fused"]}  # fused's interval lies wholly below auto's run's
    entry["contenders"]["gpunet-cupy-fused"] = timed(0.0301, 0.028, 0.033)  # a near tie: no sure loss
    # auto's own run (0.030) stands for its path, not the forced graph run's 0.0305
    assert verdict(entry, "gpunet-auto") == {
        "auto_path": "graph", "fastest": "torch-cuda-graph", "auto_fastest": False, "auto_fastest_gpunet": True,
        "auto_clearly_slower": []}
    entry["contenders"]["gpunet-auto"] = {"skipped": "cupy is not installed"}
    assert verdict(entry, "gpunet-auto")["auto_path"] is None


@pytest.mark.skipif(cupy_unavailable_reason() is None, reason="a GPU is usable here: the full table would run")
def test_the_full_table_needs_a_gpu_and_says_so_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--json", str(tmp_path / "s.json")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("shape_table.py: error: the full table needs a GPU (") and "--quick" in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--quick", "--repeats", "0"], "--repeats must be >= 1; got 0"),
    (["--quick", "--fraction", "0"], "--fraction must be in (0, 1]; got 0.0"),
    (["--quick", "--json", "{tmp}/no/s.json"], "folder '{tmp}/no' does not exist"),
])
def test_bad_arguments_fail_in_one_line(tmp_path, args, message):
    json_args = [] if "--json" in args else ["--json", str(tmp_path / "s.json")]
    out = subprocess.run([sys.executable, str(SCRIPT), *json_args, *(a.format(tmp=tmp_path) for a in args)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message.format(tmp=tmp_path) in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_gpu_contenders_are_autos_and_every_path_and_peer():
    table = load_script("shape_table")
    assert list(table.gpu_contenders(False)) == ["gpunet-auto", "gpunet-cupy", "gpunet-cupy-fused",
                                                 "gpunet-cupy-graph", "torch-cuda", "torch-cuda-graph", "jax-jit",
                                                 "jax-scan"]
    assert "torch-compile" in table.gpu_contenders(True)
    assert np.prod([len(table.BATCHES), len(table.HIDDEN)]) == 18
