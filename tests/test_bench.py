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
            if name != "gpunet-numpy":  # the spread over the two rounds, each round's ratio of its own two runs
                rounds = sorted(c / b for b, c in zip(contenders["gpunet-numpy"]["seconds"], r["seconds"]))
                assert r["gpunet_numpy_speedup_range"] == pytest.approx([rounds[0], rounds[-1]])
                assert r["ranked"] is not (rounds[0] <= 1 <= rounds[-1])
                low, high = r["gpunet_numpy_speedup_range"]
                assert f"{r['gpunet_numpy_speedup']:.2f}x ({low:.2f}-{high:.2f})" in out.stdout
    memory = doc["memory"]
    assert memory["ratio_rss"] == pytest.approx(
        memory["peak_rss_growth_bytes"] / (memory["data_float32_bytes"] + memory["params_bytes"]))


def test_bench_rejects_unknown_contenders(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gpunet", "bench", "--only", "tensorflow"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "'tensorflow'" in out.stderr
    assert list(tmp_path.iterdir()) == []


def _results(seconds: dict[str, list[float]], rows: int = 1000) -> dict:
    """A CPU benchmark's results with one case timed as ``seconds`` says, its figures from the harness."""
    from gpunet.bench.harness import add_speedups, figures

    entry = {"case": "per-sample 784-100-10", "sizes": [784, 100, 10], "batch": 1, "dtype": "float32", "rows": rows,
             "flops_per_sample": 100, "ceiling_gflops": {"cpu": 10.0},
             "contenders": {name: figures(t, rows, 100, 10.0) for name, t in seconds.items()}}
    entry["contenders"]["torch-cuda"] = {"skipped": "PyTorch sees no CUDA device"}
    add_speedups(entry)
    memory = {"dataset": "digits", "rows": 1797, "data_float32_bytes": 450_000, "params_bytes": 74_288,
              "peak_rss_growth_bytes": 100 * 2**20, "peak_traced_bytes": 20 * 2**20, "ratio_rss": 200.0,
              "ratio_traced": 40.0}
    return {"machine": {}, "quick": True, "repeats": len(seconds["gpunet-numpy"]), "lr": 0.1,
            "ceilings_gflops": {"cpu": 10.0}, "cases": [entry], "memory": memory}


def test_each_ratio_shows_its_spread_and_says_when_it_cannot_rank():
    from gpunet.bench import format_results

    # rounds of gpunet-numpy 1, 2, 1 s: torch-cpu took 2, 3, 4 s (ratios 2, 1.5, 4: slower every round),
    # sklearn 0.5, 3, 1.2 s (ratios 0.5, 1.5, 1.2: faster in one round, slower in two)
    results = _results({"gpunet-numpy": [1.0, 2.0, 1.0], "torch-cpu": [2.0, 3.0, 4.0], "sklearn": [0.5, 3.0, 1.2]})
    contenders = results["cases"][0]["contenders"]
    assert contenders["torch-cpu"]["gpunet_numpy_speedup"] == pytest.approx(3.0)  # medians: 3 s / 1 s
    assert contenders["torch-cpu"]["gpunet_numpy_speedup_range"] == pytest.approx([1.5, 4.0])
    assert contenders["torch-cpu"]["ranked"] is True and contenders["sklearn"]["ranked"] is False
    assert "ranked" not in contenders["gpunet-numpy"]
    lines = format_results(results).splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("per-sample"))) + 1:]
    assert table[0].endswith("gpunet-numpy is (lowest-highest round)")
    assert table[1].startswith("  gpunet-numpy ") and table[1].endswith("  -")
    assert table[2].startswith("  torch-cpu ") and table[2].endswith("  3.00x (1.50-4.00)")
    assert table[3].startswith("  sklearn ") and table[3].endswith("  1.20x (0.50-1.50) unranked")
    assert table[4] == "  torch-cuda         skipped: PyTorch sees no CUDA device"
    assert table[5] == ("  unranked: some rounds found gpunet-numpy faster than sklearn and others slower; the "
                        "spread is too wide to rank them (try more --repeats)")


def test_the_memory_line_says_what_each_ratio_compares_in_mib():
    from gpunet.bench import format_results

    text = format_results(_results({"gpunet-numpy": [1.0]}))
    # 524,288 bytes of images and parameters: 0.50 MiB, not "0 MiB"
    assert text.splitlines()[-1] == (
        "memory, one epoch on digits (1797 images): the images in float32 and the parameters take 0.50 MiB; the "
        "peak resident size grew by 100 MiB (200.0x that), Python's traced peak was 20.0 MiB (40.0x that)")


def test_bench_writes_json_only_where_asked_and_replaces_it_only_when_forced(tmp_path, monkeypatch, capsys):
    import gpunet.bench
    from gpunet.cli import main

    monkeypatch.chdir(tmp_path)
    calls = []

    def run_benchmark(quick, repeats, only, on_result):
        calls.append((quick, repeats))
        return _results({"gpunet-numpy": [1.0, 1.0, 1.0], "torch-cpu": [2.0, 2.5, 3.0]})

    monkeypatch.setattr(gpunet.bench, "run_benchmark", run_benchmark)
    assert main(["bench", "--quick"]) == 0
    assert calls == [(True, 3)] and list(tmp_path.iterdir()) == []  # nothing written unasked
    assert "torch-cpu" in capsys.readouterr().out
    assert main(["bench", "--json", "b.json"]) == 0
    assert calls[-1] == (False, 5) and json.loads((tmp_path / "b.json").read_text())["cases"][0]["rows"] == 1000
    assert capsys.readouterr().out.endswith("wrote b.json\n")
    (tmp_path / "b.json").write_text("{}")
    assert main(["bench", "--quick", "--json", "b.json"]) == 2
    assert capsys.readouterr().err == "gpunet bench: error: b.json already exists; use --force to replace it\n"
    assert len(calls) == 2 and (tmp_path / "b.json").read_text() == "{}"  # refused before benchmarking
    assert main(["bench", "--quick", "--json", "b.json", "--force"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["repeats"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]
    assert main(["bench", "--json", "nowhere/b.json"]) == 2
    assert capsys.readouterr().err == "gpunet bench: error: nowhere: no such folder\n" and len(calls) == 3


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
