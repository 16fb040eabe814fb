"""Sweeps: sweep files, every run checked before the first starts, one run of a config, and a sweep's results.

``read_sweep`` reads a sweep file and checks every config in it, naming the
run (its place in the grid) and the setting that is wrong. ``run_sweep`` then
probes each backend and loads each dataset the runs need, once, before the
first run starts and before anything is written, and runs each config through
the same ``Run`` as ``gpunet train`` (early stopping included), kept in memory:
``run_config`` runs ONE config and returns one JSON-ready row. Underneath is
``gpunet.distributed.run_sweep``, the one place where sweeps run (in-process,
or on Dask workers), which appends each finished run to a JSON Lines results
file and skips the runs already finished there. Each row records the epoch a
sweep selects, by validation accuracy, never by test accuracy.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import distributed
from .backend import BackendUnavailableError, get_backend
from .checks import check_kernels
from .config import TrainConfig
from .datasets import Split
from .files import output_path, require_file, write_json
from .machine import machine, processor
from .many import train_many
from .run import EarlyStopping, Run, augmentation, build, load_data, schedule_settings
from .training import validation_rows

COLUMNS = [("network", "network", "{}"), ("command", "command", "{}"), ("backend", "backend", "{}"),
           ("epochs", "epochs", "{}"), ("seconds", "seconds", "{:.1f}"), ("best epoch", "best_epoch", "{}"),
           ("best val acc", "best_val_accuracy", "{:.2%}"), ("test acc at best epoch", "test_accuracy_at_best",
                                                             "{:.2%}"),
           ("final test acc", "test_accuracy", "{:.2%}"), ("status", "status", "{}")]
LEGEND = ("best epoch: the epoch of the best validation accuracy (the earliest of equals), or the final epoch "
          "where a run holds out no validation images; the test accuracy never selects")

SECTIONS = ("name", "description", "base", "grid", "runs")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a sweep's name names its results file

EXAMPLE = """\
# A gpunet sweep file (TOML; a .json file with the same keys works too). Run it with:
#   gpunet sweep example.toml          (results: example.json, and example.jsonl holds the finished runs)
# Settings are gpunet train's options, spelled with _ for - (batch_size = 64 for --batch-size 64).
name = "example"        # names the results (default: the file's name)
description = "Width and learning rate on the 8x8 digits, three seeds each."

[base]                  # the settings every run shares
dataset = "digits"      # or "mnist" (with data_dir = "DIR", else downloaded once), or "csv" (train_csv, test_csv)
activation = "relu"
optimizer = "adam"
epochs = 20
batch_size = 32
validation = 0.1        # hold out 10% of the training images: the best epoch and run are chosen on them

[grid]                  # every combination of these lists runs: 2 x 2 x 3 = 12 runs
hidden = [[64], [256, 128]]
lr = [0.001, 0.01]
seed = [0, 1, 2]

