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
                         capture_output=True, text=True, timeout=600, check=False)
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
                         capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
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
    assert calls[-1] == (False, 10) and json.loads((tmp_path / "b.json").read_text())["cases"][0]["rows"] == 1000
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
                          "--json", str(tmp_path / "g.json")], capture_output=True, text=True, timeout=600, check=False)
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
        expected = (["gpunet-cupy-graph", "gpunet-cupy-kernel", "gpunet-cupy", "torch-cuda", "torch-cuda-graph",
                     "jax-scan", "gpunet-numpy"] if case["batch"] == 1 else
                    ["gpunet-cupy", "gpunet-cupy-fused", "gpunet-cupy-graph", "torch-cuda", "torch-cuda-graph",
                     "torch-compile", "jax-jit", "jax-scan", "gpunet-numpy"])
        if case["batch"] > 64:  # torch.compile compiles anew in each case: batch 64 only
            expected.remove("torch-compile")
        if case["dtype"] == "float64":  # JAX runs float32 only
            expected.remove("jax-scan")
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
    assert "targets (issues 12, 13 and 46; met only where the 95% interval of the median clears the target):" in (
        out.stdout)
    assert doc["clocks"] == ({"cpu": "perf_counter"} if no_gpu else {"cpu": "perf_counter", "gpu": "cuda-events"})
    numpy_run = doc["cases"][0]["contenders"]["gpunet-numpy"]
    assert numpy_run["path"] == "plain" and numpy_run["epoch_seconds_interval"] is None  # 2 rounds: no interval


def test_gpu_benchmark_runs_the_cases_asked_for(tmp_path):
    """--cases targets: the cases the targets name; ten rounds give each figure its interval."""
    bench = load_script("benchmark")
    out = subprocess.run([sys.executable, str(SCRIPT), "--gpu", "--quick", "--fraction", "0.001", "--repeats", "6",
                          "--only", "gpunet-numpy", "--cases", "targets", "--json", str(tmp_path / "g.json")],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "g.json").read_text())
    assert set(bench.TARGET_CASES) == {"batch 64 784-100-10", "batch 1024 784-1024-10", "per-sample 784-100-10"}
    assert [c["case"] for c in doc["cases"]] == [  # in gpu_cases' order: the per-sample case first
        "per-sample 784-100-10", "batch 64 784-100-10", "batch 1024 784-1024-10"]
    for case in doc["cases"]:
        r = case["contenders"]["gpunet-numpy"]
        low, high = r["epoch_seconds_interval"]  # six rounds: the extremes, a 96.9% interval
        assert low == pytest.approx(min(r["seconds"]) * 60000 / r["rows"])
        assert high == pytest.approx(max(r["seconds"]) * 60000 / r["rows"])


