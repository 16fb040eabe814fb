"""scripts/gpu_check.py here, without a GPU: the dry run, its argument checks, and the stage machinery."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SCRIPTS, load_script

from gpunet.backend import cupy_unavailable_reason

SCRIPT = SCRIPTS / "gpu_check.py"
needs_no_gpu = pytest.mark.skipif(cupy_unavailable_reason() is None, reason="a GPU is usable here: no dry run")
# The stages' limits are sized for an idle GPU machine; a loaded CPU machine takes several times as long (the ptxas
# stage took 19 s of its 40 here, the environment probe a few of its 15). Tests that run stages give each 10 times
# its limit, so only what a test sets up (a sleeper, a missing device) decides how a stage ends.
SLACK = 10
SLOW_MACHINE = ("import sys\n"
                f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
                "import gpu_check\n"
                f"gpu_check.LIMITS = {{k: (q * {SLACK}, f * {SLACK}) for k, (q, f) in gpu_check.LIMITS.items()}}\n"
                "sys.exit(gpu_check.main())\n")


def gpu_check(*args: str, cwd: Path | None = None, env: dict | None = None,
              slack: bool = False) -> subprocess.CompletedProcess:
    """scripts/gpu_check.py run as a program; with ``slack``, its stages' limits times SLACK."""
    command = [sys.executable, "-c", SLOW_MACHINE] if slack else [sys.executable, str(SCRIPT)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env,
                          check=False)


def slow_machine_limits(module, monkeypatch) -> None:
    for name, (quick, full) in list(module.LIMITS.items()):
        monkeypatch.setitem(module.LIMITS, name, (quick * SLACK, full * SLACK))


def _module():
    return load_script("gpu_check")


@needs_no_gpu
def test_dry_run_says_why_in_one_line_and_skips_the_gpu_stages(tmp_path):
    out = gpu_check("--quick", "--out", str(tmp_path / "out"), slack=True)
    assert out.returncode == 0, out.stderr
    reason = cupy_unavailable_reason()
    lines = out.stdout.splitlines()
    assert lines[0] == f"no usable GPU: {reason}; skipping the GPU stages"
    assert sum("no usable GPU" in line and "skipping" in line for line in lines) == 1
    assert lines[2].split() == ["stage", "status", "seconds", "detail"]  # the summary table comes last
    assert [line.split()[0] for line in lines[3:]] == ["environment", "pytest", "cli", "benchmark", "mnist_fast",
                                                       "per-sample", "graph", "graph", "ptxas", "sanitizer"]
    doc = json.loads((tmp_path / "out/gpu-check.json").read_text())
    assert doc["no_gpu_reason"] == reason and doc["quick"] is True
    assert doc["environment"]["numpy"] and doc["environment"]["machine"]["gpu"] == f"none: {reason}"
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["environment"]["status"] == "passed"
    for name in ("pytest -m gpu", "cli", "benchmark", "mnist_fast", "per-sample profile", "graph profile",
                 "graph vs fused", "ptxas", "sanitizer"):
        assert stages[name] == {"name": name, "status": "skipped", "seconds": 0.0,
                                "detail": f"no usable GPU: {reason}", "figures": {}}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu-check-log.txt", "gpu-check.json"]


@needs_no_gpu
def test_out_defaults_to_the_out_variable_and_a_rerun_may_reuse_its_folder(tmp_path):
    env = {**__import__("os").environ, "OUT": str(tmp_path / "o")}
    for _ in range(2):  # the second run finds its own outputs there: allowed
        out = gpu_check("--quick", env=env, slack=True)
        assert out.returncode == 0, out.stderr
    assert (tmp_path / "o/gpu-check.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--out", "{file}"], "--out '{file}' is a file, not a folder"),
    (["--out", "{busy}"], "--out '{busy}' holds other files; give an empty or new folder"),
    (["--out", "{tmp}/o", "--mnist-dir", "{tmp}"], "--mnist-dir '{tmp}' lacks train-images-idx3-ubyte.gz"),
    (["--out", "{file}/sub"], "--out '{file}/sub' cannot be created"),
    (["--out", "{tmp}/o", "--quick", "--fast"], "unrecognized arguments: --fast"),
])
def test_bad_arguments_fail_in_one_line_with_status_2(tmp_path, args, message):
    (tmp_path / "f.txt").write_text("user data")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/notes.txt").write_text("user data")
    names = {"file": str(tmp_path / "f.txt"), "busy": str(tmp_path / "busy"), "tmp": str(tmp_path)}
    out = gpu_check(*(a.format(**names) for a in args))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("gpu_check.py: error: ")
    assert message.format(**names) in out.stderr
    assert (tmp_path / "f.txt").read_text() == "user data" and (tmp_path / "busy/notes.txt").read_text() == "user data"
    assert not (tmp_path / "o").exists() and sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]


