"""One command for a short turn on a GPU machine: environment, every CuPy test, the CLI on CuPy, the benchmark,
compute-sanitizer over the kernels' tests.

    python3 scripts/gpu_check.py --mnist-dir .devdata/mnist            # full: under 8 minutes on an H100
    python3 scripts/gpu_check.py --quick --mnist-dir .devdata/mnist    # under 2 minutes

Each stage runs in a subprocess with its own time limit; one that reaches it is
stopped and says so, and a failing stage never stops the next. The benchmark's
full run times the cases the targets name (scripts/benchmark.py --cases targets),
10 rounds each, so that each target is judged by the 95% interval of its median.
The sanitizer stage (full mode, where compute-sanitizer is found) runs the GPU
tests of the kernels' files under memcheck, racecheck and synccheck, a third of
its limit each, the tests interleaved file by file so that a tool stopped at its
share has still covered every file; "partial" says a tool ran out of time with
no error found so far (not a failure), and the detail says how many tests each covered. Everything goes
under --out (default $OUT): gpu-check.json (every figure, the versions, each
stage's status, pytest's counts), pytest-gpu.txt, benchmark-gpu.json,
ptxas-report.txt and gpu-check-log.txt (each stage's command and output tail):
at most 8 plain files, no folders. A summary table is printed last. Without a
usable GPU it says why in one line, skips the GPU stages and exits 0. Exit
status: 0 when no stage failed, 1 otherwise, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("gpu-check.json", "pytest-gpu.txt", "benchmark-gpu.json", "per-sample-profile.json", "graph-profile.json",
           "graph-vs-fused.json", "ptxas-report.txt", "gpu-check-log.txt")
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Seconds per stage, (quick, full): the quick sum stays under 2 minutes, the full one under 8. Each is sized
# from the stage's times on the device runs (docs/changelog.md), with room for a fresh machine's first
# compilation of every CuPy kernel (NVRTC), which the pytest stage pays.
# The sanitizer stage's share came from the stages that had the most room over their measured times (run 8:
# environment 11.9 s, pytest 77.3, cli 6.5, benchmark 164.9 over seven cases (three now), ptxas 27.8, per-sample
# profile 10.3, graph profile 7.8, graph vs fused 11.1).
LIMITS = {
    "environment": (15, 15),
    "pytest": (55, 100),
    "cli": (20, 15),
    "benchmark": (25, 200),  # the per-sample case first: its slow contenders time gpunet.bench.cases.SLOW_ROWS
    "mnist_fast": (0, 15),
    "ptxas": (0, 35),  # nvcc -Xptxas -v on every instantiation, for the device's architecture only
    "per_sample_profile": (0, 15),
    "graph_profile": (0, 15),  # 60,000 rows uploaded, an epoch captured and replayed for each case
    "graph_vs_fused": (0, 15),
    "sanitizer": (0, 50),  # three tools, a third each, after the test collection (a few seconds)
}
BENCHMARK_REPEATS = 10  # timed rounds per contender in the full run: a 95% interval of the median needs >= 6
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck")
# The kernels' test files: their gpu tests hold each CUDA path to the plain one on the device.
SANITIZED_TESTS = ("tests/test_fused.py", "tests/test_graph.py", "tests/test_per_sample_kernel.py")
PYTEST_WORKERS = 4  # with pytest-xdist, which the GPU machine has; else one process
# Seconds one test may take, with pytest-timeout (the GPU machine has it), far above the slowest compiled test,
# so a test that hangs costs one worker (xdist replaces it), not the stage.
PYTEST_TEST_LIMIT = 90

ENV_PROBE = r"""
import importlib.metadata as md, json, platform, sys
info = {"python": sys.version.split()[0], "platform": platform.platform()}
for name in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "torch", "jax", "jaxlib", "pytest", "gpunet"):
    try:
        info[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
from gpunet.bench import gpu_machine
from gpunet.backend import cupy_unavailable_reason
info["no_gpu_reason"] = cupy_unavailable_reason()
info["machine"] = gpu_machine()
print(json.dumps(info))
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2, no usage dump
        self.exit(2, f"gpu_check.py: error: {message}\n")


@dataclass
class Stage:
    name: str
    status: str = "skipped"  # passed, failed, timed out, skipped; partial (the sanitizer's: out of time, no error)
    seconds: float = 0.0
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


class Check:
    def __init__(self, out: Path, quick: bool, mnist_dir: str | None) -> None:
        self.out, self.quick, self.mnist_dir = out, quick, mnist_dir
        self.stages: list[Stage] = []
        self.log: list[str] = []
        self.environment: dict[str, Any] = {}

    def limit(self, stage: str) -> int:
        return LIMITS[stage][0 if self.quick else 1]

    def run(self, args: list[str], limit: float, cwd: Path = ROOT,
            env: dict[str, str] | None = None) -> tuple[str, int | None, float]:
        """(output, exit status or None when stopped at ``limit``, seconds); the output tail goes in the log."""
        start = time.monotonic()
        proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=limit)
            status: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: pytest's and the CLI's children too
            out, _ = proc.communicate()
            status = None
        seconds = time.monotonic() - start
        ended = f"exit {status}" if status is not None else f"stopped at its {limit:g} s limit"
        self.log += [f"$ {' '.join(args)}   ({ended}, {seconds:.1f} s)", out[-6000:], ""]
        return out, status, seconds

    def add(self, stage: Stage, say: bool = True) -> Stage:
        self.stages.append(stage)
        if say:  # progress, one line per stage
            print(f"[{stage.name}] {stage.status}{': ' + stage.detail if stage.detail else ''}", flush=True)
        return stage

    # --- the stages ---------------------------------------------------------------------

    def environment_stage(self) -> str | None:
        """Versions and the GPU; returns why there is no usable GPU, or None."""
        limit = self.limit("environment")
        out, status, seconds = self.run([sys.executable, "-c", ENV_PROBE], limit)
        stage = Stage("environment", seconds=seconds)
        if status is None:
            stage.status, stage.detail = "timed out", f"stopped at its {limit} s limit"
            self.add(stage)
            return f"the environment probe did not finish in {limit} s"
        if status != 0:
            stage.status, stage.detail = "failed", _last_line(out)
            self.add(stage)
            return f"the environment probe failed: {_last_line(out)}"
        self.environment = json.loads(out.strip().splitlines()[-1])
        smi, smi_status, _ = self.run(["nvidia-smi"], 10) if _which("nvidia-smi") else ("not found", 1, 0)
        self.environment["nvidia_smi"] = smi.strip() if smi_status == 0 else f"unavailable: {_last_line(smi)}"
        reason = self.environment["no_gpu_reason"]
        machine = self.environment["machine"]
        stage.status = "passed"
        stage.detail = machine["gpu"] if reason is None else f"no usable GPU: {reason}"
        self.add(stage, say=reason is None)  # without a GPU, main says it in one line
        return reason

    def pytest_stage(self) -> None:
        limit = self.limit("pytest")
        env = {"GPUNET_MNIST_DIR": self.mnist_dir} if self.mnist_dir else {}
        args = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-rfEs", "--tb=short",
                "-q", "tests"]
        if importlib.util.find_spec("xdist") is not None:
            args[3:3] = ["-n", str(PYTEST_WORKERS)]
        if importlib.util.find_spec("pytest_timeout") is not None:  # a test that hangs fails alone
            args[3:3] = ["--timeout", str(PYTEST_TEST_LIMIT), "--timeout-method", "thread"]
        out, status, seconds = self.run(args, limit, env=env)
        (self.out / "pytest-gpu.txt").write_text(f"$ {' '.join(args[1:])}\n{out}")
        counts = pytest_counts(out)
        stage = Stage("pytest -m gpu", seconds=seconds, figures=counts)
        summary = ", ".join(f"{v} {k}" for k, v in counts.items())
        if status is None:
            stage.status, stage.detail = "timed out", f"stopped at its {limit} s limit ({summary or 'no summary'})"
        else:
            ok = status == 0 and counts.get("passed", 0) > 0
            stage.status, stage.detail = ("passed" if ok else "failed"), summary or _last_line(out)
        self.add(stage)

    def cli_stage(self) -> None:
        """gpunet train --backend cupy on the digits, and one MNIST epoch (>= 90%) when the folder is given."""
        deadline = time.monotonic() + self.limit("cli")
        with tempfile.TemporaryDirectory() as tmp:  # the runs' folders stay out of --out
            jobs = [("digits", ["--epochs", "3"], 0.90)]
            if self.mnist_dir:
                jobs.append(("mnist", ["--dataset", "mnist", "--data-dir", self.mnist_dir, "--epochs", "1",
                                       "--batch-size", "32"], 0.90))
            for name, extra, need in jobs:
                left = deadline - time.monotonic()
                stage = Stage(f"cli {name}")
                if left < 2:
                    stage.status, stage.detail = "timed out", "no time left in the CLI stage's limit"
                    self.add(stage)
                    continue
                args = [sys.executable, "-m", "gpunet", "train", "--backend", "cupy", "--quiet",
                        "--out", str(Path(tmp) / name), *extra]
                out, status, stage.seconds = self.run(args, left)
                found = re.search(r"test accuracy ([\d.]+)% after (\d+) epoch", out)
                if status is None:
                    stage.status, stage.detail = "timed out", "stopped at the CLI stage's limit"
                elif status != 0 or found is None:
                    stage.status, stage.detail = "failed", _last_line(out)
                else:
                    accuracy = float(found.group(1)) / 100
                    stage.figures = {"test_accuracy": accuracy, "epochs": int(found.group(2))}
                    stage.status = "passed" if accuracy >= need else "failed"
                    stage.detail = f"test accuracy {accuracy:.2%} (needs >= {need:.0%})"
                self.add(stage)

    def benchmark_stage(self) -> None:
        limit = self.limit("benchmark")
        path = self.out / "benchmark-gpu.json"
        args = [sys.executable, str(ROOT / "scripts/benchmark.py"), "--gpu", "--json", str(path)]
        args += ["--quick"] if self.quick else ["--repeats", str(BENCHMARK_REPEATS), "--cases", "targets"]
        args += ["--mnist-dir", self.mnist_dir] if self.mnist_dir else []
        out, status, seconds = self.run(args, limit)
        for partial in self.out.glob(".benchmark-gpu.json.*.tmp"):  # a write cut short by the limit
            partial.unlink()
        stage = Stage("benchmark", seconds=seconds)
        results = json.loads(path.read_text()) if path.is_file() else None
        done = len(results["cases"]) if results else 0
        if results:
            stage.figures = {"targets": results["targets"], "epoch_seconds": {
                c["case"]: {n: round(r["epoch_seconds"], 4) for n, r in c["contenders"].items() if "epoch_seconds" in r}
                for c in results["cases"]}, "epoch_seconds_interval": {
                c["case"]: {n: [round(v, 4) for v in r["epoch_seconds_interval"]]
                            for n, r in c["contenders"].items() if r.get("epoch_seconds_interval")}
                for c in results["cases"]}}
        if status is None:
            stage.status, stage.detail = "timed out", f"stopped at its {limit} s limit after {done} cases"
        elif status != 0:
            stage.status, stage.detail = "failed", _last_line(out)
        else:
            met = sum(t["status"] == "met" for t in results["targets"])
            stage.status, stage.detail = "passed", f"{done} cases; targets met: {met} of {len(results['targets'])}"
        self.add(stage)

    def mnist_fast_stage(self) -> None:
        stage = Stage("mnist_fast")
        if self.quick or not self.mnist_dir:
            stage.detail = "full mode with --mnist-dir only"
            self.add(stage)
            return
        limit = self.limit("mnist_fast")
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "fast.json"
            figures = self.json_script(stage, [str(ROOT / "scripts/mnist_fast.py"), "--mnist-dir", self.mnist_dir,
                                               "--json", str(result)], result, limit)
            if figures is not None:
                met = figures["test_accuracy"] >= 0.98 and figures["train_seconds"] <= 1.0
                stage.detail = (f"test accuracy {figures['test_accuracy']:.2%} after {figures['train_seconds']:.2f} s "
                                "of training; target (>= 98% in <= 1 s) " + ("met" if met else "not met"))
        self.add(stage)

    def gpu_stages(self) -> None:
        """Every stage after the environment's, in order."""
        self.pytest_stage()
        self.cli_stage()
        self.benchmark_stage()
        self.mnist_fast_stage()
        self.profile_stages()
        self.ptxas_stage()
        self.sanitizer_stage()

    def sanitizer_stage(self) -> None:
        """compute-sanitizer's memcheck, racecheck and synccheck over the kernels' GPU tests (SANITIZED_TESTS),
        each tool a third of what the collection leaves of the stage's limit."""
        stage = Stage("sanitizer")
        sanitizer = sanitizer_path()
        if self.quick or sanitizer is None:
            stage.detail = "full mode only" if self.quick else (
                "compute-sanitizer not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin): not run")
            self.add(stage)
            return
        deadline = time.monotonic() + self.limit("sanitizer")
        pytest = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider"]
        out, status, _ = self.run([*pytest, "--collect-only", "-q", *SANITIZED_TESTS], deadline - time.monotonic())
        tests = interleave([line for line in out.splitlines() if "::" in line])
        if status != 0 or not tests:
            stage.status = "timed out" if status is None else "failed"
            stage.detail, stage.seconds = f"collecting the kernels' gpu tests: {_last_line(out)}", self.elapsed(deadline)
            self.add(stage)
            return
        for i, tool in enumerate(SANITIZER_TOOLS):
            share = (deadline - time.monotonic()) / (len(SANITIZER_TOOLS) - i)
            # API errors left out: CuPy's and PyTorch's event queries return cudaErrorNotReady by design
            args = [sanitizer, "--tool", tool, "--error-exitcode", "99", "--report-api-errors", "no"]
            out, status, _ = self.run([*args, *pytest, "-v", "--tb=line", *tests], max(share, 1))
            stage.figures[tool] = sanitizer_figures(out, status, len(tests))
        stage.seconds = self.elapsed(deadline)
        stage.status, stage.detail = sanitizer_verdict(stage.figures)
        self.add(stage)

    def elapsed(self, deadline: float) -> float:
        """Seconds a stage has run, from the deadline its limit set."""
        return self.limit("sanitizer") - (deadline - time.monotonic())

    def json_script(self, stage: Stage, args: list[str], result: Path, limit: int) -> dict[str, Any] | None:
        """Run ``python args`` within ``limit``: passed with the JSON it wrote to ``result`` as the stage's
        figures (returned), or timed out, or failed with its last line (None)."""
        out, status, stage.seconds = self.run([sys.executable, *args], limit)
        if status is None:
            stage.status, stage.detail = "timed out", f"stopped at its {limit} s limit"
        elif status != 0 or not result.is_file():
            stage.status, stage.detail = "failed", _last_line(out)
        else:
            stage.status, stage.figures = "passed", json.loads(result.read_text())
            return stage.figures
        return None

    def profile_stage(self, script: str, name: str, summary: Callable[[dict[str, Any]], str]) -> None:
        """scripts/<script>.py --json <script with dashes>.json: a profile of where a step's time goes;
        ``summary`` makes the detail line from its cases."""
        stage = Stage(name)
        if self.quick:
            stage.detail = "full mode only"
            self.add(stage)
            return
        limit = self.limit(script)
        path = self.out / f"{script.replace('_', '-')}.json"
        path.unlink(missing_ok=True)  # a previous check's: the script writes only a new file
        figures = self.json_script(stage, [str(ROOT / f"scripts/{script}.py"), "--json", str(path)], path, limit)
        if figures is not None:
            stage.detail = summary(figures["cases"])
        self.add(stage)

    def profile_stages(self) -> None:
        """Where the time goes: a per-sample chunk (issue 13) and a graph-mode step (issue 12); and where graph
        mode stops beating fused (issue 12: the rule kernels="auto" needs before it may pick graph mode)."""
        self.profile_stage("per_sample_profile", "per-sample profile", per_sample_summary)
        self.profile_stage("graph_profile", "graph profile", graph_summary)
        self.profile_stage("graph_vs_fused", "graph vs fused", graph_speedups)

    def ptxas_stage(self) -> None:
        stage = Stage("ptxas")
        if self.quick:
            stage.detail = "full mode only"
            self.add(stage)
            return
        # The device's own architecture only (sm_90 on an H100 or H200, and where no device answers): both
        # of gpunet.engines.kernels.ARCHS take twice as long, and tests/test_cuda_compile.py covers them in CI anyway.
        code = ("import gpunet.engines.build as c\n"
                "try:\n"
                "    from gpunet.backend import get_backend\n"
                "    arch = 'sm_' + get_backend('cupy').xp.cuda.Device().compute_capability\n"
                "except Exception:\n"
                "    arch = 'sm_90'\n"
                "print(c.ptxas_report((arch,)))")
        limit = self.limit("ptxas")
        out, status, stage.seconds = self.run([sys.executable, "-c", code], limit)
        (self.out / "ptxas-report.txt").write_text(out)
        if status is None:
            stage.status, stage.detail = "timed out", f"stopped at its {limit} s limit"
        elif status != 0:
            stage.status, stage.detail = "failed", _last_line(out)
        else:
            stage.status, stage.detail = "passed", f"{len(out.splitlines())} lines"
        self.add(stage)

    # --- outputs --------------------------------------------------------------------------

    def write(self, no_gpu: str | None, started: float) -> None:
        doc = {"quick": self.quick, "mnist_dir": self.mnist_dir, "no_gpu_reason": no_gpu,
               "seconds": round(time.monotonic() - started, 1), "environment": self.environment,
               "stages": [vars(s) for s in self.stages]}
        (self.out / "gpu-check.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        (self.out / "gpu-check-log.txt").write_text("\n".join(self.log) + "\n")

    def summary(self) -> str:
        width = max(len(s.name) for s in self.stages)
        lines = [f"{'stage':<{width}}  {'status':<9}  {'seconds':>7}  detail"]
        lines += [f"{s.name:<{width}}  {s.status:<9}  {s.seconds:>7.1f}  {s.detail}" for s in self.stages]
        return "\n".join(lines)


def pytest_counts(output: str) -> dict[str, int]:
    """passed/failed/skipped/... from pytest's last summary line ("3 failed, 40 passed, 2 skipped in 9.1s")."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error|deselected)", line)]
    if not lines:
        return {}
    return {k.rstrip("s") + ("s" if k.startswith("error") else ""): int(n)
            for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", lines[-1])}


def sanitizer_path() -> str | None:
    """compute-sanitizer on PATH, in $CUDA_HOME/bin or in /usr/local/cuda/bin; None where there is none."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    folders += [str(Path(os.environ["CUDA_HOME"]) / "bin")] if os.environ.get("CUDA_HOME") else []
    folders += ["/usr/local/cuda/bin"]
    found = [Path(d) / "compute-sanitizer" for d in folders if d and os.access(Path(d) / "compute-sanitizer", os.X_OK)]
    return str(found[0]) if found else None


def interleave(tests: list[str]) -> list[str]:
    """Test ids taken file by file in turn (the first of each file, then the second, ...), so that a run stopped
    early has covered every file."""
    files: dict[str, list[str]] = {}
    for t in tests:
        files.setdefault(t.split("::")[0], []).append(t)
    queues = list(files.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def sanitizer_figures(output: str, status: int | None, total: int) -> dict[str, Any]:
    """One tool's run: tests passed (pytest -v's PASSED lines) of ``total``, failed, the sanitizer's errors
    (its ERROR SUMMARY, or, for a run stopped at its limit, the reports printed so far), finished or stopped."""
    summaries = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) error", output)]
    reports = len(re.findall(r"^=+ (?:Invalid|Race|Barrier|Error|.*[Hh]azard)", output, re.MULTILINE))
    return {"passed": len(re.findall(r" PASSED", output)), "failed": len(re.findall(r" FAILED", output)),
            "tests": total, "errors": sum(summaries) if summaries else reports, "finished": status is not None,
            "exit": status}


def sanitizer_verdict(figures: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(status, detail) of the sanitizer stage from each tool's figures: failed on any error or failed test (or
    where no test passed under any tool: every one skipped), partial where a tool ran out of time before it
    found any, passed otherwise."""
    detail = "; ".join(f"{tool}: {f['passed']} of {f['tests']} tests passed, {f['errors']} errors"
                       + ("" if f["finished"] else ", stopped at its share of the limit") for tool, f in figures.items())
    bad = any(f["errors"] or f["failed"] or (f["finished"] and f["exit"] not in (0, None)) for f in figures.values())
    if bad or not any(f["passed"] for f in figures.values()):
        return "failed", detail + ("" if bad else " (no test ran: were they all skipped?)")
    return ("passed" if all(f["finished"] for f in figures.values()) else "partial"), detail


def per_sample_summary(cases: list[dict[str, Any]]) -> str:
    """per_sample_profile.py's first case (784-100-10 float32, chunks of 64) in one line."""
    c = cases[0]
    return (f"784-100-10 float32, {c['rows_per_chunk']} rows a chunk: kernel {c['kernel_us']:.0f} us, chunk "
            f"{c['chunk_us']:.0f} us, host {c['host_us']:.0f} us; epoch {c['epoch_s']:.3f} s; per-sample epochs "
            f"{c['epochs_us']:.0f} us a chunk, host {c['epochs_host_us']:.0f} us; epoch {c['epochs_epoch_s']:.3f} s")


def graph_summary(cases: list[dict[str, Any]]) -> str:
    """graph_profile.py's first case (784-100-10 at batch 64) in one line."""
    c = cases[0]
    return (f"784-100-10 at batch {c['batch']}: launches {c['launches_us']:.0f} us, replayed step "
            f"{c['replayed_us']:.0f} us; epoch {c['epoch_s']:.4f} s")


def graph_speedups(cases: list[dict[str, Any]]) -> str:
    """graph_vs_fused.py's cases in one line: graph mode's speed-up over fused, network by network."""
    networks: dict[str, list[str]] = {}
    for c in cases:
        optimizer = "" if c.get("optimizer", "sgd") == "sgd" else f" {c['optimizer']}"
        networks.setdefault("-".join(map(str, c["sizes"])), []).append(
            f"{c['batch']}{optimizer} {c['graph_speedup']:.2f}x")
    return "graph over fused, by batch: " + "; ".join(f"{n}: {', '.join(v)}" for n, v in networks.items())


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _which(program: str) -> bool:
    return any(os.access(Path(d) / program, os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep) if d)


def parse(argv: list[str]) -> argparse.Namespace:
    p = _Parser(description=__doc__.splitlines()[0])
    p.add_argument("--out", metavar="DIR", default=os.environ.get("OUT") or None,
                   help="where the outputs go (default: $OUT)")
    p.add_argument("--mnist-dir", metavar="DIR", help="folder with the four MNIST IDX files")
    p.add_argument("--quick", action="store_true", help="under 2 minutes: fewer rows, no torch.compile, no mnist_fast")
    args = p.parse_args(argv)
    if not args.out:
        p.error("--out DIR is required when $OUT is not set")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out {args.out!r} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "gpu-check.json").is_file():
        p.error(f"--out {args.out!r} holds other files; give an empty or new folder (or a previous check's)")
    if args.mnist_dir is not None:
        folder = Path(args.mnist_dir)  # gzipped or not, as gpunet's reader takes them
        missing = [f for f in MNIST_FILES if not any((folder / n).is_file() for n in (f, f.removesuffix(".gz")))]
        if missing:
            p.error(f"--mnist-dir {args.mnist_dir!r} lacks {missing[0]} (expected the four MNIST IDX files)")
        args.mnist_dir = str(Path(args.mnist_dir).resolve())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"--out {args.out!r} cannot be created: {exc.strerror or exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    check = Check(Path(args.out), args.quick, args.mnist_dir)
    no_gpu = check.environment_stage()
    if no_gpu is not None:
        print(f"no usable GPU: {no_gpu}; skipping the GPU stages", flush=True)
        for name in ("pytest -m gpu", "cli", "benchmark", "mnist_fast", "per-sample profile", "graph profile",
                     "graph vs fused", "ptxas", "sanitizer"):
            check.add(Stage(name, detail=f"no usable GPU: {no_gpu}"), say=False)
    else:
        check.gpu_stages()
    check.write(no_gpu, started)
    print()
    print(check.summary())
    failed = any(s.status in ("failed", "timed out") for s in check.stages)
    return 1 if failed and no_gpu is None else 0


if __name__ == "__main__":
    sys.exit(main())
