"""gpunet.sklearn: scikit-learn's own estimator checks, Pipeline/GridSearchCV/cross_val_score, labels, partial_fit."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import gpunet
from gpunet.datasets import load_digits
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
    pipe = make_pipeline(StandardScaler(), GPUNetClassifier(hidden_layer_sizes=(64,), epochs=60, random_state=0,
                                                            backend="numpy"))
    pipe.fit(X, y)
    assert pipe.score(X_test, y_test) > 0.95
    clf = pipe[-1]
    assert clf.n_features_in_ == 64 and list(clf.classes_) == list(range(10))
    assert clf.n_iter_ == 60 and len(clf.loss_curve_) == 60 and clf.loss_curve_[-1] < clf.loss_curve_[0] / 10


def test_predict_proba_is_the_network_output(digits):
    X, y, X_test, _ = digits
    clf = GPUNetClassifier(hidden_layer_sizes=(32,), epochs=5, random_state=0, backend="numpy").fit(X, y)
    P = clf.predict_proba(X_test)
    assert P.shape == (len(X_test), 10)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(P, clf.network_.forward(X_test.astype(np.float32)))
    np.testing.assert_array_equal(clf.predict(X_test), P.argmax(axis=1))


def test_any_label_values(digits):
    X, y, X_test, y_test = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    kwargs = dict(hidden_layer_sizes=(32,), epochs=20, lr=0.01, random_state=3, backend="numpy")
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
        GPUNetClassifier(epochs=30, random_state=0, backend="numpy"),
        {"hidden_layer_sizes": [(4,), (48,)], "lr": [0.003]}, cv=3,
    )
    grid.fit(X, y)
    assert grid.best_params_["hidden_layer_sizes"] == (48,)  # 4 hidden units are too few for ten classes
    assert grid.best_score_ > 0.9
    scores = cross_val_score(GPUNetClassifier(hidden_layer_sizes=(32,), epochs=30, lr=0.01, random_state=0,
                                              backend="numpy"), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9


def test_partial_fit_continues_fit_exactly(digits):
    X, y, X_test, _ = digits
    kwargs = dict(hidden_layer_sizes=(16,), random_state=5, backend="numpy", batch_size=50)
    whole = GPUNetClassifier(epochs=3, **kwargs).fit(X, y)
    parts = GPUNetClassifier(**kwargs)
    for _ in range(3):  # one epoch each, the optimiser's state (Adam's moments) carried over
        parts.partial_fit(X, y, classes=np.arange(10))
    assert parts.n_iter_ == 3
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
        ({"lr": -1.0}, ValueError, r"lr must be a finite number > 0; got -1.0"),
        ({"activation": "swish"}, ValueError, r"activation must be one of .*; got 'swish'"),
        ({"backend": "tpu"}, ValueError, r"backend must be one of auto, numpy, cupy; got 'tpu'"),
        ({"random_state": -1}, ValueError, r"seed must be an integer >= 0; got -1"),
    ],
)
def test_bad_parameters_fail_in_fit_naming_the_value(params, error, message, digits):
    X, y, _, _ = digits
    clf = GPUNetClassifier(**{**SMALL, **params})  # __init__ only stores, as scikit-learn requires
    with pytest.raises(error, match=message):
        clf.fit(X[:50], y[:50])


def test_auto_backend_is_the_library_choice(digits):
    X, y, _, _ = digits
    clf = GPUNetClassifier(**SMALL, epochs=1, random_state=0).fit(X[:64], y[:64])
    assert clf.backend == "auto"  # the parameter stays as given
    assert clf.network_.backend.name == gpunet.get_backend("auto").name


def test_regressor_fits_a_smooth_function():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    reg = GPUNetRegressor(hidden_layer_sizes=(32, 32), activation="tanh", epochs=300, lr=0.01, batch_size=32,
                          random_state=0, backend="numpy").fit(X_train, y_train)
    assert reg.predict(X_test).shape == (100,) and reg.predict(X_test).dtype == np.float64
    assert reg.score(X_test, y_test) > 0.97
    both = GPUNetRegressor(hidden_layer_sizes=(16,), epochs=5, random_state=0, backend="numpy")
    assert both.fit(X, np.c_[y, -y]).predict(X).shape == (400, 2)


def test_regressor_in_a_pipeline_with_grid_search():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 10, size=(300, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0
    pipe = make_pipeline(MinMaxScaler(), GPUNetRegressor(hidden_layer_sizes=(8,), epochs=100, batch_size=100,
                                                         random_state=0, backend="numpy"))
    grid = GridSearchCV(pipe, {"gpunetregressor__lr": [1e-5, 3e-2]}, cv=3).fit(X, y)
    assert grid.best_params_ == {"gpunetregressor__lr": 3e-2}  # 1e-5 barely moves in 100 epochs
    assert grid.score(X, y) > 0.95


def test_fitted_estimator_pickles(digits):
    X, y, X_test, _ = digits
    clf = GPUNetClassifier(**SMALL, epochs=3, random_state=0, backend="numpy").fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X_test), clf.predict_proba(X_test))
    again.partial_fit(X, y)  # the optimiser's state came along
    assert again.n_iter_ == 4


@pytest.mark.parametrize("name", [backend_param("cupy")])
def test_classifier_on_the_gpu_matches_numpy(name, digits):
    require(name)
    X, y, X_test, _ = digits
    kwargs = dict(hidden_layer_sizes=(32,), epochs=5, random_state=0, dtype="float64")
    gpu = GPUNetClassifier(backend=name, **kwargs).fit(X, y)
    cpu = GPUNetClassifier(backend="numpy", **kwargs).fit(X, y)
    assert gpu.network_.backend.name == "cupy"
    np.testing.assert_allclose(gpu.predict_proba(X_test), cpu.predict_proba(X_test), atol=1e-9)


def test_readme_example(monkeypatch):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    scope: dict = {}
    exec(compile(readme_example(0), "README.md", "exec"), scope)
    assert scope["accuracy"] > 0.96  # "about 0.97"
    assert scope["proba"].shape == (3, 10) and list(scope["clf"][-1].classes_) == sorted(scope["names"])
    assert scope["grid"].best_params_ == {"hidden_layer_sizes": (64,)}
    assert scope["scores"].min() > 0.93
