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

from .engines import select
from .checks import check_decay, check_int, check_matrix, check_number
from .memory import DeviceMemoryError  # raised here too; defined beside the memory checks
from .network import Network
from .optim import Optimizer, make_optimizer

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
    epochs: int = 5,
    batch_size: int = 32,
    lr: float = 0.1,
    lr_decay: float = 1.0,
    optimizer: str | Optimizer = "sgd",
    weight_decay: float = 0.0,
    seed: int = 0,
    X_test: Array | None = None,
    y_test: Array | None = None,
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

    ``y_train``/``y_test`` are integer labels (targets are made by
    :meth:`Network.targets_from_labels`) or target matrices ``(N, n_out)``. The data moves to
    the network's backend once; epoch ``e``'s order comes from
    ``numpy.random.default_rng([seed, e])`` and it trains at
    ``lr * lr_decay ** (e - 1)``, so the same seed and data give the same
    trajectory, and a run resumed with ``start_epoch`` (and ``start_row`` and
    ``start_loss`` mid-epoch, with the optimiser's state restored) continues it
    exactly.

    A record holds ``epoch``, ``lr``, ``train_loss`` (mean per-sample loss over
    the epoch, each before its step), ``test_loss`` and ``test_accuracy`` (None
    without test data), ``val_loss`` and ``val_accuracy`` when ``X_val``/``y_val``
    are given, ``seconds`` and ``samples_per_s``. ``callback`` is called with
    each record; if it returns True, training stops after that epoch.
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
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    check_number("lr", lr, positive=True)
    check_decay("lr_decay", lr_decay)
    check_int("start_epoch", start_epoch, 1)
    check_int("start_row", start_row, 0)
    opt = make_optimizer(optimizer, weight_decay)
    backend = net.backend
    X, T, _ = _prepare(net, X_train, y_train, "X_train", "y_train")
    test = _prepare_optional(net, X_test, y_test, "X_test", "y_test")
    val = _prepare_optional(net, X_val, y_val, "X_val", "y_val")

    n = X.shape[0]
    if start_row >= n:
        raise ValueError(f"start_row must be below the {n} training rows; got {start_row}")
    per_sample = batch_size == 1 and opt.folds_lr  # plain SGD: the per-sample engines apply
    chunk = PER_SAMPLE_CHUNK if per_sample else batch_size
    widest = select.widest_product(net, chunk)  # multiply-adds of one product
    try:  # an engine may allocate too (graph mode's buffers, per-sample epochs' copy of the data)
        step_calls = every_step and (on_batch is not None or should_stop is not None)
        engine = select.engine(net, kernels, opt, X, T, chunk, per_sample, step_calls)  # one place decides
    except backend.out_of_memory_errors as exc:
        raise _out_of_memory(net, chunk, exc) from None
    history: list[EpochRecord] = []
    upcoming = None  # the next epoch's permutation, made while the device trains this one
    for epoch in range(start_epoch, epochs + 1):
        start = time.perf_counter()
        epoch_lr = lr * lr_decay ** (epoch - 1)
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
                record.update(evaluate(net, *test) if test else {"test_loss": None, "test_accuracy": None})
                if val:
                    record.update({k.replace("test_", "val_"): v for k, v in evaluate(net, *val).items()})
        except backend.out_of_memory_errors as exc:
            raise _out_of_memory(net, len(test[2]) if test else n, exc, "evaluating") from None
        record.update(seconds=seconds, samples_per_s=(n - first) / seconds if seconds > 0 else math.inf)
        history.append(record)
        if callback is not None and callback(record) is True:
            break
        if engine.whole_epochs and should_stop is not None and epoch < epochs and should_stop():
            raise TrainingInterrupted(epoch + 1, 0, 0.0)  # whole-epoch engines ask once an epoch, after it
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
    value = float(loss_sum)  # CPU-GPU sync point
    what = None
    if not math.isfinite(value):
        what = f"the training loss became {value}"
    elif hi == n:  # one CPU-GPU sync for every parameter
        xp = net.backend.xp
        finite = xp.stack([xp.isfinite(p).all() for p in net.params.values()]).tolist()
        bad = [k for k, ok in zip(net.params, finite) if not ok]
        what = f"parameter {bad[0]} became NaN or infinite" if bad else None
    if what is not None:
        raise DivergenceError(
            f"training diverged in epoch {epoch}: {what} between rows {lo} and {hi} of {n}; "
            f"try a smaller learning rate (this epoch used {lr:g})",
            epoch,
        )


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


def evaluate(net: Network, X: Array, T: Array, labels: np.ndarray) -> dict[str, float]:
    """Mean per-sample loss and accuracy of ``net`` on data ``X``, target rows ``T`` and host labels."""
    X = net.checked_input(X)  # no copy for train's prepared data
    T = net.backend.to_device(check_matrix("T", T, net.sizes[-1]), net.dtype)
    if not X.shape[0] == T.shape[0] == len(labels):
        raise ValueError(f"X, T and labels must have as many rows; got {X.shape[0]}, {T.shape[0]}, {len(labels)}")
    Y, losses = net.forward_and_loss_unchecked(X, T)
    loss = float(losses.mean())  # CPU-GPU sync point
    predicted = net.backend.to_host(Y.argmax(axis=1))
    return {"test_loss": loss, "test_accuracy": float((predicted == labels).mean())}


def _prepare_optional(
    net: Network, X: Array | None, y: Array | None, x_label: str, y_label: str
) -> tuple[Array, Array, np.ndarray] | None:
    """:func:`_prepare` for an optional pair of arguments: None when both are None."""
    if (X is None) != (y is None):
        raise ValueError(f"{x_label} and {y_label} must be given together")
    return None if X is None else _prepare(net, X, y, x_label, y_label)


def _prepare(net: Network, X: Array, y: Array, x_label: str, y_label: str) -> tuple[Array, Array, np.ndarray]:
    """Check once (on the device for device data), then move to the device once: (X, T, host labels)."""
    X = check_matrix(x_label, X, net.sizes[0])  # NumPy or CuPy: device data stays on the device
    y = net.backend.to_host(y)
    if y.ndim == 2:
        T = check_matrix(y_label, y, net.sizes[-1])
        labels = T.argmax(axis=1)
    else:
        try:
            T = net.targets_from_labels(y)  # checks rank, integrality and range
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{y_label}: {exc}") from None
        labels = y.astype(np.int64)
    if T.shape[0] != X.shape[0]:
        raise ValueError(f"{y_label} must have one entry per row of {x_label} ({X.shape[0]}); got {T.shape[0]}")
    for label, a in ((x_label, X), (y_label, T)):
        if not (np.isfinite(a.min()) and np.isfinite(a.max())):  # NaN propagates; two fast reductions
            raise ValueError(f"{label} contains NaN or infinity")
    return net.backend.to_device(X, net.dtype), net.backend.to_device(T, net.dtype), labels
