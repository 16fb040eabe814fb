"""The Python API as a user meets it: one set of defaults that learns, Network.article, evaluate on labels,
train's validation/early_stopping/progress/callback, and the checks that keep a wrong input from becoming a number."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet import defaults
from gpunet.config import TrainConfig
from gpunet.datasets import Split, hold_out
from gpunet.training import validation_rows

DATA = Path(__file__).resolve().parent / "data"


def _digits():
    """scikit-learn's digits as a user has them (pixels 0..16, integer labels), split 75/25 by a fixed seed."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:450], order[450:]
    return X[train], y[train], X[test], y[test]


def _noise(n=60, n_in=5, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), rng.integers(0, n_classes, n)


# --- one set of defaults ------------------------------------------------------------------------------------------


def test_a_network_from_its_sizes_learns_the_digits_with_train_defaults():
    X, y, X_test, y_test = _digits()
    net = gpunet.Network([64, 100, 10], backend="numpy")
    history = gpunet.train(net, X, y)
    assert len(history) == defaults.EPOCHS == 30
    accuracy = gpunet.evaluate(net, X_test, y_test)["test_accuracy"]
    assert accuracy >= 0.95, accuracy  # 0.973 on NumPy; the article's defaults reached 0.078
    assert accuracy == float((net.predict(X_test) == y_test).mean())


def test_network_train_and_the_command_line_share_one_set_of_defaults():
    net = gpunet.Network([4, 3, 2], backend="numpy")
    assert (net.activation, net.output, net.loss_name, net.init, net.seed, net.dtype.name) == (
        "relu", "softmax", "cross-entropy", "he", 0, "float32")
    train = inspect.signature(gpunet.train).parameters
    want = {"epochs": 30, "batch_size": 32, "lr": 0.001, "lr_schedule": None, "lr_decay": None, "optimizer": "adam",
            "weight_decay": 0.0, "seed": 0}  # None: the schedule the settings given name, else cosine
    assert {k: train[k].default for k in want} == want
    config = TrainConfig()
    assert (config.hidden, config.lr_schedule, config.lr_decay) == ((1024,), "cosine", None)
    for f in fields(TrainConfig):
        if hasattr(defaults, f.name.upper()) and f.name != "lr_decay":  # the exponential schedule's factor
            assert getattr(config, f.name) == getattr(defaults, f.name.upper()), f.name
    assert (config.activation, config.optimizer, config.lr, config.epochs, config.batch_size) == (
        defaults.ACTIVATION, defaults.OPTIMIZER, defaults.LR, defaults.EPOCHS, defaults.BATCH_SIZE)


def test_the_article_network_is_one_word_away():
    article = gpunet.Network.article([4, 3, 2], seed=2, backend="numpy", dtype="float64")
    assert article.config() == {"sizes": [4, 3, 2], "activation": "sigmoid", "output": "sigmoid", "loss": "squared",
                                "init": "article", "seed": 2, "dtype": "float64"}
    explicit = gpunet.Network([4, 3, 2], "sigmoid", "sigmoid", "squared", "article", seed=2, backend="numpy",
                              dtype="float64")
    for k, v in explicit.get_params().items():
        np.testing.assert_array_equal(article.get_params()[k], v)
    tanh = gpunet.Network.article([4, 3, 2], activation="tanh", backend="numpy")
    assert (tanh.activation, tanh.output, tanh.loss_name, tanh.init) == ("tanh", "sigmoid", "squared", "article")


def test_a_checkpoint_written_by_0_1_0_loads_as_the_article_network():
    """tests/data/article-0.1.0.npz: gpunet.save of ``Network([4, 3, 2], seed=1, dtype="float64")`` by 0.1.0
    (whose defaults were the article's) after one train_step; its outputs were printed by 0.1.0 too."""
    net = gpunet.load(DATA / "article-0.1.0.npz", backend="numpy")
    assert net.config() == {"sizes": [4, 3, 2], "activation": "sigmoid", "output": "sigmoid", "loss": "squared",
                            "init": "article", "seed": 1, "dtype": "float64"}
    X = np.arange(8.0).reshape(2, 4) / 8
    np.testing.assert_allclose(net.forward(X), [[0.49859369386305835, 0.5001835198981585],
                                                [0.4985930658156913, 0.500187098477628]], rtol=1e-15)


# --- evaluate as users have their labels ---------------------------------------------------------------------------