def test_gpu_benchmark_rejects_bad_arguments(tmp_path):
    for args, message in [(["--only", "tensorflow"], "unknown contender 'tensorflow'"),
                          (["--fraction", "2"], "--fraction must be in (0, 1]; got 2.0"),
                          (["--cases", "batch 7"], "unknown case 'batch 7'; expected some of per-sample 784-100-10,"),
                          (["--mnist-dir", str(tmp_path)], "holds no train-images-idx3-ubyte"),
                          (["--json", str(tmp_path / "no/such/g.json")], "does not exist")]:
        json_args = [] if "--json" in args else ["--json", str(tmp_path / "g.json")]
        out = subprocess.run([sys.executable, str(SCRIPT), "--gpu", *json_args, *args],
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_gpu_targets_are_judged_by_the_interval_of_the_median():
    """The issues' targets live in scripts/benchmark.py, which judges the library's measurements against them:
    a ratio from the rounds' paired ratios, met only where the interval's low end clears it."""
    gpu_targets = load_script("benchmark").evaluate_targets

    def timed(seconds, rows=60000):  # ten rounds of one contender
        return {"rows": rows, "seconds": list(seconds), "samples_per_s": rows / float(np.median(seconds))}

    base = np.linspace(0.010, 0.019, 10)  # gpunet-cupy-graph's ten epochs
    results = {"cases": [
        {"case": "batch 64 784-100-10", "contenders": {
            "gpunet-cupy": timed(base * 4), "gpunet-cupy-graph": timed(base), "gpunet-cupy-fused": {"skipped": "x"},
            "torch-cuda": timed(base * 6),  # 6x every round: met
            "torch-cuda-graph": timed(base * np.array([1.5, 2.5] * 5)),  # ratios 1.5 and 2.5: the interval holds 2
            "jax-scan": {"skipped": "JAX sees no GPU"}}},
        {"case": "per-sample 784-100-10", "contenders": {
            "gpunet-cupy-kernel": timed(np.full(10, 0.12)), "jax-scan": timed(np.full(10, 0.3)),  # 2.5x: not met
            "torch-cuda": timed(np.full(10, 0.05), rows=1000),  # 3 s an epoch: 25x
            "gpunet-numpy": timed(np.full(10, 0.012), rows=1000)}},  # 0.72 s an epoch: 6x
    ]}
    targets = gpu_targets(results)
    status = [(t["issue"], t["case"].split()[0], t["versus"], t["status"], t.get("gpunet")) for t in targets]
    assert status == [
        (12, "batch", "torch-cuda", "met", "gpunet-cupy-graph"),  # the fastest gpunet path counts
        (46, "batch", "torch-cuda-graph", "unclear", "gpunet-cupy-graph"),
        (46, "batch", "jax-scan", "not measured: JAX sees no GPU", None),
        (12, "batch", "torch-cuda", "not measured: gpunet-cupy-graph was not run in case 'batch 1024 784-1024-10'",
         None),
        (46, "batch", "jax-scan", "not measured: gpunet-cupy-graph was not run in case 'batch 1024 784-1024-10'",
         None),
        (46, "per-sample", None, "met", "gpunet-cupy-kernel"),  # 0.12 s <= 0.15 s
        (46, "per-sample", "jax-scan", "not met", "gpunet-cupy-kernel"),  # 2.5x < 3x
        (13, "per-sample", "torch-cuda", "met", "gpunet-cupy-kernel"),  # 25x
        (13, "per-sample", "gpunet-numpy", "met", "gpunet-cupy-kernel"),  # 6x
    ]
    assert targets[0]["ratio"] == pytest.approx(6.0) and targets[0]["ratio_interval"] == pytest.approx([6.0, 6.0])
    assert targets[1]["ratio_interval"] == pytest.approx([1.5, 2.5]) and targets[1]["ratio"] == pytest.approx(2.0)
    assert targets[5]["epoch_seconds"] == pytest.approx(0.12) and targets[7]["ratio"] == pytest.approx(25.0)
    results["cases"][1]["contenders"]["gpunet-cupy-kernel"] = timed(np.full(5, 0.12))
    after = gpu_targets(results)
    assert after[5]["status"] == "too few samples (5) for a 95% interval" and after[5]["epoch_seconds_interval"] is None
    text = load_script("benchmark").format_targets(targets)
    assert "  batch 64 784-100-10: >= 2x torch-cuda-graph: unclear (gpunet-cupy-graph: 2.00x [1.50, 2.50])" in text
    assert "  per-sample 784-100-10: epoch <= 0.15 s: met (gpunet-cupy-kernel: 0.120 s [0.120, 0.120])" in text


# --- the median's interval and the rule for a target ------------------------------------------------

def test_median_interval_is_the_order_statistic_interval():
    from gpunet.bench import median_interval

    xs = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0, 10.0]
    assert median_interval(xs) == (5.5, 2.0, 9.0)  # n = 10: [x(2), x(9)], covering 1 - 2 * 11/1024 = 97.9%
    assert median_interval(list(range(20)))[1:] == (5, 14)  # n = 20: [x(6), x(15)], 95.9% (x(7): 88.5%)
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0, 6.0])[1:] == (1.0, 6.0)  # n = 6: the extremes, 96.9%
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, None, None)  # n = 5: at most 93.75%
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0], level=0.9)[1:] == (1.0, 5.0)
    with pytest.raises(ValueError, match="at least one sample"):
        median_interval([])
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\); got 1.5"):
        median_interval([1.0], level=1.5)


def test_median_interval_covers_the_median_as_often_as_it_says():
    """Over 4000 draws of 10 samples from a skewed distribution of known median, the interval holds the median
    about 97.9% of the time (binomial sd 0.23%)."""
    from gpunet.bench import median_interval

    rng = np.random.default_rng(0)
    true_median = np.log(2)  # the exponential distribution's
    hits = [low <= true_median <= high
            for low, high in (median_interval(rng.exponential(size=10))[1:] for _ in range(4000))]
    assert 0.97 <= np.mean(hits) <= 0.99


