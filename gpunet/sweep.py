"""Sweeps: grid files, running them one config at a time, and their results.

A sweep runs each config through the same ``Run`` as ``gpunet train`` (early
stopping included), kept in memory. ``run_config`` runs ONE config and returns
one JSON-ready row; ``run_sweep`` appends each finished row to a JSON Lines file
and skips the configs already there, so an interrupted sweep goes on where it
stopped. (A parallel executor can call ``run_config`` in its workers.)
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .config import TrainConfig
from .datasets import Split
from .files import require_file, write_json
from .machine import machine, processor
from .run import Run, load_data

COLUMNS = [("network", "network", "{}"), ("command", "command", "{}"), ("backend", "backend", "{}"),
           ("epochs", "epochs", "{}"), ("seconds", "seconds", "{:.1f}"), ("test acc", "test_accuracy", "{:.2%}"),
           ("best epoch", "best_epoch_accuracy", "{:.2%}")]


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


def run_config(config: TrainConfig, data: Split | None = None) -> dict[str, Any]:
    """Train ``config`` from scratch, writing nothing, and return its results row (JSON-ready)."""
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


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a JSON Lines results file (a torn last line, from a killed sweep, is left out)."""
    path, rows = Path(path), []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def run_sweep(configs: list[TrainConfig], rows_path: str | os.PathLike[str],
              on_row: Callable[[int, dict[str, Any], bool], object] | None = None) -> list[dict[str, Any]]:
    """Run every config not yet in ``rows_path`` (JSON Lines), appending each row as it finishes.

    Returns the rows in the order of ``configs``; ``on_row(k, row, done_before)``
    is called for each, ``k`` counting from 1.
    """
    rows_path = Path(rows_path)
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    if rows_path.exists():  # cut a torn last line (a killed sweep), or the next row would be glued to it
        text = rows_path.read_bytes()
        if text and not text.endswith(b"\n"):
            os.truncate(rows_path, text.rfind(b"\n") + 1)
    done = {json.dumps(r["config"], sort_keys=True): r for r in read_rows(rows_path)}
    rows, cache = [], {}
    for k, config in enumerate(configs, start=1):
        key = json.dumps(config.to_dict(), sort_keys=True)
        row = done.get(key)
        if row is None:
            if _data_key(config) not in cache:
                cache = {_data_key(config): load_data(config)}  # one dataset in memory at a time
            row = run_config(config, cache[_data_key(config)])
            with open(rows_path, "a") as f:  # one whole line per write
                f.write(json.dumps(row) + "\n")
        rows.append(row)
        if on_row is not None:
            on_row(k, row, key in done)
    return rows


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