def _trained():
    X, y = _noise(40, 4, 3, seed=1)
    net = gpunet.Network([4, 6, 3], seed=1, backend="numpy", dtype="float64")
    gpunet.train(net, X, y, epochs=3, seed=1)
    return net, X, y


def test_evaluate_takes_integer_labels_one_hot_rows_or_the_four_argument_form():
    net, X, y = _trained()
    T = np.eye(3)[y]
    by_labels = gpunet.evaluate(net, X, y)
    assert by_labels == gpunet.evaluate(net, X, T) == gpunet.evaluate(net, X, T, y)
    assert by_labels == gpunet.evaluate(net, X, y.astype(np.float64)) == gpunet.evaluate(net, X, list(y))
    assert by_labels["test_accuracy"] == float((net.predict(X) == y).mean())
    assert by_labels["test_loss"] == pytest.approx(net.loss(X, T), rel=1e-12)


def test_evaluate_refuses_labels_that_would_broadcast_or_fall_out_of_range():
    net, X, y = _trained()
    with pytest.raises(ValueError, match=r"y must be integer labels \(N,\) or target rows \(N, 3\); got shape \(40, 1\)"):
        gpunet.evaluate(net, X, y[:, None])
    with pytest.raises(ValueError, match=r"y: labels must be 1-D \(one class label per row\); got shape \(40, 1, 1\)"):
        gpunet.evaluate(net, X, y[:, None, None])
    with pytest.raises(ValueError, match=r"labels must be 1-D \(one class label per row\); got shape \(40, 1\)"):
        gpunet.evaluate(net, X, np.eye(3)[y], y[:, None])
    with pytest.raises(ValueError, match=r"y: labels must be in 0..2; got 3 at index 5"):
        gpunet.evaluate(net, X, np.where(np.arange(40) == 5, 3, y))
    with pytest.raises(ValueError, match=r"labels must be in 0..2; got -1 at index 0"):
        gpunet.evaluate(net, X, np.eye(3)[y], np.where(np.arange(40) == 0, -1, y))
    with pytest.raises(ValueError, match=r"y must have one entry per row of X \(40\); got 39"):
        gpunet.evaluate(net, X, y[:39])
    with pytest.raises(ValueError, match=r"X, T and labels must have as many rows; got 40, 40, 39"):
        gpunet.evaluate(net, X, np.eye(3)[y], y[:39])
    with pytest.raises(ValueError, match=r"y must be integer labels \(N,\) or target rows \(N, 3\); got shape \(40, 4\)"):
        gpunet.evaluate(net, X, np.eye(4)[y])


def test_prediction_and_evaluation_refuse_non_finite_inputs_naming_the_entry():
    net, X, y = _trained()
    bad = X.copy()
    bad[7, 2] = np.nan
    for call in (net.predict, net.predict_proba, net.forward):
        with pytest.raises(ValueError, match=r"^X contains NaN or infinity; got nan at row 7, column 2$"):
            call(bad)
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity; got nan at row 7, column 2$"):
        gpunet.evaluate(net, bad, y)
    bad[7, 2] = 1.0
    bad[0, 1] = -np.inf
    with pytest.raises(ValueError, match=r"X contains NaN or infinity; got -inf at row 0, column 1"):
        gpunet.evaluate(net, bad, np.eye(3)[y], y)
    T = np.eye(3)[y]
    T[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"T contains NaN or infinity; got nan at row 3, column 0"):
        gpunet.evaluate(net, X, T, y)
    f32 = gpunet.Network([4, 3], backend="numpy", dtype="float32")
    big = np.zeros((2, 4))
    big[1, 3] = 1e300  # finite in float64, infinite in the network's float32
    with pytest.raises(ValueError, match=r"got 1e\+300 at row 1, column 3, beyond the range of float32"):
        f32.predict(big)


def test_evaluate_and_train_say_when_the_first_argument_is_not_a_network():
    X, y = _noise(10, 4)
    with pytest.raises(TypeError, match=r"^train's first argument must be a gpunet.Network; got ndarray$"):
        gpunet.train(X, X, y)
    with pytest.raises(TypeError, match=r"^evaluate's first argument must be a gpunet.Network; got str$"):
        gpunet.evaluate("model.npz", X, y)


# --- labels and settings named in messages ------------------------------------------------------------------------


