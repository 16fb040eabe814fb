"""Learning-rate schedules: the learning rate of each epoch, from ``lr``, the schedule's name and its settings.

A schedule here is per epoch: epoch ``e`` (from 1) of ``epochs`` trains every step at one learning rate,
``learning_rate(e, epochs, lr, ...)``. Held constant within an epoch, it is one number the training loop
hands each engine with the epoch's order, so every path (the plain and fused steps, the per-sample
kernels, graph mode reading it from device memory) runs a schedule identically, and a run resumed
mid-epoch continues at the same rate.

- ``"exponential"``: ``lr * lr_decay ** (e - 1)``; ``lr_decay=1`` (its default) keeps ``lr``.
- ``"step"``: ``lr * lr_gamma ** ((e - 1) // lr_step)``: multiplied by ``lr_gamma`` every ``lr_step`` epochs
  (PyTorch's ``StepLR``).
- ``"cosine"`` (the default): a linear warm-up of ``warmup_epochs`` epochs, ``lr * e / (W + 1)``, then from ``lr`` at epoch
  ``W + 1`` half a cosine down towards ``lr_min``: ``lr_min + (lr - lr_min) (1 + cos(pi t)) / 2`` with
  ``t = (e - W - 1) / (epochs - W)`` (PyTorch's ``CosineAnnealingLR`` per epoch: the last epoch trains just
  above ``lr_min``, never at it, so no epoch is spent at a rate of 0).
- ``"one-cycle"`` (Smith's 1cycle, the cosine form, as PyTorch's ``OneCycleLR`` anneals by default): a linear
  warm-up from ``lr / lr_div`` at epoch 1 to ``lr`` at epoch ``W + 1``, then the same cosine down towards
  ``lr_min``; ``W`` defaults to 30% of the epochs (``OneCycleLR``'s ``pct_start``), rounded.

``lr_schedule=None`` (the default of ``train``, ``train_many`` and ``TrainConfig``) is the schedule whose
settings are given (:func:`schedule_named`: ``lr_decay`` exponential, ``lr_step`` or ``lr_gamma`` step, ``lr_div``
one-cycle), else cosine, ``gpunet.defaults.LR_SCHEDULE``. A schedule's settings are refused with another schedule (``lr_step=`` with ``lr_schedule='cosine'`` is a
mistake, not a no-op). ``cosine`` and ``one-cycle`` depend on ``epochs``: resuming a run with more epochs than
it was started with stretches the rest of its curve.
"""

from __future__ import annotations

import math
from typing import Any

from . import defaults
from .checks import check_choice, check_decay, check_int, check_number

SCHEDULES = ("exponential", "step", "cosine", "one-cycle")
LR_GAMMA = 0.1  # step's factor when lr_gamma is not given (PyTorch's StepLR)
LR_DIV = 25.0  # one-cycle's first epoch trains at lr / LR_DIV (OneCycleLR's div_factor)
ONE_CYCLE_WARMUP = 0.3  # one-cycle's share of warm-up epochs when warmup_epochs is not given (its pct_start)
# Each schedule's own settings: given with another schedule, they are refused.
SETTINGS_OF = {"exponential": ("lr_decay",), "step": ("lr_step", "lr_gamma"),
               "cosine": ("warmup_epochs", "lr_min"), "one-cycle": ("warmup_epochs", "lr_min", "lr_div")}


def schedule_named(lr_schedule: str | None, *, lr_decay: float | None = None, lr_step: int | None = None,
                   lr_gamma: float | None = None, lr_div: float | None = None) -> str:
    """``lr_schedule``, or where it is None the schedule whose settings are given, else the default one."""
    if lr_schedule is not None:
        return lr_schedule
    for name, setting in (("exponential", lr_decay), ("step", lr_step), ("step", lr_gamma), ("one-cycle", lr_div)):
        if setting is not None:
            return name
    return defaults.LR_SCHEDULE


