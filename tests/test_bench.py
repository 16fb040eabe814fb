"""gpunet bench --quick: the JSON has the documented shape and its figures agree with each other (no times asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import SCRIPTS, load_script

SCRIPT = SCRIPTS / "benchmark.py"


def test_quick_benchmark_json_shape(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--repeats", "2", "--json", str(tmp_path / "b.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    assert {"platform", "cpus", "python", "numpy"} <= set(doc["machine"])
    assert doc["quick"] is True and doc["repeats"] == 2 and doc["ceilings_gflops"]["cpu"] > 0
    names = [c["case"] for c in doc["cases"]]
    assert names == ["per-sample 784-100-10", "per-sample 784-100-10 float64", "batch 64 784-100-10",
                     "batch 128 784-100-10", "batch 1024 784-1024-10"]
    ceilings = sorted(case["ceiling_gflops"]["cpu"] for case in doc["cases"])
    assert ceilings[0] > 0 and doc["ceilings_gflops"]["cpu"] == pytest.approx(ceilings[len(ceilings) // 2])
    for case in doc["cases"]:
        assert case["case"] in out.stdout
        n_in, h, n_out = case["sizes"]
        assert case["flops_per_sample"] == 4 * n_in * h + 6 * h * n_out
        contenders = case["contenders"]
        assert "gpunet-numpy" in contenders and "gpunet-cupy" in contenders
        assert ("textbook" in contenders) == (case["batch"] == 1)
        base = contenders["gpunet-numpy"]["samples_per_s"]
        for name, r in contenders.items():
            if "skipped" in r:
                assert r["skipped"] and name not in ("gpunet-numpy", "textbook")
                assert f"{name:<18} skipped: {r['skipped']}" in out.stdout
                continue
            assert len(r["seconds"]) == 2 and min(r["seconds"]) <= r["seconds_median"] <= max(r["seconds"])
            assert r["samples_per_s"] == pytest.approx(case["rows"] / r["seconds_median"])
            assert r["gflops"] == pytest.approx(r["samples_per_s"] * case["flops_per_sample"] / 1e9)
            ceiling = case["ceiling_gflops"]["gpu" if "cuda" in name or "cupy" in name else "cpu"]
            assert r["share_of_ceiling"] == pytest.approx(r["gflops"] / ceiling)
            assert r["gpunet_numpy_speedup"] == pytest.approx(base / r["samples_per_s"])
    memory = doc["memory"]
    assert memory["ratio_rss"] == pytest.approx(
        memory["peak_rss_growth_bytes"] / (memory["data_float32_bytes"] + memory["params_bytes"]))


def test_bench_rejects_unknown_contenders(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gpunet", "bench", "--only", "tensorflow"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "'tensorflow'" in out.stderr
    assert list(tmp_path.iterdir()) == []


# --- the GPU benchmark (scripts/benchmark.py --gpu) --------------------------------------------

def test_gpu_benchmark_json_shape(tmp_path):
    """A sliver of an epoch per case: without a GPU only gpunet-numpy runs, the rest say why they were skipped."""
    from gpunet.backend import cupy_unavailable_reason
    from gpunet.bench import EPOCH_ROWS, gpu_cases

    out = subprocess.run([sys.executable, str(SCRIPT), "--gpu", "--quick", "--fraction", "0.005", "--repeats", "2",
                          "--json", str(tmp_path / "g.json")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "g.json").read_text())
    no_gpu = cupy_unavailable_reason()
    assert doc["machine"]["gpu"] == (f"none: {no_gpu}" if no_gpu else doc["machine"]["gpu"])
    assert doc["data"] == "random" and doc["fraction"] == 0.005 and doc["epoch_rows"] == EPOCH_ROWS == 60000
    assert [c["case"] for c in doc["cases"]] == [c.name for c in gpu_cases()] == [
        "per-sample 784-100-10", "per-sample 784-100-10 float64", "per-sample 784-200-10",
        "per-sample 784-200-10 float64", "batch 64 784-100-10", "batch 128 784-100-10", "batch 1024 784-1024-10"]
    for case in doc["cases"]:
        contenders = case["contenders"]
        expected = (["gpunet-cupy-graph", "gpunet-cupy-kernel", "gpunet-cupy", "torch-cuda", "gpunet-numpy"]
                    if case["batch"] == 1 else
                    ["gpunet-cupy", "gpunet-cupy-fused", "gpunet-cupy-graph", "torch-cuda", "torch-cuda-graph",
                     "torch-compile", "jax-jit", "jax-scan", "gpunet-numpy"])
        if case["batch"] > 64:  # torch.compile compiles anew in each case: batch 64 only
            expected.remove("torch-compile")
        assert list(contenders) == expected
        assert contenders.get("torch-compile", {"skipped": "not run with --quick"})["skipped"].startswith(
            "not run with --quick")
        assert case["rows"] == 300 and contenders["gpunet-numpy"]["rows"] == (10 if case["batch"] == 1 else 75)
        for name, r in contenders.items():
            if "skipped" in r:
                assert r["skipped"] and name != "gpunet-numpy" and f"{name:<24} skipped: {r['skipped']}" in out.stdout
                continue
            assert len(r["seconds"]) == 2 and min(r["seconds"]) <= r["seconds_median"] <= max(r["seconds"])
            assert r["samples_per_s"] == pytest.approx(r["rows"] / r["seconds_median"])
            assert r["epoch_seconds"] == pytest.approx(60000 / r["samples_per_s"])
            assert r["gflops"] == pytest.approx(r["samples_per_s"] * case["flops_per_sample"] / 1e9)
        if no_gpu:
            assert all("skipped" in r for n, r in contenders.items() if n != "gpunet-numpy")
    assert len(doc["targets"]) == len(load_script("benchmark").TARGETS)
    if no_gpu:
        assert {t["status"] for t in doc["targets"]} == {f"not measured: {no_gpu}"}
    assert "targets (issues 12 and 13):" in out.stdout


def test_gpu_benchmark_rejects_bad_arguments(tmp_path):
    for args, message in [(["--only", "tensorflow"], "unknown contender 'tensorflow'"),
                          (["--fraction", "2"], "--fraction must be in (0, 1]; got 2.0"),
                          (["--mnist-dir", str(tmp_path)], "holds no train-images-idx3-ubyte"),
                          (["--json", str(tmp_path / "no/such/g.json")], "does not exist")]:
        json_args = [] if "--json" in args else ["--json", str(tmp_path / "g.json")]
        out = subprocess.run([sys.executable, str(SCRIPT), "--gpu", *json_args, *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_gpu_targets_are_met_not_met_or_not_measured():
    """The issues' targets live in scripts/benchmark.py, which judges the library's measurements against them."""
    gpu_targets = load_script("benchmark").evaluate_targets

    def timed(rate):
        return {"samples_per_s": rate, "epoch_seconds": 60000 / rate}

    results = {"cases": [
        {"case": "batch 64 784-100-10", "contenders": {
            "gpunet-cupy": timed(1e6), "gpunet-cupy-graph": timed(3e6), "gpunet-cupy-fused": {"skipped": "x"},
            "torch-cuda": timed(5e5), "torch-cuda-graph": timed(2e6), "jax-scan": {"skipped": "JAX sees no GPU"}}},
        {"case": "per-sample 784-100-10", "contenders": {
            "gpunet-cupy-kernel": timed(250000), "torch-cuda": timed(10000), "gpunet-numpy": timed(40000)}},
    ]}
    targets = gpu_targets(results)
    status = [(t["case"].split()[0], t["versus"], t["status"], t.get("gpunet")) for t in targets]
    assert status == [
        ("batch", "torch-cuda", "met", "gpunet-cupy-graph"),  # 6x >= 5x: the fastest gpunet path counts
        ("batch", "torch-cuda-graph", "met", "gpunet-cupy-graph"),  # 1.5x
        ("batch", "jax-scan", "not measured: JAX sees no GPU", None),
        ("batch", "torch-cuda", "not measured: gpunet-cupy-graph was not run in case 'batch 1024 784-1024-10'",
         None),
        ("per-sample", None, "met", "gpunet-cupy-kernel"),  # 0.24 s <= 0.3 s
        ("per-sample", "torch-cuda", "met", "gpunet-cupy-kernel"),  # 25x
        ("per-sample", "gpunet-numpy", "met", "gpunet-cupy-kernel"),  # 6.25x
    ]
    assert targets[0]["ratio"] == pytest.approx(6.0) and targets[4]["epoch_seconds"] == pytest.approx(0.24)
    results["cases"][1]["contenders"]["gpunet-cupy-kernel"] = timed(150000)
    after = gpu_targets(results)
    assert [t["status"] for t in after[4:]] == ["not met"] * 3  # 0.4 s > 0.3 s, 15x < 20x, 3.75x < 5x


def _peer_against_gpunet(make, batch: int) -> None:
    """One run of a peer contender's builder trains the same network, rows and order as gpunet.train."""
    from gpunet.bench import Case
    from gpunet.bench.contenders import gpunet_contender
    from gpunet.initializers import init_params

    from conftest import rel_diff

    case = Case("t", (20, 8, 10), batch, 100)  # 100 rows: a partial last batch at 16
    rng = np.random.default_rng(3)
    X, labels = rng.uniform(0.01, 1.0, (100, 20)), rng.integers(0, 10, 100)
    params = init_params([20, 8, 10], "article", 0)
    want = gpunet_contender("numpy")(case, X, labels, params)
    got = make(case, X, labels, params)
    assert want() is None and got() is None  # timed by the caller's clock
    w, g = want.params(), got.params()
    assert rel_diff(w["W2"], params["W2"]) > 0.1  # it really trained
    for k in w:
        assert rel_diff(g[k], w[k]) <= 1e-5, k  # float32


