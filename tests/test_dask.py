"""gpunet.distributed: sweeps in-process and on Dask (a LocalCluster, a real scheduler and workers), nothing lost."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

from gpunet import distributed as gd
from gpunet import sweep
from gpunet.backend import BackendUnavailableError
from gpunet.config import TrainConfig
from gpunet.sweep import run_config, without_timing

from conftest import load_script
from readme_examples import README, readme_blocks

dask_distributed = pytest.importorskip("distributed", reason="Dask is part of the test extra (gpunet[dask])")

DIVERGES = {"activation": "relu", "optimizer": "sgd", "lr": 1e30}  # NaN loss in epoch 1 on the digits


def grid(n: int, epochs: int = 2, **settings: object) -> list[TrainConfig]:
    """``n`` tiny digits runs that differ in seed."""
    return [TrainConfig(hidden=(16,), epochs=epochs, backend="numpy", seed=s, **settings) for s in range(n)]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _address(scheduler_file: Path) -> str | None:
    """The scheduler's address from its file, or None while the file is missing or half written."""
    try:
        return json.loads(scheduler_file.read_text()).get("address")
    except (OSError, ValueError):
        return None


class DaskProcesses:
    """A real ``dask scheduler`` and ``dask worker`` processes (no nanny: a killed worker stays dead) on 127.0.0.1."""

    def __init__(self, folder: Path, n_workers: int) -> None:
        dask = Path(sys.executable).with_name("dask")
        dask = str(dask) if dask.is_file() else shutil.which("dask")
        assert dask, "the dask command (installed with distributed) was not found"
        self.log = open(folder / "dask.log", "wb")
        scheduler_file = folder / "scheduler.json"
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
             "--scheduler-file", str(scheduler_file)], stdout=self.log, stderr=subprocess.STDOUT)
        self.workers: list[subprocess.Popen] = []
        try:
            wait_for(scheduler_file.exists, 60, "the scheduler file")
            wait_for(lambda: _address(scheduler_file), 60, "its address")  # the file may be half written
            self.address = _address(scheduler_file)
            self.workers = [subprocess.Popen(
                [dask, "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                 "--no-dashboard"], stdout=self.log, stderr=subprocess.STDOUT) for _ in range(n_workers)]
            with dask_distributed.Client(self.address, timeout=30) as client:
                client.wait_for_workers(n_workers, timeout=90)
                self.pids = client.run(os.getpid)  # worker address -> pid
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    processes = DaskProcesses(tmp_path_factory.mktemp("dask"), n_workers=2)
    yield processes
    processes.close()


def test_in_process_sweep_records_each_run_once_and_a_restart_skips_them(tmp_path):
    path, calls = tmp_path / "r.jsonl", []
    configs = grid(3)
    rows = gd.run_sweep(configs, run_config, path, on_progress=lambda *a: calls.append(a))
    assert [r["key"] for r in rows] == [gd.run_key(c) for c in configs] == [r["key"] for r in lines(path)]
    assert all(r["status"] == "ok" and r["backend"] == "numpy" and r["worker"] is None for r in rows)
    assert rows[1]["command"] == "gpunet train --hidden 16 --epochs 2 --seed 1" == configs[1].command()
    assert rows[1]["config"]["seed"] == 1 and len(rows[1]["history"]) == 2
    direct = run_config(configs[2])  # the same seed gives the same numbers outside the sweep
    assert rows[2]["test_accuracy"] == direct["test_accuracy"] and rows[2]["test_accuracy"] > 0.2
    assert calls == [(0, 1, 0, 3), (1, 1, 0, 3), (2, 1, 0, 3), (3, 0, 0, 3)]
    before = path.read_bytes()
    calls.clear()
    again = gd.run_sweep([*configs, *grid(4)[3:]], run_config, path, on_progress=lambda *a: calls.append(a))
    assert path.read_bytes().startswith(before) and len(lines(path)) == 4  # only the new seed ran
    assert again[:3] == rows and calls == [(3, 1, 0, 4), (4, 0, 0, 4)]
    calls.clear()
    assert gd.run_sweep(configs[::-1], run_config, path, on_progress=lambda *a: calls.append(a)) == rows[::-1]
    assert calls == [(3, 0, 0, 3)] and len(lines(path)) == 4  # nothing to run: one call, the bar full


def test_a_failing_run_is_recorded_with_its_reason_and_the_others_finish(tmp_path):
    configs = [*grid(1), TrainConfig(dataset="csv", train_csv=str(tmp_path / "missing.csv"),
                                     test_csv=str(tmp_path / "missing.csv"), epochs=1), *grid(2)[1:]]
    calls: list[tuple] = []
    rows = gd.run_sweep(configs, run_config, tmp_path / "r.jsonl", on_progress=lambda *a: calls.append(a))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"] == f"DataError: {tmp_path / 'missing.csv'}: no such file"
    assert rows[1]["command"].startswith("gpunet train --epochs 1 --dataset csv --train-csv ")
    assert calls[-1] == (3, 0, 1, 3)


def test_a_row_that_is_not_json_fails_its_run_alone(tmp_path):
    record = gd.run_task(lambda config: {"accuracy": object()}, grid(1)[0])
    assert record["status"] == "failed" and record["key"] == gd.run_key(grid(1)[0])
    assert record["error"].startswith("run_one's row is not JSON-ready (TypeError: Object of type object is not")


def test_a_torn_last_line_is_dropped_and_a_duplicate_key_is_not_appended(tmp_path):
    path = tmp_path / "r.jsonl"
    configs = grid(2)
    first = gd.run_task(run_config, configs[0])
    path.write_bytes((json.dumps(first) + "\n").encode() + b'{"key": "ab12", "sta')  # a kill mid-write
    assert list(gd.read_results(path)) == [first["key"]]
    rows = gd.run_sweep(configs, run_config, path)
    assert [r["key"] for r in lines(path)] == [first["key"], rows[1]["key"]]  # torn tail gone, one line each
    assert rows[0] == json.loads(json.dumps(first))  # not rerun: a rerun's epoch times would differ
    with gd.ResultsFile(path) as results:
        assert results.append(dict(first, test_accuracy=0.0)) is False  # a task that finished twice
    assert path.read_bytes().count(b"\n") == 2 and lines(path)[0]["test_accuracy"] == first["test_accuracy"]
    path.write_bytes(json.dumps(first).encode()[:50])  # the very first line torn
    assert gd.read_results(path) == {} and gd.run_sweep(configs[:1], run_config, path)[0]["status"] == "ok"
    assert len(lines(path)) == 1


def test_a_file_that_is_not_a_results_file_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes, not JSON")
    with pytest.raises(ValueError, match="notes.txt: not a gpunet results file"):
        gd.run_sweep(grid(1), run_config, path)
    text = '{"key": "1", "status": "ok", "command": "gpunet train"}\nplain text\n'
    path.write_text(text)
    with pytest.raises(ValueError, match="line 2 is not a gpunet results record"):
        gd.run_sweep(grid(1), run_config, path)
    assert path.read_text() == text


def test_a_second_client_on_the_same_results_file_is_refused(tmp_path):
    with gd.ResultsFile(tmp_path / "r.jsonl"), pytest.raises(ValueError, match="another sweep is writing this"):
        gd.run_sweep(grid(1), run_config, tmp_path / "r.jsonl")


@pytest.mark.parametrize("kwargs, match", [
    ({"workers": 0}, r"workers must be an integer >= 1; got 0"),
    ({"workers": 2, "scheduler": "tcp://127.0.0.1:8786"}, "choose one of workers, scheduler and gpus; got workers and"),
    ({"scheduler": "127.0.0.1:8786"}, r"scheduler must be an address like tcp://HOST:PORT; got '127.0.0.1:8786'"),
])
def test_bad_options_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gd.run_sweep(grid(1), run_config, tmp_path / "r.jsonl", **kwargs)
    assert not (tmp_path / "r.jsonl").exists()


def test_a_scheduler_that_does_not_answer_is_an_os_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gd, "CONNECT_TIMEOUT", 1)
    # a port of our own that refuses every connection: bound (no one else can take it) but not listening
    with socket.socket() as port:
        port.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{port.getsockname()[1]}"
        with pytest.raises(OSError, match=f"{address} after 1 s"):
            gd.run_sweep(grid(1), run_config, tmp_path / "r.jsonl", scheduler=address)
    assert not (tmp_path / "r.jsonl").exists()


def test_a_scheduler_that_accepts_and_stays_silent_is_an_os_error_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(gd, "CONNECT_TIMEOUT", 1)  # Dask's connect then waited for its handshake without end
    with socket.socket() as port:
        port.bind(("127.0.0.1", 0))
        port.listen(1)  # the kernel accepts; no one answers
        address = f"tcp://127.0.0.1:{port.getsockname()[1]}"
        outcome: dict[str, BaseException] = {}

        def run() -> None:
            try:
                gd.run_sweep(grid(1), run_config, tmp_path / "r.jsonl", scheduler=address)
            except BaseException as exc:  # handed to the test's thread
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)  # a hang must fail the test, not stop the suite
        thread.start()
        thread.join(timeout=120)
        assert not thread.is_alive(), "run_sweep still waits for a scheduler that never answers"
    assert isinstance(outcome.get("error"), OSError), outcome
    assert str(outcome["error"]) == f"the scheduler at {address} accepted the connection but did not answer within 2.5 s"
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("kwargs", [{"workers": 2}, {"scheduler": "tcp://127.0.0.1:8786"}, {"gpus": True}])
def test_without_dask_the_options_say_what_to_install(tmp_path, monkeypatch, kwargs):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    with pytest.raises(ImportError) as info:
        gd.run_sweep(grid(1), run_config, tmp_path / "r.jsonl", **kwargs)
    assert str(info.value) == 'Dask is not installed: pip install "gpunet[dask]"'
    assert not (tmp_path / "r.jsonl").exists()
    assert gd.run_sweep(grid(1), run_config, tmp_path / "r.jsonl")[0]["status"] == "ok"  # in-process still runs


def test_gpus_without_dask_cuda_or_without_a_gpu_say_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    with pytest.raises(ImportError, match=r'^dask-cuda is not installed: pip install "gpunet\[dask-cuda\]"$'):
        gd.run_sweep(grid(1), run_config, tmp_path / "r.jsonl", gpus=True)
    made = []

    class FakeCUDACluster:
        def __init__(self, *args, **kwargs):
            made.append((args, kwargs))
            raise RuntimeError("stop here")

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=FakeCUDACluster))
    monkeypatch.setattr(gd, "cupy_unavailable_reason", lambda: "no CUDA device")
    with pytest.raises(BackendUnavailableError, match="one Dask worker per GPU needs CuPy with a CUDA device: no CUDA"):
        gd.run_sweep(grid(1), run_config, tmp_path / "r.jsonl", gpus=True)
    assert made == []
    monkeypatch.setattr(gd, "cupy_unavailable_reason", lambda: None)
    with pytest.raises(RuntimeError, match="stop here"):
        gd.run_sweep(grid(1), run_config, tmp_path / "r.jsonl", gpus=True)
    assert made == [((), {})]  # one worker per visible GPU: dask-cuda's defaults
    assert not (tmp_path / "r.jsonl").exists()


