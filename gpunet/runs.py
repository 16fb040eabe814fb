"""A training run as a frozen config: its data, its network and its optimiser; shared by the CLI and scripts/."""

from __future__ import annotations

import itertools
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .backend import Backend, cupy_unavailable_reason, get_backend
from .checks import check_choice, check_decay, check_fraction, check_int, check_number
from .cuda.select import KERNELS
from .datasets import Split, check_dataset, hold_out, load
from .files import require_file, write_json
from .initializers import init_name
from .network import Network
from .optim import Optimizer, make_optimizer
from .training import train

DEFAULT_EPOCHS = 30


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``gpunet train`` needs; the defaults reach >= 97% on the 8x8 digits."""

    hidden: tuple[int, ...] = (100,)
    activation: str = "relu"
    output: str = "softmax"
    loss: str = "cross-entropy"
    init: str = "he"
    optimizer: str = "adam"
    lr: float = 0.001
    lr_decay: float = 1.0  # epoch e trains at lr * lr_decay ** (e - 1)
    epochs: int | None = None  # None: DEFAULT_EPOCHS, or the checkpoint's when resuming
    batch_size: int = 16
    weight_decay: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    backend: str | None = None  # None: GPUNET_BACKEND, else "auto"
    kernels: str = "auto"  # the training path on CuPy: gpunet/cuda/select.py
    quiet: bool = False
    dataset: str = "digits"
    data_dir: str | None = None  # mnist: a folder with the four IDX files (default: download to the cache)
    train_csv: str | None = None
    test_csv: str | None = None
    pixels: str = "original"  # datasets.PIXELS
    validation: float = 0.0  # fraction of the training rows held out for validation
    early_stopping: int | None = None  # stop after this many epochs without a better validation (or test) loss
    out: str | None = None  # None: runs/<timestamp>, or the checkpoint's folder when resuming
    resume: str | None = None

    def __post_init__(self) -> None:  # fail before anything is printed or loaded
        object.__setattr__(self, "init", init_name(self.init))  # old checkpoints and sweep files say "seed"
        check_number("lr", self.lr, positive=True)
        check_number("weight_decay", self.weight_decay, positive=False)
        check_decay("lr_decay", self.lr_decay)
        check_fraction("validation", self.validation)
        if self.early_stopping is not None:
            check_int("early_stopping", self.early_stopping, 1)
        if self.epochs is not None:
            check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        check_choice("kernels", self.kernels, KERNELS)
        check_dataset(self.dataset, self.train_csv, self.test_csv)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from JSON (a checkpoint's, a sweep file's): unknown keys are an error, lists become tuples."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r}; expected one of {', '.join(sorted(known))}")
        values = dict(values)
        if isinstance(values.get("hidden"), int):
            values["hidden"] = (values["hidden"],)
        if isinstance(values.get("hidden"), list):
            values["hidden"] = tuple(values["hidden"])
        return cls(**values)

    def command(self) -> str:
        """The ``gpunet train`` command line for this config (options left at their defaults omitted)."""
        default, words = TrainConfig(), ["gpunet", "train"]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("quiet", "out", "resume", "backend", "kernels") or value == getattr(default, f.name):
                continue
            text = ",".join(map(str, value)) if f.name == "hidden" else str(value)
            words += [f"--{f.name.replace('_', '-')}", text]
        return " ".join(words)


def load_data(config: TrainConfig, on_download: Callable[[str, str], object] | None = None) -> Split:
    """The config's dataset, in its pixel scaling and dtype, with its validation rows held out."""
    data = load(config.dataset, data_dir=config.data_dir, train_csv=config.train_csv, test_csv=config.test_csv,
                pixels=config.pixels, dtype=np.dtype(config.dtype), on_download=on_download)
    return hold_out(data, config.validation, config.seed)


def build(config: TrainConfig, n_inputs: int, backend: Backend) -> tuple[Network, Optimizer]:
    """A fresh network for ``n_inputs`` pixels and ten classes, and its optimiser."""
    net = Network(
        [n_inputs, *config.hidden, 10], activation=config.activation, output=config.output, loss=config.loss,
        init=config.init, seed=config.seed, backend=backend, dtype=config.dtype,
    )
    return net, make_optimizer(config.optimizer, config.weight_decay)


def run_experiment(config: TrainConfig, data: Split | None = None) -> dict[str, Any]:
    """Train ``config`` from scratch and return one results row (what the scripts print and save)."""
    backend = get_backend(config.backend)
    data = data if data is not None else load_data(config)
    net, optimizer = build(config, data.X_train.shape[1], backend)
    start = time.perf_counter()
    history = train(
        net, data.X_train, data.y_train, epochs=config.epochs or DEFAULT_EPOCHS, batch_size=config.batch_size,
        lr=config.lr, lr_decay=config.lr_decay, optimizer=optimizer, seed=config.seed,
        X_test=data.X_test, y_test=data.y_test, X_val=data.X_val, y_val=data.y_val, kernels=config.kernels,
    )
    seconds = time.perf_counter() - start
    last = history[-1]
    return {
        "command": config.command(), "config": asdict(config), "network": str(net.sizes),
        "backend": backend.name, "device": backend.device if backend.name == "cupy" else platform.processor() or "cpu",
        "epochs": last["epoch"], "seconds": round(seconds, 2), "test_accuracy": last["test_accuracy"],
        "test_error": 1.0 - last["test_accuracy"],
        "best_epoch_accuracy": max(r["test_accuracy"] for r in history), "history": history,
    }


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; ``columns`` are (heading, key, format) like ("test acc", "test_accuracy", "{:.2%}")."""
    cells = [[heading for heading, _, _ in columns]]
    cells += [[fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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


def machine() -> dict[str, Any]:
    """What a result was measured on: the host, CPU, Python and library versions, and the GPU where one is usable."""
    from . import __version__

    info: dict[str, Any] = {
        "host": platform.node(), "platform": platform.platform(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__, "gpunet": __version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if cupy_unavailable_reason() is None:
        backend = get_backend("cupy")
        info.update(cupy=backend.xp.__version__, gpu=backend.device)
    return info


def write_results(path: str | os.PathLike[str], name: str, rows: list[dict[str, Any]]) -> None:
    """The rows of a sweep with the machine and date, as JSON, written atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"name": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "results": rows})