@pytest.mark.parametrize("y, error, match", [
    ([0.0, 1.0, np.nan, 2.0], TypeError, r"y_train: labels must be integers; got dtype float64 with NaN at index 2"),
    ([0.0, 1.5, 1.0, 2.0], TypeError,
     r"y_train: labels must be integers; got dtype float64 with the fractional label 1.5 at index 1"),
    ([0.0, 1.0, 2.0, np.inf], TypeError, r"y_train: labels must be integers; got dtype float64 with inf at index 3"),
    ([0, 1, 2, 7], ValueError, r"y_train: labels must be in 0..2; got 7 at index 3"),
    ([[0, 1], [2]], TypeError, r"y_train must be integer labels \(N,\) or target rows \(N, 3\); got list"),
])
def test_a_bad_label_is_named_with_its_value_and_position(y, error, match):
    net = gpunet.Network([2, 3], backend="numpy")
    with pytest.raises(error, match=match):
        gpunet.train(net, np.ones((4, 2)), y, epochs=1)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None, True])
def test_a_bad_seed_is_named(seed):
    net = gpunet.Network([2, 3], backend="numpy")
    with pytest.raises(ValueError, match=rf"^seed must be an integer >= 0; got {seed!r}$"):
        gpunet.train(net, np.ones((4, 2)), np.array([0, 1, 2, 0]), epochs=1, seed=seed)


# --- validation, early stopping, progress, callback ---------------------------------------------------------------