def test_local_cluster_sweep_equals_the_serial_sweep_run_for_run(tmp_path):
    configs = [*grid(4, epochs=3), TrainConfig(hidden=(16,), epochs=2, backend="numpy", **DIVERGES)]
    serial = sweep.run_sweep(configs, tmp_path / "serial.jsonl")  # gpunet sweep's default: in-process
    calls, dashboards = [], []
    local = sweep.run_sweep(configs, tmp_path / "local.jsonl", workers=2,
                            on_progress=lambda *a: calls.append(a), on_dashboard=dashboards.append)
    assert [without_timing(r) for r in local] == [without_timing(r) for r in serial]
    assert [r["status"] for r in local] == ["ok"] * 4 + ["failed"]
    assert local[4]["error"].startswith("DivergenceError: training diverged in epoch 1: the training loss became nan")
    assert len({r["history"][-1]["train_loss"] for r in local[:4]}) == 4  # four seeds, four different runs
    assert all(r["worker"].startswith("tcp://127.0.0.1:") for r in local)
    assert calls[0] == (0, 5, 0, 5) and calls[-1] == (5, 0, 1, 5)  # two groups (the seeds; the diverging run)
    assert len(dashboards) == 1 and dashboards[0].startswith("http://127.0.0.1:")


def test_sweep_against_a_scheduler_address_equals_the_serial_sweep(tmp_path, dask_cluster):
    configs = grid(4)
    serial = sweep.run_sweep(configs, tmp_path / "serial.jsonl")
    remote = sweep.run_sweep(configs, tmp_path / "remote.jsonl", scheduler=dask_cluster.address)
    assert [without_timing(r) for r in remote] == [without_timing(r) for r in serial]
    assert {r["worker"] for r in remote} <= set(dask_cluster.pids)


