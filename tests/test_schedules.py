"""Learning-rate schedules (gpunet/schedules.py): each against a table worked by hand, the checks, and the same
schedule on every training path that runs here, resumed mid-epoch and from the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import gpunet
import transcriptions
from gpunet import SGD, Adam, train
from gpunet.cli import main
from gpunet.config import TrainConfig
from gpunet.datasets import load_digits
from gpunet.engines import select
from gpunet.engines.engine import Engine, StepEngine
from gpunet.engines.fused import FusedStep
from gpunet.engines.graph import GraphEngine
from gpunet.engines.per_sample import PerSampleEpochs
from gpunet.schedules import check_schedule, learning_rate
from gpunet.training import TrainingInterrupted

C = math.cos(math.pi / 4)


def rates(epochs, lr, schedule, **settings):
    return [learning_rate(e, epochs, lr, schedule, **settings) for e in range(1, epochs + 1)]


# --- each schedule against a table worked by hand ---------------------------------------------------------


def test_step_multiplies_by_gamma_every_lr_step_epochs():
    assert rates(7, 0.8, "step", lr_step=3, lr_gamma=0.5) == [0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2]
    assert rates(3, 1.0, "step", lr_step=1) == pytest.approx([1.0, 0.1, 0.01], rel=1e-15)  # gamma 0.1 by default


def test_cosine_without_warm_up_is_pytorchs_cosine_annealing_per_epoch():
    # t = (e - 1) / 4: cos(0) = 1, cos(pi/4), cos(pi/2) = 0, cos(3pi/4); the last epoch stays above lr_min
    want = [1.0, (1 + C) / 2, 0.5, (1 - C) / 2]
    assert rates(4, 1.0, "cosine") == pytest.approx(want, abs=1e-15)
    # with a floor of 0.2: 0.2 + 0.8 * the same
    assert rates(4, 1.0, "cosine", lr_min=0.2) == pytest.approx([0.2 + 0.8 * w for w in want], abs=1e-15)
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.2)
    theirs = []
    for _ in range(4):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates(4, 1.0, "cosine", lr_min=0.2) == pytest.approx(theirs, abs=1e-12)


def test_cosine_warms_up_linearly_to_lr_then_anneals():
    # W = 2 of 6 epochs: lr e/3 for e = 1, 2; lr at epoch 3; then t = 1/4, 2/4, 3/4 of the cosine
    want = [1 / 3, 2 / 3, 1.0, (1 + C) / 2, 0.5, (1 - C) / 2]
    got = rates(6, 1.0, "cosine", warmup_epochs=2)
    assert got == pytest.approx(want, abs=1e-15)
    assert got[2] == 1.0 and max(got) == 1.0  # the peak is lr itself, reached once


def test_one_cycle_rises_from_lr_over_lr_div_then_anneals():
    # 10 epochs: warm-up 3 (0.3 of them) from 2/25 = 0.08 to 2 in steps of (2 - 0.08) / 3 = 0.64, then t = k/7
    got = rates(10, 2.0, "one-cycle")
    assert got[:4] == pytest.approx([0.08, 0.72, 1.36, 2.0], abs=1e-14)
    assert got[4:] == pytest.approx([1 + math.cos(math.pi * k / 7) for k in range(1, 7)], abs=1e-14)
    assert got[-1] == pytest.approx(2 * 0.0495155660, abs=1e-9)  # (1 - cos(pi / 7)), lr 2
    # settings given: 1 warm-up epoch of 4, from 1/4, down towards 0.1
    got = rates(4, 1.0, "one-cycle", warmup_epochs=1, lr_div=4, lr_min=0.1)
    assert got == pytest.approx([0.25, 1.0, 0.1 + 0.9 * 0.75, 0.1 + 0.9 * 0.25], abs=1e-15)


def test_exponential_is_bit_identical_to_the_formula_train_always_used():
    for lr, decay in ((0.1, 1.0), (0.004, 0.5), (0.3, 0.9), (1e-3, 0.97), (0.05, 1)):
        for e in range(1, 40):
            assert learning_rate(e, 40, lr, lr_decay=decay) == lr * decay ** (e - 1)  # exactly, not approximately


def test_the_schedule_is_the_one_whose_settings_are_given_else_cosine():
    d = load_digits()
    X, y = d.X_train[:60], d.y_train[:60]

    def lrs(**settings):
        net = gpunet.Network([64, 8, 10], backend="numpy", seed=1)
        return [r["lr"] for r in train(net, X, y, epochs=5, lr=0.1, optimizer="sgd", **settings)]

    assert lrs() == rates(5, 0.1, "cosine", warmup_epochs=0, lr_min=0.0)  # gpunet.defaults.LR_SCHEDULE
    assert lrs(warmup_epochs=1) == rates(5, 0.1, "cosine", warmup_epochs=1, lr_min=0.0)
    assert lrs(lr_decay=0.5) == [0.1 * 0.5 ** k for k in range(5)]
    assert lrs(lr_decay=1.0) == [0.1] * 5  # a constant rate, as before the default was cosine
    assert lrs(lr_step=2) == rates(5, 0.1, "step", lr_step=2, lr_gamma=0.1)
    assert lrs(lr_div=10.0) == rates(5, 0.1, "one-cycle", warmup_epochs=2, lr_min=0.0, lr_div=10.0)
    with pytest.raises(ValueError, match=r"lr_step= \(2\) is a setting of lr_schedule='step', not of "
                                         r"lr_schedule='exponential'"):
        lrs(lr_decay=0.5, lr_step=2)
    with pytest.raises(ValueError, match="lr_decay= \\(0.5\\) is a setting of lr_schedule='exponential'"):
        lrs(lr_decay=0.5, lr_schedule="cosine")
    # a config names its schedule when it is made, and records it: a config saved before schedules existed
    # (lr_decay, no lr_schedule) reads as the exponential schedule it trained with
    assert TrainConfig().lr_schedule == "cosine" and TrainConfig().lr_decay is None
    assert (TrainConfig(lr_decay=0.9).lr_schedule, TrainConfig(lr_schedule="exponential").lr_decay) == ("exponential", 1.0)
    assert TrainConfig.from_dict({"lr": 0.01, "lr_decay": 1.0}).to_dict()["lr_schedule"] == "exponential"
    assert TrainConfig(lr_step=3).to_dict()["lr_schedule"] == "step"


def test_a_schedule_reaches_train_records_and_each_epoch_trains_at_its_rate():
    """The records' lr is the schedule's; an epoch at the scheduled rate is what train ran: a network trained
    epoch by epoch at constant rates ends with the same weights."""
    d = load_digits()
    X, y = d.X_train[:200], d.y_train[:200]
    scheduled = gpunet.Network([64, 12, 10], backend="numpy", dtype="float64", seed=3)
    history = train(scheduled, X, y, epochs=4, batch_size=10, lr=0.1, optimizer="sgd", seed=2,
                    lr_schedule="cosine", warmup_epochs=1, lr_min=0.01)
    want = rates(4, 0.1, "cosine", warmup_epochs=1, lr_min=0.01)
    assert [r["lr"] for r in history] == want
    # t = 1/3, 2/3 after the peak at epoch 2: cos = 0.5, -0.5
    assert want == pytest.approx([0.05, 0.1, 0.01 + 0.09 * 0.75, 0.01 + 0.09 * 0.25], abs=1e-15)
    by_hand = gpunet.Network([64, 12, 10], backend="numpy", dtype="float64", seed=3)
    for e, rate in enumerate(want, start=1):  # one epoch a call, at a constant rate: the same order by start_epoch
        train(by_hand, X, y, epochs=e, start_epoch=e, batch_size=10, lr=rate, lr_decay=1.0, optimizer="sgd", seed=2)
    for k, v in scheduled.get_params().items():
        np.testing.assert_array_equal(by_hand.get_params()[k], v, err_msg=k)


# --- the checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"lr_schedule": "linear"}, "lr_schedule must be one of exponential, step, cosine, one-cycle; got 'linear'"),
    ({"lr_schedule": "step"}, "lr_schedule='step' needs lr_step="),
    ({"lr_schedule": "step", "lr_step": 0}, "lr_step must be an integer >= 1; got 0"),
    ({"lr_schedule": "step", "lr_step": 2, "lr_gamma": 1.0}, "lr_gamma must be a number in (0, 1)"),
    ({"lr_schedule": "cosine", "lr_step": 2}, "lr_step= (2) is a setting of lr_schedule='step', not of "
                                              "lr_schedule='cosine'"),
    ({"lr_schedule": "cosine", "lr_decay": 0.5}, "lr_decay= (0.5) is a setting of lr_schedule='exponential'"),
    ({"lr_schedule": "step", "lr_step": 1, "warmup_epochs": 1},
     "warmup_epochs= (1) is a setting of lr_schedule='cosine' or 'one-cycle', not of lr_schedule='step'"),
    ({"lr_schedule": "cosine", "lr_div": 10}, "lr_div= (10) is a setting of lr_schedule='one-cycle'"),
    ({"lr_schedule": "cosine", "warmup_epochs": 5}, "warmup_epochs= must be below epochs= (5)"),
    ({"lr_schedule": "one-cycle", "warmup_epochs": -1}, "warmup_epochs must be an integer >= 0; got -1"),
    ({"lr_schedule": "cosine", "lr_min": 0.5}, "lr_min= must be below lr= (0.5)"),
    ({"lr_schedule": "cosine", "lr_min": -0.1}, "lr_min must be a finite number >= 0; got -0.1"),
    ({"lr_schedule": "one-cycle", "lr_div": 0.5}, "lr_div must be a finite number >= 1"),
    ({"lr_decay": 1.5}, "lr_decay must be in (0, 1]; got 1.5"),
])
def test_a_wrong_schedule_setting_is_named_with_what_was_expected(kwargs, message):
    with pytest.raises(ValueError) as info:
        check_schedule(0.5, 5, **kwargs)
    assert message in str(info.value)
    net = gpunet.Network([3, 2], backend="numpy")
    with pytest.raises(ValueError) as info:  # train checks before it trains
        train(net, np.zeros((4, 3)), np.array([0, 1, 0, 1]), epochs=5, lr=0.5, **kwargs)
    assert message in str(info.value)


# --- every path that runs here ------------------------------------------------------------------------------


class TranscribedFused(StepEngine):
    """The fused engine's steps with its kernels run by their NumPy transcriptions."""

    def __init__(self, net, optimizer, X, T, rows):
        super().__init__(net, optimizer, X, T, rows)
        self.fused = FusedStep(net, transcriptions.NumpyKernels())

    def step(self, X, T, lr):
        return self.fused(X, T, lr, self.optimizer)


