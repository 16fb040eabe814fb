"""scikit-learn estimators: gpunet's network behind ``fit``/``predict``, on the GPU when there is one.

``GPUNetClassifier`` (softmax output, cross-entropy) and ``GPUNetRegressor``
(identity output, squared loss) are named after the library, like cuML's
estimators, and end in Classifier/Regressor as scikit-learn's own do; they are
not called ``MLPClassifier`` so that an import never shadows scikit-learn's.
They are built on the public API only: :class:`gpunet.Network`,
:func:`gpunet.train` and :meth:`Network.forward`. Parameters are checked in
``fit`` (scikit-learn's rule: ``__init__`` only stores them).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state

from .backend import to_numpy
from .network import Network
from .optim import make_optimizer
from .training import train

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn: the method of BaseEstimator
    def _validate_data(estimator: Any, *args: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(*args, **kwargs)

__all__ = ["GPUNetClassifier", "GPUNetRegressor"]


class _GPUNetEstimator(BaseEstimator):
    """What the classifier and the regressor share: parameters, the network, the training call."""

    _output = "identity"
    _loss = "squared"

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        epochs: int = 200,
        batch_size: int = 200,
        lr: float = 0.001,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        init: str = "xavier",
        random_state: Any = None,
        backend: Any = "auto",
        dtype: str = "float32",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.init = init
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype

    # --- shared steps ----------------------------------------------------------------

    def _hidden(self) -> list[Any]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, bool):
            return [sizes]
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints like (100,); got {sizes!r}")
        return list(sizes)

    def _input_dtype(self) -> Any:
        return np.float64 if np.dtype(self.dtype).name == "float64" else np.float32

    def _start(self, n_in: int, n_out: int) -> None:
        """A new network and optimiser: the state ``fit`` starts from and ``partial_fit`` continues."""
        seed = self.random_state  # an int is the seed itself (a negative one is refused by Network) ...
        if not isinstance(seed, (int, np.integer)):  # ... None or a RandomState draws one, as scikit-learn does
            seed = check_random_state(seed).randint(0, 2**31 - 1)
        self._seed_ = int(seed)
        self.network_ = Network(
            [n_in, *self._hidden(), n_out], activation=self.activation, output=self._output, loss=self._loss,
            init=self.init, seed=self._seed_, backend=self.backend, dtype=self.dtype,
        )
        # A name makes a new optimiser; an Optimizer instance is copied, so the parameter is never trained.
        self._optimizer_ = make_optimizer(copy.deepcopy(self.optimizer), self.weight_decay)
        self.n_iter_ = 0
        self.loss_curve_: list[float] = []

    def _train(self, X: np.ndarray, y: np.ndarray, epochs: int) -> None:
        """``epochs`` more passes over (X, y) with the kept optimiser, so its state carries on."""
        batch_size = self.batch_size  # at most the whole data set, as scikit-learn's MLPs
        if isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool):
            batch_size = min(batch_size, X.shape[0])
        history = train(  # epoch e shuffles with [seed, e]: k calls of one epoch are one call of k epochs
            self.network_, X, y, epochs=self.n_iter_ + epochs, start_epoch=self.n_iter_ + 1,
            batch_size=batch_size, lr=self.lr, optimizer=self._optimizer_, seed=self._seed_,
        )
        self.n_iter_ += len(history)
        self.loss_curve_ += [r["train_loss"] for r in history]

    def _outputs(self, X: Any) -> np.ndarray:
        """The network's outputs for X as a NumPy array (the one host copy of a prediction)."""
        check_is_fitted(self, "network_")
        X = _validate_data(self, X, reset=False, dtype=self._input_dtype())
        return to_numpy(self.network_.forward(X))  # CPU-GPU sync point


class GPUNetClassifier(ClassifierMixin, _GPUNetEstimator):
    """A multilayer perceptron classifier: hidden layers of ``activation``, a softmax output and
    cross-entropy, trained by :func:`gpunet.train` on NumPy or, with ``backend="auto"``, on a GPU.

    >>> clf = GPUNetClassifier(hidden_layer_sizes=(32,), epochs=50, random_state=0, backend="numpy")

    Attributes after ``fit``: ``classes_`` (the sorted label values, of any type),
    ``n_features_in_``, ``network_`` (the :class:`gpunet.Network`), ``n_iter_``
    (epochs trained) and ``loss_curve_`` (mean training loss of each epoch).
    """

    _output = "softmax"
    _loss = "cross-entropy"

    def fit(self, X: Any, y: Any) -> GPUNetClassifier:
        """Train a new network for ``epochs`` epochs on X ``(N, n_features)`` and labels y ``(N,)``."""
        X, y = _validate_data(self, X, y, dtype=self._input_dtype())
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class: {self.classes_.tolist()}"
            )
        self._start(X.shape[1], len(self.classes_))
        self._train(X, codes.reshape(-1), self.epochs)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> GPUNetClassifier:
        """One epoch on (X, y), continuing the network and optimiser of earlier calls.

        The first call needs ``classes``: every label value that y may ever hold.
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
        if first:
            self._start(X.shape[1], len(self.classes_))
        self._train(X, codes, 1)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability of each class ``(N, n_classes)``, columns in the order of ``classes_``."""
        return self._outputs(X)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row, as values of ``classes_``."""
        best = self.predict_proba(X).argmax(axis=1)
        return self.classes_[best]


class GPUNetRegressor(RegressorMixin, _GPUNetEstimator):
    """A multilayer perceptron regressor: hidden layers of ``activation``, an identity output and
    squared loss; y may be ``(N,)`` or ``(N, n_targets)``.

    >>> reg = GPUNetRegressor(hidden_layer_sizes=(32,), epochs=50, random_state=0, backend="numpy")
    """

    def fit(self, X: Any, y: Any) -> GPUNetRegressor:
        """Train a new network for ``epochs`` epochs on X ``(N, n_features)`` and targets y."""
        X, Y = self._data(X, y, reset=True)
        self._start(X.shape[1], Y.shape[1])
        self._train(X, Y, self.epochs)
        return self

    def partial_fit(self, X: Any, y: Any) -> GPUNetRegressor:
        """One epoch on (X, y), continuing the network and optimiser of earlier calls."""
        first = not hasattr(self, "network_")
        X, Y = self._data(X, y, reset=first)
        if first:
            self._start(X.shape[1], Y.shape[1])
        elif Y.shape[1] != self.network_.sizes[-1]:
            raise ValueError(f"y must have {self.network_.sizes[-1]} targets per row, as before; got {Y.shape[1]}")
        self._train(X, Y, 1)
        return self

    def _data(self, X: Any, y: Any, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = _validate_data(self, X, y, dtype=self._input_dtype(), multi_output=True, y_numeric=True,
                              reset=reset)
        if reset:
            self._y_1d_ = y.ndim == 1
        return X, np.asarray(y, dtype=X.dtype).reshape(X.shape[0], -1)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets: ``(N,)`` when fitted on a 1-D y, else ``(N, n_targets)``."""
        Y = self._outputs(X).astype(np.float64)  # scikit-learn's regressors predict float64
        return Y.ravel() if self._y_1d_ else Y

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
