"""gpunet.sklearn: scikit-learn's own estimator checks, its MLPs' meanings to float64 rounding, stopping, early
stopping, verbose, deprecated names, Pipeline/GridSearchCV/cross_val_score, labels, partial_fit, pickling."""

from __future__ import annotations

import io
import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import gpunet
from gpunet.datasets import load_digits
from gpunet import Network
from gpunet.sklearn import GPUNetClassifier, GPUNetRegressor

from conftest import backend_param, require

from readme_examples import readme_example

# Small networks keep scikit-learn's ~50 checks per estimator to seconds; every other parameter is the default.
SMALL = {"hidden_layer_sizes": (16,)}


def _expected_failures(estimator):
    """One check a float32 regressor cannot pass: its predictions of a row differ by float32 rounding (2.4e-7 seen,
    with numpy 2.4's OpenBLAS) between a product of all rows and one of a few, since BLAS picks its summation
    order by the number of rows; the check allows 1e-7. The float64 regressor runs the check, and passes it."""
    if isinstance(estimator, GPUNetRegressor) and estimator.dtype == "float32":
        return {"check_methods_subset_invariance": "float32 BLAS rounding depends on how many rows a product has"}
    return {}


# No other check is skipped. pandas (in the test extra) lets the DataFrame checks run, and SCIPY_ARRAY_API=1 lets
# check_array_api_input run its NumPy case (without it, scikit-learn skips that check).
@parametrize_with_checks([GPUNetClassifier(**SMALL), GPUNetRegressor(**SMALL), GPUNetRegressor(dtype="float64", **SMALL)],
                         expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator, check, monkeypatch):
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.X_train, d.y_train, d.X_test, d.y_test


def test_classifier_learns_the_digits_in_a_pipeline(digits):
    X, y, X_test, y_test = digits
    pipe = make_pipeline(StandardScaler(), GPUNetClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=0,
                                                            backend="numpy"))
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(60\) reached"):
        pipe.fit(X, y)
    assert pipe.score(X_test, y_test) > 0.95
    clf = pipe[-1]
    assert clf.n_features_in_ == 64 and list(clf.classes_) == list(range(10))
    assert clf.n_iter_ == 60 and len(clf.loss_curve_) == 60 and clf.loss_curve_[-1] < clf.loss_curve_[0] / 10
    assert clf.loss_ == clf.loss_curve_[-1] == clf.best_loss_ and clf.t_ == 60 * len(X)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None


def test_fitted_attributes_have_scikit_learns_shapes(digits):
    X, y, _, _ = digits
    multi = GPUNetClassifier(hidden_layer_sizes=(8, 5), max_iter=2, backend="numpy").fit(X[:100], y[:100])
    binary = GPUNetClassifier(hidden_layer_sizes=(8,), max_iter=2, backend="numpy").fit(X[:100], y[:100] % 2)
    reg = GPUNetRegressor(hidden_layer_sizes=(8,), max_iter=2, backend="numpy").fit(X[:100], np.c_[y[:100], -y[:100]])
    assert [c.shape for c in multi.coefs_] == [(64, 8), (8, 5), (5, 10)]
    assert [b.shape for b in multi.intercepts_] == [(8,), (5,), (10,)]
    assert (multi.n_layers_, multi.n_outputs_, multi.out_activation_) == (4, 10, "softmax")
    # two classes: one logistic unit, as scikit-learn's, and predict_proba's two columns from it
    assert [c.shape for c in binary.coefs_] == [(64, 8), (8, 1)]
    assert (binary.n_layers_, binary.n_outputs_, binary.out_activation_) == (3, 1, "logistic")
    P = binary.predict_proba(X[:20])
    np.testing.assert_allclose(P[:, 1], binary.network_.forward(X[:20].astype(np.float32))[:, 0])
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(binary.predict(X[:20]), P.argmax(axis=1))
    assert [c.shape for c in reg.coefs_] == [(64, 8), (8, 2)] and reg.out_activation_ == "identity"
    for est in (multi, binary, reg):
        assert all(type(a) is np.ndarray for a in est.coefs_ + est.intercepts_)
        np.testing.assert_array_equal(est.coefs_[0], est.network_.get_params()["W1"])


def test_predict_proba_is_the_network_output(digits):
    X, y, X_test, _ = digits
    clf = GPUNetClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0, backend="numpy").fit(X, y)
    P = clf.predict_proba(X_test)
    assert P.shape == (len(X_test), 10)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(P, clf.network_.forward(X_test.astype(np.float32)))
    np.testing.assert_array_equal(clf.predict(X_test), P.argmax(axis=1))


