"""The swap: one script written for scikit-learn's MLPClassifier, run as it is and with the class name changed to
GPUNetClassifier, gives fitted attributes of the same names and shapes and test accuracies within 2 points."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

# The script, as a scikit-learn user writes it; the swap changes the class name and nothing else.
SCRIPT = """
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
clf = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", solver="adam", alpha=1e-4, batch_size=64,
                    learning_rate_init=0.01, max_iter=25, tol=1e-4, n_iter_no_change=10, random_state=0)
clf.fit(X_train, y_train)
accuracy = clf.score(X_test, y_test)
proba = clf.predict_proba(X_test[:5])
"""

ATTRIBUTES = ("classes_", "n_features_in_", "n_layers_", "n_outputs_", "out_activation_", "validation_scores_",
              "best_validation_score_")


def run(class_name: str) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    from gpunet.sklearn import GPUNetClassifier

    classes = {"MLPClassifier": MLPClassifier, "GPUNetClassifier": GPUNetClassifier}
    scope = {"load_digits": load_digits, "train_test_split": train_test_split, class_name: classes[class_name]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 25 epochs, by design: both warn alike
        exec(compile(SCRIPT.replace("MLPClassifier", class_name), f"<{class_name}>", "exec"), scope)
    return scope


@pytest.fixture(scope="module")
def both() -> tuple[dict, dict]:
    return run("MLPClassifier"), run("GPUNetClassifier")


def test_the_script_runs_with_the_class_name_changed(both):
    theirs, ours = both
    assert type(ours["clf"]).__name__ == "GPUNetClassifier" and type(theirs["clf"]).__name__ == "MLPClassifier"
    a, b = theirs["clf"], ours["clf"]
    for name in ATTRIBUTES:
        np.testing.assert_equal(getattr(b, name), getattr(a, name), err_msg=name)
    assert [c.shape for c in b.coefs_] == [c.shape for c in a.coefs_] == [(64, 64), (64, 10)]
    assert [c.shape for c in b.intercepts_] == [c.shape for c in a.intercepts_] == [(64,), (10,)]
    for est in (a, b):  # the same bookkeeping on both sides
        assert len(est.loss_curve_) == est.n_iter_ and est.loss_ == est.loss_curve_[-1]
        assert est.best_loss_ == min(est.loss_curve_) and est.t_ == est.n_iter_ * 1347
    assert b.n_iter_ == a.n_iter_ == 25  # neither converged by tol in 25 epochs
    assert ours["proba"].shape == theirs["proba"].shape == (5, 10)
    # the losses follow the same course (their initial weights and batches differ): the first epoch's within 10%,
    # and both fall by more than 20 times in 25 epochs
    assert abs(b.loss_curve_[0] / a.loss_curve_[0] - 1) < 0.1
    assert b.loss_ < b.loss_curve_[0] / 20 and a.loss_ < a.loss_curve_[0] / 20


def test_test_accuracies_within_two_points(both):
    theirs, ours = both
    print(f"test accuracy: MLPClassifier {theirs['accuracy']:.4f}, GPUNetClassifier {ours['accuracy']:.4f}")
    assert theirs["accuracy"] > 0.95 and abs(ours["accuracy"] - theirs["accuracy"]) <= 0.02