def test_a_validation_fraction_holds_out_the_command_lines_rows_and_trains_on_the_rest():
    X, y = _noise(50, 4, 3, seed=2)
    held, kept = validation_rows(50, 0.2, seed=5)
    split = hold_out(Split(X, y, X[:1], y[:1]), 0.2, seed=5)  # what `gpunet train --validation 0.2` holds out
    np.testing.assert_array_equal(split.X_val, X[held])
    np.testing.assert_array_equal(split.X_train, X[kept])
    assert len(held) == 10 and len(np.union1d(held, kept)) == 50

    def run(**how):
        net = gpunet.Network([4, 5, 3], seed=1, backend="numpy", dtype="float64")
        return net, gpunet.train(net, *how.pop("data", (X, y)), epochs=3, seed=5, **how)

    by_fraction, h1 = run(validation=0.2)
    by_pair, h2 = run(data=(X[kept], y[kept]), validation=(X[held], y[held]))
    by_arrays, h3 = run(data=(X[kept], y[kept]), X_val=X[held], y_val=y[held])
    for k in by_fraction.params:
        np.testing.assert_array_equal(by_fraction.params[k], by_pair.params[k])
        np.testing.assert_array_equal(by_fraction.params[k], by_arrays.params[k])
    drop = ("seconds", "samples_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in h1] == \
        [{k: v for k, v in r.items() if k not in drop} for r in h2] == \
        [{k: v for k, v in r.items() if k not in drop} for r in h3]
    assert h1[-1]["val_loss"] == gpunet.evaluate(by_pair, X[held], y[held])["test_loss"]


@pytest.mark.parametrize("validation, error, match", [
    (1.0, ValueError, r"validation must be a fraction of the training rows in \[0, 1\); got 1.0"),
    (-0.1, ValueError, r"validation must be a fraction of the training rows in \[0, 1\); got -0.1"),
    (0.001, ValueError, r"validation=0.001 of 20 training rows leaves no validation or no training rows"),
    ("0.1", TypeError, r"validation must be a fraction .* or an \(X_val, y_val\) pair; got str"),
    ((np.ones((2, 4)),), ValueError, r"validation must be a fraction or an \(X_val, y_val\) pair; got a tuple of 1"),
    ((np.ones((2, 4)), np.array([0, 9])), ValueError, r"validation\[1\]: labels must be in 0..2; got 9 at index 1"),
])
def test_bad_validation_is_named(validation, error, match):
    X, y = _noise(20, 4)
    with pytest.raises(error, match=match):
        gpunet.train(gpunet.Network([4, 3], backend="numpy"), X, y, epochs=1, validation=validation)


def test_validation_is_given_once():
    X, y = _noise(20, 4)
    with pytest.raises(ValueError, match=r"give validation data once: validation= or X_val=/y_val=, not both"):
        gpunet.train(gpunet.Network([4, 3], backend="numpy"), X, y, validation=0.1, X_val=X, y_val=y)


def test_early_stopping_stops_after_patience_epochs_and_restores_the_best_weights_and_optimizer_state():
    X, y = _noise()
    net = gpunet.Network([5, 40, 3], backend="numpy", dtype="float64")
    adam = gpunet.Adam()
    seen = {}

    def keep(record):
        seen[record["epoch"]] = net.get_params(), adam.state_dict()

    history = gpunet.train(net, X, y, epochs=40, batch_size=16, lr=0.01, lr_decay=1.0, optimizer=adam,
                           validation=0.25, early_stopping=3, callback=keep)
    losses = [r["val_loss"] for r in history]
    best = int(np.argmin(losses)) + 1
    assert best == 3 and len(history) == best + 3  # three epochs without improvement, then stop
    assert [r["best_epoch"] for r in history] == [1, 2, 3, 3, 3, 3]
    assert losses[best:] == sorted(losses[best:])  # the noise is overfitted: the loss only rises after the best
    params, state = seen[best]
    for k, v in params.items():
        np.testing.assert_array_equal(net.get_params()[k], v)
    assert adam.t == state["t"] < seen[len(history)][1]["t"]
    for k, v in adam.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    assert gpunet.evaluate(net, *_noise())["test_loss"] != pytest.approx(0)  # the restored network still works


def test_early_stopping_without_validation_holds_out_a_tenth():
    X, y = _noise(50)
    drop = ("seconds", "samples_per_s")
    records = [[{k: v for k, v in r.items() if k not in drop}
                for r in gpunet.train(gpunet.Network([5, 4, 3], backend="numpy"), X, y, epochs=3, early_stopping=5,
                                      **how)] for how in ({}, {"validation": 0.1}, {"validation": 0.2})]
    assert records[0] == records[1] != records[2]
    assert [r["best_epoch"] for r in records[0]] == [1, 1, 1] and all(r["val_loss"] > 0 for r in records[0])
    assert defaults.EARLY_STOPPING_VALIDATION == 0.1
    with pytest.raises(ValueError, match=r"early_stopping must be an integer >= 1; got 0"):
        gpunet.train(gpunet.Network([5, 3], backend="numpy"), X, y, early_stopping=0)


def test_without_early_stopping_records_have_no_best_epoch():
    X, y = _noise(50)
    history = gpunet.train(gpunet.Network([5, 3], backend="numpy"), X, y, epochs=2, validation=0.2)
    assert "best_epoch" not in history[0] and history[0]["val_loss"] is not None


def test_progress_is_a_bar_on_stderr_only_when_asked(capsys):
    X, y = _noise(30)
    gpunet.train(gpunet.Network([5, 3], backend="numpy"), X, y, epochs=2)
    assert capsys.readouterr() == ("", "")
    gpunet.train(gpunet.Network([5, 3], backend="numpy"), X, y, epochs=2, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "2/2" in err and "epoch" in err and "train_loss" in err
    with pytest.raises(TypeError, match=r"progress must be True or False; got 'yes'"):
        gpunet.train(gpunet.Network([5, 3], backend="numpy"), X, y, progress="yes")


def test_the_callback_gets_each_record_and_only_true_stops():
    X, y = _noise(30)
    records = []
    history = gpunet.train(gpunet.Network([5, 3], backend="numpy"), X, y, epochs=4,
                           callback=lambda r: records.append(r) or 1)  # truthy, but not True: goes on
    assert records == history and len(history) == 4
    assert set(history[0]) == {"epoch", "lr", "train_loss", "test_loss", "test_accuracy", "seconds", "samples_per_s"}
    history = gpunet.train(gpunet.Network([5, 3], backend="numpy"), X, y, epochs=4,
                           callback=lambda r: r["epoch"] == 2)
    assert [r["epoch"] for r in history] == [1, 2]


def test_checks_and_validation_on_every_backend(backend):
    """The same checks on device data (one flag read back), and a held-out fraction taken on the device."""
    X, y = _noise(40, 4, 3, seed=3)
    net = gpunet.Network([4, 5, 3], seed=1, backend=backend, dtype="float64")
    bad = backend.to_device(X.copy(), net.dtype)
    bad[2, 3] = np.inf
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity; got inf at row 2, column 3$"):
        net.predict(bad)
    with pytest.raises(ValueError, match=r"^X_train contains NaN or infinity; got inf at row 2, column 3$"):
        gpunet.train(net, bad, y, epochs=1)
    history = gpunet.train(net, backend.to_device(X, net.dtype), y, epochs=2, validation=0.25, early_stopping=1)
    reference = gpunet.Network([4, 5, 3], seed=1, backend="numpy", dtype="float64")
    expected = gpunet.train(reference, X, y, epochs=2, validation=0.25, early_stopping=1)
    assert [r["best_epoch"] for r in history] == [r["best_epoch"] for r in expected]
    assert [r["val_loss"] for r in history] == pytest.approx([r["val_loss"] for r in expected], rel=1e-9)