def test_on_a_scheduler_the_workers_data_is_theirs_and_a_failed_run_is_retried(tmp_path, dask_cluster):
    missing = tmp_path / "missing.csv"  # here: the workers' machines could hold it; only they can tell
    configs = [*grid(1), TrainConfig(dataset="csv", train_csv=str(missing), test_csv=str(missing), epochs=1)]
    path = tmp_path / "r.jsonl"
    first = sweep.run_sweep(configs, path, scheduler=dask_cluster.address)
    error = f"DataError: {missing}: no such file"
    assert [(r["status"], r.get("error")) for r in first] == [("ok", None), ("failed", error)]
    again = sweep.run_sweep(configs, path, scheduler=dask_cluster.address)  # retried; the finished run is kept
    assert again[0] == first[0] and again[1]["previous_errors"] == [error] and again[1]["error"] == error
    assert sorted(r["status"] for r in lines(path)) == ["failed", "failed", "ok"]  # in the order they finished
    with pytest.raises(ValueError, match=re.escape(f"run 2 of 2: {missing}: no such file")):
        sweep.run_sweep(configs, path, workers=1)  # local workers: this machine's data, checked before any run
    assert len(lines(path)) == 3


CLIENT = textwrap.dedent("""
    import sys
    from gpunet.config import TrainConfig
    from gpunet.sweep import run_sweep
    configs = [TrainConfig(hidden=(16,), epochs=int(sys.argv[3]), backend="numpy", seed=s) for s in range(8)]
    run_sweep(configs, sys.argv[1], scheduler=sys.argv[2], batch=False)  # one run a task: they finish one by one
""")