# [[runs]] tables each add settings of their own, and each runs with every combination of the grid
# (a setting given in several places: grid over runs over base).
# [[runs]]
# init = "he"
# [[runs]]
# init = "xavier"
"""


@dataclass(frozen=True)
class Sweep:
    """A sweep file, read and checked: its name, one config per run, and where each run comes from in it."""

    path: Path
    name: str
    configs: list[TrainConfig]
    labels: list[str]  # "run 3 of 12 (lr = 0.01, seed = 2)": the run's place in the grid, as the file spells it


def read_sweep(path: str | os.PathLike[str]) -> Sweep:
    """A sweep file (TOML or JSON), every config in it checked; ValueError naming the run and the setting.

    ``base`` holds the settings every run shares; ``grid`` maps settings to lists
    of values, and every combination is run; ``runs`` is a list of further
    settings, one run each (with ``grid`` too, every run in every combination).
    A setting given in several places: the grid's over the run's over base's.
    """
    path = require_file(path, ValueError)
    spec = _parse(path)

    def refuse(message: str) -> ValueError:
        return ValueError(f"{path}: {message}")

    if not isinstance(spec, dict) or not set(spec) <= set(SECTIONS):
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise refuse(f"a sweep file holds name, description, base, grid and runs; got {keys}")
    name = spec.get("name", path.stem)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise refuse(f"name must be a name for the results file (letters, digits, '.', '_' and '-', not starting "
                     f"with '.', '_' or '-'); got {name!r}")
    if not isinstance(spec.get("description", ""), str):
        raise refuse(f"description must be a text; got {spec['description']!r}")
    base, grid, runs = spec.get("base", {}), spec.get("grid", {}), spec.get("runs", [{}])
    if not isinstance(base, dict):
        raise refuse(f"base must be a table of settings ([base] in TOML); got {base!r}")
    if not isinstance(grid, dict):
        raise refuse(f"grid must be a table of settings, each with a list of values ([grid] in TOML); got {grid!r}")
    if "grid" in spec and not grid:
        raise refuse("grid is empty; give it settings with lists of values (lr = [0.01, 0.1]), or leave it out to "
                     "run base once")
    for key, values in grid.items():
        if not (isinstance(values, list) and values):
            raise refuse(f"grid setting {key} must be a non-empty list of values, like {key} = [...]; "
                         f"got {values!r}")
    if not isinstance(runs, list) or not runs:
        raise refuse("runs must be a non-empty list of tables of settings ([[runs]] in TOML), or left out; "
                     f"got {runs!r}")
    for i, run in enumerate(runs, start=1):
        if not isinstance(run, dict):
            raise refuse(f"runs entry {i} must be a table of settings; got {run!r}")
    known = {f.name for f in fields(TrainConfig)} | {"preset"}  # a preset: TrainConfig.from_dict applies it
    for where, table in [("base", base), ("grid", grid), *((f"runs entry {i}", r) for i, r in enumerate(runs, 1))]:
        unknown = sorted(set(table) - known)
        if unknown:
            raise refuse(f"{where}: unknown setting {unknown[0]!r}; expected one of {', '.join(sorted(known))}")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    settings = [{**run, **combo} for run in runs for combo in combos]
    labels = [f"run {i} of {len(settings)}" + (f" ({_spelled(given)})" if given else "")
              for i, given in enumerate(settings, start=1)]
    configs = []
    for label, given in zip(labels, settings):
        try:
            configs.append(TrainConfig.from_dict({**base, **given}))
        except (TypeError, ValueError) as exc:
            raise refuse(f"{label}: {exc}") from None
    return Sweep(path, name, configs, labels)


def _parse(path: Path) -> Any:
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:
                import tomli as tomllib

            return tomllib.loads(path.read_text())
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{path}: not a valid {path.suffix.lstrip('.') or 'JSON'} sweep file ({exc})") from None


def _spelled(settings: dict[str, Any]) -> str:
    """``lr = 0.01, init = "he"``: settings as a sweep file spells them (TOML and JSON values look alike)."""
    return ", ".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())


def load_grid(path: str | os.PathLike[str]) -> tuple[str, list[TrainConfig]]:
    """A sweep file (TOML or JSON) -> its name and one config per run (``read_sweep``, checked alike)."""
    sweep = read_sweep(path)
    return sweep.name, sweep.configs


def override(configs: list[TrainConfig], *, backend: str | None = None, epochs: int | None = None,
             data_dir: str | None = None) -> list[TrainConfig]:
    """``configs`` with every run's backend and epochs replaced where given, and ``data_dir`` for the MNIST runs."""
    given: dict[str, Any] = {k: v for k, v in (("backend", backend), ("epochs", epochs)) if v is not None}
    mnist_dir: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    return [replace(c, **given, **(mnist_dir if c.dataset == "mnist" else {})) for c in configs]


