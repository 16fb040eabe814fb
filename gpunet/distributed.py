"""Running a sweep's configs in-process or on Dask workers, each finished run appended whole to a JSON Lines file.

This is the one place where sweeps run: ``gpunet sweep`` and
``gpunet.sweep.run_sweep`` call it with ``run_one=gpunet.sweep.run_config``.
``run_sweep(configs, run_one, "results.jsonl")`` runs every config one after
another; ``workers=N`` runs them on a Dask LocalCluster of N processes,
``scheduler="tcp://HOST:PORT"`` on an existing Dask cluster and ``gpus=True``
on dask-cuda's LocalCUDACluster (one worker per visible GPU; unverified on a
GPU). Only this process (the client) writes the results file: one line per
finished run, written with one ``write`` and fsynced, so a killed client leaves
whole lines (a torn last line is dropped on the next start). A restart with the
same file skips the runs it holds that finished; each run's key is a hash of
its config. A run that failed is run again (its earlier errors go into the new
line's ``previous_errors``), unless ``skip_failed``. Dask reruns the task of a
killed worker elsewhere; a run that raises is recorded as failed with its
one-line reason and the other runs go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .backend import BackendUnavailableError, cupy_unavailable_reason
from .checks import check_int

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, one client per file is then up to the user
    fcntl = None  # type: ignore[assignment]

DASK_HINT = 'Dask is not installed: pip install "gpunet[dask]"'
DASK_CUDA_HINT = 'dask-cuda is not installed: pip install "gpunet[dask-cuda]"'
# A lost worker's task is rerun by the scheduler itself (up to distributed.scheduler.allowed-failures times);
# retries covers an error outside run_one (run_one's own are caught and recorded), e.g. a worker that cannot import it.
RETRIES = 2
CONNECT_TIMEOUT = 30  # seconds to reach a scheduler given by address before giving up with an OSError


def answer_timeout() -> float:
    """Seconds to wait for a scheduler's handshake: Dask's connect retries a refused address for CONNECT_TIMEOUT
    seconds, then gives up with its own message; this one only fires on a peer that accepted and stays silent."""
    return 1.5 * CONNECT_TIMEOUT + 1
Record = dict[str, Any]
Progress = Callable[[int, int, int, int], object]
# What a field of a record must be: (is it valid, what a valid one is in words); ``MISSING`` stands for an absent field.
Fields = dict[str, tuple[Callable[[Any], bool], str]]
MISSING = object()
STATUSES = ("ok", "failed")


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _texts(v: Any) -> bool:
    return v is MISSING or (isinstance(v, list) and all(isinstance(x, str) for x in v))


# The fields of every record that this module and its callers read: the sweep's own, whatever run_one returns.
RECORD_FIELDS: Fields = {
    "key": (lambda v: isinstance(v, str) and v != "", "a run's key (text)"),
    "status": (lambda v: v in STATUSES, "ok or failed"),
    "command": (_text, "the run's command (text)"),
    "previous_errors": (_texts, "a list of texts, where present"),
}
FAILED_FIELDS: Fields = {"error": (_text, "the failed run's reason (text)")}


class ClusterStartError(RuntimeError):
    """A Dask cluster this process started did not come up (Dask raises a RuntimeError); the message is one line."""


def run_key(config: Any) -> str:
    """A stable name for a run: the first 16 hex digits of the SHA-256 of its config as sorted JSON."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _where() -> dict[str, Any]:
    """The host, and the Dask worker's address when this runs on one."""
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):  # in-process, or Dask not installed
        worker = None
    return {"host": platform.node(), "worker": worker}