def test_out_is_required_without_the_out_variable(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "OUT"}
    out = gpu_check(cwd=tmp_path, env=env)
    assert out.returncode == 2 and out.stderr == "gpu_check.py: error: --out DIR is required when $OUT is not set\n"
    assert list(tmp_path.iterdir()) == []


def test_a_stage_at_its_limit_is_stopped_and_says_so(tmp_path):
    check = _module().Check(tmp_path, quick=True, mnist_dir=None)
    # The sleeper prints within 0.1 s of its start here, long before its 5 s limit; it is stopped there, not at its end.
    sleeper = "import time; print('started', flush=True); time.sleep(600)"
    out, status, seconds = check.run([sys.executable, "-c", sleeper], limit=5)
    assert status is None and 5 <= seconds < 300
    assert out == "started\n" and "stopped at its 5 s limit" in check.log[0]
    out, status, _ = check.run([sys.executable, "-c", "import sys; print('x'); sys.exit(3)"], limit=30)
    assert (out, status) == ("x\n", 3) and "(exit 3," in check.log[3]


def test_pytest_counts_read_the_last_summary_line():
    counts = _module().pytest_counts
    text = "tests/test_a.py ..F\n=== 1 failed, 40 passed, 2 skipped, 1 error in 9.10s ===\n"
    assert counts(text) == {"failed": 1, "passed": 40, "skipped": 2, "errors": 1}
    assert counts("12 passed, 350 deselected in 3.2s") == {"passed": 12, "deselected": 350}
    assert counts("collected 0 items\nno tests ran in 0.01s") == {}


def test_quick_and_full_limits_fit_the_issue_budgets():
    limits = _module().LIMITS
    assert sum(q for q, _ in limits.values()) < 120  # --quick: under 2 minutes on an H100
    assert sum(f for _, f in limits.values()) < 480  # full: under 8


def test_outputs_fit_what_a_device_run_brings_back():
    outputs = _module().OUTPUTS
    assert len(outputs) <= 8 and all(__import__("re").fullmatch(r"[A-Za-z0-9._-]+", n) for n in outputs)


@needs_no_gpu
def test_the_gpu_stages_run_here_and_report_what_happened(tmp_path, monkeypatch):
    """Each GPU stage's code, run on this GPU-less machine with short limits: failures and time-outs are named."""
    module = _module()
    slow_machine_limits(module, monkeypatch)
    monkeypatch.setattr(module, "sanitizer_path", lambda: None)  # tests below run the stage with a stand-in
    monkeypatch.setitem(module.LIMITS, "benchmark", (4, 4))  # these two may end either way
    monkeypatch.setitem(module.LIMITS, "mnist_fast", (4, 4))
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for name in module.MNIST_FILES:
        (mnist / name).write_bytes(b"")
    check = module.Check(tmp_path / "out", quick=False, mnist_dir=str(mnist))
    (tmp_path / "out").mkdir()
    assert check.environment_stage() == cupy_unavailable_reason()
    check.gpu_stages()
    stages = {s.name: s for s in check.stages}
    assert stages["pytest -m gpu"].status == "failed"  # nothing passed: every gpu test skipped here
    assert stages["pytest -m gpu"].figures["skipped"] >= 30 and "passed" not in stages["pytest -m gpu"].figures
    assert "skipped" in (tmp_path / "out/pytest-gpu.txt").read_text()
    for name in ("cli digits", "cli mnist"):
        assert stages[name].status == "failed" and "backend 'cupy' is unavailable" in stages[name].detail
    assert stages["benchmark"].status in ("timed out", "failed")
    assert stages["mnist_fast"].status in ("timed out", "failed")  # empty MNIST files: a one-line error at most
    for name in ("per-sample profile", "graph profile", "graph vs fused"):
        assert stages[name].status == "failed" and stages[name].detail == f"no usable GPU: {cupy_unavailable_reason()}"
    assert stages["ptxas"].status == "passed"
    assert stages["sanitizer"].status == "skipped" and stages["sanitizer"].detail.startswith(
        "compute-sanitizer not found")
    check.write(None, time.monotonic())
    doc = json.loads((tmp_path / "out/gpu-check.json").read_text())
    assert [s["name"] for s in doc["stages"]] == list(stages)
    assert not list((tmp_path / "out").glob(".*"))  # no partial file left behind
    summary = check.summary().splitlines()
    assert len(summary) == 1 + len(stages) and summary[2].split()[:3] == ["pytest", "-m", "gpu"]


# --- the sanitizer stage, with a stand-in for compute-sanitizer ---------------------------------------

