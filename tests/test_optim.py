"""Optimisers: PyTorch's momentum convention with a changing learning rate, weight decay by
dimension, instances that refuse extra hyperparameters, step counting, old momentum checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet.engines.plain import train_per_sample
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.optim import make_optimizer

LRS = [0.1, 0.1, 0.05, 0.05, 0.02, 0.3, 0.01]  # a changing learning rate, as lr_decay or a schedule gives


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(4), "W2": rng.standard_normal((4, 2))}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in LRS]
    return params, grads


def _pytorch_momentum_by_hand(p, grads, lrs, mu, wd):
    """torch.optim.SGD(momentum=mu, weight_decay=wd) written out: g += wd p; buf = mu buf + g; p -= lr buf."""
    p, buf = p.copy(), None
    for g, lr in zip(grads, lrs):
        g = g + wd * p if p.ndim >= 2 else g
        buf = g.copy() if buf is None else mu * buf + g
        p = p - lr * buf
    return p


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_momentum_follows_pytorch_formulas_with_a_changing_lr(wd):
    params, grads = _problem()
    start = {k: v.copy() for k, v in params.items()}
    opt = gpunet.Momentum(momentum=0.9, weight_decay=wd)
    for g, lr in zip(grads, LRS):
        opt.step(params, {k: v.copy() for k, v in g.items()}, lr)
    for k in params:
        want = _pytorch_momentum_by_hand(start[k], [g[k] for g in grads], LRS, 0.9, wd)
        np.testing.assert_allclose(params[k], want, rtol=1e-13, atol=1e-15, err_msg=k)


def test_momentum_differs_from_the_old_convention_when_lr_changes():
    # The old rule (v = mu v - lr g, p += v) gives another trajectory once lr changes: the test above can fail.
    params, grads = _problem()
    p, v = params["W1"].copy(), np.zeros((3, 4))
    for g, lr in zip(grads, LRS):
        v = 0.9 * v - lr * g["W1"]
        p = p + v
    new = _pytorch_momentum_by_hand(params["W1"], [g["W1"] for g in grads], LRS, 0.9, 0.0)
    assert np.abs(p - new).max() > 1e-3


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_momentum_matches_torch_sgd_step_for_step(wd):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'gpunet[bench]')")
    params, grads = _problem(1)
    tparams = [torch.tensor(v.copy(), dtype=torch.float64, requires_grad=True) for v in params.values()]
    # PyTorch decays every parameter it is given; gpunet only those with two or more dimensions.
    groups = [{"params": [t], "weight_decay": wd if t.ndim >= 2 else 0.0} for t in tparams]
    topt = torch.optim.SGD(groups, lr=LRS[0], momentum=0.9)
    opt = gpunet.Momentum(momentum=0.9, weight_decay=wd)
    for g, lr in zip(grads, LRS):
        for group in topt.param_groups:
            group["lr"] = lr
        for t, gk in zip(tparams, g.values()):
            t.grad = torch.tensor(gk, dtype=torch.float64)
        topt.step()
        opt.step(params, {k: v.copy() for k, v in g.items()}, lr)
        for (k, p), t in zip(params.items(), tparams):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-13, atol=1e-15, err_msg=k)


def test_weight_decay_applies_to_parameters_with_two_or_more_dimensions_whatever_their_names():
    opt = gpunet.SGD(weight_decay=0.5)
    params = {"kernel": np.ones((2, 2)), "Wbias": np.ones(2), "bias": np.ones(2)}
    opt.step(params, {k: np.zeros_like(v) for k, v in params.items()}, lr=0.1)
    np.testing.assert_allclose(params["kernel"], np.full((2, 2), 0.95))  # 1 - 0.1 * 0.5 * 1
    np.testing.assert_array_equal(params["Wbias"], np.ones(2))  # named like a weight, but a vector: not decayed
    np.testing.assert_array_equal(params["bias"], np.ones(2))


@pytest.mark.parametrize("instance", [gpunet.SGD(), gpunet.Momentum(), gpunet.Adam()])
def test_an_instance_with_weight_decay_raises(instance):
    with pytest.raises(ValueError, match=rf"weight_decay=0.01 cannot be combined with an optimizer instance "
                                         rf"\({type(instance).__name__}\); .*gpunet.{type(instance).__name__}"
                                         rf"\(weight_decay=0.01\)"):
        make_optimizer(instance, weight_decay=0.01)
    net = gpunet.Network.article([2, 2], backend="numpy")
    with pytest.raises(ValueError, match="cannot be combined with an optimizer instance"):
        gpunet.train(net, np.ones((2, 2)), np.array([0, 1]), optimizer=instance, weight_decay=0.01)
    assert make_optimizer(instance) is instance and make_optimizer(instance, weight_decay=0.0) is instance


@pytest.mark.parametrize("batch_size, optimizer, steps", [(1, "sgd", 2 * 50), (7, "sgd", 2 * 8), (1, "adam", 2 * 50)])
def test_optimizer_counts_its_own_steps(batch_size, optimizer, steps):
    # batch 1 with plain SGD goes through train_per_sample_unchecked in chunks; each row is one step
    X, y = np.random.default_rng(0).uniform(size=(50, 4)), np.arange(50) % 3
    opt = make_optimizer(optimizer)
    gpunet.train(gpunet.Network.article([4, 5, 3], backend="numpy"), X, y, epochs=2, batch_size=batch_size,
                 optimizer=opt, lr=0.01)
    assert opt.t == steps
    net = gpunet.Network.article([4, 5, 3], backend="numpy")
    sgd = gpunet.SGD()
    train_per_sample(net, X[:9], net.targets_from_labels(y[:9]), lr=0.1, optimizer=sgd)
    assert sgd.t == 9


def test_train_per_sample_refuses_an_optimizer_it_cannot_honour():
    net = gpunet.Network.article([4, 3], backend="numpy")
    for opt in (gpunet.Adam(), gpunet.SGD(weight_decay=0.1), "sgd"):
        with pytest.raises(ValueError, match="train_per_sample needs plain SGD without weight decay"):
            train_per_sample(net, np.ones((2, 4)), np.ones((2, 3)), lr=0.1, optimizer=opt)


def _old_momentum_checkpoint(path, net, v, t):
    """A checkpoint as gpunet wrote it before PyTorch's convention: the velocity under "v.<name>"."""
    opt = gpunet.Momentum(momentum=0.9)
    save_checkpoint(path, net, opt, {"note": "old convention"})
    with np.load(path) as z:
        arrays = dict(z)
    arrays.update({f"optim/v.{k}": a for k, a in v.items()})
    header = str(arrays["header"]).replace('"t": 0', f'"t": {t}')
    arrays["header"] = np.array(header)
    np.savez(path, **arrays)


