"""The training loop: shuffle, batch, step, evaluate; returns a history and never prints."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from .checks import check_int, check_matrix, check_number
from .network import Network
from .optim import Optimizer, make_optimizer

Array = Any
EpochRecord = dict[str, Any]


def train(
    net: Network,
    X_train: Array,
    y_train: Array,
    *,
    epochs: int = 5,
    batch_size: int = 32,
    lr: float = 0.1,
    optimizer: str | Optimizer = "sgd",
    weight_decay: float = 0.0,
    seed: int = 0,
    X_test: Array | None = None,
    y_test: Array | None = None,
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
    (None without test data), ``seconds`` and ``samples_per_s``. ``callback`` is
    called with each record; if it returns True, training stops after that epoch.
    ``on_batch(rows_done, batch_loss_sum)`` is called after every step with the
    rows done so far this epoch and the batch's summed loss as a 0-d device
    array (reading it is a CPU-GPU sync; progress bars read it now and then).
    """
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    check_number("lr", lr, positive=True)
    check_int("start_epoch", start_epoch, 1)
    opt = make_optimizer(optimizer, weight_decay)
    backend = net.backend
    X, T, _ = _prepare(net, X_train, y_train, "X_train", "y_train")
    if (X_test is None) != (y_test is None):
        raise ValueError("X_test and y_test must be given together")
    test = _prepare(net, X_test, y_test, "X_test", "y_test") if X_test is not None else None

    n = X.shape[0]
    history: list[EpochRecord] = []
    for epoch in range(start_epoch, epochs + 1):
        start = time.perf_counter()
        order = backend.to_device(np.random.default_rng([seed, epoch]).permutation(n))  # small, once per epoch
        loss_sum = backend.xp.zeros((), dtype=net.dtype)  # accumulated on the device
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            batch_loss = net.train_step(X[idx], T[idx], lr, opt)
            loss_sum += batch_loss
            if on_batch is not None:
                on_batch(min(lo + batch_size, n), batch_loss)
        record: EpochRecord = {"epoch": epoch, "train_loss": float(loss_sum) / n}  # CPU-GPU sync point
        backend.synchronize()
        seconds = time.perf_counter() - start
        record.update(evaluate(net, *test) if test else {"test_loss": None, "test_accuracy": None})
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
        if not np.isfinite(a).all():
            raise ValueError(f"{label} contains NaN or infinity")
    return net.backend.to_device(X, net.dtype), net.backend.to_device(T, net.dtype), labels