@pytest.mark.parametrize("batch", [16, 1])
@pytest.mark.parametrize("scan", [False, True], ids=["jax-jit", "jax-scan"])
def test_jax_contenders_train_what_gpunet_trains(scan, batch):
    pytest.importorskip("jax", reason="JAX is not installed (the bench extra; CI installs it)")
    from gpunet.bench.peers import jax_contender

    _peer_against_gpunet(jax_contender(scan, "cpu"), batch)


@pytest.mark.parametrize("batch", [16, 1])
def test_torch_contender_trains_what_gpunet_trains(batch):
    pytest.importorskip("torch", reason="PyTorch is not installed (the bench extra)")
    from gpunet.bench.peers import torch_contender

    _peer_against_gpunet(torch_contender("cpu", False), batch)


def test_a_contender_that_raises_is_recorded_and_the_others_go_on():
    from gpunet.bench.harness import time_rounds

    calls = []

    def bad():
        calls.append("bad")
        if len(calls) > 1:
            raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")

    failed = {}
    times = time_rounds({"good": lambda: 0.25, "bad": bad}, repeats=3, settle=0, failed=failed)
    assert times == {"good": [0.25] * 3}  # a run that returns seconds has timed itself
    assert failed == {"bad": "RuntimeError: CUDA error: an illegal memory access was encountered"}
    with pytest.raises(RuntimeError):  # the CPU benchmark keeps failing loudly
        time_rounds({"bad": bad}, repeats=1, settle=0)


