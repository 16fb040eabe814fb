"""scripts/per_sample_profile.py, graph_profile.py and graph_vs_fused.py: their timing and records here; their
figures on a GPU (marker gpu)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import SCRIPTS, load_script, require
from gpunet.backend import cupy_unavailable_reason
from gpunet.bench import harness

profile = load_script("per_sample_profile")
graph_profile = load_script("graph_profile")
graph_vs_fused = load_script("graph_vs_fused")
gpu_check = load_script("gpu_check")
SCRIPT_NAMES = ("per_sample_profile", "graph_profile", "graph_vs_fused")


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / f"{script}.py"), *args], capture_output=True, text=True,
                          timeout=120)


def test_per_call_us_counts_each_call_and_splits_the_host_from_the_device(monkeypatch):
    """On a fake clock: each call costs the host 2 ms, and the closing synchronisation 20 ms more."""
    now = [0.0]
    calls = []
    monkeypatch.setattr(harness.time, "perf_counter", lambda: now[0])

    class Backend:  # the device "finishes" its queued work at the synchronisation
        def synchronize(self):
            now[0] += 0.020

    def call():
        calls.append(1)
        now[0] += 0.002

    device_us, host_us = harness.per_call_us(Backend(), call, repeats=5)
    assert len(calls) == 1 + 3 * 5  # a warm-up call, then three rounds
    assert host_us == pytest.approx(2000)
    assert device_us == pytest.approx(2000 + 20000 / 5)  # the sync's wait, shared by the round's 5 calls


def test_case_record_scales_the_chunk_to_an_epoch():
    figures = {"kernel": 250.04, "first_layer": 30.0, "update": 20.0, "chunk": 320.0, "host": 150.0,
               "epochs": 256.0, "epochs_host": 40.0}
    record = profile.case_record((784, 100, 10), "float32", 64, figures)
    assert record == {"sizes": [784, 100, 10], "dtype": "float32", "rows_per_chunk": 64, "kernel_us": 250.0,
                      "first_layer_us": 30.0, "update_us": 20.0, "chunk_us": 320.0, "host_us": 150.0,
                      "epochs_us": 256.0, "epochs_host_us": 40.0,
                      "epoch_s": 0.3, "epochs_epoch_s": 0.24}  # 937.5 chunks of 320 us, and of 256 us
    assert profile.case_record((784, 100, 10), "float32", 256, figures)["epoch_s"] == 0.075
    line = profile.format_table([record]).splitlines()[1]
    assert line.split() == ["784-100-10", "float32", "64", "250.0", "30.0", "20.0", "320.0", "150.0", "256.0",
                            "40.0", "0.300", "0.240"]


def test_graph_case_record_sums_the_launches_and_divides_the_epoch_into_steps():
    launches = [("gather_rows<float>", (784,), 2.004), ("forward<float, 0>", (7, 4), 30.0)]
    record = graph_profile.case_record((784, 100, 10), 64, launches, 0.0586, 938)
    assert record == {"sizes": [784, 100, 10], "batch": 64,
                      "launches": [{"kernel": "gather_rows<float>", "grid": [784], "us": 2.0},
                                   {"kernel": "forward<float, 0>", "grid": [7, 4], "us": 30.0}],
                      "launches_us": 32.0, "replayed_us": 62.47, "epoch_s": 0.0586}
    lines = graph_profile.format_table([record]).splitlines()
    assert lines[0] == "784-100-10 at batch 64: launches 32.0 us, replayed step 62.5 us, epoch 0.0586 s"
    assert lines[2].split() == ["30.00", "us", "forward<float,", "0>", "grid", "(7,", "4)"]
    assert gpu_check.graph_summary([record]) == ("784-100-10 at batch 64: launches 32 us, replayed step 62 us; "
                                                 "epoch 0.0586 s")


def test_graph_vs_fused_records_the_speedup_and_the_check_sums_it_up_by_network():
    cases = [graph_vs_fused.case_record((784, 100, 10), 64, {"fused": 0.315, "graph": 0.0586}),
             graph_vs_fused.case_record((784, 100, 10), 1024, {"fused": 0.05, "graph": 0.1}),
             graph_vs_fused.case_record((784, 1024, 10), 1024, {"fused": 0.0275, "graph": 0.0427}),
             graph_vs_fused.case_record((784, 100, 10), 64, {"fused": 0.3, "graph": 0.04}, "adam")]
    assert cases[0] == {"sizes": [784, 100, 10], "batch": 64, "optimizer": "sgd", "fused_epoch_s": 0.315,
                        "graph_epoch_s": 0.0586, "graph_speedup": 5.375}
    assert [c["graph_speedup"] for c in cases[1:]] == [0.5, 0.644, 7.5]
    assert graph_vs_fused.format_table(cases).splitlines()[3].split() == [
        "784-1024-10", "1024", "sgd", "0.0275", "0.0427", "0.64x"]
    assert gpu_check.graph_speedups(cases) == ("graph over fused, by batch: 784-100-10: 64 5.38x, 1024 0.50x, "
                                               "64 adam 7.50x; 784-1024-10: 1024 0.64x")
    assert len(graph_vs_fused.CASES) == 9 and {b for _, b in graph_vs_fused.CASES} == {64, 128, 256, 512, 1024}
    assert graph_vs_fused.LR == {"sgd": 0.1, "adam": 0.001} and len(graph_vs_fused.ADAM_CASES) == 2


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_bad_arguments_are_one_line_and_nothing_is_overwritten(tmp_path, script):
    kept = tmp_path / "kept.json"
    kept.write_text("mine")
    for args, message in [(("--repeats", "0"), "--repeats must be at least 1; got 0"),
                          (("--json", str(kept)), f"--json: {kept} already exists; choose another --json"),
                          (("--json", str(tmp_path / "no" / "p.json")), "no such folder")]:
        out = run(script, *args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert kept.read_text() == "mine"


@pytest.mark.skipif(cupy_unavailable_reason() is None, reason="a GPU is usable here")
@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_without_a_gpu_it_says_why_in_one_line(tmp_path, script):
    out = run(script, "--json", str(tmp_path / "p.json"))
    assert out.returncode == 1 and out.stderr == f"no usable GPU: {cupy_unavailable_reason()}\n"
    assert not (tmp_path / "p.json").exists()


@pytest.mark.gpu
def test_per_sample_figures_on_a_gpu():
    backend = require("cupy")
    record = profile.profile_case(backend, (784, 100, 10), "float32", 64, repeats=3)
    assert all(record[f"{f}_us"] > 0 for f in profile.FIGURES)
    assert record["chunk_us"] >= record["kernel_us"]  # the chunk's calls include the launch
    assert record["epoch_s"] == pytest.approx(record["chunk_us"] * 1e-6 * 60000 / 64, rel=1e-3)
    assert record["epochs_epoch_s"] == pytest.approx(record["epochs_us"] * 1e-6 * 60000 / 64, rel=1e-3)


@pytest.mark.gpu
def test_graph_figures_on_a_gpu():
    backend = require("cupy")
    record = graph_profile.profile_case(backend, (784, 100, 10), 64, repeats=3)
    kernels = [launch["kernel"].split("<")[0] for launch in record["launches"]]
    assert kernels == ["gather_rows", "forward", "forward_output", "backward",
                       "weight_grads"]  # GraphTrainer._step's order (the epoch's loss total comes after its steps)
    assert all(launch["us"] > 0 for launch in record["launches"])
    assert record["replayed_us"] == pytest.approx(record["epoch_s"] * 1e6 / 938, rel=1e-2)  # 937 full + 1 partial


@pytest.mark.gpu
def test_graph_vs_fused_figures_on_a_gpu():
    backend = require("cupy")
    rng = np.random.default_rng(0)
    X = backend.to_device(rng.uniform(0.01, 1.0, (2000, 784)), np.float32)
    y = rng.integers(0, 10, 2000)
    for optimizer in ("sgd", "adam"):
        seconds = {p: graph_vs_fused.epoch_seconds(backend, (784, 100, 10), 64, p, X, y, 2, optimizer)
                   for p in graph_vs_fused.PATHS}
        assert all(0 < s < 60 for s in seconds.values())  # scaled to 60,000 rows
        assert graph_vs_fused.case_record((784, 100, 10), 64, seconds, optimizer)["graph_speedup"] > 0