def results_paths(out: str | os.PathLike[str], name: str, sweep_file: str | os.PathLike[str] | None = None, *,
                  overwrite: bool = False) -> tuple[Path, Path]:
    """The results JSON ``out`` and the JSON Lines file of finished runs beside it, both checked before any run.

    The JSON is rewritten by every run of the sweep: an existing one is replaced
    where it holds the results of a sweep called ``name``, else only with
    ``overwrite``. The ``.jsonl`` file is appended to (it is how a sweep resumes):
    an existing one must be a sweep's results file. Neither may be a folder, a
    link to nothing, or ``sweep_file`` itself.
    """
    out = Path(out)
    inputs = [sweep_file] if sweep_file is not None else []
    ours = _holds_results_of(out, name)
    json_path = output_path(out, overwrite=overwrite or ours, inputs=inputs,
                            hint=f"it holds no results of a sweep called {name!r}; pass overwrite=True "
                                 "(--force on the command line) to replace it, or name another")
    jsonl = out.with_suffix(".jsonl")
    output_path(jsonl, overwrite=True, inputs=inputs)
    distributed.read_results(jsonl, ROW_FIELDS)  # someone else's file, or a broken line, is refused here
    return json_path, jsonl  # the .jsonl as named: appending to it follows a link


def _holds_results_of(path: Path, name: str) -> bool:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("name") == name and isinstance(doc.get("results"), list)


_shared: dict[tuple[Any, ...], Split] | None = None  # while run_sweep runs: the last dataset loaded


def run_config(config: TrainConfig, data: Split | None = None) -> dict[str, Any]:
    """Train ``config`` from scratch, writing nothing, and return its results row (JSON-ready).

    ``data``: the config's dataset, already loaded (``gpunet.run.load_data``).
    """
    if data is None and _shared is not None:  # in a sweep in this process: runs on the same data load it once
        data = _load_shared(config)
    run = Run.new(config, None, data=data)
    start = time.perf_counter()
    history = run.train()
    row = _row(config, run.net, history, round(time.perf_counter() - start, 2))
    if run.stopping is not None:
        row["early_stopping"] = run.stopping.state()
    return row


# What the runs of a group may each set for themselves (train_many's per-model settings); everything else of
# their configs is equal. Plain SGD with and without weight decay take different paths, so that splits groups.
PER_MODEL: dict[str, Any] = {"seed": 0, "lr": 1.0, "lr_decay": 1.0, "weight_decay": 0.0}


def group_key(config: TrainConfig) -> tuple[TrainConfig, bool]:
    """What the runs that can train together share: their config without its per-model settings (PER_MODEL)."""
    plain_sgd = config.optimizer == "sgd" and config.weight_decay == 0
    return replace(config, **PER_MODEL), plain_sgd


def run_group(configs: list[TrainConfig]) -> list[dict[str, Any] | Exception]:
    """Train ``configs`` (one ``group_key``) together with ``gpunet.many.train_many``, writing nothing: each
    one's results row as ``run_config`` gives it (one run alone runs by ``run_config``), or the exception that
    stopped it (a divergence stops its run alone). Each row's ``seconds`` is the group's; ``batched`` says how
    many runs trained together."""
    if len(configs) == 1:
        return [{**run_config(configs[0]), "batched": 1}]
    first = configs[0]
    whole = replace(first, validation=0.0, early_stopping=None)  # every row: each run holds out its own
    data = _load_shared(whole) if _shared is not None else load_data(whole)
    backend = get_backend(first.backend)
    built = [build(c, data.X_train.shape[1], backend) for c in configs]
    nets = [net for net, _ in built]
    share = first.validation_share
    n = len(data.y_train)
    kept = [validation_rows(n, share, c.seed)[1] if share else None for c in configs]
    stopping = [EarlyStopping(c.early_stopping) if c.early_stopping is not None else None for c in configs]
    X_train = backend.to_device(data.X_train, nets[0].dtype)

    def end_epoch(k: int, record: dict[str, Any]) -> bool:  # what Run adds to a record, and its early stopping
        record["backend"] = backend.name
        predicted = nets[k].predict(X_train)
        rows = slice(None) if kept[k] is None else kept[k]
        record["train_accuracy"] = float(np.mean(predicted[rows] == data.y_train[rows]))
        stop = stopping[k]
        if stop is not None:
            stop.update(record)
            return stop.stopped
        return False

    start = time.perf_counter()
    schedule = {k: v for k, v in schedule_settings(first).items() if k != "lr_decay"}  # lr_decay is per run
    histories = train_many(nets, data.X_train, data.y_train, epochs=first.epochs, batch_size=first.batch_size,
                           lr=[c.lr for c in configs], lr_decay=[c.lr_decay for c in configs], **schedule,
                           augment=augmentation(first), optimizer=[opt for _, opt in built],
                           seed=[c.seed for c in configs],
                           X_test=data.X_test, y_test=data.y_test, validation=share or None, callback=end_epoch,
                           on_divergence="stop")
    seconds = round(time.perf_counter() - start, 2)
    outcomes: list[dict[str, Any] | Exception] = []
    for config, net, history, stop in zip(configs, nets, histories, stopping):
        if history.error is not None:
            outcomes.append(history.error)
            continue
        row = _row(config, net, history, seconds)
        row["batched"] = len(configs)
        if stop is not None:
            row["early_stopping"] = stop.state()
        outcomes.append(row)
    return outcomes


