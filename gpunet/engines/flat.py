"""The fast paths' flat buffers: the network's own parameter buffer (gpunet/params.py), one for the gradients and
one per optimiser state, and optim.cu's one-launch optimiser step over them.

The optimiser's ``state[k]`` become views into flat buffers of their own, so everything that reads or
writes them in place (checkpoints, the plain path) keeps working. lr and the step count live in device
memory: the kernel reads them, so a captured CUDA graph replays with the current values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..optim import OPTIMIZERS, Optimizer
from ..params import Packed, empty_packed, layout, views

Array = Any
# The optimisers with a device form, by their exact classes (a subclass may change the rule), and their state.
RULES = {cls: name for name, cls in OPTIMIZERS.items() if cls.device_update is not None}
STATE_NAMES = {name: OPTIMIZERS[name].state_names for name in RULES.values()}  # state keys "buf.W1", "m.W1", ...


def supported() -> str:
    """The optimisers with a device form, in words: "SGD, Momentum and Adam"."""
    names = [cls.__name__ for cls in RULES]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def rule_of(optimizer: Optimizer) -> str | None:
    """optim.cu's rule for ``optimizer``, or None when the flat kernel does not implement it."""
    return RULES.get(type(optimizer))


class FlatParameters:
    """The flat parameter and gradient buffers of one network on its array module ``xp``.

    ``home`` is the network's own :class:`Packed` buffer (``net.packed``): the parameters stay there and keep
    their array objects. Without one (a bare dict of arrays), a new buffer is made and the entries of
    ``params`` are rebound to views into it."""

    def __init__(self, params: dict[str, Array], xp: Any, home: Packed | None = None) -> None:
        first = next(iter(params.values()))
        self.xp, self.dtype = xp, first.dtype
        self.layout = layout({k: p.shape for k, p in params.items()})
        if home is None:
            home = empty_packed({k: p.shape for k, p in params.items()}, self.dtype, xp)
        self.params = home.buffer
        self.grads = xp.zeros(self.layout.size, dtype=self.dtype)
        self.param_views = home.views
        self.grad_views = views(self.grads, self.layout)
        self.state: dict[str, Array] = {}  # "buf", "m", "v" -> a flat buffer, made when an optimiser first needs it
        self.state_views: dict[str, dict[str, Array]] = {}
        self.adopt(params)

    def adopt(self, params: dict[str, Array]) -> None:
        """Make every ``params[k]`` a view into the flat buffer, copying in any array that is not one yet
        (the first call, or after someone rebound an entry)."""
        for k, view in self.param_views.items():
            if params[k] is not view:
                view[...] = params[k]
                params[k] = view

    def state_buffers(self, names: tuple[str, ...]) -> dict[str, Array]:
        """The flat state buffers ``names`` ("buf", "m", "v"), made (zeros) where missing; made once, so a
        captured graph may hold them."""
        for s in names:
            if s not in self.state:
                self.state[s] = self.xp.zeros(self.layout.size, dtype=self.dtype)
                self.state_views[s] = views(self.state[s], self.layout)
        return {s: self.state[s] for s in names}

    def adopt_state(self, optimizer: Optimizer, names: tuple[str, ...], lr: float) -> None:
        """Make the optimiser's state buffers views into flat ones: its values copied in, zeros where it has none
        yet (optim.py starts every buffer at zero). Covers a restored checkpoint, which rebinds ``state``.

        State of an older convention (Momentum's velocity "v.W1", ...) is converted first with ``lr``, the
        learning rate of the step about to be taken, by the optimiser's own ``upgrade_state``."""
        optimizer.upgrade_state(lr)
        self.state_buffers(names)
        for s in names:
            for k, view in self.state_views[s].items():
                key = f"{s}.{k}"
                current = optimizer.state.get(key)
                if current is view:
                    continue
                view[...] = 0 if current is None else current
                optimizer.state[key] = view


def checked_rule(optimizer: Optimizer, path: str) -> str:
    """optim.cu's rule for ``optimizer``; ValueError naming ``path`` ("kernels='fused'", "graph mode") where the
    flat kernel does not implement it (a subclass may change the rule)."""
    rule = rule_of(optimizer)
    if rule is None:
        raise ValueError(f"{path} supports {supported()}; got {type(optimizer).__name__}")
    return rule


class FlatOptimizer:
    """optim.cu's ``flat_step`` for any of SGD, Momentum and Adam over a :class:`FlatParameters`: the learning
    rate and step count it reads from device memory, and its arguments.

    :meth:`step` launches it through ``kernels`` (``CudaKernels`` on the device, the tests' ``transcriptions.NumpyKernels`` on
    NumPy). Graph mode passes no kernels: it captures the launch from :meth:`arguments` into its graph and,
    before each replay, calls :meth:`prepare`, then :meth:`advance` by the steps replayed.
    """

    def __init__(self, flat: FlatParameters, kernels: Any = None) -> None:
        xp = flat.xp
        self.flat, self.kernels = flat, kernels
        self.lr = xp.zeros(1, dtype=np.float64)  # read by the kernel, written only when it changes
        self.step_count = xp.zeros(1, dtype=np.uint32)  # steps taken; the kernel advances it
        self.done = xp.zeros(1, dtype=np.uint32)  # blocks finished, for the kernel's last-block test
        self._lr_host: float | None = None
        self._t_host: int | None = None  # what step_count holds, as far as the host knows

    def arguments(self, optimizer: Optimizer) -> tuple[Any, ...]:
        """``kernels.flat_step``'s arguments for ``optimizer``: (rule, p, g, m, v, n_weights, lr, step, done,
        weight_decay, beta1, beta2, eps). The buffers are the same on every call, so a graph may capture them."""
        rule = checked_rule(optimizer, "the flat optimiser kernel")
        state = [self.flat.state_buffers(STATE_NAMES[rule])[s] for s in STATE_NAMES[rule]]
        m, v = (state + [None, None])[:2]  # the rule's first and second state buffers (momentum's buf in m)
        beta1, beta2, eps = optimizer.device_hyperparameters()
        return (rule, self.flat.params, self.flat.grads, m, v, self.flat.layout.n_weights, self.lr, self.step_count,
                self.done, optimizer.weight_decay, beta1, beta2, eps)

    def prepare(self, optimizer: Optimizer, lr: float) -> None:
        """Ready the device for steps of ``optimizer`` at ``lr``: its state adopted into the flat buffers, and lr
        and the step count written where they differ from what the device holds."""
        rule = checked_rule(optimizer, "the flat optimiser kernel")
        self.flat.adopt_state(optimizer, STATE_NAMES[rule], lr)
        if lr != self._lr_host:
            self.lr.fill(lr)
            self._lr_host = lr
        if optimizer.t != self._t_host:  # first step, a restored checkpoint, or steps taken by another path
            self.step_count.fill(optimizer.t)
            self._t_host = optimizer.t

    def advance(self, optimizer: Optimizer, steps: int) -> None:
        """Count ``steps`` steps the device took (each launch advanced step_count by one)."""
        optimizer.count(steps)
        self._t_host = optimizer.t

    def step(self, optimizer: Optimizer, lr: float) -> None:
        """One step of ``optimizer`` from ``flat.grads`` (already written by the step's products)."""
        self.prepare(optimizer, lr)
        self.kernels.flat_step(*self.arguments(optimizer))
        self.advance(optimizer, 1)
