"""Many models in one pass (gpunet.many.train_many): each model of a group equals its solo gpunet.train run.

The stacked path batches every model's products, so the only way a group can differ from its solo runs is a
BLAS summing a batched product in another order: float64 is held to 1e-10 relative (and to the bit where each
model's products are the same calls as its solo run's), float32 to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.datasets import load_digits
from gpunet.many import History, models_that_fit, train_many
from gpunet.memory import DeviceMemoryError
from gpunet.training import DivergenceError

from conftest import require

DIGITS = load_digits()
X, y, X_TEST, Y_TEST = DIGITS.X_train[:600], DIGITS.y_train[:600], DIGITS.X_test[:200], DIGITS.y_test[:200]
NET_SEEDS = [5, 6, 7]
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


def nets(sizes=(64, 24, 10), dtype="float64", seeds=NET_SEEDS, **kwargs):
    return [gpunet.Network(list(sizes), seed=s, dtype=dtype, backend="numpy", **kwargs) for s in seeds]


def relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-300))


def assert_like_solo(group, solos, histories, solo_histories, dtype, exact=False):
    for k, (net, solo) in enumerate(zip(group, solos)):
        for name in solo.params:
            if exact:
                np.testing.assert_array_equal(net.params[name], solo.params[name], err_msg=f"model {k} {name}")
            else:
                assert relative(net.params[name], solo.params[name]) <= TOLERANCE[dtype], (k, name)
        assert len(histories[k]) == len(solo_histories[k])
        for got, want in zip(histories[k], solo_histories[k]):
            for key in ("epoch", "lr", "test_accuracy", "val_accuracy", "best_epoch"):
                assert got.get(key) == want.get(key), (k, key)
            for key in ("train_loss", "test_loss", "val_loss"):
                if want.get(key) is not None:
                    assert got[key] == pytest.approx(want[key], rel=TOLERANCE[dtype], abs=0), (k, key)


def solo_runs(sizes, dtype, settings, per_model, **kwargs):
    solos = nets(sizes, dtype, **kwargs)
    histories = [gpunet.train(solos[k], X, y, X_test=X_TEST, y_test=Y_TEST, kernels="plain", **settings,
                              **{name: values[k] for name, values in per_model.items()})
                 for k in range(len(solos))]
    return solos, histories


CASES = [  # optimiser, batch size, per-model settings
    ("sgd", 16, {"lr": [0.05, 0.1, 0.02]}),
    ("sgd", 1, {"lr": [0.05, 0.1, 0.02]}),  # per-sample plain SGD: the Gram-chunk algorithm, stacked
    ("sgd", 8, {"lr": [0.05, 0.1, 0.02], "weight_decay": [1e-4, 1e-3, 1e-2]}),
    ("momentum", 8, {"lr": [0.05, 0.01, 0.02], "weight_decay": [1e-3, 0.0, 1e-2]}),
    ("adam", 16, {"lr": [1e-3, 2e-3, 3e-3], "weight_decay": [0.0, 1e-3, 1e-2]}),
    ("adamw", 16, {"lr": [1e-3, 2e-3, 3e-3], "weight_decay": [0.0, 1e-3, 1e-2]}),
]


@pytest.mark.parametrize("shared", [True, False], ids=["shared-order", "own-orders"])
@pytest.mark.parametrize("optimizer,batch_size,per_model", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_model_equals_its_solo_run(optimizer, batch_size, per_model, shared):
    seeds = [3, 3, 3] if shared else [3, 4, 5]
    settings = {"epochs": 2, "batch_size": batch_size, "optimizer": optimizer, "lr_decay": 0.9}
    with np.errstate(over="ignore"):
        solos, solo_histories = solo_runs((64, 24, 10), "float64", settings, {**per_model, "seed": seeds})
    group = nets()
    histories = train_many(group, X, y, X_test=X_TEST, y_test=Y_TEST, seed=seeds, **settings, **per_model)
    assert_like_solo(group, solos, histories, solo_histories, "float64")
    if not shared and batch_size > 1:  # each model's products are its solo run's calls: to the bit
        assert_like_solo(group, solos, histories, solo_histories, "float64", exact=True)


@pytest.mark.parametrize("output,loss,activation", [
    ("softmax", "cross-entropy", "relu"), ("sigmoid", "squared", "sigmoid"), ("sigmoid", "cross-entropy", "tanh"),
    ("identity", "squared", "leaky_relu"), ("softmax", "squared", "silu"), ("sigmoid", "absolute", "sigmoid"),
])
@pytest.mark.parametrize("batch_size", [1, 10])
def test_every_output_and_loss(output, loss, activation, batch_size):
    settings = {"epochs": 1, "batch_size": batch_size, "optimizer": "sgd", "lr": 0.05, "seed": 2}
    kwargs = {"activation": activation, "output": output, "loss": loss}
    solos, solo_histories = solo_runs((64, 16, 12, 10), "float64", settings, {}, **kwargs)
    group = nets((64, 16, 12, 10), **kwargs)
    histories = train_many(group, X, y, X_test=X_TEST, y_test=Y_TEST, **settings)
    assert_like_solo(group, solos, histories, solo_histories, "float64")


@pytest.mark.parametrize("batch_size", [1, 16])
def test_float32(batch_size):
    settings = {"epochs": 2, "batch_size": batch_size, "optimizer": "adam" if batch_size > 1 else "sgd",
                "seed": 1}
    per_model = {"lr": [1e-3, 2e-3, 5e-4] if batch_size > 1 else [0.05, 0.02, 0.1]}
    solos, solo_histories = solo_runs((64, 24, 10), "float32", settings, per_model)
    group = nets(dtype="float32")
    histories = train_many(group, X, y, X_test=X_TEST, y_test=Y_TEST, **settings, **per_model)
    assert_like_solo(group, solos, histories, solo_histories, "float32")


@pytest.mark.parametrize("shared", [True, False], ids=["shared-order", "own-orders"])
@pytest.mark.parametrize("optimizer,batch_size", [("adam", 16), ("sgd", 1)])
def test_schedules_augmentation_and_dropout_as_in_solo_runs(optimizer, batch_size, shared):
    """train's lr_schedule, augment and the networks' dropout (each model its own rates), with validation rows
    held out by each model's seed: the augmented images are each seed's, the masks each network's."""
    seeds = [4, 4, 4] if shared else [4, 5, 6]
    dropout = [[0.1, 0.3], 0.0, [0.0, 0.5]]
    settings = {"epochs": 3, "batch_size": batch_size, "optimizer": optimizer, "lr_schedule": "cosine",
                "warmup_epochs": 1, "augment": gpunet.Augment(shift=1, rotate=5), "validation": 0.2}
    per_model = {"lr": [1e-3, 2e-3, 3e-3] if optimizer == "adam" else [0.05, 0.02, 0.1], "seed": seeds}
    solos = [gpunet.Network([64, 24, 10], seed=s, dtype="float64", backend="numpy", dropout=d)
             for s, d in zip(NET_SEEDS, dropout)]
    solo_histories = [gpunet.train(solos[k], X, y, X_test=X_TEST, y_test=Y_TEST, kernels="plain", **settings,
                                   **{name: values[k] for name, values in per_model.items()}) for k in range(3)]
    group = [gpunet.Network([64, 24, 10], seed=s, dtype="float64", backend="numpy", dropout=d)
             for s, d in zip(NET_SEEDS, dropout)]
    histories = train_many(group, X, y, X_test=X_TEST, y_test=Y_TEST, **settings, **per_model)
    assert [r["lr"] for r in histories[1]] == [r["lr"] for r in solo_histories[1]]
    lr = per_model["lr"][1]  # one warm-up epoch at half the rate, then the cosine from its peak
    assert histories[1][0]["lr"] == pytest.approx(lr / 2) and histories[1][1]["lr"] == pytest.approx(lr)
    assert_like_solo(group, solos, histories, solo_histories, "float64")