# --- scripts/mnist_fast.py ---------------------------------------------------------------------

FAST = SCRIPT.parent / "mnist_fast.py"


def test_mnist_fast_trains_and_reports_its_figures():
    """The script's training function on a small MNIST-shaped split (NumPy; the real figures need MNIST)."""
    from gpunet.datasets import Split

    fast = load_script("mnist_fast")
    rng = np.random.default_rng(0)
    centres = rng.random((10, 784))  # ten separable classes
    y = rng.integers(0, 10, 400)
    X = (centres[y] + 0.1 * rng.random((400, 784))).astype(np.float32)
    r = fast.train_fast(Split(X[:300], y[:300], X[300:], y[300:]), "numpy", epochs=2)
    assert (r["backend"], r["kernels"], r["config"]["sizes"]) == ("numpy", "plain", [784, 2048, 10])
    assert [e["epoch"] for e in r["epochs"]] == [1, 2] and r["train"]["epochs"] == 2
    assert r["train_seconds"] == pytest.approx(sum(e["seconds"] for e in r["epochs"]))
    assert 0 < r["train_seconds"] <= r["wall_seconds"]
    assert r["test_accuracy"] == r["epochs"][-1]["test_accuracy"] >= 0.9


def test_mnist_fast_rejects_bad_arguments(tmp_path):
    for args, message, status in [([], "the following arguments are required: --mnist-dir", 2),
                                  (["--mnist-dir", str(tmp_path), "--epochs", "0"], "--epochs must be >= 1", 2),
                                  (["--mnist-dir", str(tmp_path / "none")], "none: no such folder", 2)]:
        out = subprocess.run([sys.executable, str(FAST), *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == status and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
        assert out.stderr.startswith("mnist_fast.py: error: ")
    assert list(tmp_path.iterdir()) == []