def _seeded(cls, params):
    """scikit-learn's ``cls`` starting from gpunet's initial parameters instead of its own draw."""
    class Seeded(cls):
        def _init_coef(self, fan_in, fan_out, dtype):
            i = len(self.coefs_) + 1
            return params[f"W{i}"].copy(), params[f"b{i}"].copy()
    return Seeded


@pytest.mark.parametrize("solver", [{"solver": "sgd", "momentum": 0.0}, {"solver": "sgd", "momentum": 0.9},
                                    {"solver": "adam", "epsilon": 1e-30}], ids=["sgd", "momentum", "adam"])
@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_training_is_scikit_learns_to_float64_rounding(task, solver):
    """alpha, the loss curve, batches with a shorter last one, shuffle=False and the solvers mean what they mean in
    scikit-learn: from the same initial weights, three epochs give its weights and losses to 1e-12. (Adam's epsilon
    is added to sqrt(v_hat) in gpunet, to sqrt(v) in scikit-learn: a tiny epsilon makes the two one formula.)"""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))  # batches of 7: 7, 7, 7, 7, 2
    y = {"regression": np.c_[np.sin(X[:, 0]), X[:, 1] * X[:, 2]],  # two targets: scikit-learn's loss is their mean
         "binary": (X[:, 0] + X[:, 1] > 0).astype(int),
         "multiclass": np.digitize(X[:, 0] + X[:, 1], [-0.5, 0.5])}[task]
    ours, theirs = (GPUNetRegressor, MLPRegressor) if task == "regression" else (GPUNetClassifier, MLPClassifier)
    kwargs = dict(hidden_layer_sizes=(5,), activation="tanh", alpha=0.5, batch_size=7, learning_rate_init=0.05,
                  max_iter=3, shuffle=False, **solver)
    with pytest.warns(ConvergenceWarning):
        got = ours(**kwargs, random_state=3, dtype="float64", backend="numpy").fit(X, y)
    start = Network(got.network_.sizes, init="xavier", seed=3, backend="numpy", dtype="float64").get_params()
    sk_kwargs = {**kwargs, "nesterovs_momentum": False} if solver["solver"] == "sgd" else kwargs
    with pytest.warns(ConvergenceWarning):
        want = _seeded(theirs, start)(**sk_kwargs).fit(X, y)
    assert got.out_activation_ == want.out_activation_ and got.n_outputs_ == want.n_outputs_
    for a, b in zip(got.coefs_ + got.intercepts_, want.coefs_ + want.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.loss_curve_, want.loss_curve_, rtol=1e-12)
    assert (got.n_iter_, got.t_) == (want.n_iter_, want.t_) == (3, 90)
    without = ours(**{**kwargs, "alpha": 0.0}, random_state=3, dtype="float64", backend="numpy")
    with pytest.warns(ConvergenceWarning):
        assert without.fit(X, y).loss_curve_[0] < got.loss_curve_[0]  # the penalty is in the loss


def test_stops_when_the_loss_stops_improving_as_scikit_learn():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
    kwargs = dict(hidden_layer_sizes=(4,), tol=10.0, n_iter_no_change=3, max_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # stopping is converging: no warning
        got = GPUNetClassifier(**kwargs, backend="numpy").fit(X, y)
        want = MLPClassifier(**kwargs).fit(X, y)
    # epoch 1 sets the best loss; epochs 2.. fail to beat it by tol; the count passes n_iter_no_change at epoch 5
    assert got.n_iter_ == want.n_iter_ == 5
    assert got.best_loss_ == min(got.loss_curve_) and got._no_improvement_count_ == 4


def test_early_stopping_keeps_the_best_epochs_weights(digits):
    X, y, _, _ = digits
    kwargs = dict(hidden_layer_sizes=(16,), early_stopping=True, validation_fraction=0.2, n_iter_no_change=2,
                  tol=0.005, max_iter=40, learning_rate_init=0.01, random_state=4, backend="numpy")
    full = GPUNetClassifier(**kwargs).fit(X, y)
    scores = full.validation_scores_
    assert full.best_loss_ is None and len(scores) == full.n_iter_ == len(full.loss_curve_) < 40
    assert full.best_validation_score_ == max(scores) > 0.9
    assert full.t_ == full.n_iter_ * (len(X) - int(np.ceil(0.2 * len(X))))  # trained on the rest
    best = int(np.argmax(scores)) + 1  # the epoch whose weights it keeps: the same run stopped there
    assert best < full.n_iter_
    with pytest.warns(ConvergenceWarning):
        short = GPUNetClassifier(**{**kwargs, "max_iter": best}).fit(X, y)
    assert short.validation_scores_ == scores[:best]
    for a, b in zip(full.coefs_ + full.intercepts_, short.coefs_ + short.intercepts_):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        GPUNetClassifier(**kwargs).partial_fit(X, y, classes=range(10))


def test_early_stopping_regressor_scores_r2():
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, size=(200, 2))
    y = X[:, 0] - 2 * X[:, 1]
    reg = GPUNetRegressor(hidden_layer_sizes=(8,), early_stopping=True, max_iter=30, learning_rate_init=0.01,
                          random_state=0, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, y)
    assert reg.best_validation_score_ == max(reg.validation_scores_) > 0.9  # R^2, not the argmax accuracy


