"""scikit-learn estimators: gpunet's network behind ``fit``/``predict``, under MLPClassifier's and MLPRegressor's names.

``GPUNetClassifier`` and ``GPUNetRegressor`` take scikit-learn's MLP parameters with their meanings and defaults
(``max_iter``, ``learning_rate_init``, ``alpha``, ``tol``, ``early_stopping``, ...), stop as scikit-learn's
stochastic solvers do, and have their fitted attributes (``coefs_``, ``loss_curve_``, ``n_iter_``, ...), so a
script written for ``MLPClassifier`` runs with the class name changed. They are named after the library, like
cuML's estimators, so that an import never shadows scikit-learn's own. gpunet's own settings (``backend``,
``dtype``, ``kernels``, ``init``) are extra parameters.

They are built on the public API only: :class:`gpunet.Network`, :func:`gpunet.train` (every setting passed
explicitly, so the library's defaults never decide) and :meth:`Network.forward`. Parameters are checked in
``fit`` (scikit-learn's rule: ``__init__`` only stores them).
"""

from __future__ import annotations

import copy
import inspect
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state

from .activations import HIDDEN_ACTIVATIONS
from .backend import cupy_unavailable_reason, get_backend, to_numpy
from .checks import check_choice, check_fraction, check_int, check_number
from .network import DTYPES, Network
from .optim import SGD, Adam, Momentum, Optimizer, make_optimizer
from .training import epoch_order, train

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn: the method of BaseEstimator
    def _validate_data(estimator: Any, *args: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(*args, **kwargs)

__all__ = ["GPUNetClassifier", "GPUNetRegressor"]

# scikit-learn's activation names -> gpunet's; gpunet's other hidden activations are taken by their own names.
SKLEARN_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
ACTIVATION_NAMES = (*SKLEARN_ACTIVATIONS, *(a for a in HIDDEN_ACTIVATIONS if a not in SKLEARN_ACTIVATIONS.values()),
                    "sigmoid")
SOLVERS = ("sgd", "adam")
# scikit-learn's out_activation_ -> gpunet's output activation
OUTPUTS = {"softmax": "softmax", "logistic": "sigmoid", "identity": "identity"}

# The 0.1.0 names that scikit-learn spells otherwise: still taken, with a DeprecationWarning, in their old meaning.
DEPRECATED = "deprecated"  # their default: any other value is the caller's
RENAMED = {"epochs": "max_iter", "lr": "learning_rate_init", "optimizer": "solver", "weight_decay": "alpha"}


@dataclass(frozen=True)
class _Settings:
    """The parameters checked and resolved once at the start of ``fit``/``partial_fit``."""

    hidden: list[int]
    activation: str  # gpunet's name
    max_iter: int
    lr: float
    alpha: float  # scikit-learn's L2 penalty: 0.5 alpha ||W||^2 / rows of the batch, on loss and gradient (0: none)
    make_optimizer: Callable[[], Optimizer]
    batch_size: Any
    dtype: str


def _hidden_sizes(sizes: Any) -> list[int]:
    if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, bool):
        sizes = [sizes]
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints like (100,); got {sizes!r}")
    sizes = list(sizes)
    for s in sizes:
        check_int(f"every entry of hidden_layer_sizes ({sizes!r})", s, 1)
    return [int(s) for s in sizes]


