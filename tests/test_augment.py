"""Input augmentation (gpunet/augment.py): shifts and rotations against images moved by hand, the draws'
determinism, what train feeds each engine (and what it leaves alone), resume mid-epoch, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpunet
import transcriptions
from gpunet import SGD, Adam, Augment, train
from gpunet.augment import Augmenter, as_augment, rotated, shifted
from gpunet.cli import main
from gpunet.config import TrainConfig
from gpunet.datasets import Split, load_digits
from gpunet.engines import select
from gpunet.engines.graph import GraphEngine
from gpunet.engines.plain import PlainEngine
from gpunet.run import Run
from gpunet.training import TrainingInterrupted

from test_schedules import TranscribedPerSampleEpochs


def _moved_by_hand(img, dy, dx, fill):
    """np.roll, then the rows and columns that wrapped around set to ``fill``."""
    out = np.roll(img, (dy, dx), axis=(0, 1))
    if dy > 0:
        out[:dy] = fill
    elif dy < 0:
        out[dy:] = fill
    if dx > 0:
        out[:, :dx] = fill
    elif dx < 0:
        out[:, dx:] = fill
    return out


# --- the images ----------------------------------------------------------------------------------------------


def test_a_shift_worked_by_hand(backend):
    img = np.arange(1.0, 10.0).reshape(1, 9)  # 1 2 3 / 4 5 6 / 7 8 9
    def d(v):
        return backend.to_device(np.array([v]))

    out = backend.to_host(shifted(backend.to_device(img), d(1), d(1), backend.to_device(np.array([[0.5]])), (3, 3)))
    np.testing.assert_array_equal(out.reshape(3, 3), [[0.5, 0.5, 0.5], [0.5, 1, 2], [0.5, 4, 5]])
    out = backend.to_host(shifted(backend.to_device(img), d(-1), d(0), backend.to_device(np.array([[0.0]])), (3, 3)))
    np.testing.assert_array_equal(out.reshape(3, 3), [[4, 5, 6], [7, 8, 9], [0, 0, 0]])


def test_shifts_equal_np_roll_with_the_wrapped_pixels_filled(backend):
    rng = np.random.default_rng(0)
    h, w, K = 5, 7, 40
    X = rng.random((K, h * w)).astype(np.float32)
    dy, dx = rng.integers(-3, 4, K), rng.integers(-3, 4, K)
    fill = rng.random((K, 1)).astype(np.float32)
    got = backend.to_host(shifted(*(backend.to_device(a) for a in (X, dy, dx, fill)), (h, w)))
    assert got.dtype == np.float32
    for k in range(K):
        want = _moved_by_hand(X[k].reshape(h, w), dy[k], dx[k], fill[k, 0])
        np.testing.assert_array_equal(got[k].reshape(h, w), want, err_msg=f"row {k}: ({dy[k]}, {dx[k]})")


def test_a_quarter_turn_is_np_rot90_and_no_turn_is_the_shift(backend):
    rng = np.random.default_rng(1)
    X = rng.random((3, 36))
    zero = np.zeros(3, dtype=np.int64)
    fill = np.full((3, 1), -1.0)
    turned = backend.to_host(rotated(*(backend.to_device(a) for a in (X, zero, zero, np.full(3, 90.0), fill)),
                                     (6, 6)))
    for k in range(3):  # 90 degrees: counterclockwise as the image is shown, row 0 on top
        np.testing.assert_allclose(turned[k].reshape(6, 6), np.rot90(X[k].reshape(6, 6)), rtol=0, atol=1e-12)
    dy, dx = np.array([1, -2, 0]), np.array([0, 1, -1])
    still = backend.to_host(rotated(*(backend.to_device(a) for a in (X, dy, dx, np.zeros(3), fill)), (6, 6)))
    moved = backend.to_host(shifted(*(backend.to_device(a) for a in (X, dy, dx, fill)), (6, 6)))
    np.testing.assert_array_equal(still, moved)


def test_a_small_rotation_interpolates_between_the_four_pixels_around_its_source():
    """A 3x3 image turned 45 degrees: the centre stays, a corner's source point (0, 1 - sqrt 2) falls between
    pixels (-1, .) outside and (0, .) inside, weighted by the distance; the fill stands for those outside."""
    img = np.arange(9.0).reshape(1, 9)
    out = rotated(img, np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([45.0]), np.array([[100.0]]), (3, 3))
    out = out.reshape(3, 3)
    assert out[1, 1] == pytest.approx(4.0, abs=1e-12)
    # out[0, 0]: y = x = -1 from the centre -> source (cy + cos(-1) + sin(-1), cx - sin(-1) + cos(-1)) =
    # (1 - sqrt 2, 1): row 1 - sqrt 2 = -0.414, between row -1 (outside: 100) and row 0 (value 1), column 1
    s = 2**0.5
    frac = (1 - s) - np.floor(1 - s)  # weight of the row below the source point
    assert out[0, 0] == pytest.approx((1 - frac) * 100.0 + frac * 1.0, abs=1e-12)


# --- the draws -------------------------------------------------------------------------------------------------


def test_the_draws_are_a_function_of_seed_epoch_and_row():
    X = np.zeros((500, 64))
    a = Augmenter(Augment(shift=2), X, 7, gpunet.get_backend("numpy"))
    shifts, angles = a.draws(3)
    assert angles is None and shifts.shape == (500, 2)
    assert shifts.min() == -2 and shifts.max() == 2  # every value of [-2, 2] is drawn, none beyond
    assert set(np.unique(shifts)) == {-2, -1, 0, 1, 2}
    np.testing.assert_array_equal(a.draws(3)[0], shifts)  # the same epoch again: the same draws
    assert (a.draws(4)[0] != shifts).any(axis=1).mean() > 0.8  # another epoch: most rows move elsewhere
    b = Augmenter(Augment(shift=2), X, 8, gpunet.get_backend("numpy"))
    assert (b.draws(3)[0] != shifts).any(axis=1).mean() > 0.8  # another seed too
    turned = Augmenter(Augment(shift=2, rotate=15), X, 7, gpunet.get_backend("numpy"))
    more, degrees = turned.draws(3)
    np.testing.assert_array_equal(more, shifts)  # rotate= draws after the shifts: they stay as they were
    assert degrees.shape == (500,) and -15 <= degrees.min() < -10 and 10 < degrees.max() <= 15


def test_the_fill_is_each_images_background_its_smallest_pixel():
    d = load_digits(pixels="original")  # pixels scaled to [0.01, 1.0]
    a = Augmenter(Augment(shift=3), d.X_train, 0, gpunet.get_backend("numpy"))
    np.testing.assert_allclose(a.fill, 0.01)
    out = np.empty_like(d.X_train)
    a.apply(1, out)
    shifts, _ = a.draws(1)
    for k in range(5):
        want = _moved_by_hand(d.X_train[k].reshape(8, 8), *shifts[k], 0.01)
        np.testing.assert_array_equal(out[k].reshape(8, 8), want)


# --- what train does with it ---------------------------------------------------------------------------------


class Recording(PlainEngine):
    """The plain engine, keeping a copy of the training rows it sees at the start of each epoch."""

    seen: list[np.ndarray] = []

    def run_epoch(self, order, lr, loss_sum, start=0, after_step=None):
        Recording.seen.append(self.X.copy())
        super().run_epoch(order, lr, loss_sum, start, after_step)


def test_train_gives_the_engine_each_epochs_images_and_changes_no_data_of_the_caller(monkeypatch):
    d = load_digits()
    X, y = d.X_train[:200].copy(), d.y_train[:200]
    X_test = d.X_test[:50].copy()
    held = X.copy(), X_test.copy()
    Recording.seen = []
    monkeypatch.setattr(select, "engine", lambda net, kernels, opt, X, T, rows, per_sample, step_calls=False:
                        Recording(net, opt, X, T, rows))
    net = gpunet.Network([64, 10, 10], backend="numpy", dtype="float64")
    history = train(net, X, y, epochs=3, seed=9, augment={"shift": 2}, X_test=X_test, y_test=d.y_test[:50])
    np.testing.assert_array_equal(X, held[0])  # the caller's training rows ...
    np.testing.assert_array_equal(X_test, held[1])  # ... and test rows are as they were
    assert history[-1]["test_loss"] == gpunet.evaluate(net, X_test, d.y_test[:50])["test_loss"]  # tested as given
    reference = Augmenter(Augment(shift=2), X, 9, gpunet.get_backend("numpy"))
    for epoch, seen in enumerate(Recording.seen, start=1):
        shifts, _ = reference.draws(epoch)
        for k in (0, 1, 199):
            want = _moved_by_hand(X[k].reshape(8, 8), *shifts[k], X[k].min())
            np.testing.assert_array_equal(seen[k].reshape(8, 8), want, err_msg=f"epoch {epoch}, row {k}")
    assert len(Recording.seen) == 3 and not np.array_equal(Recording.seen[0], Recording.seen[1])


def test_validation_rows_are_never_augmented():
    d = load_digits()
    X, y = d.X_train[:300], d.y_train[:300]
    net = gpunet.Network([64, 10, 10], backend="numpy", dtype="float64")
    history = train(net, X, y, epochs=2, validation=0.2, augment=Augment(shift=2), seed=3)
    held, _ = gpunet.training.validation_rows(300, 0.2, 3)
    want = gpunet.evaluate(net, X[held], y[held])
    assert (history[-1]["val_loss"], history[-1]["val_accuracy"]) == (want["test_loss"], want["test_accuracy"])


def test_augmentation_changes_training_and_none_changes_nothing():
    d = load_digits()
    X, y = d.X_train[:200], d.y_train[:200]
    runs = {}
    for name, augment in (("none", None), ("zero", Augment(shift=0)), ("shift", Augment(shift=1))):
        net = gpunet.Network([64, 10, 10], backend="numpy", dtype="float64")
        runs[name] = [r["train_loss"] for r in train(net, X, y, epochs=2, augment=augment)]
    assert runs["none"] == runs["zero"]  # shift=0 does nothing, not even a copy's rounding
    assert runs["shift"][0] != runs["none"][0]


@pytest.mark.parametrize("path", ["graph", "per-sample-epochs"])
def test_whole_epoch_engines_train_on_the_rewritten_rows(monkeypatch, path):
    """Graph mode gathers from the array it was built with (its captured launches hold its address), and the
    per-sample epochs gather from it each epoch: the rows rewritten in place reach both (through the kernels'
    transcriptions), giving the plain path's numbers."""
    d = load_digits()
    X, y = d.X_train[:90], d.y_train[:90]
    per_sample = path == "per-sample-epochs"
    kw = dict(epochs=3, batch_size=1 if per_sample else 8, lr=0.05, seed=2, augment=Augment(shift=1, rotate=10))
    make = (lambda: gpunet.Network.article([64, 12, 10], backend="numpy", dtype="float64", seed=1)) if per_sample \
        else (lambda: gpunet.Network([64, 12, 10], backend="numpy", dtype="float64", seed=1))
    plain = make()
    want = train(plain, X, y, optimizer=SGD() if per_sample else Adam(), kernels="plain", **kw)
    engine = TranscribedPerSampleEpochs if per_sample else (
        lambda net, opt, X, T, rows: GraphEngine(net, opt, X, T, rows, launcher=transcriptions.graph_launch))
    monkeypatch.setattr(select, "engine", lambda net, kernels, opt, X, T, rows, per_sample, step_calls=False:
                        engine(net, opt, X, T, rows))
    fast = make()
    got = train(fast, X, y, optimizer=SGD() if per_sample else Adam(), **kw)
    for g, w in zip(got, want):
        assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-10)
    for k, v in plain.get_params().items():
        np.testing.assert_allclose(fast.get_params()[k], v, rtol=1e-9, atol=1e-12, err_msg=k)