def test_verbose_prints_scikit_learns_lines(capsys):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 2, 30)
    clf = GPUNetClassifier(hidden_layer_sizes=(4,), max_iter=3, verbose=True, random_state=0, backend="numpy")
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"Iteration {i}, loss = {loss:.8f}" for i, loss in enumerate(clf.loss_curve_, 1)]
    clf.set_params(early_stopping=True, validation_fraction=0.3, tol=100.0, n_iter_no_change=1, verbose=1, max_iter=10)
    clf.fit(X, y)  # epoch 1 sets the best score, epochs 2 and 3 miss it by tol: a count of 2 > 1 stops
    out = capsys.readouterr().out
    assert out.count("Iteration ") == out.count("Validation score: ") == clf.n_iter_ == 3
    assert "Validation score did not improve more than tol=100.000000 for 1 consecutive epochs. Stopping." in out
    GPUNetClassifier(hidden_layer_sizes=(4,), max_iter=1, backend="numpy").partial_fit(X, y, classes=[0, 1])
    assert capsys.readouterr().out == ""  # the library prints only when asked


def test_deprecated_names_keep_their_0_1_0_meaning(digits):
    X, y, X_test, _ = digits
    base = dict(hidden_layer_sizes=(8,), random_state=0, backend="numpy")
    with pytest.warns(DeprecationWarning, match=r"GPUNetClassifier\(epochs=...\) is deprecated; use max_iter="):
        old = GPUNetClassifier(**base, epochs=3, lr=0.01).fit(X, y)
    with pytest.warns(ConvergenceWarning):
        new = GPUNetClassifier(**base, max_iter=3, learning_rate_init=0.01).fit(X, y)
    np.testing.assert_array_equal(old.predict_proba(X_test), new.predict_proba(X_test))
    # optimizer= and weight_decay=: 0.1.0's optimiser with its constant decay, in place of solver and alpha
    with pytest.warns(DeprecationWarning, match=r"weight_decay=...\) is deprecated; use alpha="):
        old = GPUNetClassifier(**base, epochs=3, optimizer="adam", weight_decay=0.0).fit(X, y)
    with pytest.warns(ConvergenceWarning):
        new = GPUNetClassifier(**base, max_iter=3, alpha=0.0).fit(X, y)
    np.testing.assert_array_equal(old.predict_proba(X_test), new.predict_proba(X_test))
    instance = gpunet.SGD()
    with pytest.warns(DeprecationWarning, match="optimizer"):
        GPUNetClassifier(**base, epochs=1, optimizer=instance).fit(X, y)
    assert instance.t == 0  # copied at each fit, never trained
    with pytest.warns(DeprecationWarning):  # an instance keeps its own decay; weight_decay alone keeps the solver
        own = GPUNetClassifier(**base, epochs=1, optimizer=gpunet.Adam(weight_decay=0.05)).fit(X, y)
        sgd = GPUNetClassifier(**base, epochs=1, solver="sgd", momentum=0.0, weight_decay=0.01).fit(X, y)
    assert type(own._optimizer_) is gpunet.Adam and own._optimizer_.weight_decay == 0.05
    assert type(sgd._optimizer_) is gpunet.SGD and sgd._optimizer_.weight_decay == 0.01
    with pytest.raises(ValueError, match=r"give max_iter= only; epochs= is its deprecated 0.1.0 name "
                                         r"\(got epochs=3 and max_iter=5\)"):
        GPUNetClassifier(**base, epochs=3, max_iter=5).fit(X, y)
    assert "epochs" in GPUNetClassifier().get_params() and GPUNetClassifier().epochs == "deprecated"


