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

from .augment import Augment, as_augment, image_shape
from .backend import Backend, get_backend
from .checkpoint import load_checkpoint, meta_field, save_checkpoint
from .checks import check_kernels, check_labels
from .config import TrainConfig, preprocessing
from .datasets import MNIST_FILES, Split, hold_out, load, load_mnist_test, read_csv
from .download import DEADLINE, MNIST_MD5, download_mnist
from .files import atomic_write, field, output_path, remove_stale_temporaries, write_json
from .network import Network
from .optim import Optimizer, make_optimizer
from .schedules import check_schedule
from .training import DivergenceError, TrainingInterrupted, train

RUN_FILES = ("config.json", "metrics.jsonl", "model.npz", "best.npz")
# The fields of a metrics.jsonl record that gpunet reads back (resume keeps the lines before its checkpoint by
# their epoch; plots draw the rest): epoch always, the others numbers (or null) where present.
RECORD_NUMBERS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
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


def load_data(config: TrainConfig, on_download: Callable[[str, str], object] | None = None, *,
              download_deadline: float = DEADLINE) -> Split:
    """The config's dataset, in its pixel scaling and dtype, with its validation rows held out.
    ``download_deadline``: seconds each MNIST file may take to download (gpunet.download.download_mnist)."""
    data = load(config.dataset, data_dir=config.data_dir, train_csv=config.train_csv, test_csv=config.test_csv,
                pixels=config.pixels, dtype=np.dtype(config.dtype), on_download=on_download,
                download_deadline=download_deadline)
    return hold_out(data, config.validation_share, config.seed)


def load_test_data(config: TrainConfig, on_download: Callable[[str, str], object] | None = None, *,
                   download_deadline: float = DEADLINE) -> tuple[Any, Any]:
    """Only the test images and labels of the config's dataset (a CSV's training file is not read)."""
    if config.dataset == "csv":
        assert config.test_csv is not None  # TrainConfig refuses a csv run without its files
        return read_csv(config.test_csv, pixels=config.pixels, dtype=np.dtype(config.dtype))
    if config.dataset == "mnist":
        return _mnist_test(config, on_download, download_deadline)
    data = load(config.dataset, data_dir=config.data_dir, pixels=config.pixels, dtype=np.dtype(config.dtype),
                on_download=on_download, download_deadline=download_deadline)
    return data.X_test, data.y_test


def _mnist_test(config: TrainConfig, on_download: Callable[[str, str], object] | None,
                deadline: float) -> tuple[Any, Any]:
    directory: str | os.PathLike[str] | None = config.data_dir
    if directory is None:  # the two test files only
        names = (MNIST_FILES["test_images"], MNIST_FILES["test_labels"])
        directory = download_mnist(on_file=on_download, files={name: MNIST_MD5[name] for name in names},
                                   deadline=deadline)
    return load_mnist_test(directory, config.pixels, np.dtype(config.dtype))


def input_files(config: TrainConfig) -> list[Path]:
    """The files a run of ``config`` reads (CSV files, the MNIST folder's files): never one of its outputs."""
    found = [Path(p) for p in (config.train_csv, config.test_csv) if p is not None]
    if config.data_dir is not None:
        for name in MNIST_FILES.values():
            found += [Path(config.data_dir) / name, Path(config.data_dir) / name.removesuffix(".gz")]
    return [p for p in found if p.exists()]


def read_metrics(path: str | os.PathLike[str], *, torn_end: bool = True) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, each checked (a JSON object, its epoch an integer >= 1, its losses and
    accuracies numbers or null); ValueError naming the file, the line and the field.

    ``torn_end``: a last line that is not JSON is one a killed process left half-written, and is dropped.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the metrics ({exc})") from None
    records = []
    for n, line in enumerate(lines, start=1):
        where = f"{path}, line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if torn_end and n == len(lines):
                break
            raise ValueError(f"{where}: not JSON; expected one record per line") from None
        epoch = field(record, "epoch", int, where)
        if epoch < 1:
            raise ValueError(f"{where}: the record's epoch must be >= 1; got {epoch}")
        for key in RECORD_NUMBERS:
            field(record, key, (float, type(None)), where, default=None)
        records.append(record)
    return records