def check_schedule(lr: float, epochs: int, lr_schedule: str = "exponential", *, lr_decay: float | None = None,
                   lr_step: int | None = None, lr_gamma: float | None = None, warmup_epochs: int | None = None,
                   lr_min: float | None = None, lr_div: float | None = None) -> dict[str, Any]:
    """Every setting checked (ValueError naming it, its value and what was expected), alone and together;
    returns the schedule's settings with the defaults filled in, as :func:`learning_rate` takes them."""
    check_number("lr", lr, positive=True)
    check_int("epochs", epochs, 1)
    check_choice("lr_schedule", lr_schedule, SCHEDULES)
    if lr_decay is not None:
        check_decay("lr_decay", lr_decay)
    given = {"lr_decay": lr_decay if lr_decay != 1 else None, "lr_step": lr_step, "lr_gamma": lr_gamma,
             "warmup_epochs": warmup_epochs, "lr_min": lr_min, "lr_div": lr_div}
    for name, value in given.items():
        if value is not None and name not in SETTINGS_OF[lr_schedule]:
            users = " or ".join(repr(s) for s, names in SETTINGS_OF.items() if name in names)
            raise ValueError(f"{name}= ({value!r}) is a setting of lr_schedule={users}, not of "
                             f"lr_schedule={lr_schedule!r}")
    if lr_schedule == "exponential":
        return {"lr_decay": float(defaults.LR_DECAY if lr_decay is None else lr_decay)}
    if lr_schedule == "step":
        if lr_step is None:
            raise ValueError("lr_schedule='step' needs lr_step=, the epochs between two drops (an integer >= 1)")
        gamma = LR_GAMMA if lr_gamma is None else lr_gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 < gamma < 1.0:
            raise ValueError(f"lr_gamma must be a number in (0, 1), the factor of each drop; got {gamma!r}")
        return {"lr_step": check_int("lr_step", lr_step, 1), "lr_gamma": float(gamma)}
    floor = 0.0 if lr_min is None else check_number("lr_min", lr_min, positive=False)
    if floor >= lr:
        raise ValueError(f"lr_min= must be below lr= ({lr!r}): it is the floor the learning rate anneals towards; "
                         f"got {lr_min!r}")
    if warmup_epochs is None:
        warmup = 0 if lr_schedule == "cosine" else min(round(ONE_CYCLE_WARMUP * epochs), epochs - 1)
    else:
        warmup = check_int("warmup_epochs", warmup_epochs, 0)
        if warmup >= epochs:
            raise ValueError(f"warmup_epochs= must be below epochs= ({epochs}), leaving epochs to anneal; "
                             f"got {warmup_epochs!r}")
    settings: dict[str, Any] = {"warmup_epochs": warmup, "lr_min": floor}
    if lr_schedule == "one-cycle":
        div = LR_DIV if lr_div is None else lr_div
        if isinstance(div, bool) or not isinstance(div, (int, float)) or not (math.isfinite(div) and div >= 1):
            raise ValueError(f"lr_div must be a finite number >= 1 (one-cycle starts at lr / lr_div); got {div!r}")
        settings["lr_div"] = float(div)
    return settings


def learning_rate(epoch: int, epochs: int, lr: float, lr_schedule: str = "exponential", **settings: Any) -> float:
    """The learning rate of epoch ``epoch`` (from 1) of ``epochs``; ``settings`` as :func:`check_schedule`
    names them (checked there: call it once per run, then this once per epoch)."""
    s = check_schedule(lr, epochs, lr_schedule, **settings)
    if lr_schedule == "exponential":
        return lr * s["lr_decay"] ** (epoch - 1)  # bit for bit what the training loop always computed
    if lr_schedule == "step":
        return lr * s["lr_gamma"] ** ((epoch - 1) // s["lr_step"])
    W, floor = s["warmup_epochs"], s["lr_min"]
    if epoch <= W and lr_schedule == "one-cycle":  # linear from lr / lr_div, reaching lr at epoch W + 1
        start = lr / s["lr_div"]
        return start + (lr - start) * (epoch - 1) / W
    if epoch <= W:  # linear from 0, reaching lr at epoch W + 1
        return lr * epoch / (W + 1)
    t = (epoch - W - 1) / (epochs - W)  # 0 at the peak, (E - W - 1) / (E - W) at the last epoch
    return floor + (lr - floor) * (1 + math.cos(math.pi * t)) / 2