@pytest.mark.parametrize("samples, need, at_least, status", [
    ([2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0], 2.0, True, "met"),  # low end 2.2 >= 2
    ([1.9, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0], 2.2, True, "met"),  # low end x(2) = 2.2, just there
    ([1.9, 2.1, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0], 2.2, True, "unclear"),  # median 2.55 clears it, x(2) not
    ([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 2.5], 2.0, True, "not met"),  # high end x(9) = 1.8 < 2
    ([0.10, 0.11, 0.12, 0.13, 0.14, 0.14, 0.14, 0.14, 0.14, 0.30], 0.15, False, "met"),  # high end 0.14 <= 0.15
    ([0.10, 0.11, 0.12, 0.13, 0.14, 0.14, 0.14, 0.14, 0.16, 0.30], 0.15, False, "unclear"),
    ([0.10, 0.16, 0.17, 0.18, 0.19, 0.20, 0.21, 0.22, 0.23, 0.30], 0.15, False, "not met"),  # low end 0.16
    ([2.5, 2.6, 2.7], 2.0, True, "too few samples (3) for a 95% interval"),
])
def test_a_target_is_met_only_where_the_interval_clears_it(samples, need, at_least, status):
    from gpunet.bench import judge

    rng = np.random.default_rng(1)
    verdict = judge(list(rng.permutation(samples)), need, at_least)  # the order of the rounds does not matter
    assert verdict["status"] == status
    assert verdict["median"] == pytest.approx(float(np.median(samples)))


def _peer_against_gpunet(make, batch: int, dtype: str = "float32") -> None:
    """One run of a contender's builder trains what gpunet.train trains in its first epoch (seed 0): the same
    network, rows, order and learning rate from the same parameters."""
    from conftest import rel_diff

    from gpunet import SGD, Network, train
    from gpunet.bench import LR, Case
    from gpunet.initializers import init_params

    case = Case("t", (20, 8, 10), batch, 100, dtype)  # 100 rows: a partial last batch at 16
    rng = np.random.default_rng(3)
    X, labels = rng.uniform(0.01, 1.0, (100, 20)), rng.integers(0, 10, 100)
    params = init_params([20, 8, 10], "article", 0)
    net = Network.article([20, 8, 10], backend="numpy", dtype=dtype)
    net.set_params(params)
    train(net, X, labels, epochs=1, batch_size=batch, lr=LR, optimizer=SGD(), seed=0)
    run = make(case, X, labels, params)
    assert run() is None  # the harness's clock times it
    getattr(run, "finish", lambda: None)()
    want, got = net.get_params(), run.params()
    assert rel_diff(want["W2"], params["W2"]) > 0.1  # it really trained
    for k in want:
        assert rel_diff(got[k], want[k]) <= (1e-5 if dtype == "float32" else 1e-12), k


