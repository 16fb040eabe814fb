"""A training run and its folder: the lock, config.json, metrics.jsonl, model.npz, best.npz, resume, early stopping.

``Run.new`` and ``Run.resume`` check everything that can be checked (the
config, the checkpoint, the data, the folder) and write nothing; ``Run.open``
takes the folder (a lock that dies with the process); ``Run.train`` writes and
trains. A run without a folder (``folder=None``, as sweeps use) writes nothing.
The library never prints: what a caller may want to say is in ``Run.notes``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .backend import Backend, get_backend
from .checkpoint import load_checkpoint, save_checkpoint
from .checks import check_labels
from .config import TrainConfig, preprocessing
from .checks import check_kernels
from .datasets import MNIST_FILES, Split, hold_out, load, load_mnist_test, read_csv
from .download import MNIST_MD5, download_mnist
from .files import atomic_write, remove_stale_temporaries, write_json
from .network import Network
from .optim import Optimizer, make_optimizer
from .training import DivergenceError, TrainingInterrupted, train

RUN_FILES = ("config.json", "metrics.jsonl", "model.npz", "best.npz")
RESUME_HONOURS = ("epochs", "backend", "kernels")  # a resume may change these; every other setting is the checkpoint's


class RunFolderError(ValueError):
    """A run folder is taken by another process, holds another run, or cannot be written."""


@dataclass
class EarlyStopping:
    """Stop once the validation loss has not improved for ``patience`` epochs; the state a checkpoint keeps."""

    patience: int
    best_loss: float | None = None
    best_epoch: int = 0
    patience_left: int = 0
    stopped: bool = False

    def __post_init__(self) -> None:
        self.patience_left = self.patience_left or self.patience

    def update(self, record: dict[str, Any]) -> bool:
        """Take an epoch's record; True when it is the best so far (its weights are the ones to keep)."""
        improved = self.best_loss is None or record["val_loss"] < self.best_loss
        if improved:
            self.best_loss, self.best_epoch = record["val_loss"], record["epoch"]
        self.patience_left = self.patience - (record["epoch"] - self.best_epoch)
        self.stopped = self.patience_left <= 0
        return improved

    def state(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "patience_left": self.patience_left,
                "stopped": self.stopped}


def load_data(config: TrainConfig, on_download: Callable[[str, str], object] | None = None) -> Split:
    """The config's dataset, in its pixel scaling and dtype, with its validation rows held out."""
    data = load(config.dataset, data_dir=config.data_dir, train_csv=config.train_csv, test_csv=config.test_csv,
                pixels=config.pixels, dtype=np.dtype(config.dtype), on_download=on_download)
    return hold_out(data, config.validation_share, config.seed)


def load_test_data(config: TrainConfig, on_download: Callable[[str, str], object] | None = None) -> tuple[Any, Any]:
    """Only the test images and labels of the config's dataset (a CSV's training file is not read)."""
    if config.dataset == "csv":
        return read_csv(config.test_csv, pixels=config.pixels, dtype=np.dtype(config.dtype))
    if config.dataset == "mnist":
        return _mnist_test(config, on_download)
    data = load(config.dataset, data_dir=config.data_dir, pixels=config.pixels, dtype=np.dtype(config.dtype),
                on_download=on_download)
    return data.X_test, data.y_test


def _mnist_test(config: TrainConfig, on_download: Callable[[str, str], object] | None) -> tuple[Any, Any]:
    directory = config.data_dir
    if directory is None:  # the two test files only
        names = (MNIST_FILES["test_images"], MNIST_FILES["test_labels"])
        directory = download_mnist(on_file=on_download, files={name: MNIST_MD5[name] for name in names})
    return load_mnist_test(directory, config.pixels, np.dtype(config.dtype))


def build(config: TrainConfig, n_inputs: int, backend: Backend) -> tuple[Network, Optimizer]:
    """A fresh network for ``n_inputs`` pixels and ten classes, and its optimiser."""
    check_kernels(config.kernels, backend.name)  # a training setting, passed to train(); checked before building
    net = Network([n_inputs, *config.hidden, 10], activation=config.activation, output=config.output,
                  loss=config.loss, init=config.init, seed=config.seed, backend=backend, dtype=config.dtype)
    return net, make_optimizer(config.optimizer, config.weight_decay)