def test_optimiser_instances_carry_each_models_betas_and_state():
    betas = [0.8, 0.9, 0.95]
    settings = {"epochs": 2, "batch_size": 32, "lr": 0.002}
    solos = nets()
    solo_opts = [gpunet.Adam(beta1=b) for b in betas]
    solo_histories = [gpunet.train(n, X, y, optimizer=o, **settings) for n, o in zip(solos, solo_opts)]
    group, opts = nets(), [gpunet.Adam(beta1=b) for b in betas]
    histories = train_many(group, X, y, optimizer=opts, **settings)
    assert_like_solo(group, solos, histories, solo_histories, "float64")
    for opt, solo_opt in zip(opts, solo_opts):
        assert opt.t == solo_opt.t == 2 * 19
        state, solo_state = opt.state_dict(), solo_opt.state_dict()
        assert state.keys() == solo_state.keys()
        for key in solo_state:
            np.testing.assert_allclose(state[key], solo_state[key], rtol=1e-10, atol=0)


def test_validation_per_seed_and_early_stopping_per_model():
    settings = {"epochs": 8, "batch_size": 16, "lr": 0.3, "optimizer": "momentum", "validation": 0.25,
                "early_stopping": 1}
    seeds = [0, 1, 2]
    solos, solo_histories = solo_runs((64, 24, 10), "float64", settings, {"seed": seeds})
    assert len({len(h) for h in solo_histories}) > 1 or len(solo_histories[0]) < 8, "no model stopped early"
    group = nets()
    histories = train_many(group, X, y, X_test=X_TEST, y_test=Y_TEST, seed=seeds, **settings)
    assert_like_solo(group, solos, histories, solo_histories, "float64")