def test_old_momentum_checkpoint_loads_and_its_next_step_is_the_old_rules(tmp_path):
    rng = np.random.default_rng(3)
    net = gpunet.Network.article([3, 4, 2], backend="numpy", dtype="float64", seed=2)
    v = {k: 0.01 * rng.standard_normal(p.shape) for k, p in net.get_params().items()}
    _old_momentum_checkpoint(tmp_path / "old.npz", net, v, t=5)
    loaded, opt, _ = load_checkpoint(tmp_path / "old.npz", "numpy")
    assert opt.t == 5 and sorted(opt.state) == sorted(f"v.{k}" for k in v)
    X, T = rng.uniform(size=(6, 3)), rng.uniform(size=(6, 2))
    before, g = loaded.get_params(), {k: gpunet.backend.to_numpy(a).copy() for k, a in loaded.gradients(X, T).items()}
    lr = 0.05
    loaded.train_step(X, T, lr=lr, optimizer=opt)
    for k, p in loaded.get_params().items():
        want_v = 0.9 * v[k] - lr * g[k]  # the old rule, one step
        np.testing.assert_allclose(p, before[k] + want_v, rtol=1e-12, atol=1e-15, err_msg=k)
        np.testing.assert_allclose(opt.state[f"buf.{k}"], -want_v / lr, rtol=1e-12, atol=1e-15, err_msg=k)
    assert opt.t == 6 and not any(key.startswith("v.") for key in opt.state)


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_loaded_state_is_a_copy_the_steps_never_write_into_the_callers_arrays(name):
    # load_state_dict used np.asarray: with the same dtype that is no copy, so the first step rewrote the
    # arrays of the checkpoint (or state_dict) it was restored from.
    net = gpunet.Network.article([4, 3, 2], backend="numpy", dtype="float64", seed=1)
    X, T = np.random.default_rng(0).random((5, 4)), np.eye(2)[[0, 1, 0, 1, 1]]
    first = make_optimizer(name)
    net.train_step(X, T, lr=0.1, optimizer=first)
    saved = first.state_dict()
    kept = {k: v.copy() for k, v in saved.items() if k != "t"}
    second = make_optimizer(name)
    second.load_state_dict(saved, net.params)
    net.train_step(X, T, lr=0.1, optimizer=second)
    for k, v in kept.items():
        np.testing.assert_array_equal(saved[k], v)
    assert any(not np.array_equal(second.state[k], v) for k, v in kept.items())  # the state did move


# --- AdamW: PyTorch's decoupled weight decay ---------------------------------------------------------

ADAMW_LRS = [1e-2] * 50 + [3e-3] * 50  # 100 steps, the learning rate changed half-way


