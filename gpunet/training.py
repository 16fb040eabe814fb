"""The training loop: shuffle, batch, step, evaluate; returns a history and never prints.

It stops with an exception, never a half-done state: DivergenceError when the
loss or a parameter stops being finite, DeviceMemoryError when an array does not
fit, TrainingInterrupted when ``should_stop`` says so between two steps.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from . import defaults
from .augment import Augment, Augmenter, as_augment
from .backend import to_numpy
from .engines import select
from .checks import check_finite, check_int, check_labels, check_matrix, check_number
from .memory import DeviceMemoryError  # raised here too; defined beside the memory checks
from .network import Network
from .optim import Optimizer, make_optimizer
from .schedules import check_schedule, learning_rate, schedule_named

Array = Any
EpochRecord = dict[str, Any]
PER_SAMPLE_CHUNK = 64  # rows a per-sample engine takes a step: the Gram matrix is CHUNK x CHUNK
CHECK_EVERY = 100  # steps between reads of the running loss (a CPU-GPU sync) for the divergence guard


class DivergenceError(ArithmeticError):
    """The loss or a parameter became NaN or infinite; the message says when and what to change."""

    def __init__(self, message: str, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


class TrainingInterrupted(Exception):
    """``should_stop`` asked to stop; the network and optimiser hold the state after ``rows`` rows of ``epoch``.

    Resume with ``train(..., start_epoch=epoch, start_row=rows, start_loss=loss_sum)``.
    """

    def __init__(self, epoch: int, rows: int, loss_sum: float) -> None:
        super().__init__(f"interrupted in epoch {epoch} after {rows} rows")
        self.epoch, self.rows, self.loss_sum = epoch, rows, loss_sum


def train(
    net: Network,
    X_train: Array,
    y_train: Array,
    *,
    epochs: int = defaults.EPOCHS,
    batch_size: int = defaults.BATCH_SIZE,
    lr: float = defaults.LR,
    lr_decay: float | None = None,
    lr_schedule: str | None = None,
    lr_step: int | None = None,
    lr_gamma: float | None = None,
    warmup_epochs: int | None = None,
    lr_min: float | None = None,
    lr_div: float | None = None,
    augment: Augment | dict[str, Any] | None = None,
    optimizer: str | Optimizer = defaults.OPTIMIZER,
    weight_decay: float = defaults.WEIGHT_DECAY,
    seed: int = defaults.SEED,
    X_test: Array | None = None,
    y_test: Array | None = None,
    validation: float | tuple[Array, Array] | None = None,
    early_stopping: int | None = None,
    progress: bool = False,
    X_val: Array | None = None,
    y_val: Array | None = None,
    callback: Callable[[EpochRecord], Any] | None = None,
    on_batch: Callable[[int, Array], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    start_epoch: int = 1,
    start_row: int = 0,
    start_loss: float = 0.0,
    kernels: str | None = None,
    every_step: bool = True,
) -> list[EpochRecord]:
    """Train ``net`` in place with mini-batches and return one record per epoch.

    The defaults are the command line's (gpunet/defaults.py): Adam at lr 0.001 on a cosine schedule, 30
    epochs of batches of 32. ``y_train``/``y_test`` are integer labels (targets are made by
    :meth:`Network.targets_from_labels`) or target matrices ``(N, n_out)``. The data moves to
    the network's backend once; epoch ``e``'s order comes from
    ``numpy.random.default_rng([seed, e])`` and it trains at one learning rate, the schedule's for that
    epoch (gpunet/schedules.py): ``lr_schedule="cosine"`` (``warmup_epochs``, ``lr_min``), ``"exponential"``
    (``lr * lr_decay ** (e - 1)``), ``"step"`` (``lr_step``, ``lr_gamma``) or ``"one-cycle"`` (``warmup_epochs``,
    ``lr_min``, ``lr_div``); left at None, it is the schedule whose settings are given (``lr_decay=0.9`` alone
    is exponential), else cosine. ``augment`` (None, a :class:`gpunet.Augment` or a
    dict such as ``{"shift": 2, "rotate": 10}``) rewrites the training images each epoch, shifted and
    rotated by draws of (seed, epoch, row) (gpunet/augment.py), in a copy on the device (the training rows
    take twice their memory there; the caller's data, the validation and the test data are never changed). So the same seed and data give the same
    trajectory, and a run resumed with ``start_epoch`` (and ``start_row`` and
    ``start_loss`` mid-epoch, with the optimiser's state restored) continues it
    exactly.

    ``validation`` holds data out to watch: a fraction of the training rows (chosen
    by ``seed``, the same rows as the command line's ``--validation``), or an
    ``(X_val, y_val)`` pair (``X_val=``/``y_val=`` still work). ``early_stopping=N`` stops
    once the validation loss has not improved for N epochs and ends with the
    network's weights *and the optimiser's state* of the best epoch, as if training had
    stopped there (a later ``train`` with the same optimiser instance continues from
    it). It needs validation data: without any, 10% of the training rows are held out
    (``defaults.EARLY_STOPPING_VALIDATION``, as the command line does). ``progress=True``
    shows a tqdm bar over the epochs on stderr; the default is silent.

    A record holds ``epoch``, ``lr``, ``train_loss`` (mean per-sample loss over
    the epoch, each before its step), ``test_loss`` and ``test_accuracy`` (None
    without test data), ``val_loss`` and ``val_accuracy`` when there is validation
    data, ``best_epoch`` (the epoch of the lowest validation loss so far) with
    ``early_stopping``, ``seconds`` and ``samples_per_s``. ``callback(record)`` is
    called after each epoch; if it returns True (exactly True), training stops
    after that epoch.
    ``on_batch(rows_done, loss)`` is called after every step with the rows done
    so far this epoch and the summed loss of that step's rows as a 0-d device
    array (reading it is a CPU-GPU sync). ``should_stop()`` is asked after every
    step; True raises :class:`TrainingInterrupted` with the position.
    ``kernels`` ("auto", "plain", "fused", "graph"; None: the network's) picks the path, see gpunet/engines/select.py;
    in graph mode ``on_batch`` is called once an epoch and ``should_stop`` is asked after each epoch but the
    last instead (True raises TrainingInterrupted at row 0 of the next epoch). "auto"
    takes graph mode on CuPy where it is verified faster (gpunet/engines/select.py), but not where ``on_batch`` or
    ``should_stop`` is given and ``every_step`` is True (the default): ``every_step=False`` says calls once
    an epoch will do (the command line's progress bar and Ctrl-C do).

    Per-sample plain SGD (``batch_size=1``, ``SGD`` without weight decay) runs
    by the Gram-chunk algorithm (gpunet/engines/plain.py) in chunks of ``PER_SAMPLE_CHUNK``
    rows: the same updates, far fewer calls. The running loss is read every
    ``CHECK_EVERY`` steps: a NaN or infinity raises :class:`DivergenceError`
    before the epoch's callback, so a caller's last checkpoint stays good.
    """
    _check_network("train", net)
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    check_number("lr", lr, positive=True)
    lr_schedule = schedule_named(lr_schedule, lr_decay=lr_decay, lr_step=lr_step, lr_gamma=lr_gamma, lr_div=lr_div)
    schedule = check_schedule(lr, epochs, lr_schedule, lr_decay=lr_decay, lr_step=lr_step, lr_gamma=lr_gamma,
                              warmup_epochs=warmup_epochs, lr_min=lr_min, lr_div=lr_div)
    augmentation = as_augment(augment)
    check_int("seed", seed, 0)
    check_int("start_epoch", start_epoch, 1)
    check_int("start_row", start_row, 0)
    patience = None if early_stopping is None else check_int("early_stopping", early_stopping, 1)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False; got {progress!r}")
    opt = make_optimizer(optimizer, weight_decay)
    backend = net.backend
    X, T, labels = _prepare(net, X_train, y_train, "X_train", "y_train")
    test = _prepare_optional(net, X_test, y_test, "X_test", "y_test")
    (X, T, labels), val = _validation(net, (X, T, labels), validation, X_val, y_val, seed, patience)
    n = X.shape[0]
    if start_row >= n:
        raise ValueError(f"start_row must be below the {n} training rows; got {start_row}")
    per_sample = batch_size == 1 and opt.folds_lr  # plain SGD: the per-sample engines apply
    chunk = PER_SAMPLE_CHUNK if per_sample else batch_size
    widest = select.widest_product(net, chunk)  # multiply-adds of one product
    augmenter = None
    try:  # an engine may allocate too (graph mode's buffers, per-sample epochs' copy of the data)
        if augmentation is not None:  # the rows kept as given; the engine trains from a copy rewritten each epoch
            augmenter = Augmenter(augmentation, X, seed, backend)
            X = X.copy()
        step_calls = every_step and (on_batch is not None or should_stop is not None)
        engine = select.engine(net, kernels, opt, X, T, chunk, per_sample, step_calls)  # one place decides
    except backend.out_of_memory_errors as exc:
        raise _out_of_memory(net, chunk, exc) from None
    history: list[EpochRecord] = []
    best = None if patience is None else _Best(net, opt, patience)
    bar = _progress_bar(epochs - start_epoch + 1) if progress else None
    upcoming = None  # the next epoch's permutation, made while the device trains this one
    try:  # the bar is closed however training ends
        for epoch in range(start_epoch, epochs + 1):
            start = time.perf_counter()
            epoch_lr = learning_rate(epoch, epochs, lr, lr_schedule, **schedule)
            order = backend.to_device(epoch_order(seed, epoch, n) if upcoming is None else upcoming)  # small
            upcoming = None
            first = start_row if epoch == start_epoch else 0
            loss_sum = backend.xp.full((), start_loss if epoch == start_epoch else 0.0, dtype=net.dtype)  # on the device
            guard = _Guard(net, loss_sum, epoch, first, n, epoch_lr)

            def after_step(done: int, batch_loss: Array) -> None:
                nonlocal upcoming
                if done == n and epoch < epochs:  # the host's one piece of the next epoch, done while the device trains
                    upcoming = epoch_order(seed, epoch + 1, n)
                guard.step(done)
                if on_batch is not None:
                    on_batch(done, batch_loss)
                if should_stop is not None and done < n and should_stop():
                    guard.check(done)
                    raise TrainingInterrupted(epoch, done, float(loss_sum))

            try:  # overflow in a diverging run is reported once, by the guard, not as warnings
                if augmenter is not None:  # in place: every engine reads X afresh each epoch
                    augmenter.apply(epoch, X)
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"), backend.products_of_size(widest):
                    engine.run_epoch(order, epoch_lr, loss_sum, first, after_step)
            except backend.out_of_memory_errors as exc:
                raise _out_of_memory(net, chunk, exc) from None
            record: EpochRecord = {"epoch": epoch, "lr": epoch_lr,
                                   "train_loss": float(loss_sum) / n}  # CPU-GPU sync point
            backend.synchronize()
            seconds = time.perf_counter() - start
            rows = max(len(test[2]) if test else 0, len(val[2]) if val else 0)
            try:  # small products on one BLAS thread, as in training: the same numbers however many threads a machine has
                with backend.products_of_size(select.widest_product(net, rows)):
                    record.update(_evaluate(net, *test) if test else {"test_loss": None, "test_accuracy": None})
                    if val:
                        record.update({k.replace("test_", "val_"): v for k, v in _evaluate(net, *val).items()})
            except backend.out_of_memory_errors as exc:
                raise _out_of_memory(net, len(test[2]) if test else n, exc, "evaluating") from None
            record.update(seconds=seconds, samples_per_s=(n - first) / seconds if seconds > 0 else math.inf)
            stop = best is not None and best.update(record)  # adds record["best_epoch"]
            history.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{record[k]:.4g}" for k in ("train_loss", "val_loss") if k in record})
            if callback is not None and callback(record) is True:
                break
            if stop:
                break
            if engine.whole_epochs and should_stop is not None and epoch < epochs and should_stop():
                raise TrainingInterrupted(epoch + 1, 0, 0.0)  # whole-epoch engines ask once an epoch, after it
    finally:
        if bar is not None:
            bar.close()
    if best is not None:
        best.restore()
    return history


class _Guard:
    """The divergence guard of one epoch: the running loss read every CHECK_EVERY steps and at the epoch's end
    (a CPU-GPU sync each), and every parameter at the end; DivergenceError names the rows since the last read."""

    def __init__(self, net: Network, loss_sum: Array, epoch: int, first: int, n: int, lr: float) -> None:
        self.net, self.loss_sum, self.epoch, self.n, self.lr = net, loss_sum, epoch, n, lr
        self.checked, self.steps = first, 0  # rows up to `checked` gave a finite loss

    def step(self, done: int) -> None:
        self.steps += 1
        if self.steps % CHECK_EVERY == 0 or done == self.n:
            self.check(done)

    def check(self, done: int) -> None:
        _check_finite(self.net, self.loss_sum, self.epoch, self.checked, done, self.n, self.lr)  # CPU-GPU sync point
        self.checked = done


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` rows in epoch ``epoch`` (from 1) of a run seeded ``seed``: the same on every path."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _check_finite(net: Network, loss_sum: Array, epoch: int, lo: int, hi: int, n: int, lr: float) -> None:
    """Raise DivergenceError if the running loss, or (at the epoch's end) a parameter, is not finite."""
    message = divergence(net, float(loss_sum), epoch, lo, hi, n, lr)  # CPU-GPU sync point
    if message is not None:
        raise DivergenceError(message, epoch)


def divergence(net: Network, loss_sum: float, epoch: int, lo: int, hi: int, n: int, lr: float) -> str | None:
    """The divergence message for rows ``lo`` to ``hi`` of ``n`` whose summed loss is ``loss_sum``, checking
    every parameter too at the epoch's end (``hi == n``); None while everything is finite."""
    what = None
    if not math.isfinite(loss_sum):
        what = f"the training loss became {loss_sum}"
    elif hi == n:  # one CPU-GPU sync for every parameter
        xp = net.backend.xp
        finite = xp.stack([xp.isfinite(p).all() for p in net.params.values()]).tolist()
        bad = [k for k, ok in zip(net.params, finite) if not ok]
        what = f"parameter {bad[0]} became NaN or infinite" if bad else None
    if what is None:
        return None
    return (f"training diverged in epoch {epoch}: {what} between rows {lo} and {hi} of {n}; "
            f"try a smaller learning rate (this epoch used {lr:g})")


def _out_of_memory(net: Network, rows: int, exc: BaseException, doing: str = "training") -> DeviceMemoryError:
    """Free the backend's cached memory and say what did not fit and what to reduce."""
    net.backend.free_memory()
    widest = max(net.sizes)
    per_row = widest * net.dtype.itemsize
    return DeviceMemoryError(
        f"out of memory on {net.backend.name} ({net.backend.device}) while {doing} {rows} rows at a time through "
        f"layers {net.sizes} in {net.dtype.name} (about {rows * per_row / 2**20:.1f} MiB per activation array): "
        f"{str(exc).strip() or type(exc).__name__}; reduce batch_size= or hidden=, or use dtype='float32'"
    )


def evaluate(net: Network, X: Array, y: Array, labels: Array | None = None) -> dict[str, float]:
    """Mean per-sample loss and accuracy of ``net`` on data ``X``: ``{"test_loss": ..., "test_accuracy": ...}``.

    ``y`` is what a user has: integer class labels ``(N,)`` or target rows ``(N, n_out)``
    (one-hot, or a sigmoid network's 0.01/0.99 rows), whose argmax is the class. The
    four-argument form ``evaluate(net, X, T, labels)`` takes target rows and their labels apart.
    Everything is checked first, finiteness included: labels of the wrong shape or out of range,
    or a NaN in ``X``, are a ValueError naming the argument, never a number.
    """
    _check_network("evaluate", net)
    if labels is None:
        X, T, labels = _prepare(net, X, y, "X", "y")
    else:
        X = net.checked_input(X, finite=True)
        T = _checked_targets(net, y, "T")
        labels = check_labels(labels, net.sizes[-1])
        if not X.shape[0] == T.shape[0] == len(labels):
            raise ValueError(f"X, T and labels must have as many rows; got {X.shape[0]}, {T.shape[0]}, {len(labels)}")
    return _evaluate(net, X, T, labels)


def _evaluate(net: Network, X: Array, T: Array, labels: np.ndarray) -> dict[str, float]:
    """:func:`evaluate` of checked data: device ``X`` and ``T`` in the network's dtype, host int labels ``(N,)``."""
    Y, losses = net.forward_and_loss_unchecked(X, T)
    loss = float(losses.mean())  # CPU-GPU sync point
    predicted = net.backend.to_host(Y.argmax(axis=1))
    return {"test_loss": loss, "test_accuracy": float((predicted == labels).mean())}


def _check_network(function: str, net: Any) -> None:
    if not isinstance(net, Network):
        raise TypeError(f"{function}'s first argument must be a gpunet.Network; got {type(net).__name__}")


def _checked_targets(net: Network, T: Array, label: str) -> Array:
    """Target rows ``(N, n_out)`` checked (shape, dtype, finite in the network's dtype) and on the device."""
    original = check_matrix(label, T, net.sizes[-1])
    with np.errstate(over="ignore"):  # a value beyond the dtype's range is named by check_finite
        T = net.backend.to_device(original, net.dtype)
    check_finite(label, T, original)
    return T


def _prepare_optional(
    net: Network, X: Array | None, y: Array | None, x_label: str, y_label: str
) -> tuple[Array, Array, np.ndarray] | None:
    """:func:`_prepare` for an optional pair of arguments: None when both are None."""
    if (X is None) != (y is None):
        raise ValueError(f"{x_label} and {y_label} must be given together")
    return None if X is None else _prepare(net, X, y, x_label, y_label)


def _prepare(net: Network, X: Array, y: Array, x_label: str, y_label: str) -> tuple[Array, Array, np.ndarray]:
    """Check once (finiteness by one flag for device data), then move to the device once: (X, T, host labels)."""
    X = net.checked_input(X, x_label, finite=True)  # NumPy or CuPy: device data stays on the device
    try:
        y = y if hasattr(y, "ndim") and hasattr(y, "shape") else to_numpy(y)
        ndim = y.ndim
    except ValueError as exc:  # numpy.asarray of ragged or non-numeric nesting
        raise TypeError(f"{y_label} must be integer labels (N,) or target rows (N, {net.sizes[-1]}); "
                        f"got {type(y).__name__} ({exc})") from None
    if ndim == 2:
        if y.shape[1] != net.sizes[-1]:  # e.g. a column of labels (N, 1): refused before it could broadcast
            raise ValueError(f"{y_label} must be integer labels (N,) or target rows (N, {net.sizes[-1]}); "
                             f"got shape {tuple(y.shape)}")
        T = _checked_targets(net, y, y_label)
        labels = net.backend.to_host(T.argmax(axis=1))
    else:
        try:
            labels = check_labels(y, net.sizes[-1])  # rank, integrality and range, naming the first bad label
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{y_label}: {exc}") from None
        T = net.backend.to_device(net.targets_from_labels(labels), net.dtype)
    if T.shape[0] != X.shape[0]:
        raise ValueError(f"{y_label} must have one entry per row of {x_label} ({X.shape[0]}); got {T.shape[0]}")
    return X, T, labels


def _validation(
    net: Network, data: tuple[Array, Array, np.ndarray], validation: Any, X_val: Array | None, y_val: Array | None,
    seed: int, patience: int | None,
) -> tuple[tuple[Array, Array, np.ndarray], tuple[Array, Array, np.ndarray] | None]:
    """The training data and the validation data (or None) that ``validation``/``X_val``/``y_val`` ask for."""
    if X_val is not None or y_val is not None:
        if validation is not None:
            raise ValueError("give validation data once: validation= or X_val=/y_val=, not both")
        return data, _prepare_optional(net, X_val, y_val, "X_val", "y_val")
    if isinstance(validation, tuple):
        return data, validation_pair(net, validation)
    fraction = validation_fraction(validation, patience)
    if fraction == 0:
        return data, None
    held, kept = validation_rows(len(data[2]), fraction, seed)
    X, T, labels = data
    take = [net.backend.to_device(held), net.backend.to_device(kept)]
    return (X[take[1]], T[take[1]], labels[kept]), (X[take[0]], T[take[0]], labels[held])


def validation_pair(net: Network, validation: tuple[Any, ...]) -> tuple[Array, Array, np.ndarray]:
    """``validation=(X_val, y_val)`` checked and on the device, as :func:`_prepare` makes training data."""
    if len(validation) != 2:
        raise ValueError(f"validation must be a fraction or an (X_val, y_val) pair; got a tuple of {len(validation)}")
    return _prepare(net, validation[0], validation[1], "validation[0]", "validation[1]")


def validation_fraction(validation: Any, patience: int | None) -> float:
    """The share of the training rows ``validation=`` (a number, or None) holds out, checked to be in [0, 1):
    None is 0, and 0 with early stopping (``patience``) is ``defaults.EARLY_STOPPING_VALIDATION``."""
    if validation is None:
        validation = 0.0
    if isinstance(validation, bool) or not isinstance(validation, (int, float, np.integer, np.floating)):
        raise TypeError(f"validation must be a fraction of the training rows in [0, 1) or an (X_val, y_val) pair; "
                        f"got {type(validation).__name__}")
    if not 0.0 <= validation < 1.0:
        raise ValueError(f"validation must be a fraction of the training rows in [0, 1); got {validation!r}")
    if validation == 0 and patience is not None:
        return defaults.EARLY_STOPPING_VALIDATION  # early stopping watches something, as on the command line
    return float(validation)


def validation_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, training rows) for a seeded ``fraction`` of ``n`` rows, each sorted: the rows
    gpunet.datasets.hold_out moves to validation for the command line's ``--validation``."""
    n_val = round(n * fraction)
    if not 1 <= n_val < n:
        raise ValueError(f"validation={fraction:g} of {n} training rows leaves no validation or no training rows")
    order = np.random.default_rng([seed, 1 << 20]).permutation(n)  # a stream apart from the epoch orders
    return np.sort(order[:n_val]), np.sort(order[n_val:])


class _Best:
    """Early stopping's memory: the lowest validation loss so far, its epoch, and the network's weights and the
    optimiser's state then (host copies, taken only in an epoch that improves), restored at the end."""

    def __init__(self, net: Network, optimizer: Optimizer, patience: int) -> None:
        self.net, self.optimizer, self.patience = net, optimizer, patience
        self.loss, self.epoch = math.inf, 0
        self.params: dict[str, np.ndarray] | None = None
        self.state: dict[str, Any] | None = None

    def update(self, record: EpochRecord) -> bool:
        """Take an epoch's record (adding its ``best_epoch``); True when training should stop."""
        if record["val_loss"] < self.loss or self.params is None:
            self.loss, self.epoch = record["val_loss"], record["epoch"]
            self.params, self.state = self.net.get_params(), self.optimizer.state_dict()  # CPU-GPU sync points
        record["best_epoch"] = self.epoch
        return record["epoch"] - self.epoch >= self.patience

    def restore(self) -> None:
        if self.params is not None and self.state is not None:  # taken together
            self.net.set_params(self.params)
            self.optimizer.load_state_dict(self.state, self.net.params)


def _progress_bar(epochs: int) -> Any:
    """A tqdm bar over the epochs, on stderr: the one output the library makes, and only when asked."""
    from tqdm import tqdm  # here: importing gpunet does not import tqdm

    return tqdm(total=epochs, unit="epoch", desc="train")