def test_an_augmented_run_resumed_mid_epoch_continues_exactly():
    d = load_digits()
    X, y = d.X_train[:300], d.y_train[:300]
    kw = dict(epochs=3, batch_size=20, lr=0.01, seed=4, augment=Augment(shift=2, rotate=8),
              lr_schedule="one-cycle", X_test=d.X_test[:100], y_test=d.y_test[:100])
    whole_net = gpunet.Network([64, 20, 10], backend="numpy", seed=5)
    whole = train(whole_net, X, y, optimizer=Adam(), **kw)
    net, opt, asked = gpunet.Network([64, 20, 10], backend="numpy", seed=5), Adam(), []
    with pytest.raises(TrainingInterrupted) as info:  # in epoch 2, after 4 of its 15 steps
        train(net, X, y, optimizer=opt, should_stop=lambda: asked.append(1) or len(asked) == 14 + 4, **kw)
    stop = info.value
    assert (stop.epoch, stop.rows) == (2, 80)
    rest = train(net, X, y, optimizer=opt, start_epoch=2, start_row=80, start_loss=stop.loss_sum, **kw)
    assert [(r["lr"], r["train_loss"], r["test_loss"]) for r in rest] == [
        (r["lr"], r["train_loss"], r["test_loss"]) for r in whole[1:]]
    for k, v in whole_net.get_params().items():
        np.testing.assert_array_equal(net.get_params()[k], v, err_msg=k)