def test_a_client_killed_mid_sweep_restarts_and_skips_the_finished_runs(tmp_path, dask_cluster):
    path, epochs = tmp_path / "r.jsonl", 12
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(path), dask_cluster.address, str(epochs)])
    try:
        wait_for(lambda: path.exists() and path.read_bytes().count(b"\n") >= 2, 120, "two finished runs")
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
    before = gd.read_results(path)
    assert 2 <= len(before) < 8, "the client finished before it was killed; the test needs longer runs"
    calls: list[tuple] = []
    configs = grid(8, epochs=epochs)
    rows = sweep.run_sweep(configs, path, scheduler=dask_cluster.address,  # batched: the runs left, one group
                           on_progress=lambda *a: calls.append(a))
    assert calls[0][0] == len(before) and calls[-1] == (8, 0, 0, 8)
    keys = [r["key"] for r in lines(path)]
    assert sorted(keys) == sorted(gd.run_key(c) for c in configs)  # every run exactly once
    assert {r["key"]: r for r in rows if r["key"] in before} == before  # not rerun: the same records
    assert all(r["status"] == "ok" for r in rows)


def test_a_worker_killed_mid_sweep_and_every_run_still_finishes_once(tmp_path):
    processes = DaskProcesses(tmp_path, n_workers=2)
    try:
        path, configs, outcome = tmp_path / "r.jsonl", grid(6, epochs=15), {}

        def run() -> None:
            try:
                outcome["rows"] = sweep.run_sweep(configs, path, scheduler=processes.address)
            except BaseException as exc:  # handed to the test's thread
                outcome["error"] = exc

        with dask_distributed.Client(processes.address, timeout=30) as watcher:
            thread = threading.Thread(target=run)
            thread.start()
            busy: list[str] = []
            wait_for(lambda: busy.extend(a for a, keys in watcher.processing().items() if keys) or busy
                     or not thread.is_alive(), 120, "a worker with a task")
            assert busy, f"the sweep ended before a worker was seen running a task: {outcome}"
            victim = busy[0]
            os.kill(processes.pids[victim], signal.SIGKILL)
            done_at_kill = len(gd.read_results(path))
        thread.join(timeout=180)
        assert not thread.is_alive(), "the sweep did not finish after a worker was killed"
        assert "error" not in outcome, outcome.get("error")
        assert done_at_kill < len(configs)
        rows = outcome["rows"]
        assert [r["status"] for r in rows] == ["ok"] * 6
        keys = [r["key"] for r in lines(path)]
        assert len(keys) == 6 and set(keys) == {gd.run_key(c) for c in configs}  # every run exactly once
        survivor = next(a for a in processes.pids if a != victim)
        assert lines(path)[-1]["worker"] == survivor
    finally:
        processes.close()