def test_any_label_values(digits):
    X, y, X_test, y_test = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    kwargs = dict(hidden_layer_sizes=(32,), max_iter=20, learning_rate_init=0.01, random_state=3, backend="numpy")
    by_name = GPUNetClassifier(**kwargs).fit(X, names[y])
    assert list(by_name.classes_) == sorted(names)  # sorted, as scikit-learn's
    predicted = by_name.predict(X_test)
    assert predicted.dtype == names.dtype and set(predicted) <= set(names)
    assert (predicted == names[y_test]).mean() > 0.93
    shifted = GPUNetClassifier(**kwargs).fit(X, y * 10 - 7)  # negative and sparse integer labels
    assert list(shifted.classes_) == list(range(-7, 90, 10))
    assert (shifted.predict(X_test) == y_test * 10 - 7).mean() > 0.93
    with pytest.raises(ValueError, match=r"needs at least 2 classes in y; got 1 class: \['seven'\]"):
        GPUNetClassifier(**kwargs).fit(X[:20], np.full(20, "seven"))


def test_grid_search_and_cross_validation(digits):
    X, y, _, _ = digits
    X, y = X[:600], y[:600]
    grid = GridSearchCV(
        GPUNetClassifier(max_iter=30, random_state=0, backend="numpy"),
        {"hidden_layer_sizes": [(4,), (48,)], "learning_rate_init": [0.003]}, cv=3,
    )
    grid.fit(X, y)
    assert grid.best_params_["hidden_layer_sizes"] == (48,)  # 4 hidden units are too few for ten classes
    assert grid.best_score_ > 0.9
    scores = cross_val_score(GPUNetClassifier(hidden_layer_sizes=(32,), max_iter=30, learning_rate_init=0.01,
                                              random_state=0, backend="numpy"), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9


def test_partial_fit_continues_fit_exactly(digits):
    X, y, X_test, _ = digits
    kwargs = dict(hidden_layer_sizes=(16,), random_state=5, backend="numpy", batch_size=50)
    with pytest.warns(ConvergenceWarning):
        whole = GPUNetClassifier(max_iter=3, **kwargs).fit(X, y)
    parts = GPUNetClassifier(**kwargs)
    for _ in range(3):  # one epoch each, the optimiser's state (Adam's moments) carried over
        parts.partial_fit(X, y, classes=np.arange(10))
    assert parts.n_iter_ == 3 and parts.t_ == 3 * len(X)
    np.testing.assert_array_equal(parts.predict_proba(X_test), whole.predict_proba(X_test))
    assert parts.loss_curve_ == whole.loss_curve_


def test_partial_fit_errors(digits):
    X, y, _, _ = digits
    clf = GPUNetClassifier(**SMALL, backend="numpy")
    with pytest.raises(ValueError, match="classes must be given to the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100] % 5, classes=range(5))
    with pytest.raises(ValueError, match=r"y holds 9, which is not among classes \[0, 1, 2, 3, 4\]"):
        clf.partial_fit(X[:100], y[:100])


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"hidden_layer_sizes": "100"}, TypeError, r"hidden_layer_sizes must be an int or a sequence of ints"),
        ({"hidden_layer_sizes": (8, 0)}, ValueError, r"every entry of hidden_layer_sizes \(\[8, 0\]\) must be an "
                                                     r"integer >= 1; got 0"),
        ({"learning_rate_init": -1.0}, ValueError, r"learning_rate_init must be a finite number > 0; got -1.0"),
        ({"activation": "swish"}, ValueError, r"activation must be one of identity, logistic, tanh, relu, .*silu.*; "
                                              r"got 'swish'"),
        ({"activation": "identity"}, ValueError, r"activation='identity' \(linear hidden layers\) is not available"),
        ({"solver": "lbfgs"}, ValueError, r"solver='lbfgs' is not available: gpunet trains by mini-batch"),
        ({"solver": "rmsprop"}, ValueError, r"solver must be one of sgd, adam; got 'rmsprop'"),
        ({"alpha": -0.1}, ValueError, r"alpha must be a finite number >= 0; got -0.1"),
        ({"batch_size": "all"}, ValueError, r"batch_size must be 'auto' or an integer >= 1; got 'all'"),
        ({"max_iter": 0}, ValueError, r"max_iter must be an integer >= 1; got 0"),
        ({"beta_2": 1.0}, ValueError, r"beta_2 must be in \[0, 1\); got 1.0"),
        ({"momentum": 1.5, "solver": "sgd"}, ValueError, r"momentum must be a number in \[0, 1\); got 1.5"),
        ({"validation_fraction": 1.0}, ValueError, r"validation_fraction must be a number in \(0, 1\); got 1.0"),
        ({"n_iter_no_change": 0}, ValueError, r"n_iter_no_change must be an integer >= 1; got 0"),
        ({"shuffle": "yes"}, TypeError, r"shuffle must be True or False; got 'yes'"),
        ({"dtype": "float16"}, ValueError, r"dtype must be one of float32, float64; got 'float16'"),
        ({"dtype": "complex-ish"}, ValueError, r"dtype must be one of float32, float64; got 'complex-ish'"),
        ({"backend": "tpu"}, ValueError, r"backend must be one of auto, numpy, cupy; got 'tpu'"),
        ({"random_state": -1}, ValueError, r"seed must be an integer >= 0; got -1"),
        ({"kernels": "graph", "backend": "numpy"}, ValueError, r"kernels='graph' trains a whole epoch at once"),
    ],
)
def test_bad_parameters_fail_in_fit_naming_the_value(params, error, message, digits):
    X, y, _, _ = digits
    clf = GPUNetClassifier(**{**SMALL, **params})  # __init__ only stores, as scikit-learn requires
    with pytest.raises(error, match=message):
        clf.fit(X[:50], y[:50])


