"""gpunet bench --quick: the JSON has the documented shape and its figures agree with each other (no times asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


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