FAKE_SANITIZER = """#!{python}
import os, sys, time
args = sys.argv[1:]
tool = args[args.index("--tool") + 1]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
tests = [a for a in args if "::" in a]
for t in tests:
    print(t + " PASSED", flush=True)
    if os.environ.get("FAKE_SLOW") == tool:
        time.sleep(600)
errors = int(os.environ.get("FAKE_ERRORS_" + tool, "0"))
if errors:
    print("========= Race reported between Write access and Read access")
print(f"========= ERROR SUMMARY: {{errors}} errors")
sys.exit(99 if errors else 0)
"""


def _sanitizer_check(tmp_path, monkeypatch, limit=60, **env):
    """A Check whose sanitizer stage runs a stand-in compute-sanitizer over two small test files of gpu tests."""
    module = _module()
    bin_dir, tests = tmp_path / "bin", tmp_path / "kernel_tests"
    bin_dir.mkdir()
    tests.mkdir()
    fake = bin_dir / "compute-sanitizer"
    fake.write_text(FAKE_SANITIZER.format(python=sys.executable))
    fake.chmod(0o755)
    for name, n in (("test_a.py", 3), ("test_b.py", 2)):
        (tests / name).write_text("import pytest\n\n" + "".join(
            f"@pytest.mark.gpu\ndef test_{i}():\n    pass\n\n" for i in range(n)))
    monkeypatch.setenv("PATH", f"{bin_dir}{__import__('os').pathsep}{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log.txt"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(module, "SANITIZED_TESTS", (str(tests / "test_a.py"), str(tests / "test_b.py")))
    monkeypatch.setitem(module.LIMITS, "sanitizer", (0, limit))
    assert module.sanitizer_path() == str(fake)
    (tmp_path / "out").mkdir()
    check = module.Check(tmp_path / "out", quick=False, mnist_dir=None)
    check.sanitizer_stage()
    return check.stages[-1], (tmp_path / "log.txt").read_text().splitlines()


def test_the_sanitizer_runs_each_tool_over_the_kernel_tests_interleaved(tmp_path, monkeypatch):
    stage, calls = _sanitizer_check(tmp_path, monkeypatch)
    assert [c.split()[:2] for c in calls] == [["--tool", "memcheck"], ["--tool", "racecheck"], ["--tool", "synccheck"]]
    ids = [a for a in calls[0].split() if "::" in a]
    assert [i.split("::")[0].rsplit("/", 1)[-1] + "::" + i.split("::")[1] for i in ids] == [
        "test_a.py::test_0", "test_b.py::test_0", "test_a.py::test_1", "test_b.py::test_1", "test_a.py::test_2"]
    assert "--report-api-errors no" in calls[0] and " -m gpu " in calls[0]
    assert stage.status == "passed" and stage.figures["racecheck"] == {
        "passed": 5, "failed": 0, "tests": 5, "errors": 0, "finished": True, "exit": 0}
    assert stage.detail == ("memcheck: 5 of 5 tests passed, 0 errors; racecheck: 5 of 5 tests passed, 0 errors; "
                            "synccheck: 5 of 5 tests passed, 0 errors")


def test_a_sanitizer_error_fails_the_stage(tmp_path, monkeypatch):
    stage, _ = _sanitizer_check(tmp_path, monkeypatch, FAKE_ERRORS_racecheck="2")
    assert stage.status == "failed" and "racecheck: 5 of 5 tests passed, 2 errors" in stage.detail
    assert stage.figures["racecheck"]["exit"] == 99


def test_a_tool_out_of_time_is_partial_and_the_others_still_run(tmp_path, monkeypatch):
    """synccheck stops at its share of the limit after one test: no error found, so partial, not a failure."""
    stage, calls = _sanitizer_check(tmp_path, monkeypatch, limit=30 * SLACK // 10, FAKE_SLOW="synccheck")
    assert len(calls) == 3 and stage.status == "partial"
    assert stage.figures["synccheck"] == {"passed": 1, "failed": 0, "tests": 5, "errors": 0, "finished": False,
                                          "exit": None}
    assert stage.detail.endswith("synccheck: 1 of 5 tests passed, 0 errors, stopped at its share of the limit")
    assert stage.seconds <= 30 * SLACK // 10 + 5


def test_sanitizer_figures_read_a_stopped_runs_reports():
    figures = _module().sanitizer_figures
    out = ("t::a PASSED\n========= Invalid __global__ read of size 4 bytes\n=========     at gather_rows+0x90\n"
           "t::b FAILED\n")
    assert figures(out, None, 4) == {"passed": 1, "failed": 1, "tests": 4, "errors": 1, "finished": False,
                                     "exit": None}