@pytest.mark.parametrize("cls", [GPUNetClassifier, GPUNetRegressor])
def test_errors_name_the_public_class(cls):
    with pytest.raises(TypeError, match=rf"^{cls.__name__}.__init__\(\) got an unexpected keyword argument 'max_iters'"):
        cls(max_iters=3)
    with pytest.raises(Exception, match=rf"This {cls.__name__} instance is not fitted yet"):
        cls().predict(np.zeros((2, 3)))
    assert cls.__init__.__qualname__ == f"{cls.__name__}.__init__"
    documented = set()  # numpydoc: every parameter has its entry in the class docstring ("a, b : type" lists two)
    for names in re.findall(r"^    (\w+(?:, \w+)*) : ", cls.__doc__, flags=re.MULTILINE):
        documented.update(names.split(", "))
    assert set(cls().get_params()) <= documented
    assert {"loss_curve_", "coefs_", "n_iter_", "best_validation_score_", "t_"} <= documented


def test_auto_backend_is_the_library_choice(digits):
    X, y, _, _ = digits
    clf = GPUNetClassifier(**SMALL, max_iter=1, random_state=0).fit(X[:64], y[:64])
    assert clf.backend == "auto"  # the parameter stays as given
    assert clf.network_.backend.name == gpunet.get_backend("auto").name


def test_regressor_fits_a_smooth_function():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    reg = GPUNetRegressor(hidden_layer_sizes=(32, 32), activation="tanh", max_iter=300, learning_rate_init=0.01,
                          batch_size=32, random_state=0, backend="numpy").fit(X_train, y_train)
    assert reg.predict(X_test).shape == (100,) and reg.predict(X_test).dtype == np.float64
    assert reg.score(X_test, y_test) > 0.97
    both = GPUNetRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0, backend="numpy")
    assert both.fit(X, np.c_[y, -y]).predict(X).shape == (400, 2)