class TranscribedPerSampleEpochs(Engine):
    """Graph mode's per-sample epochs (PerSampleEpochs) with their launches run by the transcriptions."""

    whole_epochs = True

    def __init__(self, net, optimizer, X, T, rows):
        super().__init__(net, optimizer, X, T, rows)
        self.epochs = PerSampleEpochs(net, optimizer, X, T, rows, launcher=transcriptions.per_sample_launch)

    def run_epoch(self, order, lr, loss_sum, start=0, after_step=None):
        assert start == 0
        loss_sum += self.epochs.run_epoch(order, lr)
        if after_step is not None:
            after_step(self.X.shape[0], loss_sum)


def transcribed_graph(net, optimizer, X, T, rows):
    return GraphEngine(net, optimizer, X, T, rows, launcher=transcriptions.graph_launch)


def _with_engine(monkeypatch, make):
    monkeypatch.setattr(select, "engine", lambda net, kernels, opt, X, T, rows, per_sample, step_calls=False:
                        make(net, opt, X, T, rows))


@pytest.mark.parametrize("path", ["fused", "graph"])
def test_batch_paths_run_a_schedule_as_the_plain_path(monkeypatch, path):
    d = load_digits()
    X, y = d.X_train[:120], d.y_train[:120]
    kw = dict(epochs=3, batch_size=16, lr=0.05, seed=4, lr_schedule="one-cycle", warmup_epochs=1, lr_div=5)
    plain = gpunet.Network([64, 16, 10], backend="numpy", dtype="float64", seed=1)
    want = train(plain, X, y, optimizer=Adam(), kernels="plain", **kw)
    fast = gpunet.Network([64, 16, 10], backend="numpy", dtype="float64", seed=1)
    _with_engine(monkeypatch, TranscribedFused if path == "fused" else transcribed_graph)
    got = train(fast, X, y, optimizer=Adam(), **kw)
    assert [r["lr"] for r in got] == [r["lr"] for r in want] == [0.01, 0.05, 0.025]
    for g, w in zip(got, want):
        assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-12)
    for k, v in plain.get_params().items():
        np.testing.assert_allclose(fast.get_params()[k], v, rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("path", ["plain", "per-sample-epochs"])
def test_per_sample_paths_run_a_schedule_as_train_step_row_by_row(monkeypatch, path):
    """batch_size=1 plain SGD (the Gram-chunk engine, and graph mode's per-sample epochs through the kernel's
    transcription) against Network.train_step on each row in the epoch's order at the scheduled rate."""
    d = load_digits()
    X, y = d.X_train[:70], d.y_train[:70]
    kw = dict(epochs=3, batch_size=1, lr=0.05, seed=6, lr_schedule="step", lr_step=2, lr_gamma=0.5)
    net = gpunet.Network.article([64, 12, 10], backend="numpy", dtype="float64", seed=2)
    if path == "per-sample-epochs":
        _with_engine(monkeypatch, TranscribedPerSampleEpochs)
    history = train(net, X, y, optimizer=SGD(), kernels="plain", **kw)
    assert [r["lr"] for r in history] == [0.05, 0.05, 0.025]
    ref = gpunet.Network.article([64, 12, 10], backend="numpy", dtype="float64", seed=2)
    T = ref.targets_from_labels(y)
    for e, rate in enumerate([0.05, 0.05, 0.025], start=1):
        for row in np.random.default_rng([6, e]).permutation(len(y)):
            ref.train_step(X[row : row + 1], T[row : row + 1], rate)
    for k, v in ref.get_params().items():
        np.testing.assert_allclose(net.get_params()[k], v, rtol=1e-9, atol=1e-12, err_msg=k)


def test_a_scheduled_run_resumed_mid_epoch_continues_exactly():
    d = load_digits()
    X, y = d.X_train[:300], d.y_train[:300]
    kw = dict(epochs=4, batch_size=20, lr=0.01, seed=1, lr_schedule="cosine", warmup_epochs=1, lr_min=0.001,
              X_test=d.X_test[:100], y_test=d.y_test[:100])
    whole_net, whole_opt = gpunet.Network([64, 20, 10], backend="numpy", seed=5), Adam()
    whole = train(whole_net, X, y, optimizer=whole_opt, **kw)
    net, opt, steps = gpunet.Network([64, 20, 10], backend="numpy", seed=5), Adam(), []
    with pytest.raises(TrainingInterrupted) as info:  # stop in epoch 3 after 7 of its 15 steps (asked after 14 a
        # whole epoch: not after its last)
        train(net, X, y, optimizer=opt, should_stop=lambda: steps.append(1) or len(steps) == 14 + 14 + 7, **kw)
    stop = info.value
    assert (stop.epoch, stop.rows) == (3, 140)
    rest = train(net, X, y, optimizer=opt, start_epoch=stop.epoch, start_row=stop.rows, start_loss=stop.loss_sum,
                 **kw)
    assert [(r["lr"], r["train_loss"], r["test_loss"]) for r in rest] == [
        (r["lr"], r["train_loss"], r["test_loss"]) for r in whole[2:]]
    for k, v in whole_net.get_params().items():
        np.testing.assert_array_equal(net.get_params()[k], v, err_msg=k)


# --- the command line and the config -----------------------------------------------------------------------


def test_the_command_line_trains_on_a_schedule_and_a_resume_keeps_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["train", "--quiet", "--hidden", "20", "--lr", "0.01", "--lr-schedule", "step", "--lr-step", "2",
              "--lr-gamma", "0.25"]
    assert main([*common, "--epochs", "3", "--out", "whole"]) == 0
    whole = [json.loads(x) for x in (tmp_path / "whole/metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in whole] == [0.01, 0.01, 0.0025]
    config = json.loads((tmp_path / "whole/config.json").read_text())
    assert (config["lr_schedule"], config["lr_step"], config["lr_gamma"]) == ("step", 2, 0.25)
    assert main([*common, "--epochs", "2", "--out", "part"]) == 0
    assert main(["train", "--quiet", "--resume", "part/model.npz", "--epochs", "3"]) == 0
    part = [json.loads(x) for x in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert [(r["lr"], r["train_loss"], r["test_loss"]) for r in part] == [
        (r["lr"], r["train_loss"], r["test_loss"]) for r in whole]


def test_the_command_line_names_a_schedule_setting_it_cannot_use(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quiet", "--lr-schedule", "cosine", "--lr-step", "2", "--out", "r"]) == 2
    err = capsys.readouterr().err
    assert err == ("gpunet train: error: --lr-step (2) is a setting of --lr-schedule step, not of "
                   "--lr-schedule cosine\n")
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_train_config_checks_each_schedule_setting_and_prints_its_command():
    with pytest.raises(ValueError, match=r"lr_gamma must be a number in \(0, 1\); got 2"):
        TrainConfig(lr_schedule="step", lr_step=1, lr_gamma=2)
    with pytest.raises(ValueError, match="lr_schedule must be one of exponential, step, cosine, one-cycle"):
        TrainConfig(lr_schedule="warm")
    config = TrainConfig.from_dict({"lr_schedule": "cosine", "warmup_epochs": 2, "lr_min": 1e-5})
    assert config.command() == "gpunet train --warmup-epochs 2 --lr-min 1e-05"  # cosine: the default