def test_shuffle_seed_shares_one_order_and_equals_solo_runs_with_that_seed():
    settings = {"epochs": 2, "batch_size": 20, "optimizer": "adam", "lr": 0.003}
    solos, solo_histories = solo_runs((64, 24, 10), "float64", {**settings, "seed": 9}, {})
    group = nets()
    histories = train_many(group, X, y, X_test=X_TEST, y_test=Y_TEST, shuffle_seed=9, **settings)
    assert_like_solo(group, solos, histories, solo_histories, "float64")
    with pytest.raises(ValueError, match="seed= or shuffle_seed="):
        train_many(nets(), X, y, seed=1, shuffle_seed=9)


def test_resume_from_checkpoints_is_exact(tmp_path):
    settings = {"batch_size": 16, "optimizer": "adam", "lr": [1e-3, 3e-3, 2e-3], "lr_decay": 0.9, "seed": [0, 1, 2]}
    straight = nets()
    whole = train_many(straight, X, y, epochs=4, **settings)
    first, opts = nets(), [gpunet.Adam() for _ in NET_SEEDS]
    train_many(first, X, y, epochs=2, optimizer=opts, **{k: v for k, v in settings.items() if k != "optimizer"})
    for k, (net, opt) in enumerate(zip(first, opts)):
        save_checkpoint(tmp_path / f"{k}.npz", net, opt, {"epoch": 2})
    loaded = [load_checkpoint(tmp_path / f"{k}.npz", "numpy") for k in range(3)]
    resumed = train_many([n for n, _, _ in loaded], X, y, epochs=4, start_epoch=3, optimizer=[o for _, o, _ in loaded],
                         **{k: v for k, v in settings.items() if k != "optimizer"})
    for k in range(3):
        for name, p in straight[k].params.items():
            np.testing.assert_array_equal(loaded[k][0].params[name], p)
        assert [r["epoch"] for r in resumed[k]] == [3, 4]
        assert resumed[k][-1]["train_loss"] == whole[k][-1]["train_loss"]


def test_an_old_momentum_checkpoint_resumes_in_a_group_as_alone(tmp_path):
    """Momentum state written before PyTorch's convention ("v.<name>", v = -lr * buf) is upgraded with the rate
    of each model's next step, as a solo run upgrades it; the stack refuses state it does not know."""
    settings = {"batch_size": 16, "lr": [0.05, 0.02], "lr_decay": 0.5, "seed": [0, 1]}
    rng = np.random.default_rng(4)
    for k, net in enumerate(nets(seeds=(1, 2))):
        opt = gpunet.Momentum(momentum=0.9)
        save_checkpoint(tmp_path / f"{k}.npz", net, opt, {"epoch": 2})
        with np.load(tmp_path / f"{k}.npz") as z:
            arrays = dict(z)
        arrays.update({f"optim/v.{name}": 0.01 * rng.standard_normal(a.shape) for name, a in net.params.items()})
        arrays["header"] = np.array(str(arrays["header"]).replace('"t": 0', '"t": 5'))
        np.savez(tmp_path / f"{k}.npz", **arrays)
    alone = [load_checkpoint(tmp_path / f"{k}.npz", "numpy") for k in range(2)]
    assert all(any(key.startswith("v.") for key in opt.state) for _, opt, _ in alone)
    for k, (net, opt, _) in enumerate(alone):
        gpunet.train(net, X, y, epochs=4, start_epoch=3, optimizer=opt, batch_size=16, lr=settings["lr"][k],
                     lr_decay=0.5, seed=k)
    together = [load_checkpoint(tmp_path / f"{k}.npz", "numpy") for k in range(2)]
    train_many([n for n, _, _ in together], X, y, epochs=4, start_epoch=3, optimizer=[o for _, o, _ in together],
               **settings)
    for (solo, solo_opt, _), (net, opt, _) in zip(alone, together):
        for name, p in solo.params.items():
            np.testing.assert_array_equal(net.params[name], p, err_msg=name)
        assert sorted(opt.state) == sorted(solo_opt.state) and all(k.startswith("buf.") for k in opt.state)
    from gpunet.engines.stack import Stack
    stale = [load_checkpoint(tmp_path / f"{k}.npz", "numpy") for k in range(2)]
    with pytest.raises(ValueError, match=r"model 0's optimiser state holds 'v\.W1', not one of Momentum's buffers"):
        Stack([n for n, _, _ in stale], [o for _, o, _ in stale])