def one_line(exc: BaseException) -> str:
    """``TypeName: first line of the message``, the reason recorded for a failed run."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def failed_record(config: Any, reason: str, started: str | None = None, wall_seconds: float | None = None) -> Record:
    """The results line of a run that did not finish: its config, command and reason."""
    return {
        "key": run_key(config), "status": "failed", "error": reason, "config": dataclasses.asdict(config),
        "command": config.command(), "backend": config.backend, "device": None, **_where(), "started": started,
        "finished": _utc(), "wall_seconds": wall_seconds,
    }


def run_task(run_one: Callable[[Any], Record], config: Any) -> Record:
    """Run one config where this is called (a Dask worker, or in-process) and return its results line.

    An exception from ``run_one`` (a bad config, a divergence) becomes a failed
    record, so Dask never retries it: its retries are for lost workers.
    """
    started, start = _utc(), time.perf_counter()
    try:
        row = run_one(config)
    except Exception as exc:
        return failed_record(config, one_line(exc), started, round(time.perf_counter() - start, 2))
    return _finished(config, row, started, start)


def _finished(config: Any, row: Record, started: str, start: float) -> Record:
    """The results line of a run that finished with ``row``, started at ``started`` (``start`` on the clock)."""
    record = {
        "key": run_key(config), "status": "ok", "config": dataclasses.asdict(config), "command": config.command(),
        **row, **_where(), "started": started, "finished": _utc(),
        "wall_seconds": round(time.perf_counter() - start, 2),
    }
    record.update(key=run_key(config), status="ok")  # whatever the row holds, these two are the sweep's
    try:
        json.dumps(record)  # here, not in the client: a row that cannot be written fails its run alone
    except (TypeError, ValueError) as exc:
        return failed_record(config, f"run_one's row is not JSON-ready ({one_line(exc)})", started,
                             round(time.perf_counter() - start, 2))
    return record


def run_group_task(run_group: Callable[[list[Any]], list[Any]], configs: list[Any]) -> list[Record]:
    """Run the configs of one group together where this is called and return each one's results line, as
    :func:`run_task` would: ``run_group(configs)`` returns one row or one exception per config (a run that
    diverged fails alone). An exception from ``run_group`` itself fails every run of the group with it.
    """
    started, start = _utc(), time.perf_counter()
    try:
        outcomes = run_group(configs)
    except Exception as exc:
        return [failed_record(c, one_line(exc), started, round(time.perf_counter() - start, 2)) for c in configs]
    seconds = round(time.perf_counter() - start, 2)
    return [_finished(config, outcome, started, start) if not isinstance(outcome, BaseException)
            else failed_record(config, one_line(outcome), started, seconds)
            for config, outcome in zip(configs, outcomes)]


def read_results(path: str | os.PathLike[str], fields: Fields | None = None) -> dict[str, Record]:
    """The records of a results file by key; {} if there is no file.

    A key's record is its first ``ok`` line, else its last line (a run that
    failed, then failed again when retried). Every line is checked: the sweep's
    own fields (``RECORD_FIELDS``; ``error`` on a failed run) and, on a run that
    finished, ``fields`` (what ``run_one``'s rows hold that the caller reads); a
    line that fails is an error naming the file, the line and the field. A last
    line without its newline is a write cut short by a kill and is ignored.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise FileExistsError(f"{path} is a symbolic link to nothing (a missing file or a loop); remove it or "
                              "name another results file")
    if not path.exists():
        return {}
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected a sweep's results file (JSON Lines)")
    records, _ = _parse(path, path.read_bytes(), fields or {})
    return records


def _parse(path: Path, data: bytes, fields: Fields) -> tuple[dict[str, Record], int]:
    """The records in ``data`` and the length of its whole lines (the rest is a torn last line)."""
    whole = data.rfind(b"\n") + 1
    records: dict[str, Record] = {}
    for number, line in enumerate(data[:whole].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("key"), str) and "status" in record):
            raise ValueError(f"{path}: line {number} is not a gpunet results record; expected a JSON Lines "
                             "results file written by gpunet.distributed.run_sweep")
        _check_fields(record, {**RECORD_FIELDS, **(FAILED_FIELDS if record["status"] == "failed" else fields)},
                      f"{path}: line {number}")
        if record["key"] not in records or records[record["key"]]["status"] != "ok":
            records[record["key"]] = record
    if whole < len(data) and not records and not data.startswith(b'{"key": '):  # someone else's file, not a torn line
        raise ValueError(f"{path}: not a gpunet results file (no complete JSON line); choose another results path")
    return records, whole