def test_regressor_in_a_pipeline_with_grid_search():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 10, size=(300, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0
    pipe = make_pipeline(MinMaxScaler(), GPUNetRegressor(hidden_layer_sizes=(8,), max_iter=100, batch_size=100,
                                                         random_state=0, backend="numpy"))
    grid = GridSearchCV(pipe, {"gpunetregressor__learning_rate_init": [1e-5, 3e-2]}, cv=3).fit(X, y)
    assert grid.best_params_ == {"gpunetregressor__learning_rate_init": 3e-2}  # 1e-5 barely moves
    assert grid.score(X, y) > 0.95


class _Recorder(pickle.Pickler):
    """A pickler that notes the type of every object it writes."""

    def __init__(self, file):
        super().__init__(file)
        self.types = set()

    def reducer_override(self, obj):
        self.types.add(type(obj))
        return NotImplemented


def _pickled_types(obj):
    recorder = _Recorder(io.BytesIO())
    recorder.dump(obj)
    return recorder.types


def _array_types(types):
    return {t for t in types if hasattr(t, "__array__") and t.__module__.split(".")[0] not in ("builtins",)}


def test_fitted_estimator_pickles_with_host_arrays_only(digits, tmp_path):
    X, y, X_test, _ = digits
    clf = GPUNetClassifier(**SMALL, max_iter=3, random_state=0, backend="numpy")
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    types = _pickled_types(clf)
    assert _array_types(types) == {np.ndarray} and gpunet.Network not in types  # parameters and state as NumPy
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X_test), clf.predict_proba(X_test))
    assert again.network_.backend.name == "numpy" and again._optimizer_.t == clf._optimizer_.t
    clf.partial_fit(X, y)
    again.partial_fit(X, y)  # the optimiser's state came along: both continue alike
    assert again.n_iter_ == 4
    np.testing.assert_array_equal(again.predict_proba(X_test), clf.predict_proba(X_test))
    joblib.dump(clf, tmp_path / "clf.joblib")
    loaded = joblib.load(tmp_path / "clf.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))
    assert loaded.get_params() == clf.get_params() and loaded.loss_curve_ == clf.loss_curve_


@pytest.mark.parametrize("name", [backend_param("cupy")])
def test_gpu_estimator_pickles_to_the_host(name, digits, tmp_path):
    require(name)
    X, y, X_test, _ = digits
    clf = GPUNetRegressor(**SMALL, max_iter=3, random_state=0, backend=name).fit(X, y.astype(float))
    assert clf.network_.backend.name == "cupy"
    assert _array_types(_pickled_types(clf)) == {np.ndarray}  # nothing of the device in the pickle
    for again in (pickle.loads(pickle.dumps(clf)), joblib.load(joblib.dump(clf, tmp_path / "reg.joblib")[0])):
        assert again.network_.backend.name == "cupy"
        np.testing.assert_array_equal(again.predict(X_test), clf.predict(X_test))
        assert all(type(c) is np.ndarray for c in again.coefs_)


@pytest.mark.parametrize("name", [backend_param("cupy")])
def test_classifier_on_the_gpu_matches_numpy(name, digits):
    require(name)
    X, y, X_test, _ = digits
    kwargs = dict(hidden_layer_sizes=(32,), max_iter=5, random_state=0, dtype="float64")
    gpu = GPUNetClassifier(backend=name, **kwargs).fit(X, y)
    cpu = GPUNetClassifier(backend="numpy", **kwargs).fit(X, y)
    assert gpu.network_.backend.name == "cupy"
    np.testing.assert_allclose(gpu.predict_proba(X_test), cpu.predict_proba(X_test), atol=1e-9)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-9)


def test_readme_example(monkeypatch):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    scope: dict = {}
    exec(compile(readme_example(0), "README.md", "exec"), scope)
    assert scope["accuracy"] > 0.96  # "about 0.97"
    assert scope["proba"].shape == (3, 10) and list(scope["clf"][-1].classes_) == sorted(scope["names"])
    assert scope["grid"].best_params_ == {"hidden_layer_sizes": (64,)}
    assert scope["scores"].min() > 0.93


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 3 epochs: not converged
def test_dropout_reaches_the_network_and_survives_pickling():
    d = load_digits()
    kw = dict(hidden_layer_sizes=(32,), max_iter=3, random_state=0, backend="numpy")
    clf = GPUNetClassifier(dropout=0.3, **kw).fit(d.X_train, d.y_train)
    assert clf.get_params()["dropout"] == 0.3 and clf.network_.dropout == (0.0, 0.3)
    plain = GPUNetClassifier(**kw).fit(d.X_train, d.y_train)
    assert not plain.network_.has_dropout and plain.loss_curve_ != clf.loss_curve_  # training dropped units
    np.testing.assert_array_equal(clf.predict_proba(d.X_test), clf.predict_proba(d.X_test))  # prediction does not
    back = pickle.loads(pickle.dumps(clf))
    assert back.network_.dropout == (0.0, 0.3)
    np.testing.assert_array_equal(back.predict_proba(d.X_test), clf.predict_proba(d.X_test))
    reg = GPUNetRegressor(dropout=[0.1, 0.2], **kw).fit(d.X_train, d.y_train.astype(float))
    assert reg.network_.dropout == (0.1, 0.2)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\); got 1.0"):
        GPUNetClassifier(dropout=1.0, **kw).fit(d.X_train, d.y_train)