def test_groups_split_where_memory_is_short(monkeypatch):
    settings = {"epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": [1e-3, 2e-3, 3e-3], "seed": [0, 1, 2]}
    together = nets()
    whole = train_many(together, X, y, **settings)
    backend = together[0].backend
    one = models_that_fit(together[0], 16, gpunet.Adam, 3)
    assert one == 3  # this machine holds three small models
    per_model = 0
    monkeypatch.setattr(type(backend), "free_bytes", lambda self: per_model)
    with pytest.raises(DeviceMemoryError, match=r"one model of layers \[64, 24, 10\]"):
        models_that_fit(together[0], 16, gpunet.Adam, 3)
    from gpunet.many import _bytes_per_model
    per_model = int(_bytes_per_model(together[0], 16, 2, True) * 2 / 0.75) + 1  # room for two at a time
    assert models_that_fit(together[0], 16, gpunet.Adam, 3) == 2
    split = nets()
    histories = train_many(split, X, y, **settings)
    for k in range(3):
        assert histories[k][-1]["train_loss"] == whole[k][-1]["train_loss"]
        np.testing.assert_array_equal(split[k].params["W1"], together[k].params["W1"])


def test_a_later_group_takes_its_own_seeds_rows_with_augmentation(monkeypatch):
    """Groups split by memory, each model with its own seed's validation rows and augmented images."""
    settings = {"epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": 2e-3, "validation": 0.2,
                "augment": {"shift": 1}}
    seeds = [0, 1, 2]
    solos, solo_histories = solo_runs((64, 24, 10), "float64", settings, {"seed": seeds})
    monkeypatch.setattr("gpunet.many.models_that_fit", lambda *args, **kwargs: 2)  # groups [0, 1] and [2]
    group = nets()
    histories = train_many(group, X, y, X_test=X_TEST, y_test=Y_TEST, seed=seeds, **settings)
    assert_like_solo(group, solos, histories, solo_histories, "float64", exact=True)


def test_callback_stops_one_model_and_divergence_stops_or_raises():
    seen = []

    def callback(k, record):
        seen.append((k, record["epoch"]))
        return k == 1  # model 1 stops after its first epoch

    histories = train_many(nets(), X, y, epochs=3, batch_size=32, optimizer="sgd", lr=0.05, callback=callback)
    assert [len(h) for h in histories] == [3, 1, 3]
    assert seen == [(0, 1), (1, 1), (2, 1), (0, 2), (2, 2), (0, 3), (2, 3)]
    settings = {"epochs": 3, "batch_size": 8, "optimizer": "sgd", "lr": [0.05, 1e6, 0.05],
                "activation": None}
    del settings["activation"]
    with np.errstate(all="ignore"), pytest.raises(DivergenceError, match="model 1: training diverged in epoch 1"):
        train_many(nets(output="identity", loss="squared"), X, y, **settings)
    with np.errstate(all="ignore"):
        histories = train_many(nets(output="identity", loss="squared"), X, y, on_divergence="stop", **settings)
    assert [len(h) for h in histories] == [3, 0, 3]
    assert isinstance(histories[1], History) and str(histories[1].error).startswith("training diverged in epoch 1")
    assert histories[0].error is None