# --- the checks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("augment, error, message", [
    (Augment(shift=1), ValueError, "augment needs the images' height and width: rows of 30 pixels are not square"),
    (Augment(shift=1, image_shape=(4, 8)), ValueError, "augment image_shape (4, 8) holds 32 pixels; the rows have 30"),
    ({"shift": 1, "zoom": 2}, ValueError, "augment has no setting 'zoom'; expected shift, rotate, image_shape"),
    ("shift", TypeError, "augment must be None, a gpunet.Augment or a dict like {'shift': 2}; got str"),
])
def test_train_refuses_an_augmentation_it_cannot_apply(augment, error, message):
    net = gpunet.Network([30, 2], backend="numpy")
    with pytest.raises(error) as info:
        train(net, np.zeros((4, 30)), np.array([0, 1, 0, 1]), epochs=1, augment=augment)
    assert message in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"shift": -1}, "augment shift must be an integer >= 0 (pixels); got -1"),
    ({"shift": 1.5}, "augment shift must be an integer >= 0 (pixels); got 1.5"),
    ({"rotate": 200}, "augment rotate must be a number of degrees in [0, 180]; got 200"),
    ({"image_shape": (0, 4)}, "augment image_shape must be (height, width), two integers >= 1; got (0, 4)"),
])
def test_augment_names_a_wrong_setting(kwargs, message):
    with pytest.raises(ValueError) as info:
        Augment(**kwargs)
    assert str(info.value) == message