def saved_config(meta: dict[str, Any], path: str | os.PathLike[str]) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with."""
    try:
        return TrainConfig.from_dict(meta["train_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a checkpoint written by gpunet train ({exc})") from None


def new_run_folder(parent: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<timestamp>``, with a suffix where that exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, n = Path(parent) / stamp, 1
    while folder.exists():
        n += 1
        folder = Path(parent) / f"{stamp}-{n}"
    return folder


def model_path(path: str | os.PathLike[str]) -> Path:
    """A run folder's model.npz, or the given file."""
    path = Path(path)
    return path / "model.npz" if path.is_dir() else path


class RunFolder:
    """A run's folder, owned by this process between ``open`` and ``close`` (a lock that dies with the process)."""

    def __init__(self, path: str | os.PathLike[str], fresh_name: bool = False) -> None:
        self.path = Path(path)
        self.fresh_name = fresh_name  # a name chosen for a new run: if another process took it, take the next
        self._lock: int | None = None

    def open(self, config: TrainConfig, source: Path | None = None) -> None:
        """Take the folder (creating it) for a new run of ``config``, or to resume ``source`` in it.

        Raises RunFolderError, having changed nothing, when another process holds
        the folder or it holds another run.
        """
        if self._lock is not None:
            return
        try:
            while self.fresh_name:
                try:
                    self.path.mkdir(parents=True)
                    break
                except FileExistsError:  # two runs started in the same second
                    self.path = new_run_folder(self.path.parent)
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise RunFolderError(f"{self.path}: cannot create the run folder ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the process ends, however it ends
        except OSError:
            os.close(fd)
            raise RunFolderError(f"{self.path}: another gpunet process is training in this folder") from None
        self._lock = fd
        try:
            self._check(config, source)
        except BaseException:
            self.close()
            raise

    def _check(self, config: TrainConfig, source: Path | None) -> None:
        folder, model = self.path, self.path / "model.npz"
        if not os.access(folder, os.W_OK):
            raise RunFolderError(f"{folder}: the folder is not writable")
        if source is None and model.exists():
            raise RunFolderError(f"{folder} already holds a run; resume it from {model}, or choose another folder")
        if source is not None and model.exists() and not model.samefile(source):
            raise RunFolderError(f"{folder} already holds a run ({model}); resume from it, or into another folder")
        if not model.exists() and (folder / "config.json").exists():  # a run stopped before its first checkpoint
            what = {k: v for k, v in config.to_dict().items() if k not in RESUME_HONOURS}
            try:
                started = json.loads((folder / "config.json").read_text())
                same = {k: started.get(k) for k in what} == what
            except (OSError, ValueError, AttributeError):
                same = False
            if not same:
                raise RunFolderError(f"{folder} holds the config.json of another run; choose another folder")

    def close(self) -> None:
        """Let the folder go."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def start(self, document: dict[str, Any], last_record: dict[str, Any] | None, source: Path | None) -> None:
        """Write config.json and the metrics lines the checkpoint holds (from ``source``'s folder if another),
        with its best.npz; temporary files of a killed process go."""
        folder = self.path
        remove_stale_temporaries(folder, RUN_FILES)
        origin = source.parent if source is not None else folder
        if not origin.samefile(folder) and (origin / "best.npz").exists():
            atomic_write(folder / "best.npz", lambda f: f.write((origin / "best.npz").read_bytes()))
        write_json(folder / "config.json", document)
        kept = []
        if last_record is not None and (origin / "metrics.jsonl").exists():  # the epochs the checkpoint holds
            for line in (origin / "metrics.jsonl").read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line
                if record.get("epoch", 0) < last_record["epoch"]:
                    kept.append(line)
        if last_record is not None:
            kept.append(json.dumps(last_record))
        atomic_write(folder / "metrics.jsonl", lambda f: f.write("".join(line + "\n" for line in kept).encode()))

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:  # one whole line per write
            f.write(json.dumps(record) + "\n")


class Run:
    """One training run: its config, network, optimiser, data and (unless ``folder`` is None) its folder."""

    def __init__(self, config: TrainConfig, net: Network, optimizer: Optimizer, data: Split,
                 folder: Path | None, *, start_epoch: int = 1, position: dict[str, Any] | None = None,
                 last_record: dict[str, Any] | None = None, stopping: dict[str, Any] | None = None,
                 source: Path | None = None, fresh_name: bool = False) -> None:
        self.config, self.net, self.optimizer, self.data = config, net, optimizer, data
        self._folder = RunFolder(folder, fresh_name) if folder is not None else None
        self.start_epoch, self.last_record, self.source = start_epoch, last_record, source
        self.position = position or {"row": 0, "loss_sum": 0.0}
        self.stopping = None if config.early_stopping is None else EarlyStopping(config.early_stopping)
        if self.stopping is not None and stopping:
            kept = ("best_loss", "best_epoch", "patience_left", "stopped")
            self.stopping = replace(self.stopping, **{k: stopping[k] for k in kept})
        self.history: list[dict[str, Any]] = []
        self.notes: list[str] = []
        if config.early_stopping is not None and config.validation == 0:
            self.notes.append(f"early stopping selects on {len(data.y_val)} training images held out for "
                              f"validation ({config.validation_share:.0%}, seeded; set the share with validation)")
        self._X_train: Any = None
        _check_data(config, net, data)

    @classmethod
    def new(cls, config: TrainConfig, folder: str | os.PathLike[str] | None, *, data: Split | None = None,
            on_download: Callable[[str, str], object] | None = None, fresh_name: bool = False) -> Run:
        """A run of ``config`` from scratch; ``folder=None`` keeps it in memory (nothing is written).

        ``fresh_name``: the folder's name was made up (``new_run_folder``); where
        another run takes it first, the next free name is used instead."""
        backend = get_backend(config.backend)
        data = data if data is not None else load_data(config, on_download)
        net, optimizer = build(config, data.X_train.shape[1], backend)
        return cls(config, net, optimizer, data, None if folder is None else Path(folder), fresh_name=fresh_name)

    @classmethod
    def resume(cls, checkpoint: str | os.PathLike[str], *, folder: str | os.PathLike[str] | None = None,
               epochs: int | None = None, backend: str | None = None, kernels: str | None = None,
               on_download: Callable[[str, str], object] | None = None) -> Run:
        """The run a checkpoint holds, to go on to ``epochs`` in all in ``folder`` (default: the checkpoint's)."""
        checkpoint = model_path(checkpoint)
        net, optimizer, meta = load_checkpoint(checkpoint, backend)
        saved = saved_config(meta, checkpoint)
        config = replace(saved, epochs=epochs or saved.epochs, backend=backend, kernels=kernels or "auto")
        check_kernels(config.kernels, net.backend.name)  # before anything is written
        data = load_data(config, on_download)
        check_width(net, data.X_train, checkpoint, config.dataset)
        return cls(config, net, optimizer, data, Path(folder) if folder is not None else checkpoint.parent,
                   start_epoch=meta["epoch"] + 1, position=meta.get("position"), last_record=meta.get("record"),
                   stopping=meta.get("early_stopping"), source=checkpoint)

    @property
    def nothing_to_do(self) -> str | None:
        """Why a resumed run has no epoch left to train, or None."""
        if self.stopping is not None and self.stopping.stopped:
            return (f"early stopping ended this run at epoch {self.start_epoch - 1} "
                    f"(the best was epoch {self.stopping.best_epoch})")
        if self.start_epoch > self.config.epochs:
            return f"the checkpoint already holds {self.start_epoch - 1} epochs"
        return None

    @property
    def folder(self) -> Path | None:
        """Where the run is written; None for a run kept in memory."""
        return self._folder.path if self._folder is not None else None

    # --- the folder ------------------------------------------------------------------------

    @property
    def _preprocessing(self) -> dict[str, Any]:
        """How the pixels and targets were made, as config.json and every checkpoint record it."""
        return preprocessing(self.config.pixels, self.config.output, self.config.loss)

    def open(self) -> Run:
        """Take the folder for this process (creating it), or raise RunFolderError having changed nothing."""
        if self._folder is not None:
            self._folder.open(self.config, self.source)
        return self

    def close(self) -> None:
        """Let the folder go."""
        if self._folder is not None:
            self._folder.close()

    def __enter__(self) -> Run:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- training --------------------------------------------------------------------------

    def train(self, *, on_epoch: Callable[[dict[str, Any]], object] | None = None,
              on_batch: Callable[[int, Any], object] | None = None,
              should_stop: Callable[[], bool] | None = None, every_step: bool = True) -> list[dict[str, Any]]:
        """Train to ``config.epochs`` (or until early stopping), checkpointing every epoch; returns the records.
        ``on_batch``, ``should_stop`` and ``every_step`` are gpunet.train's.

        Raises TrainingInterrupted after saving a checkpoint of the position when
        ``should_stop`` says so, and DivergenceError saying which checkpoint is kept.
        """
        self.open()
        if self._folder is not None:
            document = {**self.config.to_dict(), "network": self.net.config(),
                        "preprocessing": self._preprocessing}
            self._folder.start(document, self.last_record, self.source)
        c = self.config
        try:
            self.history = train(
                self.net, self.data.X_train, self.data.y_train, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
                lr_decay=c.lr_decay, optimizer=self.optimizer, seed=c.seed, X_test=self.data.X_test,
                y_test=self.data.y_test, X_val=self.data.X_val, y_val=self.data.y_val,
                callback=lambda record: self._end_epoch(record, on_epoch), on_batch=on_batch,
                should_stop=should_stop, start_epoch=self.start_epoch, start_row=self.position["row"],
                start_loss=self.position["loss_sum"], kernels=c.kernels, every_step=every_step,
            )
        except TrainingInterrupted as exc:
            self._save("model.npz", {"epoch": exc.epoch, "row": exc.rows, "loss_sum": exc.loss_sum})
            raise
        except DivergenceError as exc:
            if self.folder is None:
                raise
            kept = (f"{self.folder / 'model.npz'} still holds epoch {self.last_record['epoch']}"
                    if self.last_record else "no checkpoint was written")
            raise DivergenceError(f"{exc}; {kept}", exc.epoch) from None
        return self.history

    def _end_epoch(self, record: dict[str, Any], on_epoch: Callable[[dict[str, Any]], object] | None) -> bool:
        record["backend"] = self.net.backend.name
        if self._X_train is None:  # to the device once; one more forward pass per epoch gives train accuracy
            self._X_train = self.net.backend.to_device(self.data.X_train, self.net.dtype)
        record["train_accuracy"] = float(np.mean(self.net.predict(self._X_train) == self.data.y_train))
        improved = self.stopping is not None and self.stopping.update(record)
        self.last_record = record
        if improved:  # before model.npz: a kill between the two leaves best.npz ahead, never behind
            self._save("best.npz")
        self._save("model.npz")
        if self._folder is not None:
            self._folder.append(record)
        if on_epoch is not None:
            on_epoch(record)
        return self.stopping is not None and self.stopping.stopped

    def _save(self, name: str, position: dict[str, Any] | None = None) -> None:
        if self.folder is None:
            return
        record = self.last_record
        save_checkpoint(self.folder / name, self.net, self.optimizer, {
            "epoch": record["epoch"] if record else 0, "record": record, "position": position,
            "train_config": self.config.to_dict(),
            "preprocessing": self._preprocessing,
            "early_stopping": self.stopping.state() if self.stopping is not None else None,
        })


def check_width(net: Network, X: Any, path: str | os.PathLike[str], dataset: str) -> None:
    """ValueError naming the model file ``path`` where ``X``'s rows do not have the network's input width."""
    if X.shape[1] != net.sizes[0]:
        raise ValueError(f"{path}: the network takes {net.sizes[0]} inputs; the {dataset} images have {X.shape[1]}")


def _check_data(config: TrainConfig, net: Network, data: Split) -> None:
    """Bad data fails here, before anything is written."""
    if data.X_test.shape[1] != data.X_train.shape[1]:
        raise ValueError(f"{config.dataset} test images have {data.X_test.shape[1]} pixels; "
                         f"the training images have {data.X_train.shape[1]}")
    for part, labels in (("train", data.y_train), ("validation", data.y_val), ("test", data.y_test)):
        if labels is None:
            continue
        try:
            check_labels(labels, net.sizes[-1])
        except ValueError as exc:
            raise ValueError(f"{config.dataset} {part} data: {exc}") from None