@pytest.mark.parametrize("call,message", [
    (lambda: train_many(gpunet.Network([64, 10]), X, y), "nets must be a list of gpunet.Network"),
    (lambda: train_many([], X, y), "at least one network"),
    (lambda: train_many([gpunet.Network([64, 10]), "net"], X, y), r"nets\[1\] must be a gpunet.Network"),
    (lambda: (lambda n: train_many([n, n], X, y))(gpunet.Network([64, 10])), "the same one is listed twice"),
    (lambda: train_many([gpunet.Network([64, 10]), gpunet.Network([64, 5, 10])], X, y),
     r"network 1 has sizes \[64, 5, 10\], network 0 has \[64, 10\]"),
    (lambda: train_many(nets(), X, y, lr=[0.1, 0.2]), r"lr must be one value or one per network \(3\); got 2"),
    (lambda: train_many(nets(), X, y, optimizer=gpunet.Adam()), "one instance cannot hold 3 models' state"),
    (lambda: train_many(nets(), X, y, optimizer=[gpunet.Adam(), gpunet.SGD(), gpunet.Adam()]),
     "optimisers must be of one kind"),
    (lambda: train_many(nets(), X, y, optimizer="sgd", weight_decay=[0.0, 0.1, 0.0]),
     "plain SGD with and without weight decay"),
    (lambda: train_many(nets(), X, y, kernels="graph"), "kernels must be one of 'auto', 'plain'"),
    (lambda: train_many(nets(), X, y, on_divergence="ignore"), "on_divergence must be 'raise' or 'stop'"),
    (lambda: train_many(nets(), X, y, lr=[0.1, -1.0, 0.1]), "lr"),
])
def test_refusals_name_the_setting(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


def test_a_custom_optimiser_rule_is_refused():
    class Mine(gpunet.SGD):
        pass

    with pytest.raises(ValueError, match="need a built-in optimiser's rule; got Mine"):
        train_many(nets(), X, y, optimizer=[Mine() for _ in NET_SEEDS])


@pytest.mark.gpu
def test_cupy_group_equals_numpy_group():
    require("cupy")
    cupy_nets = [gpunet.Network([64, 24, 10], seed=s, backend="cupy", dtype="float64") for s in NET_SEEDS]
    numpy_nets = nets()
    settings = {"epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": [1e-3, 2e-3, 3e-3], "seed": [0, 0, 1]}
    got = train_many(cupy_nets, X, y, X_test=X_TEST, y_test=Y_TEST, **settings)
    want = train_many(numpy_nets, X, y, X_test=X_TEST, y_test=Y_TEST, **settings)
    for k in range(3):
        for name, p in numpy_nets[k].params.items():
            assert relative(cupy_nets[k].backend.to_host(cupy_nets[k].params[name]), p) <= 1e-10
        assert got[k][-1]["test_accuracy"] == want[k][-1]["test_accuracy"]


# --- kernels="per-sample": per_sample.cu's kernel, one block a model --------------------------------------------
# Here its launches run by the kernel's NumPy transcription (tests/transcriptions.py, in its loop order), which
# many._launcher hands the stack in place of the device; on a device (gpu marker) the kernel itself.

@pytest.fixture
def transcribed(monkeypatch):
    """kernels="per-sample" on NumPy: each launch run by the transcription, recorded as (kernel, models)."""
    import transcriptions
    launches = []

    def launcher(launch):
        launches.append((launch.kernel, launch.grid[0]))
        transcriptions.per_sample_launch(launch)

    monkeypatch.setattr(gpunet.many, "_launcher", lambda: launcher)
    return launches


KERNEL_ROWS = 200  # 4 chunks an epoch: 64, 64, 64 and 8
KERNEL_LRS = [0.05, 0.1, 0.02, 0.08]


@pytest.mark.parametrize("models", [1, 3, 4])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-order", "own-orders"])
def test_per_sample_kernel_transcribed_equals_the_plain_group_and_solo_runs(transcribed, shared, models):
    seeds = [3] * models if shared else [3, 4, 5, 6][:models]
    settings = {"epochs": 2, "batch_size": 1, "optimizer": "sgd", "lr_decay": 0.9}
    per_model = {"lr": KERNEL_LRS[:models], "seed": seeds}
    Xs, ys = X[:KERNEL_ROWS], y[:KERNEL_ROWS]
    solos = nets(seeds=NET_SEEDS + [8])[:models]
    solo_histories = [gpunet.train(solos[k], Xs, ys, X_test=X_TEST, y_test=Y_TEST, kernels="plain", **settings,
                                   **{name: values[k] for name, values in per_model.items()}) for k in range(models)]
    plain = nets(seeds=NET_SEEDS + [8])[:models]
    plain_histories = train_many(plain, Xs, ys, X_test=X_TEST, y_test=Y_TEST, kernels="plain", **settings,
                                 **per_model)
    assert transcribed == []  # "plain" never launches
    group = nets(seeds=NET_SEEDS + [8])[:models]
    histories = train_many(group, Xs, ys, X_test=X_TEST, y_test=Y_TEST, kernels="per-sample", **settings,
                           **per_model)
    assert transcribed == [("per_sample_many", models)] * 8  # 4 chunks an epoch, every model in each launch
    assert_like_solo(group, plain, histories, plain_histories, "float64")
    assert_like_solo(group, solos, histories, solo_histories, "float64")


def test_per_sample_kernel_transcribed_in_float32(transcribed):
    settings = {"epochs": 2, "batch_size": 1, "optimizer": "sgd", "lr": [0.05, 0.02, 0.1], "seed": [1, 2, 1]}
    Xs, ys = X[:KERNEL_ROWS], y[:KERNEL_ROWS]
    solos = nets(dtype="float32")
    solo_histories = [gpunet.train(solos[k], Xs, ys, X_test=X_TEST, y_test=Y_TEST, kernels="plain",
                                   **{**settings, "lr": settings["lr"][k], "seed": settings["seed"][k]})
                      for k in range(3)]
    group = nets(dtype="float32")
    histories = train_many(group, Xs, ys, X_test=X_TEST, y_test=Y_TEST, kernels="per-sample", **settings)
    assert len(transcribed) == 8
    assert_like_solo(group, solos, histories, solo_histories, "float32")


def test_per_sample_kernel_transcribed_with_each_models_dropout_and_a_model_that_stops(transcribed):
    """Each network its own rates (one drops nothing: every unit kept, times 1, in the dropout form); model 1
    stops after its first epoch (its callback), and the others go on, two blocks a launch."""
    dropout = [[0.1, 0.3], 0.0, [0.0, 0.5]]
    settings = {"epochs": 2, "batch_size": 1, "optimizer": "sgd"}
    per_model = {"lr": [0.05, 0.02, 0.1], "seed": [4, 5, 6]}
    Xs, ys = X[:KERNEL_ROWS], y[:KERNEL_ROWS]

    def make():
        return [gpunet.Network([64, 24, 10], seed=s, dtype="float64", backend="numpy", dropout=d)
                for s, d in zip(NET_SEEDS, dropout)]

    solos = make()
    solo_histories = [gpunet.train(solos[k], Xs, ys, X_test=X_TEST, y_test=Y_TEST, kernels="plain",
                                   **{**settings, "epochs": 1 if k == 1 else 2},
                                   **{name: values[k] for name, values in per_model.items()}) for k in range(3)]
    group = make()
    histories = train_many(group, Xs, ys, X_test=X_TEST, y_test=Y_TEST, kernels="per-sample",
                           callback=lambda k, record: k == 1, **settings, **per_model)
    assert transcribed == [("per_sample_many_dropout", 3)] * 4 + [("per_sample_many_dropout", 2)] * 4
    assert_like_solo(group, solos, histories, solo_histories, "float64")


def test_per_sample_kernel_refusals():
    with pytest.raises(ValueError, match="kernels='per-sample' cannot train these networks: it needs the cupy "
                                         "backend; the networks are on 'numpy'"):
        train_many(nets(), X, y, batch_size=1, optimizer="sgd", kernels="per-sample")


@pytest.mark.parametrize("settings, sizes, message", [
    ({"batch_size": 16, "optimizer": "sgd"}, (64, 24, 10), r"per-sample plain SGD \(batch_size=1.*got batch_size=16"),
    ({"batch_size": 1, "optimizer": "momentum"}, (64, 24, 10), "got batch_size=1 with .*Momentum"),
    ({"batch_size": 1, "optimizer": "sgd", "weight_decay": 1e-3}, (64, 24, 10), "got batch_size=1 with .*SGD"),
    ({"batch_size": 1, "optimizer": "sgd"}, (64, 24, 12, 10),
     "the per-sample kernel cannot run .* one hidden layer; this one has 2"),
])
def test_per_sample_kernel_refuses_what_it_cannot_run(transcribed, settings, sizes, message):
    with pytest.raises(ValueError, match=message):
        train_many(nets(sizes), X[:50], y[:50], epochs=1, kernels="per-sample", **settings)
    assert transcribed == []


def test_auto_waits_for_a_device_run(transcribed, monkeypatch):
    """auto takes the kernel only once VERIFIED_MANY names it ("per-sample-dropout" too for dropout), and only for
    activations a device run has verified."""
    settings = {"epochs": 1, "batch_size": 1, "optimizer": "sgd", "lr": 0.05}
    first = nets()
    assert "no device run has verified 'per-sample' for models trained together" in gpunet.many.kernel_refusal(
        first, gpunet.SGD(), 1, auto=True)
    train_many(first, X[:70], y[:70], **settings)
    assert transcribed == []  # auto: the plain stacked path
    monkeypatch.setattr(gpunet.many, "VERIFIED_MANY", frozenset({"per-sample"}))
    train_many(nets(), X[:70], y[:70], **settings)
    assert transcribed == [("per_sample_many", 3)] * 2
    dropped = nets(dropout=0.2)
    assert "'per-sample-dropout'" in gpunet.many.kernel_refusal(dropped, gpunet.SGD(), 1, auto=True)
    train_many(dropped, X[:70], y[:70], **settings)
    silu = nets(activation="silu")
    assert "no device run has verified 'silu'" in gpunet.many.kernel_refusal(silu, gpunet.SGD(), 1, auto=True)
    train_many(silu, X[:70], y[:70], **settings)
    assert len(transcribed) == 2
    monkeypatch.setattr(gpunet.many, "VERIFIED_MANY", frozenset({"per-sample", "per-sample-dropout"}))
    train_many(nets(dropout=0.2), X[:70], y[:70], **settings)
    assert transcribed[2:] == [("per_sample_many_dropout", 3)] * 2


GPU_KERNEL_TOLERANCE = {"float64": 1e-9, "float32": 1e-4}  # the solo kernel's (tests/test_per_sample_kernel.py)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dropout", [None, [[0.1, 0.3], 0.0, [0.0, 0.5]]], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-order", "own-orders"])
def test_gpu_per_sample_kernel_group_equals_the_numpy_group_and_solo_kernel_runs(shared, dropout, dtype):
    """kernels="per-sample" on CuPy against the NumPy group (the plain stacked path) and each model's solo
    gpunet.train on the per-sample kernel (kernels="fused")."""
    cupy = require("cupy")
    dropouts = dropout or [None] * 3
    settings = {"epochs": 2, "batch_size": 1, "optimizer": "sgd", "lr": [0.05, 0.1, 0.02],
                "seed": [3, 3, 3] if shared else [3, 4, 5]}

    def make(backend):
        return [gpunet.Network([64, 24, 10], seed=s, dtype=dtype, backend=backend, dropout=d)
                for s, d in zip(NET_SEEDS, dropouts)]

    group, numpy_group, solos = make(cupy), make("numpy"), make(cupy)
    got = train_many(group, X, y, X_test=X_TEST, y_test=Y_TEST, kernels="per-sample", **settings)
    want = train_many(numpy_group, X, y, X_test=X_TEST, y_test=Y_TEST, kernels="plain", **settings)
    solo = [gpunet.train(solos[k], X, y, X_test=X_TEST, y_test=Y_TEST, kernels="fused",
                         **{**settings, "lr": settings["lr"][k], "seed": settings["seed"][k]}) for k in range(3)]
    tolerance = GPU_KERNEL_TOLERANCE[dtype]
    for k in range(3):
        for name, p in numpy_group[k].params.items():
            on_device = group[k].backend.to_host(group[k].params[name])
            assert relative(on_device, p) <= tolerance, (k, name)
            assert relative(on_device, solos[k].backend.to_host(solos[k].params[name])) <= tolerance, (k, name)
        for a, b in ((got[k], want[k]), (got[k], solo[k])):
            assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], rel=tolerance, abs=0)
