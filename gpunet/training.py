"""The training loop: shuffle, batch, step, evaluate; returns a history and never prints."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from .checks import check_int, check_matrix, check_number
from .network import Network
from .optim import SGD, Optimizer, make_optimizer

Array = Any
EpochRecord = dict[str, Any]
PER_SAMPLE_CHUNK = 64  # rows per Network.train_per_sample call: the Gram matrix is CHUNK x CHUNK


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
    start_epoch: int = 1,
) -> list[EpochRecord]:
    """Train ``net`` in place with mini-batches and return one record per epoch.

    ``y_train``/``y_test`` are integer labels (targets are made by
    :meth:`Network.targets`) or target matrices ``(N, n_out)``. The data moves to
    the network's backend once; epoch ``e``'s order comes from
    ``numpy.random.default_rng([seed, e])``, so the same seed and data give the
    same trajectory, and a run resumed with ``start_epoch`` (and the optimiser
    instance or its restored state) continues it exactly. A record holds ``epoch``, ``train_loss`` (mean per-sample loss
    over the epoch, before each step), ``test_loss`` and ``test_accuracy``
    (None without test data), ``val_loss`` and ``val_accuracy`` when
    ``X_val``/``y_val`` are given, ``seconds`` and ``samples_per_s``. ``callback`` is
    called with each record; if it returns True, training stops after that epoch.
    Epoch ``e`` trains at ``lr * lr_decay ** (e - 1)`` (recorded as ``lr``), so a
    resumed run picks up the schedule where it was.
    ``on_batch(rows_done, batch_loss_sum)`` is called after every step with the
    rows done so far this epoch and the summed loss of the rows since the last
    call as a 0-d device array (reading it is a CPU-GPU sync; progress bars
    read it now and then). Per-sample plain SGD (``batch_size=1``, ``SGD``
    without weight decay) runs through :meth:`Network.train_per_sample` in
    chunks of ``PER_SAMPLE_CHUNK`` rows: the same updates, far fewer calls.
    """
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    check_number("lr", lr, positive=True)
    if not (isinstance(lr_decay, (int, float)) and 0 < lr_decay <= 1):
        raise ValueError(f"lr_decay must be in (0, 1]; got {lr_decay!r}")
    check_int("start_epoch", start_epoch, 1)
    opt = make_optimizer(optimizer, weight_decay)
    backend = net.backend
    X, T, _ = _prepare(net, X_train, y_train, "X_train", "y_train")
    if (X_test is None) != (y_test is None):
        raise ValueError("X_test and y_test must be given together")
    test = _prepare(net, X_test, y_test, "X_test", "y_test") if X_test is not None else None
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together")
    val = _prepare(net, X_val, y_val, "X_val", "y_val") if X_val is not None else None

    n = X.shape[0]
    per_sample = batch_size == 1 and type(opt) is SGD and opt.weight_decay == 0
    chunk = PER_SAMPLE_CHUNK if per_sample else batch_size
    xp = backend.xp
    X_batch = xp.empty((min(chunk, n), X.shape[1]), dtype=X.dtype)
    T_batch = xp.empty((min(chunk, n), T.shape[1]), dtype=T.dtype)
    history: list[EpochRecord] = []
    for epoch in range(start_epoch, epochs + 1):
        start = time.perf_counter()
        epoch_lr = lr * lr_decay ** (epoch - 1)
        order = backend.to_device(np.random.default_rng([seed, epoch]).permutation(n))  # small, once per epoch
        loss_sum = backend.xp.zeros((), dtype=net.dtype)  # accumulated on the device
        with backend.products_of_size(chunk * max(a * b for a, b in zip(net.sizes, net.sizes[1:]))):
            for lo in range(0, n, chunk):
                idx = order[lo : lo + chunk]
                full = len(idx) == chunk  # gather full batches into kept arrays: no allocation per step
                Xb = xp.take(X, idx, axis=0, out=X_batch if full else None)
                Tb = xp.take(T, idx, axis=0, out=T_batch if full else None)
                if per_sample:
                    batch_loss = net._per_sample(Xb, Tb, epoch_lr)  # data checked once, above
                    opt.t += len(idx)
                else:
                    batch_loss = net._step(Xb, Tb, epoch_lr, opt)
                loss_sum += batch_loss
                if on_batch is not None:
                    on_batch(min(lo + chunk, n), batch_loss)
        record: EpochRecord = {"epoch": epoch, "lr": epoch_lr,
                               "train_loss": float(loss_sum) / n}  # CPU-GPU sync point
        backend.synchronize()
        seconds = time.perf_counter() - start
        record.update(evaluate(net, *test) if test else {"test_loss": None, "test_accuracy": None})
        if val:
            record.update({k.replace("test_", "val_"): v for k, v in evaluate(net, *val).items()})
        record.update(seconds=seconds, samples_per_s=n / seconds if seconds > 0 else math.inf)
        history.append(record)
        if callback is not None and callback(record) is True:
            break
    return history


def evaluate(net: Network, X: Array, T: Array, labels: np.ndarray) -> dict[str, float]:
    """Mean per-sample loss and accuracy of ``net`` on device data with host labels."""
    Y = net.forward(X)
    loss = float(net.per_sample_loss(Y, T).mean())  # CPU-GPU sync point
    predicted = net.backend.to_host(Y.argmax(axis=1))
    return {"test_loss": loss, "test_accuracy": float((predicted == labels).mean())}


def _prepare(net: Network, X: Array, y: Array, x_label: str, y_label: str) -> tuple[Array, Array, np.ndarray]:
    """Check once on the host, then move to the device once: (X, T, host labels)."""
    X = net.backend.to_host(check_matrix(x_label, X, net.sizes[0]))
    y = net.backend.to_host(y)
    if y.ndim == 2:
        T = check_matrix(y_label, y, net.sizes[-1])
        labels = T.argmax(axis=1)
    else:
        try:
            T = net.targets(y)  # checks rank, integrality and range
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{y_label}: {exc}") from None
        labels = y.astype(np.int64)
    if T.shape[0] != X.shape[0]:
        raise ValueError(f"{y_label} must have one entry per row of {x_label} ({X.shape[0]}); got {T.shape[0]}")
    for label, a in ((x_label, X), (y_label, T)):
        if not (np.isfinite(a.min()) and np.isfinite(a.max())):  # NaN propagates; two fast reductions
            raise ValueError(f"{label} contains NaN or infinity")
    return net.backend.to_device(X, net.dtype), net.backend.to_device(T, net.dtype), labels
