"""Optimisers: plain SGD (the original rule), momentum and Adam, updating in place.

Each optimiser is declared once, here: its hyperparameters, its state's names, its update on the host
(``_update``) and on the device (``device_update``, C++ that gpunet/engines/kernels.py builds into the
flat optimiser kernel's rules, optim_rules.cuh). The plain path, the flat kernel and checkpoints all
read these declarations.

Each ``step`` changes the parameter arrays it is given in place and never
rebinds them, so buffers held elsewhere (and, later, captured graphs) stay valid.
L2 weight decay adds ``weight_decay * W`` to the gradient of every parameter with
two or more dimensions (the weight matrices); biases (one dimension) are not decayed.
Each optimiser counts its own steps in ``t``.
"""

from __future__ import annotations

from typing import Any

from .backend import array_module, to_numpy
from .checks import check_choice, check_fraction, check_int, check_number

Array = Any
__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "AdamW"]  # the optimisers, which the package re-exports


class Optimizer:
    """Base class: subclasses implement ``_update(name, p, g, lr)`` and declare their device form.

    The built-in optimisers write their rule once, as :meth:`rule` over the parameter, its gradient, its state
    buffers and the step's :meth:`coefficients`: Python floats for one network, or arrays holding one value per
    model for many networks trained together (gpunet/engines/stack.py), which then take the same steps.

    The device form, one element at a time: ``device_update`` is C++ statements over ``p`` (the parameter),
    ``gk`` (its gradient, with L2 decay added where ``couples_decay``), ``m`` and ``v`` (the first and second of
    ``state_names``' buffers), ``rate`` and ``decay`` (lr and weight_decay in the element type ``T``),
    ``is_weight``, the doubles ``lr``, ``weight_decay``, ``beta1``, ``beta2``, ``eps`` (from
    :meth:`device_hyperparameters`), and, where ``bias_corrected``, ``v_hat_scale`` (``T``) and ``step_size``
    (``T(lr / (1 - beta1^t))``).
    """

    name = "optimizer"
    state_names: tuple[str, ...] = ()  # the buffers kept per parameter: state keys "<state>.<param>"
    non_negative: tuple[str, ...] = ()  # state a checkpoint must hold >= 0 (a second moment)
    couples_decay = True  # weight decay as L2, added to the gradient; False: decoupled, the rule applies it
    bias_corrected = False  # the device form needs Adam's bias corrections
    device_update: str | None = None  # None: no device form (the fast paths refuse it)

    def __init__(self, weight_decay: float = 0.0) -> None:
        self.weight_decay = check_number("weight_decay", weight_decay, positive=False)
        self.t = 0  # steps taken
        self.state: dict[str, Array] = {}  # "m.W1" -> buffer on the parameters' backend

    def step(self, params: dict[str, Array], grads: dict[str, Array], lr: float) -> None:
        """One update of every parameter from its gradient; ``grads`` may be overwritten."""
        self.upgrade_state(lr)
        self.t += 1
        for name, p in params.items():
            g = grads[name]
            if self.weight_decay and self.couples_decay and p.ndim >= 2:  # weight matrices, not bias vectors
                g += self.weight_decay * p  # d/dW of (wd / 2) * ||W||^2
            self._update(name, p, g, lr)

    @property
    def folds_lr(self) -> bool:
        """Whether the rule is p -= lr * g (plain SGD without weight decay), so a caller may hand
        :meth:`step_scaled` gradients already multiplied by lr: one pass per update, not two."""
        return False

    def step_scaled(self, params: dict[str, Array], scaled_grads: dict[str, Array], steps: int = 1) -> None:
        """``steps`` steps' worth of updates, from gradients already multiplied by the learning rate
        (and summed over the steps); only where ``folds_lr``. The per-sample path folds K rows'
        first-layer updates into one such call with ``steps=K``."""
        assert self.folds_lr, "step_scaled needs an optimiser whose rule is p -= lr * g"
        self.t += steps
        for name, g in scaled_grads.items():
            params[name] -= g

    def count(self, steps: int) -> None:
        """Count ``steps`` steps an engine took by this optimiser's rule outside :meth:`step` (a fused kernel,
        a captured graph, the per-sample kernel): the step count is the optimiser's alone to keep."""
        self.t += steps

    def upgrade_state(self, lr: float) -> None:
        """Bring state a checkpoint wrote under an older convention up to date, with ``lr``, the
        learning rate of the step about to be taken (every step does this first). None here."""

    def _buffer(self, key: str, like: Array) -> Array:
        if key not in self.state:
            self.state[key] = like * 0  # zeros on like's backend, same dtype and shape
        return self.state[key]

    def _update(self, name: str, p: Array, g: Array, lr: float) -> None:
        self.rule(p, g, [self._buffer(f"{s}.{name}", p) for s in self.state_names], self.coefficients(lr))

    def coefficients(self, lr: float) -> dict[str, float]:
        """The numbers :meth:`rule` multiplies and adds by in the step about to be taken (``t`` counts it),
        each computed in Python floats as the rule needs it."""
        return {"lr": lr}

    @staticmethod
    def rule(p: Array, g: Array, state: list[Array], c: dict[str, Any]) -> None:
        """The update of ``p`` from its gradient ``g`` (overwritten as scratch) and its ``state`` buffers (in
        ``state_names``' order), by the coefficients ``c``; element by element, so one call over many
        parameters (or many models' parameters) gives each element what a call over its own array would."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, float]:
        """The constructor's arguments, JSON-ready."""
        return {"weight_decay": self.weight_decay}

    def device_hyperparameters(self) -> tuple[float, float, float]:
        """(beta1, beta2, eps) as the device form reads them (0 where the rule has none)."""
        return 0.0, 0.0, 0.0

    def state_dict(self) -> dict[str, Any]:
        """Host copies of the step count and every state buffer (for checkpoints)."""
        return {"t": self.t, **{k: to_numpy(v).copy() for k, v in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any], params: dict[str, Array]) -> None:
        """Restore :meth:`state_dict`'s output onto the backend and dtype of ``params``."""
        buffers = {}
        for key, value in state.items():
            if key == "t":
                continue
            name = key.partition(".")[2]
            if name not in params or value.shape != params[name].shape:
                raise ValueError(f"optimizer state {key!r} does not fit the network's parameters")
            # a copy: the steps update the state in place, and must never write into the caller's arrays
            buffers[key] = array_module(params[name]).array(value, dtype=params[name].dtype, copy=True)
        self.t = check_int("optimizer step count", state["t"], 0)
        self.state = buffers