@pytest.mark.parametrize("batch", [16, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpunet_contender_trains_what_train_trains(batch, dtype):
    """gpunet's contender runs the engine train() picks, over data and an order already on the device."""
    from gpunet.bench import Case
    from gpunet.bench.contenders import gpunet_contender
    from gpunet.initializers import init_params

    _peer_against_gpunet(gpunet_contender("numpy"), batch, dtype)
    run = gpunet_contender("numpy")(Case("t", (20, 8, 10), batch, 100, dtype), np.full((100, 20), 0.5),
                                    np.zeros(100, dtype=int), init_params([20, 8, 10], "article", 0))
    assert run.path == "plain"  # kernels="auto" on NumPy


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

    _peer_against_gpunet(torch_contender("cpu"), batch)


@pytest.mark.parametrize("batch, most", [(16, 1000), (16, 4), (1, 1000), (1, 30)],
                         ids=["one-graph", "graphs-of-4", "per-sample-one-graph", "per-sample-graphs-of-30"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_graph_contender_trains_what_gpunet_trains(batch, most, dtype):
    """The function the GPU captures (the whole epoch, or graphs of ``most`` steps) run eagerly on the CPU."""
    pytest.importorskip("torch", reason="PyTorch is not installed (the bench extra)")
    from gpunet.bench.peers import torch_graph_contender

    _peer_against_gpunet(torch_graph_contender("cpu", most), batch, dtype)


def test_graph_segments_cover_the_epoch_once_in_order():
    from gpunet.bench.peers import GRAPH_STEPS, graph_segments

    assert graph_segments(937, True) == [(0, 937, True)]  # batch 64: the whole epoch, its last 32 rows too
    assert graph_segments(60000, False) == [(lo, GRAPH_STEPS, False) for lo in range(0, 60000, GRAPH_STEPS)]
    assert graph_segments(6, True, 4) == [(0, 4, False), (4, 2, True)]
    assert graph_segments(8, True, 4) == [(0, 4, False), (4, 4, False), (8, 0, True)]
    assert graph_segments(8, False, 4) == [(0, 4, False), (4, 4, False)]
    assert graph_segments(4, False, 4) == [(0, 4, False)]


@pytest.mark.parametrize("batch", [16, 1])
def test_torch_compile_step_is_one_graph_and_trains_what_gpunet_trains(batch):
    """The compiled function traced by Dynamo on the CPU (aot_eager: AOTAutograd's graphs run eagerly) as one
    graph, no break: gather, forward, backward and update; the GPU compiles the same graph with inductor."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (the bench extra)")
    from gpunet.bench import Case
    from gpunet.bench.peers import (
        _torch_setup,
        torch_compile_contender,
        torch_compile_step,
    )
    from gpunet.initializers import init_params

    _peer_against_gpunet(torch_compile_contender("cpu", "aot_eager"), batch)
    assert torch_compile_contender("cpu", "aot_eager")(Case("t", (20, 8, 10), batch, 40), np.full((40, 20), 0.5),
                                                       np.zeros(40, dtype=int), init_params([20, 8, 10], "article", 0)
                                                       ).note() == ("compiled by aot_eager, no CUDA graphs (not on "
                                                                    "CUDA, or not inductor)")
    rng = np.random.default_rng(0)
    s = _torch_setup(Case("t", (20, 8, 10), batch, 40), rng.random((40, 20)), rng.integers(0, 10, 40),
                     init_params([20, 8, 10], "article", 0), "cpu")
    explained = torch._dynamo.explain(torch_compile_step(s))(s.batches[0])
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


@pytest.mark.slow
def test_torch_compile_contender_with_inductor_trains_what_gpunet_trains():
    """The contender as the GPU runs it, but compiled by inductor for the CPU (tens of seconds)."""
    pytest.importorskip("torch", reason="PyTorch is not installed (the bench extra)")
    from gpunet.bench.peers import torch_compile_contender

    _peer_against_gpunet(torch_compile_contender("cpu"), 16)


@pytest.mark.gpu
@pytest.mark.parametrize("name, batch", [
    ("gpunet-cupy", 16), ("gpunet-cupy-fused", 16), ("gpunet-cupy-graph", 16), ("gpunet-cupy-graph", 1),
    ("gpunet-cupy-kernel", 1), ("torch-cuda", 16), ("torch-cuda-graph", 16), ("torch-cuda-graph", 1),
    ("torch-compile", 16), ("jax-jit", 16), ("jax-scan", 16), ("jax-scan", 1)])
def test_gpu_contenders_train_what_gpunet_trains(name, batch):
    """On the device: each GPU contender as the benchmark builds it (graphs captured, the step compiled) trains
    what gpunet.train trains on NumPy."""
    from gpunet.bench.contenders import gpu_contender

    make, unavailable = gpu_contender(name)
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    _peer_against_gpunet(make, batch)


@pytest.mark.gpu
def test_the_cuda_event_clock_waits_for_work_on_every_stream():
    """Work a run queues on a non-blocking stream of its own (as graph mode replays) is done when the clock
    returns, and the run's finish is called inside the span."""
    from conftest import require

    from gpunet.bench.harness import CudaEventClock

    backend = require("cupy")
    cp = backend.xp
    a = cp.ones((2048, 2048), dtype=cp.float32)
    stream = cp.cuda.Stream(non_blocking=True)
    calls = []

    def run():
        with stream:
            for _ in range(20):
                a @ a
            stream.record(done)

    done = cp.cuda.Event()
    run.finish = lambda: calls.append("finish")
    seconds = CudaEventClock(backend).seconds(run)
    assert done.done and stream.done and calls == ["finish"]
    assert 0 < seconds < 60


def test_a_contender_that_raises_is_recorded_and_the_others_go_on():
    from gpunet.bench.harness import time_rounds

    calls = []

    def bad():
        calls.append("bad")
        if len(calls) > 1:
            raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")

    class Fixed:  # a clock that says 0.25 s for every run
        name = "fixed"

        def seconds(self, run):
            run()
            return 0.25

    failed = {}
    times = time_rounds({"good": lambda: None, "bad": bad}, repeats=3, settle=0, failed=failed,
                        clocks={"good": Fixed(), "bad": Fixed()})
    assert times == {"good": [0.25] * 3}
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
        out = subprocess.run([sys.executable, str(FAST), *args], capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == status and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
        assert out.stderr.startswith("mnist_fast.py: error: ")
    assert list(tmp_path.iterdir()) == []
