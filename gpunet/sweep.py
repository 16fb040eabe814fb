"""Sweeps: grid files, one run of a config, and a sweep's results table and JSON.

A sweep runs each config through the same ``Run`` as ``gpunet train`` (early
stopping included), kept in memory: ``run_config`` runs ONE config and returns
one JSON-ready row. ``run_sweep`` hands ``run_config`` to
``gpunet.distributed.run_sweep``, the one place where sweeps run (in-process,
or on Dask workers), which appends each finished run to a JSON Lines results
file and skips the runs already there.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import distributed
from .config import TrainConfig
from .datasets import Split
from .files import require_file, write_json
from .machine import machine, processor
from .run import Run, load_data

COLUMNS = [("network", "network", "{}"), ("command", "command", "{}"), ("backend", "backend", "{}"),
           ("epochs", "epochs", "{}"), ("seconds", "seconds", "{:.1f}"), ("test acc", "test_accuracy", "{:.2%}"),
           ("best epoch", "best_epoch_accuracy", "{:.2%}"), ("status", "status", "{}")]


def load_grid(path: str | os.PathLike[str]) -> tuple[str, list[TrainConfig]]:
    """A sweep file (TOML or JSON) -> its name and one config per run.

    ``base`` holds the settings every run shares; ``grid`` maps settings to lists
    of values, and every combination is run; ``runs`` is a list of further
    settings, one run each (with ``grid`` too, every run in every combination).
    """
    path = require_file(path, ValueError)
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib

            spec = tomllib.loads(path.read_text())
        else:
            spec = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{path}: not a valid {path.suffix.lstrip('.') or 'JSON'} sweep file ({exc})") from None
    if not isinstance(spec, dict) or not set(spec) <= {"name", "description", "base", "grid", "runs"}:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"{path}: a sweep file holds name, description, base, grid and runs; got {keys}")
    base, grid, runs = spec.get("base", {}), spec.get("grid", {}), spec.get("runs", [{}])
    if not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"{path}: every grid setting must be a non-empty list of values")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    try:
        configs = [TrainConfig.from_dict({**base, **run, **combo}) for run in runs for combo in combos]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return str(spec.get("name", path.stem)), configs


def override(configs: list[TrainConfig], *, backend: str | None = None, epochs: int | None = None,
             data_dir: str | None = None) -> list[TrainConfig]:
    """``configs`` with every run's backend and epochs replaced where given, and ``data_dir`` for the MNIST runs."""
    given = {k: v for k, v in (("backend", backend), ("epochs", epochs)) if v is not None}
    return [replace(c, **given, **({"data_dir": data_dir} if c.dataset == "mnist" and data_dir else {}))
            for c in configs]


_shared: dict[tuple[Any, ...], Split] | None = None  # while run_sweep runs: the last dataset run_config loaded


def run_config(config: TrainConfig, data: Split | None = None) -> dict[str, Any]:
    """Train ``config`` from scratch, writing nothing, and return its results row (JSON-ready).

    ``data``: the config's dataset, already loaded (``gpunet.run.load_data``).
    """
    if data is None and _shared is not None:  # in a sweep in this process: runs on the same data load it once
        key = _data_key(config)
        if key not in _shared:
            _shared.clear()  # one dataset in memory at a time
            _shared[key] = load_data(config)
        data = _shared[key]
    run = Run.new(config, None, data=data)
    start = time.perf_counter()
    history = run.train()
    seconds = time.perf_counter() - start
    last, backend = history[-1], run.net.backend
    row = {
        "command": config.command(), "config": config.to_dict(), "network": str(run.net.sizes),
        "backend": backend.name, "device": backend.device if backend.name == "cupy" else processor(),
        "epochs": last["epoch"], "seconds": round(seconds, 2), "test_accuracy": last["test_accuracy"],
        "test_error": 1.0 - last["test_accuracy"],
        "best_epoch_accuracy": max(r["test_accuracy"] for r in history), "history": history,
    }
    if run.stopping is not None:
        row["early_stopping"] = run.stopping.state()
    return row


def _data_key(config: TrainConfig) -> tuple[Any, ...]:
    # Runs that differ only in what is trained share a dataset; the seed picks the validation rows.
    return (config.dataset, config.data_dir, config.train_csv, config.test_csv, config.pixels, config.dtype,
            config.validation_share, config.seed if config.validation_share else None)


@contextmanager
def _sharing_data() -> Iterator[None]:
    global _shared
    _shared = {}
    try:
        yield
    finally:
        _shared = None


def run_sweep(configs: Sequence[TrainConfig], results_path: str | os.PathLike[str], *, workers: int | None = None,
              scheduler: str | None = None, gpus: bool = False, on_progress: distributed.Progress | None = None,
              on_dashboard: Callable[[str], object] | None = None) -> list[dict[str, Any]]:
    """Run every config not yet in ``results_path`` (JSON Lines) with ``run_config``; each config's record, in order.

    ``gpunet.distributed.run_sweep(configs, run_config, results_path, ...)``:
    in-process with none of ``workers``, ``scheduler`` and ``gpus`` (runs that
    need the same dataset then load it once), else on Dask workers (each run
    loads its own). Each record is ``run_config``'s row with the run's ``key``
    and ``status`` (``"ok"``, or ``"failed"`` with its one-line ``error``).
    """
    with _sharing_data():
        return distributed.run_sweep(configs, run_config, results_path, workers=workers, scheduler=scheduler,
                                     gpus=gpus, on_progress=on_progress, on_dashboard=on_dashboard)


def failures(records: list[dict[str, Any]]) -> list[str]:
    """``command: reason`` for each failed run of ``records``."""
    return [f"{r['command']}: {r['error']}" for r in records if r["status"] != "ok"]


# What a record holds that depends on when and where its run ran: the clock, the host, the Dask worker.
TIMING = frozenset({"seconds", "samples_per_s", "wall_seconds", "started", "finished", "host", "worker"})


def without_timing(record: Any) -> Any:
    """``record`` (a results line, or any JSON value) without its ``TIMING`` keys, at every depth.

    Two sweeps of the same configs, serial or on Dask, give equal records this way.
    """
    if isinstance(record, dict):
        return {k: without_timing(v) for k, v in record.items() if k not in TIMING}
    if isinstance(record, list):
        return [without_timing(v) for v in record]
    return record


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]] = COLUMNS) -> str:
    """A plain-text table; ``columns`` are (heading, key, format) like ("test acc", "test_accuracy", "{:.2%}")."""
    cells = [[heading for heading, _, _ in columns]]
    cells += [[fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(path: str | os.PathLike[str], name: str, rows: list[dict[str, Any]]) -> None:
    """The rows of a sweep with the machine and date, as JSON, written atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"name": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "results": rows})