class SGD(Optimizer):
    """p -= lr * g: the original article's rule (W += lr E X^T with E = -dL/dZ)."""

    name = "sgd"
    device_update = "p -= rate * gk;"

    @staticmethod
    def rule(p: Array, g: Array, state: list[Array], c: dict[str, Any]) -> None:
        g *= c["lr"]
        p -= g

    @property
    def folds_lr(self) -> bool:
        return not self.weight_decay


class Momentum(Optimizer):
    """buf = mu * buf + g;  p -= lr * buf  (PyTorch's ``SGD(momentum=mu)``, dampening 0, not Nesterov).

    With a constant learning rate this is classical momentum (v = mu v - lr g,
    p += v, with v = -lr * buf); with a changing one it matches PyTorch step for
    step. Checkpoints written before this convention hold ``v`` (keys "v.W1", ...);
    :meth:`load_state_dict` keeps it and the first step after loading converts it
    with that step's learning rate (buf = -v / lr), which makes that step exactly
    the old rule's.
    """

    name = "momentum"
    state_names = ("buf",)
    device_update = """
        const T bk = T(beta1) * m + gk;  // buf = mu buf + g (beta1 is mu)
        m = bk;
        p -= rate * bk;"""

    def __init__(self, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(weight_decay)
        self.momentum = check_fraction("momentum", momentum)

    def hyperparameters(self) -> dict[str, float]:
        return {"momentum": self.momentum, **super().hyperparameters()}

    def device_hyperparameters(self) -> tuple[float, float, float]:
        return self.momentum, 0.0, 0.0

    def upgrade_state(self, lr: float) -> None:
        """The old convention's velocity, from a checkpoint ("v.W1": v = -lr * buf), as ``buf``."""
        for key in [k for k in self.state if k.startswith("v.")]:
            v = self.state.pop(key)
            v *= -1.0 / lr
            self.state[f"buf.{key[2:]}"] = v

    def coefficients(self, lr: float) -> dict[str, float]:
        return {"lr": lr, "momentum": self.momentum}

    @staticmethod
    def rule(p: Array, g: Array, state: list[Array], c: dict[str, Any]) -> None:
        buf, = state
        buf *= c["momentum"]
        buf += g  # buf = mu buf + g
        g[...] = buf
        g *= c["lr"]
        p -= g  # p -= lr buf, reusing g as scratch


class Adam(Optimizer):
    """Kingma & Ba (2015): bias-corrected first and second moments."""

    name = "adam"
    state_names = ("m", "v")
    non_negative = ("v",)
    bias_corrected = True
    # m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= (lr / (1 - b1^t)) m / (sqrt(v / (1 - b2^t)) + eps)
    device_update = """
        const T mk = T(beta1) * m + T(1.0 - beta1) * gk;
        const T vk = T(beta2) * v + T(1.0 - beta2) * (gk * gk);
        m = mk;
        v = vk;
        p -= mk / (sqrt(vk * v_hat_scale) + T(eps)) * step_size;"""

    def __init__(
        self,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(weight_decay)
        self.beta1 = check_fraction("beta1", beta1)
        self.beta2 = check_fraction("beta2", beta2)
        self.eps = check_number("eps", eps, positive=True)

    def hyperparameters(self) -> dict[str, float]:
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps, **super().hyperparameters()}

    def device_hyperparameters(self) -> tuple[float, float, float]:
        return self.beta1, self.beta2, self.eps

    def coefficients(self, lr: float) -> dict[str, float]:
        m_hat_scale = 1.0 / (1 - self.beta1**self.t)
        return {"beta1": self.beta1, "1-beta1": 1 - self.beta1, "beta2": self.beta2, "1-beta2": 1 - self.beta2,
                "v_hat_scale": 1.0 / (1 - self.beta2**self.t), "eps": self.eps, "step_size": lr * m_hat_scale,
                "shrink": 1 - lr * self.weight_decay}

    @staticmethod
    def rule(p: Array, g: Array, state: list[Array], c: dict[str, Any]) -> None:
        m, v = state
        m *= c["beta1"]
        m += c["1-beta1"] * g  # m = b1 m + (1 - b1) g
        g *= g
        v *= c["beta2"]
        v += c["1-beta2"] * g  # v = b2 v + (1 - b2) g^2
        # p -= lr * m_hat / (sqrt(v_hat) + eps), reusing g as scratch
        g[...] = v
        g *= c["v_hat_scale"]
        g **= 0.5
        g += c["eps"]
        array_module(g).divide(m, g, out=g)
        g *= c["step_size"]
        p -= g


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), PyTorch's ``torch.optim.AdamW``: each step
    first shrinks every weight matrix, ``W *= 1 - lr * weight_decay``, then takes Adam's step on the gradient
    alone. Biases are not decayed, as everywhere in gpunet (PyTorch decays what its parameter groups say)."""

    name = "adamw"
    couples_decay = False
    device_update = """
        if (is_weight) p *= T(1.0 - lr * weight_decay);  // decoupled: W *= 1 - lr wd, before Adam's step
        const T mk = T(beta1) * m + T(1.0 - beta1) * gk;
        const T vk = T(beta2) * v + T(1.0 - beta2) * (gk * gk);
        m = mk;
        v = vk;
        p -= mk / (sqrt(vk * v_hat_scale) + T(eps)) * step_size;"""

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(beta1, beta2, eps, weight_decay)

    def _update(self, name: str, p: Array, g: Array, lr: float) -> None:
        if self.weight_decay and p.ndim >= 2:  # weight matrices, not bias vectors
            p *= self.coefficients(lr)["shrink"]  # W *= 1 - lr wd
        super()._update(name, p, g, lr)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "momentum": Momentum, "adam": Adam, "adamw": AdamW}


def make_optimizer(optimizer: str | Optimizer, weight_decay: float = 0.0, **hyperparameters: float) -> Optimizer:
    """An optimiser from its name (and hyperparameters), or the given instance unchanged.

    An instance carries its own hyperparameters: passing ``weight_decay`` or any other
    hyperparameter with it is an error, not silently ignored.
    """
    if isinstance(optimizer, Optimizer):
        given = {"weight_decay": weight_decay, **hyperparameters} if weight_decay else hyperparameters
        if given:
            name, value = next(iter(given.items()))
            raise ValueError(
                f"{name}={value!r} cannot be combined with an optimizer instance ({type(optimizer).__name__}); "
                f"give it to the instance instead, e.g. gpunet.{type(optimizer).__name__}({name}={value!r})"
            )
        return optimizer
    check_choice("optimizer", optimizer, tuple(OPTIMIZERS))
    return OPTIMIZERS[optimizer](weight_decay=weight_decay, **hyperparameters)