def _row(config: TrainConfig, net: Any, history: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """A finished run's results row (JSON-ready)."""
    last, backend = history[-1], net.backend
    return {
        "command": config.command(), "config": config.to_dict(), "network": str(net.sizes),
        "backend": backend.name, "device": backend.device if backend.name == "cupy" else processor(),
        "epochs": last["epoch"], "seconds": seconds, "test_accuracy": last["test_accuracy"],
        "test_error": 1.0 - last["test_accuracy"], **selected_epoch(history), "history": history,
    }


def selected_epoch(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch a sweep reports a run by: the best validation accuracy's (the earliest of equals), else the last.

    ``selected_on`` says which ("val_accuracy" or "final epoch"); the test
    accuracy is reported at that epoch (``test_accuracy_at_best``) and never chooses it.
    """
    scored = [r for r in history if r.get("val_accuracy") is not None]
    if not scored:
        last = history[-1]
        return {"selected_on": "final epoch", "best_epoch": last["epoch"], "best_val_accuracy": None,
                "test_accuracy_at_best": last["test_accuracy"]}
    best = max(scored, key=lambda r: (r["val_accuracy"], -r["epoch"]))
    return {"selected_on": "val_accuracy", "best_epoch": best["epoch"], "best_val_accuracy": best["val_accuracy"],
            "test_accuracy_at_best": best["test_accuracy"]}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _epochs(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int) and _number(r.get("test_accuracy"))
        and (r.get("val_accuracy") is None or _number(r["val_accuracy"])) for r in v)


def _optional(valid: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is distributed.MISSING or v is None or valid(v)


# What a finished run's record must hold: the fields of run_config's row that the table, the selection and
# the results JSON read. Older records lack the selection fields; they are worked out from their history.
ROW_FIELDS: distributed.Fields = {
    "network": (lambda v: isinstance(v, str), "the network's layer sizes (text)"),
    "backend": (lambda v: isinstance(v, str), "a backend's name"),
    "epochs": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "seconds": (_number, "a number"),
    "test_accuracy": (_number, "a number"),
    "history": (_epochs, "a non-empty list of epochs, each with its epoch and test_accuracy"),
    "best_epoch": (_optional(lambda v: isinstance(v, int) and not isinstance(v, bool)), "an integer, where present"),
    "best_val_accuracy": (_optional(_number), "a number or null, where present"),
    "test_accuracy_at_best": (_optional(_number), "a number, where present"),
}


def _data_key(config: TrainConfig) -> tuple[Any, ...]:
    # Runs that differ only in what is trained share a dataset; the seed picks the validation rows.
    return (config.dataset, config.data_dir, config.train_csv, config.test_csv, config.pixels, config.dtype,
            config.validation_share, config.seed if config.validation_share else None)


def _load_shared(config: TrainConfig, on_download: Callable[[str, str], object] | None = None) -> Split:
    assert _shared is not None
    key = _data_key(config)
    if key not in _shared:
        _shared.clear()  # one dataset in memory at a time
        _shared[key] = load_data(config, on_download)
    return _shared[key]


@contextmanager
def _sharing_data() -> Iterator[None]:
    global _shared
    _shared = {}
    try:
        yield
    finally:
        _shared = None


def check_runs(configs: Sequence[TrainConfig], indices: Sequence[int] | None = None,
               labels: Sequence[str] | None = None, *, source: str | os.PathLike[str] | None = None,
               on_download: Callable[[str, str], object] | None = None, keep_data: bool = False) -> None:
    """Probe each backend and load each dataset that the runs ``indices`` of ``configs`` need, once, training nothing.

    The first problem is raised (as the error that found it) naming the runs it
    concerns: ``labels[i]`` (default ``run i+1 of N``), or "every run", after
    ``source`` (the sweep file). Checked: the backend (``cupy`` without a
    usable GPU fails here, not once per run), its ``kernels``, and the data (the
    files, their shapes and labels, the validation share), as ``gpunet train``
    checks them before its first epoch. ``keep_data``: in a sweep in this
    process, the last dataset loaded stays for the runs that need it.
    """
    indices = list(range(len(configs))) if indices is None else list(indices)
    labels = list(labels) if labels is not None else [f"run {i} of {len(configs)}" for i in range(1, len(configs) + 1)]
    prefix = f"{source}: " if source is not None else ""

    def which(members: list[int]) -> str:
        if len(members) == len(configs) > 1:
            return "every run"
        return labels[members[0]] + (f" and {len(members) - 1} other run{'s' * (len(members) > 2)}"
                                     if len(members) > 1 else "")

    def named(exc: Exception, members: list[int]) -> Exception:
        message = f"{prefix}{which(members)}: {exc}"
        try:
            return type(exc)(message)
        except (TypeError, ValueError, KeyError, IndexError):  # an error type built from other arguments
            return ValueError(message)

    by_backend: dict[str | None, list[int]] = {}
    for i in indices:
        by_backend.setdefault(configs[i].backend, []).append(i)
    for name, members in by_backend.items():
        try:
            backend = get_backend(name)
        except (BackendUnavailableError, ValueError) as exc:  # no usable GPU, or a bad GPUNET_BACKEND
            raise named(exc, members) from exc
        for i in members:
            try:
                check_kernels(configs[i].kernels, backend.name)
            except ValueError as exc:
                raise named(exc, [i]) from exc
    by_data: dict[tuple[Any, ...], list[int]] = {}
    for i in indices:
        c = configs[i]
        by_data.setdefault((c.dataset, c.data_dir, c.train_csv, c.test_csv, c.pixels, c.dtype, c.validation_share),
                          []).append(i)
    for members in by_data.values():
        config = configs[members[0]]
        try:
            data = _load_shared(config, on_download) if keep_data and _shared is not None else \
                load_data(config, on_download)
            # the shapes and labels, as a Run checks them, on the host with one hidden unit: nothing trains
            probe = replace(config, backend="numpy", kernels="auto", hidden=(1,))
            Run(probe, *build(probe, data.X_train.shape[1], get_backend("numpy")), data, None)
        except (ValueError, OSError, RuntimeError) as exc:  # DataError, OSError, DownloadError
            raise named(exc, members) from exc


def run_sweep(configs: Sequence[TrainConfig], results_path: str | os.PathLike[str], *, workers: int | None = None,
              scheduler: str | None = None, gpus: bool = False, skip_failed: bool = False,
              labels: Sequence[str] | None = None, source: str | os.PathLike[str] | None = None,
              on_download: Callable[[str, str], object] | None = None,
              on_progress: distributed.Progress | None = None,
              on_dashboard: Callable[[str], object] | None = None, batch: bool = True) -> list[dict[str, Any]]:
    """Run every config not yet finished in ``results_path`` (JSON Lines) with ``run_config``; each config's record.

    ``gpunet.distributed.run_sweep(configs, run_config, results_path, ...)``:
    in-process with none of ``workers``, ``scheduler`` and ``gpus`` (runs that
    need the same dataset then load it once), else on Dask workers (each run
    loads its own). Before the first run, ``check_runs`` probes the backends and
    loads the data of the runs to do (not with ``scheduler``: the cluster's
    machines are not this one), naming a problem by ``labels`` and ``source``
    (``Sweep.labels``, ``Sweep.path``). A run recorded as failed runs again,
    its earlier errors kept in ``previous_errors``, unless ``skip_failed``. Each
    record is ``run_config``'s row with the run's ``key`` and ``status``
    (``"ok"``, or ``"failed"`` with its one-line ``error``), in the order of ``configs``.

    ``batch`` (the default): runs that differ only in their seed, learning rate, decay and weight decay
    (``group_key``) train together, each as its solo run (``run_group``, gpunet.many.train_many); a group is
    one task, retried whole. ``batch=False`` runs them one at a time.
    """
    def before(indices: list[int], mode: str) -> None:
        if mode != "scheduler":
            check_runs(configs, indices, labels, source=source, on_download=on_download,
                       keep_data=mode == "in-process")

    with _sharing_data():
        records = distributed.run_sweep(configs, run_config, results_path, workers=workers, scheduler=scheduler,
                                        gpus=gpus, skip_failed=skip_failed, fields=ROW_FIELDS, before=before,
                                        on_progress=on_progress, on_dashboard=on_dashboard,
                                        group_key=group_key if batch else None, run_group=run_group if batch else None)
    return [_with_selection(r) for r in records]


def _with_selection(record: dict[str, Any]) -> dict[str, Any]:
    """A finished run's record with its selected epoch (records written before it was kept: from their history)."""
    if record["status"] != "ok" or "selected_on" in record:
        return record
    return {k: v for k, v in {**record, **selected_epoch(record["history"])}.items() if k != "best_epoch_accuracy"}


def failures(records: list[dict[str, Any]]) -> list[str]:
    """``command: reason`` for each failed run of ``records`` (and how often it failed before)."""
    return [f"{r['command']}: {r['error']}" + (f" (failed {len(r['previous_errors']) + 1} times)"
                                               if r.get("previous_errors") else "")
            for r in records if r["status"] != "ok"]


def best_run(records: list[dict[str, Any]]) -> tuple[int | None, str]:
    """The index of the run with the best validation accuracy (the first of equals), and a sentence saying so.

    Runs without a validation split are not ranked (None where no run has one):
    choosing by the test accuracy would make it a second validation set.
    """
    ok = [(i, r) for i, r in enumerate(records) if r["status"] == "ok"]
    scored = [(i, r) for i, r in ok if r.get("best_val_accuracy") is not None]
    if not scored:
        if not ok:
            return None, "no run finished"
        return None, ("no run holds out validation images, so none is picked as best (the test accuracy does not "
                      "choose); add validation = 0.1 to the sweep file's base to select on held-out training images")
    i, r = max(scored, key=lambda ir: (ir[1]["best_val_accuracy"], -ir[0]))
    among = f" (among the {len(scored)} runs with a validation split)" if len(scored) < len(ok) else ""
    return i, (f"best run by validation accuracy{among}: {r['command']} (val acc {r['best_val_accuracy']:.2%} in "
               f"epoch {r['best_epoch']}, test acc {r['test_accuracy_at_best']:.2%} there)")


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
    """A plain-text table; ``columns`` are (heading, key, format) like ("final test acc", "test_accuracy", "{:.2%}")."""
    cells = [[heading for heading, _, _ in columns]]
    cells += [[fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(path: str | os.PathLike[str], name: str, rows: list[dict[str, Any]]) -> None:
    """The rows of a sweep with the machine, the date and its best run by validation accuracy, as JSON, atomically.

    ``path``: checked first with ``results_paths``, before the sweep runs.
    """
    best, _ = best_run(rows)
    write_json(path, {"name": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                      "selected_on": "val_accuracy", "best_run": best, "results": rows})