def build(config: TrainConfig, n_inputs: int, backend: Backend) -> tuple[Network, Optimizer]:
    """A fresh network for ``n_inputs`` pixels and ten classes, and its optimiser."""
    check_kernels(config.kernels, backend.name)  # a training setting, passed to train(); checked before building
    net = Network([n_inputs, *config.hidden, 10], activation=config.activation, output=config.output,
                  loss=config.loss, init=config.init, seed=config.seed, backend=backend, dtype=config.dtype,
                  dropout=config.dropout)
    return net, make_optimizer(config.optimizer, config.weight_decay)


def saved_config(meta: dict[str, Any], path: str | os.PathLike[str]) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with."""
    values = meta_field(path, meta, "train_config", dict)
    try:
        return TrainConfig.from_dict(values)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the header's meta.train_config is not a gpunet train config ({exc})") from None


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
    """A run's folder, owned by this process between ``open`` and ``close`` (a lock that dies with the process).

    Each of the run's files is decided by gpunet.files.output_path when the folder
    is opened, before anything is written: a file of this run (resumed here) is
    replaced; any other existing file (another run's, the user's, a link to one)
    only with ``overwrite``; an input of the run (``inputs``: its data files, the
    checkpoint it resumes when resumed elsewhere), a link to nothing or a folder never.
    """

    def __init__(self, path: str | os.PathLike[str], fresh_name: bool = False, *, overwrite: bool = False,
                 inputs: list[Path] | None = None) -> None:
        self.path = Path(path)
        self.fresh_name = fresh_name  # a name chosen for a new run: if another process took it, take the next
        self.overwrite, self.inputs = overwrite, list(inputs or [])
        self.files: dict[str, Path] = {}  # each run file's name -> the path output_path decided
        self._lock: int | None = None

    def file(self, name: str) -> Path:
        """Where the run file ``name`` is written (a link's target, as output_path decided)."""
        return self.files.get(name, self.path / name)

    def open(self, config: TrainConfig, source: Path | None = None) -> None:
        """Take the folder (creating it) for a new run of ``config``, or to resume ``source`` in it.

        Raises RunFolderError (or output_path's error), having changed nothing (a
        folder it created is removed again), when another process holds the folder,
        it holds another run, or one of the run's files may not be written.
        """
        if self._lock is not None:
            return
        created = not self.path.exists() and not self.path.is_symlink()
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
            if created and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()
            raise

    def _check(self, config: TrainConfig, source: Path | None) -> None:
        folder, model = self.path, self.path / "model.npz"
        force = " (or pass overwrite=True, --force on the command line, to replace it)"
        if not os.access(folder, os.W_OK):
            raise RunFolderError(f"{folder}: the folder is not writable")
        here = source is not None and source.parent.resolve() == folder.resolve()  # resumed in its own folder
        if not self.overwrite and model.exists():
            if source is None:
                raise RunFolderError(f"{folder} already holds a run; resume it from {model}, or choose another "
                                     f"folder{force}")
            if not here:
                raise RunFolderError(f"{folder} already holds a run ({model}); resume from it, or into another "
                                     f"folder{force}")
        own: set[str] = set(RUN_FILES) if here else set()
        if not model.exists() and (folder / "config.json").exists():  # a run stopped before its first checkpoint
            what = {k: v for k, v in config.to_dict().items() if k not in RESUME_HONOURS}
            try:
                started = json.loads((folder / "config.json").read_text())
                same = {k: started.get(k) for k in what} == what
            except (OSError, ValueError, AttributeError):
                same = False
            if same:
                own |= {"config.json", "metrics.jsonl"}
            elif not self.overwrite:
                raise RunFolderError(f"{folder} holds the config.json of another run; choose another folder{force}")
        inputs = [*self.inputs, *([source] if source is not None and not here else [])]
        self.files = {name: output_path(folder / name, overwrite=self.overwrite or name in own, inputs=inputs,
                                        hint=f"it is not this run's; choose another folder{force}")
                      for name in RUN_FILES}

    def close(self) -> None:
        """Let the folder go."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def start(self, document: dict[str, Any], kept: list[dict[str, Any]], source: Path | None) -> None:
        """Write config.json and ``kept`` (the metrics records the checkpoint holds, read and checked by
        Run.resume), with the checkpoint's best.npz where it is another folder's; temporary files of a killed
        process go, and so does a replaced run's best.npz (the new run has none yet)."""
        folder = self.path
        remove_stale_temporaries(folder, RUN_FILES)
        origin = source.parent if source is not None else folder
        best = self.file("best.npz")
        if not origin.samefile(folder) and (origin / "best.npz").exists():
            atomic_write(best, lambda f: f.write((origin / "best.npz").read_bytes()))
        elif source is None and (folder / "best.npz").exists():  # another run's, replaced with overwrite
            (folder / "best.npz").unlink()  # the name in this folder: a file a link points to stays
        write_json(self.file("config.json"), document)
        lines = "".join(json.dumps(record) + "\n" for record in kept)
        atomic_write(self.file("metrics.jsonl"), lambda f: f.write(lines.encode()))

    def append(self, record: dict[str, Any]) -> None:
        with open(self.file("metrics.jsonl"), "a") as f:  # one whole line per write
            f.write(json.dumps(record) + "\n")


class Run:
    """One training run: its config, network, optimiser, data and (unless ``folder`` is None) its folder."""

    def __init__(self, config: TrainConfig, net: Network, optimizer: Optimizer, data: Split,
                 folder: Path | None, *, start_epoch: int = 1, position: dict[str, Any] | None = None,
                 last_record: dict[str, Any] | None = None, stopping: dict[str, Any] | None = None,
                 source: Path | None = None, fresh_name: bool = False, overwrite: bool = False,
                 kept_records: list[dict[str, Any]] | None = None) -> None:
        self.config, self.net, self.optimizer, self.data = config, net, optimizer, data
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be True or False; got {overwrite!r}")
        self._folder = None if folder is None else RunFolder(folder, fresh_name, overwrite=overwrite,
                                                             inputs=input_files(config))
        self.start_epoch, self.last_record, self.source = start_epoch, last_record, source
        self.kept_records = list(kept_records or [])  # the metrics lines a resume keeps, ending with last_record
        self.position = position or {"row": 0, "loss_sum": 0.0}
        self.stopping = None if config.early_stopping is None else EarlyStopping(config.early_stopping)
        if self.stopping is not None and stopping:
            kept = ("best_loss", "best_epoch", "patience_left", "stopped")
            self.stopping = replace(self.stopping, **{k: stopping[k] for k in kept})
        self.history: list[dict[str, Any]] = []
        self.notes: list[str] = []
        if config.early_stopping is not None and config.validation == 0:
            assert data.y_val is not None  # the config's validation share made a split
            self.notes.append(f"early stopping selects on {len(data.y_val)} training images held out for "
                              f"validation ({config.validation_share:.0%}, seeded; set the share with validation)")
        self._X_train: Any = None
        _check_data(config, net, data)
        schedule_settings(config)  # the schedule's settings together, before anything is written
        augment = augmentation(config)
        if augment is not None:
            image_shape(augment, data.X_train.shape[1])  # rows of a shape it can move

    @classmethod
    def new(cls, config: TrainConfig, folder: str | os.PathLike[str] | None, *, data: Split | None = None,
            on_download: Callable[[str, str], object] | None = None, fresh_name: bool = False,
            overwrite: bool = False, download_deadline: float = DEADLINE) -> Run:
        """A run of ``config`` from scratch; ``folder=None`` keeps it in memory (nothing is written).

        ``fresh_name``: the folder's name was made up (``new_run_folder``); where
        another run takes it first, the next free name is used instead.
        ``overwrite``: a folder holding another run, or files the run would write
        (config.json, metrics.jsonl, model.npz, best.npz), may be replaced; without it
        they are refused before anything is written. The run's input files never are.
        ``download_deadline``: seconds each MNIST file may take to download."""
        backend = get_backend(config.backend)
        data = data if data is not None else load_data(config, on_download, download_deadline=download_deadline)
        net, optimizer = build(config, data.X_train.shape[1], backend)
        return cls(config, net, optimizer, data, None if folder is None else Path(folder), fresh_name=fresh_name,
                   overwrite=overwrite)

    @classmethod
    def resume(cls, checkpoint: str | os.PathLike[str], *, folder: str | os.PathLike[str] | None = None,
               epochs: int | None = None, backend: str | None = None, kernels: str | None = None,
               on_download: Callable[[str, str], object] | None = None, overwrite: bool = False,
               download_deadline: float = DEADLINE) -> Run:
        """The run a checkpoint holds, to go on to ``epochs`` in all in ``folder`` (default: the checkpoint's).

        Everything the resume reads is checked here, before anything is written: the
        checkpoint's fields, its metrics.jsonl lines (up to the checkpoint's epoch),
        the data. ``overwrite`` and ``download_deadline`` are :meth:`new`'s; the
        checkpoint resumed is never written over from another folder."""
        checkpoint = model_path(checkpoint)
        net, optimizer, meta = load_checkpoint(checkpoint, backend)
        saved = saved_config(meta, checkpoint)
        epoch = meta_field(checkpoint, meta, "epoch", int)
        record = meta_field(checkpoint, meta, "record", (dict, type(None)))
        position = meta_field(checkpoint, meta, "position", (dict, type(None)))
        stopping = meta_field(checkpoint, meta, "early_stopping", (dict, type(None)), default=None)
        if record is not None and record["epoch"] != epoch:
            raise ValueError(f"{checkpoint}: the header's meta.record.epoch ({record['epoch']}) must be meta.epoch "
                             f"({epoch})")
        if saved.early_stopping is not None and epoch > 0 and stopping is None:
            raise ValueError(f"{checkpoint}: the header has no field meta.early_stopping; the run stops early "
                             f"(patience {saved.early_stopping}) and a resume needs its state")
        config = replace(saved, epochs=epochs or saved.epochs, backend=backend, kernels=kernels or "auto")
        check_kernels(config.kernels, net.backend.name)  # before anything is written
        data = load_data(config, on_download, download_deadline=download_deadline)
        check_width(net, data.X_train, checkpoint, config.dataset)
        if position is not None and position["row"] >= len(data.y_train):
            raise ValueError(f"{checkpoint}: the header's meta.position.row must be below the {len(data.y_train)} "
                             f"training rows; got {position['row']}")
        kept = []
        if record is not None:  # the epochs the checkpoint holds: earlier lines of its folder's metrics, then its own
            metrics = checkpoint.parent / "metrics.jsonl"
            earlier = read_metrics(metrics) if metrics.exists() else []
            kept = [r for r in earlier if r["epoch"] < record["epoch"]] + [record]
        return cls(config, net, optimizer, data, Path(folder) if folder is not None else checkpoint.parent,
                   start_epoch=epoch + 1, position=position, last_record=record, stopping=stopping,
                   source=checkpoint, overwrite=overwrite, kept_records=kept)

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
            self._folder.start(document, self.kept_records, self.source)
        c = self.config
        try:
            self.history = train(
                self.net, self.data.X_train, self.data.y_train, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
                **schedule_settings(c), augment=augmentation(c), optimizer=self.optimizer, seed=c.seed, X_test=self.data.X_test,
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
        if self._folder is None:
            return
        record = self.last_record
        save_checkpoint(self._folder.file(name), self.net, self.optimizer, {
            "epoch": record["epoch"] if record else 0, "record": record, "position": position,
            "train_config": self.config.to_dict(),
            "preprocessing": self._preprocessing,
            "early_stopping": self.stopping.state() if self.stopping is not None else None,
        })


def schedule_settings(config: TrainConfig) -> dict[str, Any]:
    """gpunet.train's learning-rate keywords for ``config``, checked together (ValueError naming them)."""
    c = config
    assert c.lr_schedule is not None  # TrainConfig names the schedule when it is made
    check_schedule(c.lr, c.epochs, c.lr_schedule, lr_decay=c.lr_decay, lr_step=c.lr_step, lr_gamma=c.lr_gamma,
                   warmup_epochs=c.warmup_epochs, lr_min=c.lr_min, lr_div=c.lr_div)
    return {"lr_schedule": c.lr_schedule, "lr_decay": c.lr_decay, "lr_step": c.lr_step, "lr_gamma": c.lr_gamma,
            "warmup_epochs": c.warmup_epochs, "lr_min": c.lr_min, "lr_div": c.lr_div}


def augmentation(config: TrainConfig) -> Augment | None:
    """gpunet.train's ``augment=`` for ``config``: None where it asks for none."""
    return as_augment(Augment(shift=config.augment_shift, rotate=config.augment_rotate))


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