def _dtype_name(dtype: Any) -> str:
    """"float32", np.float32 and np.dtype("float32") all name float32; anything else is a ValueError listing them."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return name


def _flag(label: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{label} must be True or False; got {value!r}")
    return bool(value)


class _GPUNetEstimator(BaseEstimator):
    """What the classifier and the regressor share: the parameters' checks, the network, the epoch loop."""

    # The fitted records that depend on early_stopping (set by fit; the docstrings of the estimators say when None)
    best_loss_: float | None
    validation_scores_: list[float] | None
    best_validation_score_: float | None
    _best_params_: dict[str, np.ndarray] | None  # host copies of the best validation score's weights

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: Any = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        momentum: float = 0.9,
        backend: Any = "auto",
        dtype: Any = "float32",
        kernels: str = "auto",
        init: str = "xavier",
        dropout: Any = 0.0,
        epochs: Any = DEPRECATED,
        lr: Any = DEPRECATED,
        optimizer: Any = DEPRECATED,
        weight_decay: Any = DEPRECATED,
    ) -> None:
        # scikit-learn's rule: store the parameters as given; fit checks them
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.momentum = momentum
        self.backend = backend
        self.dtype = dtype
        self.kernels = kernels
        self.init = init
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay

    # --- parameters ------------------------------------------------------------------

    def _settings(self) -> _Settings:
        """Every parameter checked (a message naming the public class, the value and what was expected)."""
        name = type(self).__name__
        hidden = _hidden_sizes(self.hidden_layer_sizes)
        check_choice("activation", self.activation, ACTIVATION_NAMES)
        activation = SKLEARN_ACTIVATIONS.get(self.activation, self.activation)
        if activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} (linear hidden layers) is not available in gpunet's "
                             f"networks; choose one of {', '.join(a for a in ACTIVATION_NAMES if a != 'identity')}")
        given = {old: getattr(self, old) for old in RENAMED if not _is_deprecated_default(getattr(self, old))}
        for old, value in given.items():
            new = RENAMED[old]
            default = type(self)._defaults()[new]
            if not _same(getattr(self, new), default):
                raise ValueError(f"{name}: give {new}= only; {old}= is its deprecated 0.1.0 name "
                                 f"(got {old}={value!r} and {new}={getattr(self, new)!r})")
            warnings.warn(f"{name}({old}=...) is deprecated; use {new}= (scikit-learn's name"
                          + (", where alpha is scikit-learn's L2 penalty, divided by each batch's rows)"
                             if old == "weight_decay" else ")"), DeprecationWarning, stacklevel=4)
        max_iter = check_int("max_iter", given.get("epochs", self.max_iter), 1)
        lr = check_number("learning_rate_init", given.get("lr", self.learning_rate_init), positive=True)
        alpha = check_number("alpha", self.alpha, positive=False)
        if "optimizer" in given or "weight_decay" in given:  # 0.1.0: a constant weight decay in place of alpha
            decay = check_number("weight_decay", given.get("weight_decay", 0.0), positive=False)
            alpha = 0.0
        else:
            decay = 0.0
        if "optimizer" in given:  # 0.1.0's optimiser, by name or instance, in place of solver and its settings
            optimizer = given["optimizer"]
            make_optimizer(copy.deepcopy(optimizer), decay)  # checked now; a copy each fit, never the parameter
            make = lambda: make_optimizer(copy.deepcopy(optimizer), decay)
        else:
            make = self._solver(decay)
        batch_size = self.batch_size
        if not (isinstance(batch_size, str) and batch_size == "auto"):
            if isinstance(batch_size, str):
                raise ValueError(f"batch_size must be 'auto' or an integer >= 1; got {batch_size!r}")
            check_int("batch_size", batch_size, 1)
        for label in ("shuffle", "early_stopping"):
            _flag(label, getattr(self, label))
        verbose = self.verbose
        if not (isinstance(verbose, (bool, np.bool_)) or (isinstance(verbose, (int, np.integer)) and verbose >= 0)):
            raise ValueError(f"verbose must be True, False or an integer >= 0; got {verbose!r}")
        check_number("tol", self.tol, positive=False)
        check_int("n_iter_no_change", self.n_iter_no_change, 1)
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
            raise ValueError(f"validation_fraction must be a number in (0, 1); got {fraction!r}")
        if self.kernels == "graph" and alpha:
            raise ValueError(f"kernels='graph' trains a whole epoch at once and cannot apply alpha batch by batch "
                             f"as scikit-learn does; got alpha={alpha!r} (use alpha=0 or kernels='auto')")
        return _Settings(hidden, activation, max_iter, lr, alpha, make, batch_size, _dtype_name(self.dtype))

    def _solver(self, decay: float) -> Callable[[], Optimizer]:
        """The optimiser that ``solver`` and its hyperparameters name, as a factory (checked now), with a constant
        weight decay (0.1.0's weight_decay; alpha's decay is set batch by batch)."""
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not available: gpunet trains by mini-batch gradient steps; "
                             "use solver='adam' or solver='sgd'")
        check_choice("solver", self.solver, SOLVERS)
        if self.solver == "adam":
            beta1, beta2 = check_fraction("beta_1", self.beta_1), check_fraction("beta_2", self.beta_2)
            eps = check_number("epsilon", self.epsilon, positive=True)
            return lambda: Adam(beta1=beta1, beta2=beta2, eps=eps, weight_decay=decay)
        momentum = self.momentum  # scikit-learn allows [0, 1]; momentum 1 never forgets, so gpunet refuses it
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be a number in [0, 1); got {momentum!r}")
        if momentum == 0:
            return lambda: SGD(weight_decay=decay)
        return lambda: Momentum(momentum=float(momentum), weight_decay=decay)

    @classmethod
    def _defaults(cls) -> dict[str, Any]:
        return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}

    def _input_dtype(self) -> Any:
        return np.float64 if _dtype_name(self.dtype) == "float64" else np.float32

    # --- the network and the epochs ------------------------------------------------------

    def _start(self, s: _Settings, n_in: int, n_out: int, out_activation: str) -> None:
        """A new network and optimiser, and the bookkeeping scikit-learn starts a fit with."""
        seed = self.random_state  # an int is the seed itself (a negative one is refused by Network) ...
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):  # ... else drawn, as scikit-learn does
            seed = check_random_state(seed).randint(0, 2**31 - 1)
        self._seed_ = int(seed)
        self.network_ = Network(
            [n_in, *s.hidden, n_out], activation=s.activation, output=OUTPUTS[out_activation],
            loss="cross-entropy" if out_activation != "identity" else "squared",
            init=self.init, seed=self._seed_, backend=self.backend, dtype=s.dtype, kernels="auto",
            dropout=self.dropout,
        )
        self._optimizer_ = s.make_optimizer()
        self.out_activation_ = out_activation
        self.n_outputs_ = n_out
        self.n_layers_ = len(s.hidden) + 2
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_: list[float] = []
        self.loss_: float | None = None
        self._no_improvement_count_ = 0
        if self.early_stopping:
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = None, [], -np.inf
        else:
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = np.inf, None, None

    def _batch_rows(self, s: _Settings, n: int) -> int:
        if s.batch_size == "auto":
            return min(200, n)
        if s.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                          UserWarning, stacklevel=5)
        return min(int(s.batch_size), n)

    def _epochs(self, s: _Settings, X: np.ndarray, T: np.ndarray, epochs: int, incremental: bool,
                val: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Up to ``epochs`` epochs on (X, T) with the kept optimiser, stopping as scikit-learn's stochastic solvers.

        One call of :func:`gpunet.train` when ``shuffle`` (its epoch e takes the order ``epoch_order(seed, e)``);
        without, one call an epoch on the rows laid out so that that order visits them first to last (X permuted
        on the device; the targets, which train takes from the host, travel each epoch).
        """
        net, opt = self.network_, self._optimizer_
        backend, xp, n = net.backend, net.backend.xp, X.shape[0]
        rows = self._batch_rows(s, n)
        X_dev = backend.to_device(X, net.dtype)  # data goes to the device once
        val_dev = None if val is None else (backend.to_device(val[0], net.dtype), val[1])
        weights = [f"W{i}" for i in range(1, net.n_layers + 1)]
        alpha = s.alpha

        def squares() -> Any:  # sum of ||W||^2 over the weight matrices, a 0-d device array (no sync)
            return sum(xp.vdot(net.params[k].ravel(), net.params[k].ravel()) for k in weights)

        # scikit-learn's L2 term of a batch: loss += 0.5 alpha ||W||^2 / rows, gradient += alpha W / rows, with the
        # weights before that batch's step; an epoch's loss sums the batches' losses times their rows, over n.
        penalty = {"epoch": squares() if alpha else 0.0, "next": 0.0}
        if alpha:  # else the optimiser keeps the decay it was made with (0, or 0.1.0's weight_decay)
            opt.weight_decay = alpha / rows  # gpunet adds weight_decay * W to the gradient of the mean loss

        def on_batch(done: int, _loss: Any) -> None:
            # The next step's batch: the rest of this epoch, or the next epoch's first; the decay is its own.
            opt.weight_decay = alpha / (min(rows, n - done) if done < n else rows)
            if done < n:
                penalty["epoch"] = penalty["epoch"] + squares()
            else:
                penalty["next"] = squares()

        stop = False

        def callback(record: dict[str, Any]) -> bool:
            nonlocal stop
            loss = record["train_loss"] / self._loss_scale()
            if alpha:
                loss += 0.5 * alpha * float(penalty["epoch"]) / n  # CPU-GPU sync point, once an epoch
                penalty["epoch"] = penalty["next"]
            stop = self._end_epoch(loss, n, val_dev, s, incremental, done=self.n_iter_ + 1 - first_iter)
            return stop

        first_iter = self.n_iter_
        common: dict[str, Any] = {
            "batch_size": rows, "lr": s.lr, "lr_decay": 1.0, "optimizer": opt, "weight_decay": 0.0,
            "seed": self._seed_, "callback": callback, "on_batch": on_batch if alpha else None,
            "kernels": self.kernels, "every_step": True}
        start = self.n_iter_ + 1
        if self.shuffle:
            train(net, X_dev, T, epochs=self.n_iter_ + epochs, start_epoch=start, **common)
        else:
            for epoch in range(start, start + epochs):
                first_to_last = np.argsort(epoch_order(self._seed_, epoch, n))  # train visits row order[i] i-th
                train(net, X_dev[backend.to_device(first_to_last)], T[first_to_last], epochs=epoch,
                      start_epoch=epoch, **common)
                if stop:
                    break
        if self.early_stopping and not incremental and self._best_params_ is not None:
            net.set_params(self._best_params_)  # scikit-learn keeps the best validation score's weights
        self._best_params_ = None

    def _end_epoch(self, loss: float, n: int, val: Any, s: _Settings, incremental: bool, done: int) -> bool:
        """scikit-learn's end of an epoch (``_fit_stochastic``): the records, verbose lines, the no-improvement
        count; True to stop. A ConvergenceWarning when ``fit`` reaches max_iter without stopping."""
        self.n_iter_ += 1
        self.loss_ = loss
        self.t_ += n
        self.loss_curve_.append(loss)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
        if self.early_stopping and val is not None:
            scores, best_score = self.validation_scores_, self.best_validation_score_
            assert scores is not None and best_score is not None  # lists and -inf from the start with early_stopping
            score = self._score_on(*val)
            scores.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            self._no_improvement_count_ = (
                self._no_improvement_count_ + 1 if score < best_score + self.tol else 0)
            if score > best_score:
                self.best_validation_score_ = score
                self._best_params_ = self.network_.get_params()  # host copies, as scikit-learn's best coefs
        else:
            best_loss = self.best_loss_
            assert best_loss is not None  # inf from the start without early_stopping
            self._no_improvement_count_ = (
                self._no_improvement_count_ + 1 if loss > best_loss - self.tol else 0)
            self.best_loss_ = min(best_loss, loss)
        if self._no_improvement_count_ > self.n_iter_no_change:
            if self.verbose:
                what = "Validation score" if self.early_stopping else "Training loss"
                print(f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} "
                      "consecutive epochs. Stopping.")
            return True
        if incremental:
            return True
        if done == s.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({s.max_iter}) reached and the optimization "
                          "hasn't converged yet.", ConvergenceWarning, stacklevel=7)  # the caller of fit
        return False

    def _fit(self, X: np.ndarray, T: np.ndarray, out_activation: str, y_for_split: np.ndarray,
             score_y: np.ndarray) -> None:
        """A new network trained for up to ``max_iter`` epochs; with early stopping, on all but a validation split."""
        s = self._settings()
        self._start(s, X.shape[1], T.shape[1] if T.ndim == 2 else self._n_out(), out_activation)
        self._best_params_ = None
        val = None
        if self.early_stopping:
            stratify = y_for_split if _stratified(self) else None
            X, X_val, T, _, _, y_val = train_test_split(
                X, T, score_y, random_state=check_random_state(self._seed_), test_size=self.validation_fraction,
                stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                                 "your dataset.")
            val = (X_val, y_val)
        self._epochs(s, X, T, s.max_iter, incremental=False, val=val)

    def _partial(self, X: np.ndarray, T: np.ndarray, first: bool, out_activation: str) -> None:
        s = self._settings()
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        if first:
            self._start(s, X.shape[1], T.shape[1] if T.ndim == 2 else self._n_out(), out_activation)
        self._best_params_ = None
        self._epochs(s, X, T, 1, incremental=True)

    def _loss_scale(self) -> float:
        return 1.0

    def _outputs(self, X: Any) -> np.ndarray:
        """The network's outputs for X as a NumPy array (the one host copy of a prediction)."""
        check_is_fitted(self, "network_")
        X = _validate_data(self, X, reset=False, dtype=self._input_dtype())
        return to_numpy(self.network_.forward(X))  # CPU-GPU sync point

    # --- fitted attributes from the network ----------------------------------------------

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Host copies of the weight matrices, ``coefs_[i]`` of shape (units of layer i, units of layer i + 1)."""
        params = self.network_.get_params()
        return [params[f"W{i}"] for i in range(1, self.network_.n_layers + 1)]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Host copies of the bias vectors, ``intercepts_[i]`` of shape (units of layer i + 1,)."""
        params = self.network_.get_params()
        return [params[f"b{i}"] for i in range(1, self.network_.n_layers + 1)]

    # --- pickling: the state on the host -----------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """The network and optimiser state as NumPy arrays, wherever they trained: a pickle loads on any machine."""
        state = dict(super().__getstate__())  # a copy: BaseEstimator may hand over the live __dict__
        net = state.pop("network_", None)
        if net is not None:
            opt = state.pop("_optimizer_")
            shell = copy.copy(opt)
            shell.state = {}
            state["_network_host_"] = {"config": net.config(), "params": net.get_params(),
                                       "backend": net.backend.name, "optimizer": shell,
                                       "optimizer_state": opt.state_dict()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        host = state.pop("_network_host_", None)
        super().__setstate__(state)
        if host is None:
            return
        backend = host["backend"]
        if backend == "cupy" and cupy_unavailable_reason() is not None:
            warnings.warn(f"{type(self).__name__} was trained on cupy, which is unusable here "
                          f"({cupy_unavailable_reason()}); its network is loaded on numpy", UserWarning, stacklevel=2)
            backend = "numpy"
        config = dict(host["config"])
        net = Network(config.pop("sizes"), backend=get_backend(backend), kernels="auto", **config)
        net.set_params(host["params"])
        opt = host["optimizer"]
        opt.load_state_dict(host["optimizer_state"], net.params)
        self.network_, self._optimizer_ = net, opt


def _is_deprecated_default(value: Any) -> bool:
    return isinstance(value, str) and value == DEPRECATED


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) if type(a) is type(b) else False
    except (TypeError, ValueError):
        return a is b


def _stratified(estimator: Any) -> bool:
    """scikit-learn stratifies the early-stopping split for a classifier with one output unit (two classes)."""
    return isinstance(estimator, GPUNetClassifier) and estimator.n_outputs_ == 1


class GPUNetClassifier(ClassifierMixin, _GPUNetEstimator):
    """A multilayer perceptron classifier with MLPClassifier's parameters, trained by gpunet on NumPy or a GPU.

    Two classes give one logistic output unit, more a softmax output; the loss is cross-entropy.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        The number of units of each hidden layer, input side first.
    activation : {'relu', 'logistic', 'tanh', 'leaky_relu', 'silu', 'sigmoid'}, default='relu'
        The hidden layers' activation. scikit-learn's names, 'logistic' being gpunet's 'sigmoid'; gpunet's
        'leaky_relu' and 'silu' are extras. scikit-learn's 'identity' (linear hidden layers) is refused:
        gpunet's networks have no linear hidden layers.
    solver : {'adam', 'sgd'}, default='adam'
        The optimiser: Adam, or stochastic gradient descent with ``momentum`` (classical momentum, as
        scikit-learn's with ``nesterovs_momentum=False``). 'lbfgs' is refused: gpunet trains by
        mini-batch steps only.
    alpha : float, default=0.0001
        L2 penalty, as scikit-learn's: each batch adds ``0.5 * alpha * sum ||W||^2 / rows`` to its
        loss and ``alpha * W / rows`` to each weight matrix's gradient (biases are not penalised);
        ``loss_curve_`` includes the penalty.
    batch_size : int or 'auto', default='auto'
        Rows per step: 'auto' is ``min(200, n_samples)``; a larger int is clipped, with a warning.
    learning_rate_init : float, default=0.001
        The step size, constant throughout training.
    max_iter : int, default=200
        The most epochs ``fit`` trains; reaching it without converging warns (ConvergenceWarning).
    shuffle : bool, default=True
        Whether each epoch visits the rows in a new random order (from the seed and the epoch number).
    random_state : int, RandomState instance or None, default=None
        The seed of the initial weights, the row orders and the early-stopping split; None draws one.
    tol : float, default=1e-4
        Training stops when the loss (the validation score with ``early_stopping``) has not improved by
        at least ``tol`` for more than ``n_iter_no_change`` consecutive epochs.
    verbose : bool or int, default=False
        Print each epoch's loss (and validation score), as scikit-learn's "Iteration 1, loss = ...".
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop on its score (accuracy for the classifier,
        R^2 for the regressor) and keep the weights of the best epoch.
    validation_fraction : float, default=0.1
        The share of rows held out with ``early_stopping``.
    beta_1 : float, default=0.9
        Adam's decay of the first moment, in [0, 1).
    beta_2 : float, default=0.999
        Adam's decay of the second moment, in [0, 1).
    epsilon : float, default=1e-8
        Adam's epsilon, added to ``sqrt(v_hat)`` (scikit-learn adds it to ``sqrt(v)``: the same to
        within ``epsilon``).
    n_iter_no_change : int, default=10
        Epochs without improvement by ``tol`` before training stops.
    momentum : float, default=0.9
        The momentum of ``solver='sgd'``, in [0, 1); 0 is plain SGD.
    backend : {'auto', 'numpy', 'cupy'}, default='auto'
        gpunet's array backend: 'auto' takes the GPU when CuPy finds a usable device, else NumPy.
    dtype : {'float32', 'float64'}, default='float32'
        The network's floating-point type (inputs are converted to it).
    kernels : {'auto', 'plain', 'fused', 'graph'}, default='auto'
        gpunet's training path (see :func:`gpunet.train`); 'graph' needs ``alpha=0``.
    init : {'xavier', 'he', 'fan-in', 'article'}, default='xavier'
        gpunet's initialisation of the weights (biases start at zero).
    dropout : float or list of float, default=0.0
        gpunet's dropout in training (not in ``predict``): a rate drops each hidden unit with that probability,
        a list of ``len(hidden_layer_sizes) + 1`` rates gives the inputs' and then each hidden layer's
        (see :class:`gpunet.Network`); kept units are scaled by ``1 / (1 - rate)``.
    epochs : int, deprecated
        0.1.0's name of ``max_iter``, taken with a DeprecationWarning (``max_iter`` left at its default).
    lr : float, deprecated
        0.1.0's name of ``learning_rate_init``, likewise.
    optimizer : str or gpunet.Optimizer, deprecated
        0.1.0's optimiser ('sgd', 'momentum', 'adam', 'adamw' or an instance, copied at each fit), with
        a DeprecationWarning, in place of ``solver`` and its settings (``solver`` left at its default).
    weight_decay : float, deprecated
        0.1.0's constant L2 coefficient, added times W to the gradient of the mean loss, with a
        DeprecationWarning, in place of ``alpha`` (left at its default and not applied).

    Attributes
    ----------
    loss_ : float
        The last epoch's loss (mean per-row loss, plus the L2 penalty).
    best_loss_ : float or None
        The lowest epoch loss; None with ``early_stopping``.
    loss_curve_ : list of float
        Each epoch's loss.
    validation_scores_ : list of float or None
        Each epoch's score on the validation split with ``early_stopping``, else None.
    best_validation_score_ : float or None
        The best of ``validation_scores_``, else None.
    t_ : int
        Training rows seen (rows times epochs).
    coefs_ : list of ndarray
        Host copies of the weights: ``coefs_[i]`` has shape (units of layer i, units of layer i + 1).
    intercepts_ : list of ndarray
        Host copies of the biases: ``intercepts_[i]`` has shape (units of layer i + 1,).
    n_features_in_ : int
        Columns of X seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names of X, where X had string column names.
    n_iter_ : int
        Epochs trained (``partial_fit`` adds one a call; scikit-learn's reads 1 after each).
    n_layers_ : int
        Layers, input and output included.
    n_outputs_ : int
        Output units.
    out_activation_ : str
        The output activation: 'softmax', 'logistic' or 'identity'.
    network_ : gpunet.Network
        The trained network, on its backend.
    classes_ : ndarray
        The label values seen in ``fit``, sorted (any type).

    Examples
    --------
    >>> clf = GPUNetClassifier(hidden_layer_sizes=(32,), max_iter=50, random_state=0, backend="numpy")
    """

    def _n_out(self) -> int:
        return len(self.classes_)

    def _targets(self, codes: np.ndarray) -> tuple[np.ndarray, str]:
        """What the network trains on: class codes for a softmax output, a 0/1 column for one logistic unit."""
        if len(self.classes_) == 2:
            return codes.reshape(-1, 1).astype(np.float64), "logistic"
        return codes, "softmax"

    def fit(self, X: Any, y: Any) -> GPUNetClassifier:
        """Train a new network on X ``(N, n_features)`` and labels y ``(N,)`` for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels, of any values.

        Returns
        -------
        self
        """
        X, y = _validate_data(self, X, y, dtype=self._input_dtype())
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class: {self.classes_.tolist()}"
            )
        codes = codes.reshape(-1)
        T, out = self._targets(codes)
        self._fit(X, T, out, codes, y)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> GPUNetClassifier:
        """One epoch on (X, y), continuing the network and optimiser of earlier calls.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, optional
            Every label value y may ever hold; needed in the first call.

        Returns
        -------
        self
        """
        first = not hasattr(self, "network_")
        X, y = _validate_data(self, X, y, dtype=self._input_dtype(), reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be given to the first call to partial_fit (every label y may hold)")
            self.classes_ = np.unique(np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(f"classes must hold at least 2 classes; got {self.classes_.tolist()}")
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes must be the same in every call to partial_fit ({self.classes_.tolist()}); "
                             f"got {np.unique(np.asarray(classes)).tolist()}")
        codes = np.searchsorted(self.classes_, y)
        unknown = (codes >= len(self.classes_)) | (self.classes_[np.minimum(codes, len(self.classes_) - 1)] != y)
        if unknown.any():
            first_unknown = y[unknown][:1].tolist()[0]
            raise ValueError(f"y holds {first_unknown!r}, which is not among classes {self.classes_.tolist()}")
        T, out = self._targets(codes)
        self._partial(X, T, first, out)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability of each class ``(N, n_classes)``, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes), in the network's dtype
        """
        P = self._outputs(X)
        return np.hstack([1 - P, P]) if P.shape[1] == 1 else P  # one logistic unit: P(classes_[1])

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row, as values of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        best = self.predict_proba(X).argmax(axis=1)  # first: it raises NotFittedError before fit
        return self.classes_[best]

    def _score_on(self, X_dev: Any, y: np.ndarray) -> float:
        P = to_numpy(self.network_.forward(X_dev))  # CPU-GPU sync point
        best = (P[:, 0] > 0.5).astype(np.int64) if P.shape[1] == 1 else P.argmax(axis=1)
        return float(accuracy_score(y, self.classes_[best]))


class GPUNetRegressor(RegressorMixin, _GPUNetEstimator):
    """A multilayer perceptron regressor with MLPRegressor's parameters, trained by gpunet on NumPy or a GPU.

    An identity output and the squared loss; y may be ``(N,)`` or ``(N, n_targets)``. ``loss_curve_`` holds
    scikit-learn's squared error, ``0.5 * mean((y - prediction) ** 2)`` over rows and targets (plus the penalty).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        The number of units of each hidden layer, input side first.
    activation : {'relu', 'logistic', 'tanh', 'leaky_relu', 'silu', 'sigmoid'}, default='relu'
        The hidden layers' activation. scikit-learn's names, 'logistic' being gpunet's 'sigmoid'; gpunet's
        'leaky_relu' and 'silu' are extras. scikit-learn's 'identity' (linear hidden layers) is refused:
        gpunet's networks have no linear hidden layers.
    solver : {'adam', 'sgd'}, default='adam'
        The optimiser: Adam, or stochastic gradient descent with ``momentum`` (classical momentum, as
        scikit-learn's with ``nesterovs_momentum=False``). 'lbfgs' is refused: gpunet trains by
        mini-batch steps only.
    alpha : float, default=0.0001
        L2 penalty, as scikit-learn's: each batch adds ``0.5 * alpha * sum ||W||^2 / rows`` to its
        loss and ``alpha * W / rows`` to each weight matrix's gradient (biases are not penalised);
        ``loss_curve_`` includes the penalty.
    batch_size : int or 'auto', default='auto'
        Rows per step: 'auto' is ``min(200, n_samples)``; a larger int is clipped, with a warning.
    learning_rate_init : float, default=0.001
        The step size, constant throughout training.
    max_iter : int, default=200
        The most epochs ``fit`` trains; reaching it without converging warns (ConvergenceWarning).
    shuffle : bool, default=True
        Whether each epoch visits the rows in a new random order (from the seed and the epoch number).
    random_state : int, RandomState instance or None, default=None
        The seed of the initial weights, the row orders and the early-stopping split; None draws one.
    tol : float, default=1e-4
        Training stops when the loss (the validation score with ``early_stopping``) has not improved by
        at least ``tol`` for more than ``n_iter_no_change`` consecutive epochs.
    verbose : bool or int, default=False
        Print each epoch's loss (and validation score), as scikit-learn's "Iteration 1, loss = ...".
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop on its score (accuracy for the classifier,
        R^2 for the regressor) and keep the weights of the best epoch.
    validation_fraction : float, default=0.1
        The share of rows held out with ``early_stopping``.
    beta_1 : float, default=0.9
        Adam's decay of the first moment, in [0, 1).
    beta_2 : float, default=0.999
        Adam's decay of the second moment, in [0, 1).
    epsilon : float, default=1e-8
        Adam's epsilon, added to ``sqrt(v_hat)`` (scikit-learn adds it to ``sqrt(v)``: the same to
        within ``epsilon``).
    n_iter_no_change : int, default=10
        Epochs without improvement by ``tol`` before training stops.
    momentum : float, default=0.9
        The momentum of ``solver='sgd'``, in [0, 1); 0 is plain SGD.
    backend : {'auto', 'numpy', 'cupy'}, default='auto'
        gpunet's array backend: 'auto' takes the GPU when CuPy finds a usable device, else NumPy.
    dtype : {'float32', 'float64'}, default='float32'
        The network's floating-point type (inputs are converted to it).
    kernels : {'auto', 'plain', 'fused', 'graph'}, default='auto'
        gpunet's training path (see :func:`gpunet.train`); 'graph' needs ``alpha=0``.
    init : {'xavier', 'he', 'fan-in', 'article'}, default='xavier'
        gpunet's initialisation of the weights (biases start at zero).
    dropout : float or list of float, default=0.0
        gpunet's dropout in training (not in ``predict``): a rate drops each hidden unit with that probability,
        a list of ``len(hidden_layer_sizes) + 1`` rates gives the inputs' and then each hidden layer's
        (see :class:`gpunet.Network`); kept units are scaled by ``1 / (1 - rate)``.
    epochs : int, deprecated
        0.1.0's name of ``max_iter``, taken with a DeprecationWarning (``max_iter`` left at its default).
    lr : float, deprecated
        0.1.0's name of ``learning_rate_init``, likewise.
    optimizer : str or gpunet.Optimizer, deprecated
        0.1.0's optimiser ('sgd', 'momentum', 'adam', 'adamw' or an instance, copied at each fit), with
        a DeprecationWarning, in place of ``solver`` and its settings (``solver`` left at its default).
    weight_decay : float, deprecated
        0.1.0's constant L2 coefficient, added times W to the gradient of the mean loss, with a
        DeprecationWarning, in place of ``alpha`` (left at its default and not applied).

    Attributes
    ----------
    loss_ : float
        The last epoch's loss (mean per-row loss, plus the L2 penalty).
    best_loss_ : float or None
        The lowest epoch loss; None with ``early_stopping``.
    loss_curve_ : list of float
        Each epoch's loss.
    validation_scores_ : list of float or None
        Each epoch's score on the validation split with ``early_stopping``, else None.
    best_validation_score_ : float or None
        The best of ``validation_scores_``, else None.
    t_ : int
        Training rows seen (rows times epochs).
    coefs_ : list of ndarray
        Host copies of the weights: ``coefs_[i]`` has shape (units of layer i, units of layer i + 1).
    intercepts_ : list of ndarray
        Host copies of the biases: ``intercepts_[i]`` has shape (units of layer i + 1,).
    n_features_in_ : int
        Columns of X seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names of X, where X had string column names.
    n_iter_ : int
        Epochs trained (``partial_fit`` adds one a call; scikit-learn's reads 1 after each).
    n_layers_ : int
        Layers, input and output included.
    n_outputs_ : int
        Output units.
    out_activation_ : str
        The output activation: 'softmax', 'logistic' or 'identity'.
    network_ : gpunet.Network
        The trained network, on its backend.

    Examples
    --------
    >>> reg = GPUNetRegressor(hidden_layer_sizes=(32,), max_iter=50, random_state=0, backend="numpy")
    """

    def _n_out(self) -> int:  # pragma: no cover - the regressor always trains on a target matrix
        raise AssertionError("a regressor's targets are a matrix")

    def _loss_scale(self) -> float:
        return float(self.n_outputs_)  # gpunet's squared loss sums over targets; scikit-learn's takes their mean

    def fit(self, X: Any, y: Any) -> GPUNetRegressor:
        """Train a new network on X ``(N, n_features)`` and targets y for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        self
        """
        X, Y = self._data(X, y, reset=True)
        self._fit(X, Y, "identity", Y, Y)
        return self

    def partial_fit(self, X: Any, y: Any) -> GPUNetRegressor:
        """One epoch on (X, y), continuing the network and optimiser of earlier calls.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        self
        """
        first = not hasattr(self, "network_")
        X, Y = self._data(X, y, reset=first)
        if not first and Y.shape[1] != self.network_.sizes[-1]:
            raise ValueError(f"y must have {self.network_.sizes[-1]} targets per row, as before; got {Y.shape[1]}")
        self._partial(X, Y, first, "identity")
        return self

    def _data(self, X: Any, y: Any, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = _validate_data(self, X, y, dtype=self._input_dtype(), multi_output=True, y_numeric=True,
                              reset=reset)
        if reset:
            self._y_1d_ = y.ndim == 1
        return X, np.asarray(y, dtype=X.dtype).reshape(X.shape[0], -1)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets: ``(N,)`` when fitted on a 1-D y, else ``(N, n_targets)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of float64
        """
        Y = self._outputs(X).astype(np.float64)  # scikit-learn's regressors predict float64
        return Y.ravel() if self._y_1d_ else Y

    def _score_on(self, X_dev: Any, Y: np.ndarray) -> float:
        P = to_numpy(self.network_.forward(X_dev)).astype(np.float64)  # CPU-GPU sync point
        return float(r2_score(Y, P))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _own_init(cls: type) -> None:
    """Give ``cls`` the shared ``__init__`` under its own name, so that a wrong keyword's TypeError names the public
    class ("GPUNetRegressor.__init__() got an unexpected keyword argument ..."), not the private base."""
    shared = _GPUNetEstimator.__init__
    init = types.FunctionType(shared.__code__, shared.__globals__, "__init__", shared.__defaults__, shared.__closure__)
    init.__kwdefaults__, init.__annotations__ = shared.__kwdefaults__, shared.__annotations__
    init.__qualname__, init.__module__ = f"{cls.__name__}.__init__", cls.__module__
    setattr(cls, "__init__", init)  # noqa: B010  (a type checker refuses `cls.__init__ = ...` on a class object)


for _cls in (GPUNetClassifier, GPUNetRegressor):
    _own_init(_cls)