def test_rows_of_an_image_shape_given_are_shifted_as_that_shape():
    X = np.arange(12.0).reshape(1, 12)
    a = Augmenter(as_augment({"shift": 1, "image_shape": (3, 4)}), X, 0, gpunet.get_backend("numpy"))
    out = np.empty_like(X)
    a.apply(1, out)
    (dy, dx), = a.draws(1)[0]
    np.testing.assert_array_equal(out.reshape(3, 4), _moved_by_hand(X.reshape(3, 4), dy, dx, 0.0))


# --- the command line and runs ----------------------------------------------------------------------------------


def test_the_command_line_options_reach_train_and_a_resume_keeps_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    real = gpunet.run.train

    def spy(*args, **kwargs):
        seen.append((kwargs["augment"], kwargs["lr_schedule"], kwargs["lr_step"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(gpunet.run, "train", spy)
    common = ["train", "--quiet", "--hidden", "20", "--lr", "0.01", "--lr-schedule", "step", "--lr-step", "2",
              "--augment-shift", "2", "--augment-rotate", "5"]
    assert main([*common, "--epochs", "3", "--out", "whole"]) == 0
    assert seen == [(Augment(shift=2, rotate=5.0), "step", 2)]
    config = json.loads((tmp_path / "whole/config.json").read_text())
    assert (config["augment_shift"], config["augment_rotate"]) == (2, 5.0)
    assert main([*common, "--epochs", "2", "--out", "part"]) == 0
    assert main(["train", "--quiet", "--resume", "part/model.npz", "--epochs", "3"]) == 0
    assert seen[-1] == (Augment(shift=2, rotate=5.0), "step", 2)  # from the checkpoint's config
    whole = [json.loads(x) for x in (tmp_path / "whole/metrics.jsonl").read_text().splitlines()]
    part = [json.loads(x) for x in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in whole] == [0.01, 0.01, 0.001]
    assert [(r["lr"], r["train_loss"], r["test_loss"]) for r in part] == [
        (r["lr"], r["train_loss"], r["test_loss"]) for r in whole]
    plain = ["train", "--quiet", "--hidden", "20", "--lr", "0.01", "--lr-schedule", "step", "--lr-step", "2"]
    assert main([*plain, "--epochs", "1", "--out", "plain"]) == 0
    first = json.loads((tmp_path / "plain/metrics.jsonl").read_text().splitlines()[0])
    assert first["train_loss"] != whole[0]["train_loss"]  # the augmentation changed what was trained


def test_a_run_on_images_that_are_not_square_is_refused_before_anything_is_written(tmp_path):
    rng = np.random.default_rng(0)
    data = Split(rng.random((20, 30)), rng.integers(0, 10, 20), rng.random((5, 30)), rng.integers(0, 10, 5))
    config = TrainConfig(hidden=(5,), epochs=1, augment_shift=1)
    with pytest.raises(ValueError, match="rows of 30 pixels are not square images"):
        Run.new(config, tmp_path / "run", data=data)
    assert not (tmp_path / "run").exists()


def test_augment_images_returns_the_images_train_trains_on_in_an_epoch(monkeypatch):
    d = load_digits()
    X, y = d.X_train[:100].copy(), d.y_train[:100]
    Recording.seen = []
    monkeypatch.setattr(select, "engine", lambda net, kernels, opt, X, T, rows, per_sample, step_calls=False:
                        Recording(net, opt, X, T, rows))
    train(gpunet.Network([64, 10, 10], backend="numpy", dtype="float64"), X, y, epochs=2, seed=5,
          augment={"shift": 1, "rotate": 12})
    for epoch in (1, 2):
        got = gpunet.augment.augment_images(X, {"shift": 1, "rotate": 12}, seed=5, epoch=epoch)
        np.testing.assert_array_equal(got, Recording.seen[epoch - 1])
    np.testing.assert_array_equal(X, d.X_train[:100])  # a new array: X as it was
    same = gpunet.augment.augment_images(X, None)
    assert same is not X and np.array_equal(same, X)
    with pytest.raises(ValueError, match=r"X must be a 2-D float NumPy or CuPy array of images, one a row; got "
                                         r"shape \(100,\) float64"):
        gpunet.augment.augment_images(X[:, 0], {"shift": 1})


def test_the_images_are_made_a_chunk_of_rows_at_a_time_with_each_rows_own_draws(monkeypatch):
    X = np.random.default_rng(2).random((23, 16))
    whole = {}
    for chunk in (4096, 5):  # one chunk, and five chunks the last of them short
        monkeypatch.setattr(gpunet.augment, "CHUNK", chunk)
        for spec in (Augment(shift=2), Augment(shift=1, rotate=30)):
            a = Augmenter(spec, X, 3, gpunet.get_backend("numpy"))
            out = np.full_like(X, np.nan)
            a.apply(2, out)
            whole.setdefault(spec, out)
            np.testing.assert_array_equal(out, whole[spec])
            shifts, degrees = a.draws(2)
            for k in (0, 4, 5, 22):
                want = (shifted(X[k : k + 1], shifts[k : k + 1, 0], shifts[k : k + 1, 1], X[k : k + 1].min(keepdims=True),
                                (4, 4)) if degrees is None else
                        rotated(X[k : k + 1], shifts[k : k + 1, 0], shifts[k : k + 1, 1], degrees[k : k + 1],
                                X[k : k + 1].min(keepdims=True), (4, 4)))
                np.testing.assert_array_equal(out[k : k + 1], want, err_msg=f"chunk {chunk}, row {k}")
