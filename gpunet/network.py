"""The fully connected network: forward pass, backpropagation and one training step, in plain ``xp`` code.

This is the reference: every engine (gpunet/engines/) is tested against it, and it runs
the same on NumPy and CuPy.

Shapes are batch-first: ``X`` is ``(N, n_in)``, ``W1`` is ``(n_in, n_hidden)``
(the transpose of the article's ``W``), a layer computes ``Z = A @ W + b``.
With sigmoid layers, squared loss, SGD and N = 1 a step is exactly the article's
update: ``delta2 = -G``, ``delta1 = -E``, ``W2 -= lr * A1.T @ delta2`` is
``V += lr G Q^T`` transposed, and so on.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from . import defaults
from . import dropout as drop
from .backend import Backend, get_backend, to_numpy
from .checks import check_choice, check_finite, check_int, check_kernels, check_labels, check_matrix, check_number
from .activations import (
    ACTIVATIONS, FUSED, HIDDEN_ACTIVATIONS, LOSS_NAMES, LOSSES, OUTPUT_ACTIVATIONS, softmax, softplus,
)
from .initializers import INITS, init_name
from .optim import SGD, Optimizer
from .params import build_params, pack

Array = Any
DTYPES = ("float32", "float64")


class Network:
    """A multilayer perceptron with one activation for the hidden layers and one for the output.

    The defaults (gpunet/defaults.py, the command line's too) are a network that learns
    as it is: ReLU hidden layers, a softmax output on cross-entropy, He initialisation.

    >>> net = Network([64, 100, 10], seed=0, backend="numpy")

    The original article's network (sigmoid layers, squared loss, its initialisation) is
    one word away: ``Network.article([784, 100, 10])``.

    ``dropout`` drops units of the layer inputs in training steps (inverted dropout: a kept unit is scaled by
    ``1 / (1 - rate)``, so evaluation, which drops nothing, sees the same expected inputs). A number is the rate
    of every hidden layer's output, as Keras's ``Dropout`` after each hidden ``Dense``; a list of ``n_layers``
    rates gives the inputs' rate and then each hidden layer's, as PyTorch's ``nn.Dropout`` before each
    ``Linear``: ``Network([784, 100, 10], dropout=[0.2, 0.5])``. The masks come from gpunet/dropout.py's
    counter-based generator, keyed by the seed, the optimiser's step count, the row's place in its batch and
    the unit, so every backend and engine draws the same masks and a resumed run the ones it would have drawn.
    Only training steps drop units: ``forward``, ``predict``, ``loss`` and ``gradients`` never do.

    ``kernels`` is deprecated here: the training path is a setting of :func:`gpunet.train`
    (``train(..., kernels=...)``). A value other than "auto" warns, and ``train`` still honours it
    when its own ``kernels`` is None.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = defaults.ACTIVATION,
        output: str = defaults.OUTPUT,
        loss: str = defaults.LOSS,
        init: str = defaults.INIT,
        seed: int = defaults.SEED,
        backend: str | Backend | None = None,
        dtype: str = defaults.DTYPE,
        kernels: str = "auto",
        dropout: Any = None,
    ) -> None:
        self.sizes = _check_sizes(sizes)
        check_choice("activation", activation, HIDDEN_ACTIVATIONS)
        check_choice("output", output, OUTPUT_ACTIVATIONS)
        check_choice("loss", loss, LOSS_NAMES)
        init = init_name(init)  # "seed" is the old name of "article"
        check_choice("init", init, tuple(INITS))
        check_choice("dtype", _dtype_name(dtype), DTYPES)
        if loss == "cross-entropy" and (output, loss) not in FUSED:
            valid = " or ".join(repr(o) for o, _ in FUSED)
            raise ValueError(f"loss 'cross-entropy' needs output {valid}; got output {output!r}")
        self.activation, self.output, self.loss_name, self.init = activation, output, loss, init
        self.seed = check_int("seed", seed, 0)
        self.backend = get_backend(backend)
        self.dtype = np.dtype(_dtype_name(dtype))
        self.kernels = check_kernels(kernels, self.backend.name)
        # dropout[l]: the rate of layer l + 1's input (0: the network's inputs); 0.0 everywhere means none
        self.dropout: tuple[float, ...] = drop.rates(dropout, len(self.sizes) - 1)
        if kernels != "auto":
            warnings.warn("Network(kernels=...) is deprecated; pass kernels= to gpunet.train instead",
                          DeprecationWarning, stacklevel=2)
        # Checked against free memory first: a network too big fails with DeviceMemoryError, not a traceback.
        # net.params[k] is a view into one flat buffer (gpunet/params.py), the same array for the network's life.
        self.packed = build_params(self.sizes, init, self.seed, self.backend, self.dtype)
        self.params: dict[str, Array] = dict(self.packed.views)
        self._sgd = SGD()
        self._buffers: dict[Any, Array] = {}  # train_step's activations and gradients, reused step to step

    @classmethod
    def article(
        cls,
        sizes: Sequence[int],
        activation: str = defaults.ARTICLE["activation"],
        output: str = defaults.ARTICLE["output"],
        loss: str = defaults.ARTICLE["loss"],
        init: str = defaults.ARTICLE["init"],
        **overrides: Any,
    ) -> Network:
        """The original article's network: sigmoid hidden and output layers, squared loss (on 0.01/0.99
        targets) and the article's initialisation (``defaults.ARTICLE``); any setting may still be overridden.

        >>> net = Network.article([784, 100, 10], seed=0, backend="numpy")
        """
        return cls(sizes, activation, output, loss, init, **overrides)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def config(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-ready (the backend left out: it belongs to the machine)."""
        return {
            "sizes": list(self.sizes), "activation": self.activation, "output": self.output,
            "loss": self.loss_name, "init": self.init, "seed": self.seed, "dtype": self.dtype.name,
            # only when on: a network without dropout (and its files) reads as before dropout existed
            **({"dropout": list(self.dropout)} if self.has_dropout else {}),
        }

    @property
    def has_dropout(self) -> bool:
        """Whether a training step drops any unit (a rate too small to drop one, below 2**-33, counts as 0)."""
        return any(drop.keep_threshold(r) < drop.WORD for r in self.dropout)

    def dropout_masks(self, step: int, rows: int, per_sample: bool = False) -> list[Array | None]:
        """The masks of one training step on ``rows`` rows, one per layer input (inputs first), None where nothing
        is dropped: ``(rows, n_{l})`` arrays of 0 and ``1 / (1 - rate)`` in the network's dtype, that the input
        is multiplied by (gpunet/dropout.py). ``step`` is the optimiser's step count before the step and row
        ``r``'s key is its place in the batch; with ``per_sample``, row ``r`` is a step of its own, ``step + r``,
        the only row of its batch (per-sample SGD: the same masks as ``rows`` steps on one row each)."""
        xp = self.backend.xp
        masks: list[Array | None] = []
        r = xp.arange(rows, dtype=xp.uint32)
        steps, row = (r + xp.uint32(step % drop.WORD), 0) if per_sample else (step, r)
        for layer, rate in enumerate(self.dropout):
            if drop.keep_threshold(rate) == drop.WORD:
                masks.append(None)
                continue
            masks.append(drop.mask(xp, self.seed, layer, steps, row, self.sizes[layer], rate, self.dtype))
        return masks

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the flat buffer: pickle copies each view apart from it, so unpickling packs again."""
        state = self.__dict__.copy()
        del state["packed"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "dropout" not in state:  # pickled before dropout existed
            self.dropout = (0.0,) * self.n_layers
        self.packed = pack(self.params, self.backend.xp)
        self.params = dict(self.packed.views)

    def __repr__(self) -> str:
        return (
            f"Network({self.sizes}, activation={self.activation!r}, output={self.output!r}, "
            f"loss={self.loss_name!r}, backend={self.backend.name!r}, dtype={self.dtype.name!r}"
            + (f", dropout={list(self.dropout)!r})" if self.has_dropout else ")")
        )

    # --- the algorithm -----------------------------------------------------------------

    def _forward(self, X: Array, buffers: dict[Any, Array] | None = None) -> tuple[list[Array], Array, list[Array]]:
        """:meth:`_forward_dropped` without dropout: ``(As, ZL, Zs)``."""
        As, _, Z, Zs = self._forward_dropped(X, buffers)
        return As, Z, Zs

    def _forward_dropped(
        self, X: Array, buffers: dict[Any, Array] | None = None, masks: list[Array | None] | None = None
    ) -> tuple[list[Array], list[Array], Array, list[Array]]:
        """Activations of every layer, input first: [X, A1, ..., AL]; the output layer's pre-activation ZL
        (its logits, from which cross-entropy is computed); and each layer's pre-activation [None, Z1, ...]
        where its activation's derivative needs it (``from_output`` False), else None. Returned as
        ``(As, Ins, ZL, Zs)``, ``Ins[i - 1]`` being what layer ``i`` multiplies: ``As[i - 1]`` times
        ``masks[i - 1]`` where a mask is given (dropout), else ``As[i - 1]`` itself.

        With ``buffers`` (train_step's), each layer's product is written into a
        kept array and a hidden layer is activated in place, so a step allocates
        no large arrays; the output layer writes Y beside its Z, which it keeps.
        """
        xp, As, Ins, Zs, L = self.backend.xp, [X], [], [None], self.n_layers
        for i in range(1, L + 1):
            W, mask = self.params[f"W{i}"], None if masks is None else masks[i - 1]
            # inverted dropout: the layer's input times its mask (0, or 1 / (1 - rate) where the unit is kept)
            Ins.append(As[-1] if mask is None else xp.multiply(
                As[-1], mask, out=_buffer(buffers, f"In{i - 1}", As[-1].shape, W.dtype, xp)))
            Z = xp.matmul(Ins[-1], W, out=_buffer(buffers, f"A{i}", (X.shape[0], W.shape[1]), W.dtype, xp))
            Z += self.params[f"b{i}"]  # Z = A @ W + b: (N, n_{i-1}) @ (n_{i-1}, n_i) + (n_i,)
            f = ACTIVATIONS[self.activation if i < L else self.output]
            Zs.append(None if f.from_output else Z)
            if i < L:
                As.append(f.forward(Z, out=Z if f.from_output else None))  # in place where Z is spent
            else:
                As.append(f.forward(Z, out=_buffer(buffers, "Y", Z.shape, W.dtype, xp)))
        return As, Ins, Z, Zs

    def per_sample_loss(self, Z: Array, Y: Array, T: Array) -> Array:
        """Loss of each row ``(N,)`` on the backend, from the output layer's pre-activation ``Z``,
        its output ``Y = f(Z)`` and the targets ``T``. Cross-entropy is computed from ``Z``
        (log-sum-exp for softmax, softplus for sigmoid): exact even where ``Y`` rounds to 0 or 1."""
        fused = FUSED.get((self.output, self.loss_name))
        return fused.per_sample(Z, T) if fused else LOSSES[self.loss_name].per_sample(Y, T)

    def _backward(
        self, As: list[Array], Zs: list[Array], T: Array, buffers: dict[Any, Array] | None = None, scale: float = 1.0,
        masks: list[Array | None] | None = None, Ins: list[Array] | None = None,
    ) -> dict[str, Array]:
        """Gradients of the mean per-sample loss for every parameter, times ``scale`` (into ``buffers`` when given);
        with dropout, ``masks`` and ``Ins`` as :meth:`_forward_dropped` used and returned them."""
        xp, (Y, n), L = self.backend.xp, (As[-1], As[-1].shape[0]), self.n_layers
        fused = FUSED.get((self.output, self.loss_name))
        if fused:  # dL/dZ directly, e.g. softmax + cross-entropy: Y - T
            delta = fused.delta(Y, T) * (scale / n)
        else:  # chain rule through the output activation: dL/dY * f'(Y) (f'(Z) where it needs Z)
            out = ACTIVATIONS[self.output]
            delta = out.backward(Y if out.from_output else Zs[L], LOSSES[self.loss_name].grad(Y, T) * (scale / n))
        hidden = ACTIVATIONS[self.activation]
        grads: dict[str, Array] = {}
        for i in range(L, 0, -1):
            W = self.params[f"W{i}"]
            # dW_i = A_{i-1}^T delta_i: (n_{i-1}, N) @ (N, n_i) -> (n_{i-1}, n_i), A_{i-1} as dropped (Ins)
            A_in = As[i - 1] if Ins is None else Ins[i - 1]
            grads[f"W{i}"] = xp.matmul(A_in.T, delta, out=_buffer(buffers, f"dW{i}", W.shape, W.dtype, xp))
            grads[f"b{i}"] = delta.sum(axis=0, out=_buffer(buffers, f"db{i}", (W.shape[1],), W.dtype, xp))
            if i > 1:  # delta_{i-1} = (delta_i @ W_i^T) * f'(A_{i-1})
                dA = xp.matmul(delta, W.T, out=_buffer(buffers, f"dA{i - 1}", As[i - 1].shape, W.dtype, xp))
                if masks is not None and masks[i - 1] is not None:  # d(A * mask)/dA = mask
                    dA *= masks[i - 1]
                delta = hidden.backward(As[i - 1] if hidden.from_output else Zs[i - 1], dA)
        return {k: grads[k] for k in self.params}

    # --- public API --------------------------------------------------------------------

    def forward(self, X: Array) -> Array:
        """Outputs ``(N, n_out)`` on the network's backend; ``X`` must be finite (ValueError naming the entry)."""
        return self._forward(self.checked_input(X, finite=True))[0][-1]

    def loss(self, X: Array, T: Array) -> float:
        """Mean over rows of the per-sample loss, as a Python float."""
        X = self.checked_input(X, finite=True)
        _, losses = self.forward_and_loss_unchecked(X, self.checked_targets(T, X))
        return float(losses.mean())  # CPU-GPU sync point

    def forward_and_loss_unchecked(self, X: Array, T: Array) -> tuple[Array, Array]:
        """Outputs ``(N, n_out)`` and per-sample losses ``(N,)`` on the backend, **unchecked**:
        ``X`` and ``T`` must already be device arrays of the network's dtype and width with
        as many rows each (gpunet.train checks its data once, then evaluates with this)."""
        As, Z, _ = self._forward(X)
        return As[-1], self.per_sample_loss(Z, As[-1], T)

    def gradients(self, X: Array, T: Array) -> dict[str, Array]:
        """d(mean loss)/d(parameter) for every parameter, on the network's backend."""
        X = self.checked_input(X)
        As, _, Zs = self._forward(X)
        return self._backward(As, Zs, self.checked_targets(T, X))

    def train_step(self, X: Array, T: Array, lr: float = 0.1, optimizer: Optimizer | None = None) -> Array:
        """One optimiser step on the mean per-sample loss of the rows of X, by the plain array operations.

        ``optimizer`` defaults to plain SGD. Parameters are updated in place. With ``dropout``, the step's
        masks are keyed by ``optimizer``'s step count before it (gpunet/dropout.py).
        Returns the batch's summed per-sample loss *before* the step as a 0-d
        array on the backend, so callers can accumulate it without a sync.
        """
        check_number("lr", lr, positive=True)
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a gpunet Optimizer or None; got {type(optimizer).__name__}")
        X = self.checked_input(X)
        return self.train_step_unchecked(X, self.checked_targets(T, X), lr, optimizer or self._sgd)

    def train_step_unchecked(self, X: Array, T: Array, lr: float, optimizer: Optimizer) -> Array:
        """:meth:`train_step` **without any checks**, for callers that checked once (gpunet.train's
        plain engine checks its data once, not every step): ``X`` and ``T`` must be device arrays of the
        network's dtype and width with as many rows each, ``lr`` a number > 0 and ``optimizer``
        an :class:`Optimizer`. Wrong input gives wrong numbers or an obscure error, not a message."""
        # dropout's masks, keyed by the optimiser's step count before this step (checkpointed: a resumed run
        # draws the same masks) and each row's place in the batch
        masks = self.dropout_masks(optimizer.t, X.shape[0]) if self.has_dropout else None
        As, Ins, Z, Zs = self._forward_dropped(X, self._buffers, masks)
        loss = self.per_sample_loss(Z, As[-1], T).sum()
        if optimizer.folds_lr:  # lr folded into the deltas
            optimizer.step_scaled(self.params, self._backward(As, Zs, T, self._buffers, lr, masks, Ins))
        else:
            optimizer.step(self.params, self._backward(As, Zs, T, self._buffers, 1.0, masks, Ins), lr)
        return loss

    def predict(self, X: Array) -> np.ndarray:
        """Predicted class of each row (argmax of the outputs) as a NumPy int array.

        ``X`` is checked to be finite first: a NaN would otherwise come out as class 0.
        """
        return self.backend.to_host(self.forward(X).argmax(axis=1)).astype(np.int64)

    def predict_proba(self, X: Array) -> np.ndarray:
        """Class probabilities of each row, ``(N, n_out)`` NumPy float64 rows that sum to 1.

        A softmax output gives its outputs. A sigmoid output scores each class on its
        own, so its outputs are normalised: ``sigmoid(z_k) / sum_j sigmoid(z_j)``, computed
        as a softmax of ``log sigmoid(z)`` so a row whose outputs all round to 0 still sums
        to 1. Other outputs are not probabilities: ValueError.
        """
        if self.output not in ("softmax", "sigmoid"):
            raise ValueError(f"predict_proba needs a softmax or sigmoid output; this network's is {self.output!r}")
        As, Z, _ = self._forward(self.checked_input(X, finite=True))
        P = As[-1] if self.output == "softmax" else softmax(-softplus(-Z))  # log sigmoid(z) = -softplus(-z)
        P = self.backend.to_host(P).astype(np.float64)
        return P / P.sum(axis=1, keepdims=True)  # rows sum to 1 in float64, also from a float32 network

    def get_params(self) -> dict[str, np.ndarray]:
        """NumPy copies of the parameters: {"W1": (n_in, n_1), "b1": (n_1,), ...}."""
        return {k: to_numpy(v).copy() for k, v in self.params.items()}

    def set_params(self, params: dict[str, Any]) -> None:
        """Copy ``params`` into the network in place, after checking keys, shapes and finiteness."""
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict of arrays; got {type(params).__name__}")
        if set(params) != set(self.params):
            raise ValueError(f"params must have keys {sorted(self.params)}; got {sorted(params)}")
        host = {}
        for k, current in self.params.items():
            a = to_numpy(params[k])
            if a.shape != current.shape:
                raise ValueError(f"params[{k!r}] must have shape {current.shape}; got {a.shape}")
            if a.dtype.kind not in "iuf":
                raise TypeError(f"params[{k!r}] must be numeric; got dtype {a.dtype}")
            if not np.isfinite(a).all():
                raise ValueError(f"params[{k!r}] contains NaN or infinity")
            host[k] = a
        for k, a in host.items():  # only after every check passed: all or nothing
            self.params[k][...] = self.backend.to_device(a, self.dtype)

    def targets_from_labels(self, labels: Any) -> np.ndarray:
        """Host target rows ``(N, n_out)`` for integer class labels ``(N,)``, at :func:`target_levels`:
        0.01/0.99 for a sigmoid output on squared or absolute loss, one-hot otherwise."""
        labels = check_labels(to_numpy(labels), self.sizes[-1])
        low, high = target_levels(self.output, self.loss_name)
        T = np.full((labels.shape[0], self.sizes[-1]), low, dtype=self.dtype)
        T[np.arange(labels.shape[0]), labels] = high
        return T

    def targets(self, labels: Any) -> np.ndarray:
        """Deprecated name of :meth:`targets_from_labels`."""
        warnings.warn("Network.targets is deprecated; use Network.targets_from_labels", DeprecationWarning,
                      stacklevel=2)
        return self.targets_from_labels(labels)

    # --- input checks ------------------------------------------------------------------

    def checked_input(self, X: Array, label: str = "X", finite: bool = False) -> Array:
        """``X`` checked (2-D, numeric, n_in columns) and moved to the backend in the network's dtype;
        with ``finite``, also checked to hold no NaN or infinity in that dtype (one CPU-GPU sync)."""
        original = check_matrix(label, X, self.sizes[0])
        with np.errstate(over="ignore"):  # a value beyond the dtype's range is named by check_finite, not warned
            X = self.backend.to_device(original, self.dtype)
        if finite:
            check_finite(label, X, original)
        return X

    def checked_targets(self, T: Array, X: Array) -> Array:
        """Target rows ``T`` checked (n_out columns, one row per row of ``X``) and moved to the backend."""
        T = self.backend.to_device(check_matrix("T", T, self.sizes[-1]), self.dtype)
        if T.shape[0] != X.shape[0]:
            raise ValueError(f"T must have one row per row of X ({X.shape[0]}); got {T.shape[0]}")
        return T


def target_levels(output: str, loss: str) -> tuple[float, float]:
    """(wrong class, right class) target values: 0.01 / 0.99 (the article's) for a sigmoid output
    trained on squared or absolute loss, which a sigmoid can never reach exactly; 0 / 1 (one-hot) otherwise."""
    return (0.01, 0.99) if output == "sigmoid" and loss != "cross-entropy" else (0.0, 1.0)


def _buffer(buffers: dict[Any, Array] | None, key: str, shape: tuple[int, ...], dtype: Any, xp: Any) -> Array | None:
    """A kept array of this shape for ``key`` (None without buffers: the operation allocates)."""
    if buffers is None:
        return None
    a = buffers.get(key)
    if a is None or a.shape != shape:  # first use, or a batch of another size (an epoch's last)
        a = buffers[key] = xp.empty(shape, dtype=dtype)
    return a


def _check_sizes(sizes: Any) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a list of layer sizes like [784, 100, 10]; got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size; got {sizes!r}")
    return [check_int(f"layer size in {sizes!r}", s, 1) for s in sizes]


def _dtype_name(dtype: Any) -> Any:
    """"float32", np.float32 and np.dtype("float32") all name float32; anything else is returned as is."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return dtype
