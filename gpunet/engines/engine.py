"""The one interface every engine implements: train an epoch over an order, at a learning rate, from a row.

``gpunet.train`` holds one :class:`Engine` for a run and calls :meth:`Engine.run_epoch` once an epoch;
the epoch loop, the divergence guard, the callbacks and interruption live in the training loop, once,
whichever engine runs. A :class:`StepEngine` runs an epoch as steps over batches (or per-sample chunks)
gathered in the epoch's order; an engine with ``whole_epochs`` runs it in one call (graph mode) and
reports once, at its end.
"""

from __future__ import annotations

from typing import Any, Callable

Array = Any
# After a step: (rows done so far this epoch, that step's summed loss as a 0-d device array).
AfterStep = Callable[[int, Array], None]


class Engine:
    """Trains ``net`` in place with ``optimizer`` on the whole training set ``X`` and targets ``T`` (checked device
    arrays of the network's dtype), ``rows`` rows a step.

    ``X`` may change between epochs: with augmentation the training loop rewrites it in place before each
    epoch (gpunet/augment.py). An engine reads it afresh every epoch (graph mode's captured gather reads it at
    its address) and keeps no copy of it from one epoch to the next."""

    name = "engine"
    whole_epochs = False  # True: run_epoch trains the whole epoch in one call and calls after_step once

    def __init__(self, net: Any, optimizer: Any, X: Array, T: Array, rows: int) -> None:
        self.net, self.optimizer, self.X, self.T, self.rows = net, optimizer, X, T, rows

    def run_epoch(self, order: Array, lr: float, loss_sum: Array, start: int = 0,
                  after_step: AfterStep | None = None) -> None:
        """Train on the rows ``order[start:]`` (the epoch's permutation, on the device) at ``lr``, adding each
        row's loss (before its step) into ``loss_sum`` (a 0-d device array) and calling ``after_step`` after each
        step (once, at the end, for whole epochs). No host sync of its own."""
        raise NotImplementedError


class StepEngine(Engine):
    """An epoch as steps: each batch of ``rows`` rows in the epoch's order gathered on the device (into kept
    arrays: no allocation per full step), then :meth:`step`."""

    def __init__(self, net: Any, optimizer: Any, X: Array, T: Array, rows: int) -> None:
        super().__init__(net, optimizer, X, T, rows)
        xp, n = net.backend.xp, X.shape[0]
        self.X_batch = xp.empty((min(rows, n), X.shape[1]), dtype=X.dtype)
        self.T_batch = xp.empty((min(rows, n), T.shape[1]), dtype=T.dtype)

    def step(self, X: Array, T: Array, lr: float) -> Array:
        """One step on the rows ``X`` with targets ``T``; returns their summed loss before it (0-d, on the device)."""
        raise NotImplementedError

    def run_epoch(self, order: Array, lr: float, loss_sum: Array, start: int = 0,
                  after_step: AfterStep | None = None) -> None:
        xp, n, rows = self.net.backend.xp, self.X.shape[0], self.rows
        for lo in range(start, n, rows):
            idx = order[lo : lo + rows]
            full = len(idx) == rows
            Xb = xp.take(self.X, idx, axis=0, out=self.X_batch if full else None)
            Tb = xp.take(self.T, idx, axis=0, out=self.T_batch if full else None)
            batch_loss = self.step(Xb, Tb, lr)
            loss_sum += batch_loss
            if after_step is not None:
                after_step(min(lo + rows, n), batch_loss)