def _pytorch_adamw_by_hand(p, grads, lrs, wd, beta1=0.9, beta2=0.999, eps=1e-8):
    """torch.optim.AdamW's single-tensor step written out: p *= 1 - lr wd; m, v as Adam's;
    p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        p *= 1 - lr * wd
        m += (g - m) * (1 - beta1)  # exp_avg.lerp_(grad, 1 - beta1)
        v = v * beta2 + (1 - beta2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - beta2**t) + eps
        p -= (lr / (1 - beta1**t)) * m / denom
    return p


def _adamw_problem(seed=3):
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(4), "W2": rng.standard_normal((4, 2))}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in ADAMW_LRS]
    return params, grads


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adamw_follows_pytorch_formulas_over_100_steps_with_a_learning_rate_change(wd):
    params, grads = _adamw_problem()
    start = {k: v.copy() for k, v in params.items()}
    opt = gpunet.AdamW(weight_decay=wd)
    for g, lr in zip(grads, ADAMW_LRS):
        opt.step(params, {k: v.copy() for k, v in g.items()}, lr)
    for k in params:  # gpunet decays the weight matrices, not the bias vectors
        want = _pytorch_adamw_by_hand(start[k], [g[k] for g in grads], ADAMW_LRS, wd if start[k].ndim >= 2 else 0.0)
        np.testing.assert_allclose(params[k], want, rtol=1e-10, atol=1e-12, err_msg=k)
    assert opt.t == 100
    if wd:  # decoupled: not Adam with L2 on the gradient
        adam = gpunet.Adam(weight_decay=wd)
        coupled = {k: v.copy() for k, v in start.items()}
        for g, lr in zip(grads, ADAMW_LRS):
            adam.step(coupled, {k: v.copy() for k, v in g.items()}, lr)
        assert np.abs(coupled["W1"] - params["W1"]).max() > 1e-4


def test_adamw_matches_torch_adamw_step_for_step():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'gpunet[bench]')")
    params, grads = _adamw_problem(4)
    tparams = [torch.tensor(v.copy(), dtype=torch.float64, requires_grad=True) for v in params.values()]
    # PyTorch decays every parameter it is given; gpunet only those with two or more dimensions.
    groups = [{"params": [t], "weight_decay": 0.05 if t.ndim >= 2 else 0.0} for t in tparams]
    topt = torch.optim.AdamW(groups, lr=ADAMW_LRS[0], betas=(0.9, 0.999), eps=1e-8)
    opt = gpunet.AdamW(weight_decay=0.05)
    for g, lr in zip(grads, ADAMW_LRS):
        for group in topt.param_groups:
            group["lr"] = lr
        for t, gk in zip(tparams, g.values()):
            t.grad = torch.tensor(gk, dtype=torch.float64)
        topt.step()
        opt.step(params, {k: v.copy() for k, v in g.items()}, lr)
    for (k, p), t in zip(params.items(), tparams):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_adamw_trains_resumes_exactly_and_is_named_everywhere(tmp_path):
    """gpunet.train, checkpoints (its m and v, its hyperparameters), and the names the CLI and sweeps read."""
    from gpunet.config import TrainConfig
    from gpunet.optim import OPTIMIZERS

    assert OPTIMIZERS["adamw"] is gpunet.AdamW and "AdamW" in gpunet.__all__
    assert TrainConfig(optimizer="adamw", weight_decay=0.01).optimizer == "adamw"
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 6)), rng.integers(0, 3, 40)
    whole = gpunet.Network.article([6, 5, 3], "relu", "softmax", "cross-entropy", seed=1, backend="numpy", dtype="float64")
    gpunet.train(whole, X, y, epochs=4, batch_size=8, lr=0.01, lr_decay=1.0, optimizer=gpunet.AdamW(weight_decay=0.1))
    half = gpunet.Network.article([6, 5, 3], "relu", "softmax", "cross-entropy", seed=1, backend="numpy", dtype="float64")
    opt = make_optimizer("adamw", weight_decay=0.1)
    gpunet.train(half, X, y, epochs=2, batch_size=8, lr=0.01, lr_decay=1.0, optimizer=opt)
    save_checkpoint(tmp_path / "half.npz", half, opt, {})
    net, restored, _ = load_checkpoint(tmp_path / "half.npz", backend="numpy")
    assert type(restored) is gpunet.AdamW and restored.weight_decay == 0.1 and restored.t == opt.t == 10
    assert set(restored.state) == {f"{s}.{k}" for s in ("m", "v") for k in net.params}
    gpunet.train(net, X, y, epochs=4, batch_size=8, lr=0.01, lr_decay=1.0, optimizer=restored, start_epoch=3)
    for k, v in whole.get_params().items():
        np.testing.assert_array_equal(net.get_params()[k], v)