def test_readme_dask_example_runs_as_written_and_a_second_run_skips_everything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    monkeypatch.chdir(tmp_path)
    block = next(b for b in readme_blocks() if "run_sweep" in b)
    exec(compile(block, str(README), "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/status$", out, re.M), out
    assert "4/4 done, 0 failed" in out
    accuracies = re.findall(r"\d+\.\d%", out.splitlines()[-1])
    assert len(accuracies) == 4 and all(float(a[:-1]) > 50 for a in accuracies)
    first = (tmp_path / "seeds.jsonl").read_bytes()
    exec(compile(block, str(README), "exec"), {"__name__": "__main__"})
    again = capsys.readouterr().out
    assert (tmp_path / "seeds.jsonl").read_bytes() == first  # nothing rerun
    assert "dashboard" not in again and again.splitlines()[-1] == out.splitlines()[-1]  # no cluster started


def dies_on_seed_1(config: TrainConfig) -> dict:
    """A run that takes its worker process down with it (as a crash or the OOM killer would)."""
    if config.seed == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_config(config)


def test_a_run_that_kills_every_worker_it_is_given_is_recorded_as_failed(tmp_path):
    import cloudpickle
    import dask

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # the first death is the last
            rows = gd.run_sweep(grid(3), dies_on_seed_1, tmp_path / "r.jsonl", workers=2)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"].startswith("KilledWorker: Attempted to run task"), rows[1]["error"]
    assert rows[1]["command"] == "gpunet train --hidden 16 --epochs 2 --seed 1"
    assert len(lines(tmp_path / "r.jsonl")) == 3


def test_readme_sweep_commands_run_as_written_and_agree(tmp_path, dask_cluster):
    """The README's ```sh block of ``gpunet sweep`` lines, each run as a command (HOST: the test's scheduler)."""
    import shlex

    block = next(b for b in readme_blocks("sh") if "tcp://HOST:8786" in b)
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("gpunet sweep")]
    assert [c[:3] for c in commands] == [["gpunet", "sweep", "scripts/sweeps/digits.toml"]] * 4
    (tmp_path / "scripts").symlink_to(README.parent / "scripts")
    gpunet = [sys.executable, "-m", "gpunet"]
    env = {**os.environ, "GPUNET_BACKEND": "numpy"}
    results = {}
    for words in commands:
        words = [w.replace("tcp://HOST:8786", dask_cluster.address) for w in words]
        out = subprocess.run([*gpunet, *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
        if "--gpus" in words:  # no GPU here: it stops at its one-line reason, before any run
            assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
            assert re.match(r'gpunet sweep: error: (dask-cuda is not installed: pip install "gpunet\[dask-cuda\]"'
                            r"|one Dask worker per GPU needs CuPy with a CUDA device: )", out.stderr), out.stderr
            assert not (tmp_path / "gpus.json").exists() and not (tmp_path / "gpus.jsonl").exists()
            continue
        assert out.returncode == 0, out.stderr
        assert ("dashboard: http://127.0.0.1:" in out.stdout) == (len(words) > 3)  # a cluster's, not in-process
        name = words[words.index("--out") + 1] if "--out" in words else "digits.json"
        results[name] = json.loads((tmp_path / name).read_text())["results"]
        assert out.stdout.count(" ok\n") == 6 and f"wrote {name}" in out.stdout
    assert list(results) == ["digits.json", "local.json", "cluster.json"]
    serial, local, cluster = ([without_timing(r) for r in results[name]] for name in results)
    assert len(serial) == 6 and all(r["test_accuracy"] > 0.9 for r in serial)
    assert local == serial == cluster
    assert {r["worker"] for r in results["cluster.json"]} <= set(dask_cluster.pids)


def test_gpunet_sweep_reports_a_cluster_that_fails_to_start_in_one_line(tmp_path, monkeypatch, capsys):
    from gpunet.cli import main

    def fails(**kwargs):
        raise RuntimeError("Cluster failed to start: Worker failed to start.\nTraceback (most recent call last): ...")

    monkeypatch.setattr(dask_distributed, "LocalCluster", fails)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text('[base]\nhidden = [8]\nepochs = 1\n[grid]\nseed = [0, 1]\n')
    assert main(["sweep", "s.toml", "--workers", "2"]) == 2
    assert capsys.readouterr().err == ("gpunet sweep: error: the Dask cluster did not start: RuntimeError: Cluster "
                                       "failed to start: Worker failed to start.\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]  # nothing written


def test_sweep_bench_runs_and_finds_the_two_sweeps_equal(tmp_path, capsys):
    bench = load_script("sweep_bench")
    out = tmp_path / "bench.json"
    assert bench.main(["--runs", "2", "--hidden", "8", "--epochs", "1", "--repeats", "1", "--out", str(out)]) == 0
    assert "results equal run for run" in capsys.readouterr().out  # 1 is returned where they differ
    doc = json.loads(out.read_text())
    assert len(doc["repeats"]) == 1 and doc["median_ratio"] == doc["repeats"][0]["ratio"] > 0