def _check_fields(record: Record, fields: Fields, where: str) -> None:
    for name, (valid, expected) in fields.items():
        value = record.get(name, MISSING)
        if not valid(value):
            got = "nothing" if value is MISSING else repr(value)
            if len(got) > 60:
                got = got[:57] + "..."
            raise ValueError(f"{where}: {name} must be {expected}; got {got} (fix the line, or delete it to run "
                             "that config again)")


class ResultsFile:
    """The results file held for appending: locked against a second client, its torn last line dropped.

    Each key is appended once while it is open, and never after its run finished
    ``ok``; a record that follows a failed one of its key carries that one's
    errors in ``previous_errors``.
    """

    def __init__(self, path: str | os.PathLike[str], fields: Fields | None = None) -> None:
        self.path = Path(path)
        self.appended: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ValueError(f"{self.path}: another sweep is writing this results file") from None
            data = self.path.read_bytes()
            self.done, whole = _parse(self.path, data, fields or {})
            if whole < len(data):
                os.ftruncate(self.fd, whole)  # a half line from a killed client: the next line starts clean
        except BaseException:
            os.close(self.fd)
            raise

    def append(self, record: Record) -> bool:
        """Append ``record`` as one line in one write (False, and nothing written, if its key is done)."""
        key, before = record["key"], self.done.get(record["key"])
        if key in self.appended or (before is not None and before["status"] == "ok"):
            return False
        if before is not None:  # a retry of a failed run: its errors stay on record
            record = {**record, "previous_errors": [*before.get("previous_errors", []), before["error"]]}
        data = (json.dumps(record) + "\n").encode()
        while data:  # one write for a regular file; the loop only guards a short write (a full disk)
            data = data[os.write(self.fd, data):]
        os.fsync(self.fd)
        self.done[key] = record
        self.appended.add(key)
        return True

    def close(self) -> None:
        os.close(self.fd)  # also releases the lock

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ImportError(DASK_HINT) from None
    return distributed


def _import_dask_cuda() -> Any:
    try:
        import dask_cuda
    except ImportError:
        raise ImportError(DASK_CUDA_HINT) from None
    return dask_cuda


def _check_mode(workers: int | None, scheduler: str | None, gpus: bool) -> str:
    chosen = [name for name, on in (("workers", workers is not None), ("scheduler", scheduler is not None),
                                    ("gpus", bool(gpus))) if on]
    if len(chosen) > 1:
        raise ValueError(f"choose one of workers, scheduler and gpus; got {' and '.join(chosen)}")
    if workers is not None:
        check_int("workers", workers, 1)
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise ValueError(f"scheduler must be an address like tcp://HOST:PORT; got {scheduler!r}")
    if chosen:
        _import_distributed()
    if gpus:
        _import_dask_cuda()
        reason = cupy_unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"one Dask worker per GPU needs CuPy with a CUDA device: {reason}")
    return chosen[0] if chosen else "in-process"


def _probe_scheduler(address: Any) -> None:
    """OSError unless the scheduler at ``address`` answers Dask's handshake in time.

    Dask's connect gives up on a refused address after its timeout, but then
    reads the peer's handshake with no timeout: a peer that accepts and stays
    silent (a stopped scheduler, a silent service on that port) would hang the
    sweep for ever. The probe runs on its own event loop in a thread of its own,
    apart from any loop the caller runs.
    """
    from distributed.comm import connect

    outcome: dict[str, BaseException] = {}

    async def handshake() -> None:
        try:
            comm = await asyncio.wait_for(connect(address, timeout=CONNECT_TIMEOUT), answer_timeout())
        except asyncio.TimeoutError:
            raise OSError(f"the scheduler at {address} accepted the connection but did not answer within "
                          f"{answer_timeout():g} s") from None
        await comm.close()

    def probe() -> None:
        try:
            asyncio.run(handshake())
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="gpunet-scheduler-probe", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]


class _Cluster:
    """A Dask client on a new local cluster, a new LocalCUDACluster, or an existing scheduler; closes what it made."""

    def __init__(self, mode: str, workers: int | None, scheduler: str | None) -> None:
        distributed = _import_distributed()
        self.cluster = None
        try:
            if mode == "workers":
                self.cluster = distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",  # a free port on loopback: several sweeps may run on one host
                )
            elif mode == "gpus":
                self.cluster = _import_dask_cuda().LocalCUDACluster()
        except RuntimeError as exc:  # Dask's "Cluster failed to start", with the worker's traceback in its message
            raise ClusterStartError(f"the Dask cluster did not start: {one_line(exc)}") from exc
        try:
            if self.cluster is None:
                _probe_scheduler(scheduler)
            self.client = distributed.Client(self.cluster if self.cluster is not None else scheduler,
                                             timeout=CONNECT_TIMEOUT)
        except BaseException:
            if self.cluster is not None:
                self.cluster.close()
            raise

    @property
    def dashboard(self) -> str | None:
        try:
            return self.client.dashboard_link
        except (KeyError, AttributeError):  # a scheduler started without its dashboard
            return None

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def run_sweep(
    configs: Sequence[Any],
    run_one: Callable[[Any], Record],
    results_path: str | os.PathLike[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    gpus: bool = False,
    skip_failed: bool = False,
    fields: Fields | None = None,
    before: Callable[[list[int], str], object] | None = None,
    on_progress: Progress | None = None,
    on_dashboard: Callable[[str], object] | None = None,
    group_key: Callable[[Any], Any] | None = None,
    run_group: Callable[[list[Any]], list[Any]] | None = None,
) -> list[Record]:
    """Run every config not yet finished in ``results_path``; each config's record, in the order of ``configs``.

    ``configs`` are frozen dataclasses with a ``command()`` method (TrainConfig);
    ``run_one(config)`` returns one JSON-ready row and must be picklable (a
    module-level function) for Dask. ``workers``, ``scheduler`` and ``gpus``
    choose where the runs go (none of them: in-process). A run recorded as
    failed is run again, unless ``skip_failed``. ``fields``: what a finished
    run's line must hold, checked on every line read (see ``read_results``).
    ``before(indices, mode)`` is called with the indices in ``configs`` of the
    runs about to start and where they run (``"in-process"``, ``"workers"``,
    ``"scheduler"`` or ``"gpus"``), after the options and the results file are
    checked and before any cluster starts or anything is written: it raises to
    stop the sweep. ``on_progress(finished, running, failed, total)`` is called
    as runs start and end (``running``: runs on workers now, at most one per
    worker thread); ``on_dashboard(address)`` once a cluster is connected, with
    its dashboard's address. Configs with the same key run once.

    With ``group_key`` and ``run_group`` (both picklable), the runs to do whose ``group_key(config)`` is equal
    train together, one group a task: ``run_group(configs)`` returns one row (or one exception) per config,
    in order. A group is retried whole (a lost worker), and its finished runs are each written as they are.
    """
    mode = _check_mode(workers, scheduler, gpus)
    keys = [run_key(c) for c in configs]
    unique = dict(zip(keys, configs))
    done = read_results(results_path, fields)
    todo = [k for k in unique if k not in done or (done[k]["status"] != "ok" and not skip_failed)]
    if before is not None and todo:
        first: dict[str, int] = {}  # each key's first index in configs
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        before([first[k] for k in todo], mode)
    if not todo:
        _Counter(unique, todo, done, on_progress).report(0)  # nothing to run: the bar is full
    else:
        cluster = _Cluster(mode, workers, scheduler) if mode != "in-process" else None
        try:
            if cluster is not None and on_dashboard is not None and cluster.dashboard:
                on_dashboard(cluster.dashboard)
            with ResultsFile(results_path, fields) as results:
                todo = [k for k in todo if k not in results.done or results.done[k]["status"] != "ok"]
                counter = _Counter(unique, todo, results.done, on_progress)
                configs_todo = [unique[k] for k in todo]
                tasks: list[tuple[Callable[..., Any], Any]] = [(run_task, (run_one, c)) for c in configs_todo]
                if group_key is not None and run_group is not None:
                    tasks = [(run_group_task, (run_group, group)) for group in _groups(configs_todo, group_key)]
                if cluster is None:
                    _run_serial(tasks, results, counter)
                else:
                    _run_dask(cluster.client, tasks, results, counter)
        finally:
            if cluster is not None:
                cluster.close()
    done = read_results(results_path, fields)
    return [done[k] for k in keys]


class _Counter:
    """The numbers handed to ``on_progress``."""

    def __init__(self, unique: dict[str, Any], todo: list[str], done: dict[str, Record],
                 on_progress: Progress | None) -> None:
        left = set(todo)
        here = [done[k] for k in unique if k in done and k not in left]
        self.finished, self.failed, self.total = len(here), sum(r["status"] != "ok" for r in here), len(unique)
        self.on_progress = on_progress

    def add(self, record: Record) -> None:
        self.finished += 1
        self.failed += record["status"] != "ok"

    def report(self, running: int) -> None:
        if self.on_progress is not None:
            self.on_progress(self.finished, running, self.failed, self.total)


def _groups(configs: list[Any], key: Callable[[Any], Any]) -> list[list[Any]]:
    """``configs`` grouped by ``key``, each group in the order of its first config."""
    groups: dict[Any, list[Any]] = {}
    for config in configs:
        groups.setdefault(key(config), []).append(config)
    return list(groups.values())


def _records(task: tuple[Callable[..., Any], Any]) -> list[Record]:
    """A task's results lines: one run's (run_task) or a group's (run_group_task)."""
    function, args = task
    out = function(*args)
    return out if isinstance(out, list) else [out]


def _configs(task: tuple[Callable[..., Any], Any]) -> list[Any]:
    function, (_, what) = task
    return what if function is run_group_task else [what]


def _run_serial(tasks: list[tuple[Callable[..., Any], Any]], results: ResultsFile, counter: _Counter) -> None:
    for task in tasks:
        counter.report(len(_configs(task)))
        for record in _records(task):
            if results.append(record):
                counter.add(record)
    counter.report(0)


def _run_dask(client: Any, tasks: list[tuple[Callable[..., Any], Any]], results: ResultsFile,
              counter: _Counter) -> None:
    distributed = _import_distributed()
    futures = {client.submit(_records, task, pure=False, retries=RETRIES): task for task in tasks}
    pending = {future: len(_configs(task)) for future, task in futures.items()}

    def running() -> int:  # runs on workers now: a task a worker thread, a group's runs all at once
        slots = sum(client.nthreads().values())
        return sum(sorted(pending.values(), reverse=True)[:slots])

    counter.report(running())
    try:
        for future in distributed.as_completed(futures):
            task = futures[future]
            try:
                records = future.result()
            except distributed.KilledWorker as exc:  # it took down every worker it was given: the runs' fault
                records = [failed_record(config, one_line(exc)) for config in _configs(task)]
            del pending[future]
            for record in records:
                if results.append(record):  # False: a rerun of a task whose first result was already written
                    counter.add(record)
            counter.report(running())
    finally:
        client.cancel(list(futures))
