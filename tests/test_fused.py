"""The fused path: each kernel's NumPy transcription against the plain path, the host logic of fused.py and
flat.py on NumPy, kernel selection, and (marker gpu) the fused kernels against the plain path on a device.

On the CPU, FusedStep runs unchanged with transcriptions.NumpyKernels, so the order of launches, the buffers, the
flat views and the optimiser state are tested here; a device run only has to confirm the transcriptions.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import gpunet
from gpunet.activations import ACTIVATIONS, FUSED, LOSSES
from gpunet.engines import build, fused, select
from gpunet.engines.kernels import ACT_CODES, LOSS_CODES, OUTPUT_CODES
from gpunet.engines.flat import FlatOptimizer, FlatParameters
from gpunet.params import ALIGN, layout, views
from gpunet.engines.fused import FusedStep, delta_bias_geometry, elementwise_geometry, workspace_shapes
from gpunet.optim import SGD, Adam, AdamW, Momentum, Optimizer

import transcriptions
from conftest import rel_diff, require

TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
KERNEL_TOLERANCE = {"float32": 2e-6, "float64": 1e-13}  # one kernel against the plain formula: rounding only
DTYPES = ("float32", "float64")
HIDDEN = ("sigmoid", "tanh", "relu", "leaky_relu", "silu")
PAIRS = fused.OUTPUT_LOSSES  # every valid (output, loss) pair
OPTIMIZERS = {
    "sgd": lambda: SGD(),
    "sgd-wd": lambda: SGD(weight_decay=1e-3),
    "momentum": lambda: Momentum(0.9, weight_decay=1e-3),
    "adam": lambda: Adam(weight_decay=1e-3),
    "adamw": lambda: AdamW(eps=1e-4, weight_decay=0.05),  # eps: Adam's 1e-8 leaves relu outputs ill-conditioned in float32
}


def _data(rows, n_in, n_out, seed=3, one_hot=False):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.01, 1.0, (rows, n_in))
    T = np.zeros((rows, n_out)) if one_hot else np.full((rows, n_out), 0.01)
    T[np.arange(rows), rng.integers(0, n_out, rows)] = 1.0 if one_hot else 0.99
    return X, T


# --- each kernel's transcription against the plain formula ------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", (*HIDDEN, "identity"))
def test_bias_act_is_the_plain_layer(act, dtype):
    rng = np.random.default_rng(0)
    Z, b = rng.normal(0, 2, (37, 45)).astype(dtype), rng.normal(0, 1, 45).astype(dtype)
    expected = ACTIVATIONS[act].forward(Z.astype(np.float64) + b)
    transcriptions.bias_act(Z, b, act=ACT_CODES[act])
    assert Z.dtype == dtype
    assert rel_diff(Z, expected) <= KERNEL_TOLERANCE[dtype]


def _plain_delta(Y, T, output, loss, scale, Z):
    """network.py's delta_L, written from the tables: the fused gradient, or the chain rule through f' (at the
    output Y, or at the logits Z where the activation's derivative reads its input)."""
    if (output, loss) in FUSED:
        return FUSED[output, loss].delta(Y, T) * scale
    kept = Y if ACTIVATIONS[output].from_output else Z
    return ACTIVATIONS[output].backward(kept.copy(), LOSSES[loss].grad(Y, T) * scale)


def _plain_loss(Z, Y, T, output, loss):
    """network.py's per-sample loss: cross-entropy from the logits Z, the other losses from the outputs Y."""
    return FUSED[output, loss].per_sample(Z, T) if (output, loss) in FUSED else LOSSES[loss].per_sample(Y, T)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", (10, 45))  # under a warp, and more columns than lanes
@pytest.mark.parametrize(("output", "loss"), PAIRS)
def test_output_layer_gives_the_plain_loss_and_delta(output, loss, cols, dtype):
    rng = np.random.default_rng(1)
    Z, b = rng.normal(0, 2, (23, cols)).astype(dtype), rng.normal(0, 1, cols).astype(dtype)
    _, T = _data(23, 1, cols, one_hot=output == "softmax" and loss == "cross-entropy")
    T = T.astype(dtype)
    if output == "softmax" and loss == "cross-entropy":
        T[0] *= 0.5  # targets that do not sum to 1: the general gradient y * sum(t) - t
    logits = Z.astype(np.float64) + b
    Y = ACTIVATIONS[output].forward(logits)
    scale = 0.3 / 23
    loss_rows = np.empty(23, dtype=dtype)
    transcriptions.output_layer(Z, b, T, loss_rows, scale, out=OUTPUT_CODES[output], loss_code=LOSS_CODES[loss])
    assert Z.dtype == loss_rows.dtype == dtype
    assert rel_diff(loss_rows, _plain_loss(logits, Y, T.astype(np.float64), output, loss)) <= KERNEL_TOLERANCE[dtype]
    assert rel_diff(Z, _plain_delta(Y, T.astype(np.float64), output, loss, scale, logits)) <= KERNEL_TOLERANCE[dtype] * 10


def _old_cross_entropy(Y, T, output):
    """The formula fused.cu used before the loss came from the logits: -sum t log(max(y, tiny)) (and the
    (1 - t) log(1 - y) term for sigmoid), which saturates where y rounds to 0 or 1."""
    tiny = np.finfo(Y.dtype).tiny
    terms = T * np.log(np.maximum(Y, tiny))
    if output == "sigmoid":
        terms = terms + (1 - T) * np.log(np.maximum(1 - Y, tiny))
    return -terms.sum(axis=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ("softmax", "sigmoid"))
def test_output_layer_cross_entropy_is_exact_for_saturated_logits(output, dtype):
    """Logits of +-1000 and +-40, the target on the losing side: Y rounds to 0 or 1, the loss is still exact."""
    Z = np.array([[1000, -1000, 0, 40], [-40, 40, 3, -1000], [-1000, 1000, -40, 40]], dtype=dtype)
    b = np.zeros(4, dtype=dtype)
    T = np.eye(4, dtype=dtype)[[1, 0, 2]]  # one-hot: column 1 (-1000), 0 (-40), 2 (-40)
    net = gpunet.Network.article([3, 4], output=output, loss="cross-entropy", backend="numpy", dtype=dtype)
    Y = ACTIVATIONS[output].forward(Z.copy())
    plain = net.per_sample_loss(Z, Y, T)
    # by hand, dropping terms of e^-37 and below: lse(z) - z_target; sum softplus(z) - t z
    expected = {"softmax": [2000, 80, 1040], "sigmoid": [2040 + np.log(2), 80 + np.log1p(np.exp(3)), 1080]}[output]
    assert rel_diff(plain, np.array(expected)) <= KERNEL_TOLERANCE[dtype]
    old = _old_cross_entropy(Y, T, output)
    assert np.max(np.abs(old - plain) / plain) > 0.5  # the old formula is far off: the case discriminates
    loss_rows, Zk = np.empty(3, dtype=dtype), Z.copy()
    transcriptions.output_layer(Zk, b, T, loss_rows, 1.0, out=OUTPUT_CODES[output],
                                loss_code=LOSS_CODES["cross-entropy"])
    assert loss_rows.dtype == dtype and np.isfinite(loss_rows).all()
    assert rel_diff(loss_rows, plain) <= KERNEL_TOLERANCE[dtype]
    assert rel_diff(Zk, FUSED[output, "cross-entropy"].delta(Y, T)) <= KERNEL_TOLERANCE[dtype]  # deltas as before


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", (1, 5, 64, 200))
@pytest.mark.parametrize("act", (*HIDDEN, "identity"))
def test_delta_bias_is_the_hidden_delta_and_its_column_sums(act, rows, dtype):
    rng = np.random.default_rng(2)
    A = ACTIVATIONS[act].forward(rng.normal(0, 2, (rows, 70))).astype(dtype)
    dA = rng.normal(0, 1, (rows, 70)).astype(dtype)
    delta = ACTIVATIONS[act].backward(A.astype(np.float64), dA.astype(np.float64))
    b = rng.normal(0, 1, 70).astype(dtype)
    for update in (False, True):
        d, db = dA.copy(), b.copy()
        transcriptions.delta_bias(d, A, db, delta_bias_geometry(rows, 70)[1][1], act=ACT_CODES[act], update=update)
        assert rel_diff(d, delta) <= KERNEL_TOLERANCE[dtype]
        expected = b - delta.sum(axis=0) if update else delta.sum(axis=0)
        assert rel_diff(db, expected) <= KERNEL_TOLERANCE[dtype] * 10


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_flat_step_is_the_optimiser_over_100_steps(name, dtype):
    rng = np.random.default_rng(5)
    params = {"W1": rng.normal(0, 1, (7, 5)).astype(dtype), "b1": rng.normal(0, 1, 5).astype(dtype),
              "W2": rng.normal(0, 1, (5, 3)).astype(dtype), "b2": rng.normal(0, 1, 3).astype(dtype)}
    plain_params = {k: v.copy() for k, v in params.items()}
    plain, flat_opt = OPTIMIZERS[name](), OPTIMIZERS[name]()
    flat = FlatParameters(params, np)
    stepper = FlatOptimizer(flat, transcriptions.NumpyKernels())
    for t in range(100):
        grads = {k: rng.normal(0, 1, v.shape).astype(dtype) for k, v in params.items()}
        for k, g in grads.items():
            flat.grad_views[k][...] = g
        plain.step(plain_params, {k: g.copy() for k, g in grads.items()}, lr=0.01 * (1 + t % 3))
        stepper.step(flat_opt, lr=0.01 * (1 + t % 3))
    assert flat_opt.t == plain.t == 100 and int(stepper.step_count[0]) == 100
    for k in params:
        assert params[k] is flat.param_views[k]
        assert rel_diff(params[k], plain_params[k]) <= TOLERANCE[dtype] / 10
    assert sorted(flat_opt.state) == sorted(plain.state)
    for k in plain.state:
        assert rel_diff(flat_opt.state[k], plain.state[k]) <= TOLERANCE[dtype] / 10


def _flat_pair(dtype, seed=5):
    """Parameters for optim.py and the same in a FlatParameters, with its FlatOptimizer on the transcription."""
    rng = np.random.default_rng(seed)
    params = {"W1": rng.normal(0, 1, (7, 5)).astype(dtype), "b1": rng.normal(0, 1, 5).astype(dtype),
              "W2": rng.normal(0, 1, (5, 3)).astype(dtype), "b2": rng.normal(0, 1, 3).astype(dtype)}
    plain_params = {k: v.copy() for k, v in params.items()}
    flat = FlatParameters(params, np)
    return rng, plain_params, params, flat, FlatOptimizer(flat, transcriptions.NumpyKernels())


def _step_both(rng, plain, plain_params, flat_opt, stepper, lr):
    grads = {k: rng.normal(0, 1, v.shape).astype(v.dtype) for k, v in plain_params.items()}
    for k, g in grads.items():
        stepper.flat.grad_views[k][...] = g
    plain.step(plain_params, {k: g.copy() for k, g in grads.items()}, lr=lr)
    stepper.step(flat_opt, lr=lr)
    return grads


@pytest.mark.parametrize("dtype", DTYPES)
def test_flat_momentum_with_a_changing_learning_rate_is_optim_momentum_exactly(dtype):
    """PyTorch's rule buf = mu buf + g, p -= lr buf: with lr changing every step the classical rule
    (v = mu v - lr g, p += v) gives other numbers; the flat kernel's transcription gives optim.py's, bit for bit."""
    rng, plain_params, params, flat, stepper = _flat_pair(dtype)
    plain, flat_opt = Momentum(0.9, weight_decay=1e-3), Momentum(0.9, weight_decay=1e-3)
    classical = {k: v.copy() for k, v in plain_params.items()}
    velocity = {k: np.zeros_like(v) for k, v in classical.items()}
    for t in range(30):
        lr = 0.05 * 0.8**t if t % 2 else 0.2 / (1 + t)
        grads = _step_both(rng, plain, plain_params, flat_opt, stepper, lr)
        for k, g in grads.items():  # the old rule, for contrast
            g = g + 1e-3 * classical[k] if k.startswith("W") else g
            velocity[k] = 0.9 * velocity[k] - lr * g
            classical[k] += velocity[k]
    assert sorted(flat_opt.state) == sorted(plain.state) == ["buf.W1", "buf.W2", "buf.b1", "buf.b2"]
    for k in params:
        assert params[k] is flat.param_views[k] and flat_opt.state[f"buf.{k}"] is flat.state_views["buf"][k]
        assert np.array_equal(params[k], plain_params[k]), k
        assert np.array_equal(flat_opt.state[f"buf.{k}"], plain.state[f"buf.{k}"]), k
        assert rel_diff(classical[k], plain_params[k]) > 1e-3, k  # the classical rule would not pass


@pytest.mark.parametrize("dtype", DTYPES)
def test_flat_momentum_continues_an_old_velocity_checkpoint_like_optim_py(dtype):
    """A checkpoint of the old convention ("v.W1": v = -lr buf) adopted by the flat optimiser: converted with
    the next step's lr, as optim.py's Momentum converts it on its first step, then the same steps bit for bit."""
    rng, plain_params, params, flat, stepper = _flat_pair(dtype)
    old = {"t": 17, **{f"v.{k}": rng.normal(0, 0.01, v.shape).astype(dtype) for k, v in params.items()}}
    kept = {k: v.copy() for k, v in old.items() if k != "t"}
    plain, flat_opt = Momentum(0.8, weight_decay=1e-3), Momentum(0.8, weight_decay=1e-3)
    plain.load_state_dict({k: v if k == "t" else v.copy() for k, v in old.items()}, plain_params)
    flat_opt.load_state_dict(old, params)
    _step_both(rng, plain, plain_params, flat_opt, stepper, 0.03)  # converts v with lr = 0.03, then steps
    assert sorted(flat_opt.state) == sorted(plain.state) == ["buf.W1", "buf.W2", "buf.b1", "buf.b2"]
    assert all(np.array_equal(old[k], kept[k]) for k in kept)  # the checkpoint's arrays are left as they were
    for t in range(20):
        _step_both(rng, plain, plain_params, flat_opt, stepper, 0.05 / (1 + t))
    assert flat_opt.t == plain.t == 17 + 21 and int(stepper.step_count[0]) == 38
    for k in params:
        assert flat_opt.state[f"buf.{k}"] is flat.state_views["buf"][k]
        assert np.array_equal(params[k], plain_params[k]), k
        assert np.array_equal(flat_opt.state[f"buf.{k}"], plain.state[f"buf.{k}"]), k


# --- the whole step: FusedStep with the NumPy transcriptions against Network.train_step_unchecked ---------------

def _pair_nets(sizes, activation, output, loss, dtype):
    kw = dict(activation=activation, output=output, loss=loss, init="xavier", seed=7, backend="numpy", dtype=dtype)
    return gpunet.Network.article(sizes, **kw), gpunet.Network.article(sizes, **kw)


def _run(net, opt, X, T, step, epochs, batch, lr=0.2):
    """``step(X, T, lr, opt)`` over shuffled batches (the last one partial); the per-step losses."""
    losses = []
    for e in range(epochs):
        order = np.random.default_rng(e).permutation(len(X))
        for lo in range(0, len(X), batch):
            idx = order[lo : lo + batch]
            losses.append(float(step(X[idx].astype(net.dtype), T[idx].astype(net.dtype), lr * 0.9**e, opt)))
    return np.array(losses)


def _compare(activation, output, loss, optimizer, dtype, sizes=(6, 9, 7, 4), epochs=5, rows=50, batch=16):
    plain_net, fused_net = _pair_nets(list(sizes), activation, output, loss, dtype)
    X, T = _data(rows, sizes[0], sizes[-1], one_hot=loss == "cross-entropy")
    plain_opt, fused_opt = OPTIMIZERS[optimizer](), OPTIMIZERS[optimizer]()
    lr = 0.01 if optimizer == "adam" else 0.2
    expected = _run(plain_net, plain_opt, X, T, plain_net.train_step_unchecked, epochs, batch, lr)
    arrays = dict(fused_net.params)
    got = _run(fused_net, fused_opt, X, T, FusedStep(fused_net, transcriptions.NumpyKernels()), epochs, batch, lr)
    # stepped in place: the network's own arrays, never rebound (a caller holding net.params["W1"] sees the steps)
    assert all(fused_net.params[k] is a for k, a in arrays.items())
    tol = TOLERANCE[dtype]
    assert rel_diff(got, expected) <= tol
    for k, p in plain_net.get_params().items():
        assert rel_diff(fused_net.params[k], p) <= tol, k
    assert fused_opt.t == plain_opt.t == epochs * -(-rows // batch)
    plain_state, fused_state = plain_opt.state_dict(), fused_opt.state_dict()
    assert sorted(fused_state) == sorted(plain_state)
    for k in plain_state:
        assert rel_diff(fused_state[k], plain_state[k]) <= tol, k
    return fused_net, fused_opt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize(("output", "loss"), PAIRS)
def test_fused_step_equals_plain_for_every_output_loss_and_optimiser(output, loss, optimizer, dtype):
    activation = HIDDEN[PAIRS.index((output, loss)) % len(HIDDEN)]  # every hidden activation comes round
    _compare(activation, output, loss, optimizer, dtype, epochs=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_fused_step_equals_plain_over_100_steps_for_every_hidden_activation(activation, optimizer, dtype):
    _compare(activation, "softmax", "cross-entropy", optimizer, dtype, epochs=25, rows=60, batch=16)  # 100 steps


def test_fused_step_with_one_layer_and_single_rows():
    _compare("relu", "sigmoid", "squared", "momentum", "float64", sizes=(5, 3), rows=7, batch=1)


def test_fused_parameters_are_views_into_the_flat_buffer_and_resume_from_a_checkpoint():
    net, opt = _compare("tanh", "softmax", "cross-entropy", "adam", "float64", epochs=2)
    step = FusedStep(net, transcriptions.NumpyKernels())
    X, T = _data(50, 6, 4, one_hot=True)
    # set_params writes through the views; a restored optimiser (new arrays) is adopted, not ignored
    before = net.get_params()
    saved, params = opt.state_dict(), net.get_params()
    straight = _run(net, opt, X, T, step, 2, 16, 0.01)
    net.set_params(params)
    restored = Adam(weight_decay=1e-3)
    restored.load_state_dict(saved, net.params)
    again = _run(net, restored, X, T, step, 2, 16, 0.01)
    assert np.array_equal(straight, again)
    assert restored.t == opt.t
    assert all(restored.state[k] is step.flat.state_views[k[0]][k[2:]] for k in saved if k != "t")
    assert not np.array_equal(net.params["W1"], before["W1"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_step_resumes_an_old_momentum_checkpoint_like_the_plain_path(dtype):
    """Network-level: an old-convention momentum checkpoint ("v.W1", ...) loaded into the fused and the plain
    step, then trained with a decaying lr; the fused step's flat state takes the converted buffers."""
    plain_net, fused_net = _pair_nets([6, 9, 7, 4], "tanh", "softmax", "cross-entropy", dtype)
    X, T = _data(50, 6, 4, one_hot=True)
    rng = np.random.default_rng(11)
    old = {"t": 9, **{f"v.{k}": rng.normal(0, 0.01, p.shape) for k, p in plain_net.params.items()}}
    plain_opt, fused_opt = Momentum(0.9, weight_decay=1e-3), Momentum(0.9, weight_decay=1e-3)
    plain_opt.load_state_dict({k: v if k == "t" else v.copy() for k, v in old.items()}, plain_net.params)
    fused_opt.load_state_dict({k: v if k == "t" else v.copy() for k, v in old.items()}, fused_net.params)
    step = FusedStep(fused_net, transcriptions.NumpyKernels())
    expected = _run(plain_net, plain_opt, X, T, plain_net.train_step_unchecked, 3, 16)
    got = _run(fused_net, fused_opt, X, T, step, 3, 16)
    assert rel_diff(got, expected) <= TOLERANCE[dtype]
    for k, p in plain_net.params.items():
        assert rel_diff(fused_net.params[k], p) <= TOLERANCE[dtype], k
        assert rel_diff(fused_opt.state[f"buf.{k}"], plain_opt.state[f"buf.{k}"]) <= TOLERANCE[dtype], k
        assert fused_opt.state[f"buf.{k}"] is step.flat.state_views["buf"][k]
    assert sorted(fused_opt.state) == sorted(plain_opt.state) and not any(k.startswith("v.") for k in fused_opt.state)
    assert fused_opt.t == plain_opt.t == 9 + 3 * 4


@pytest.mark.parametrize("optimizer", ("adam", "momentum"))
def test_plain_and_fused_steps_can_alternate(optimizer):
    """The step count and state stay in one place: a plain step between fused ones is seen by the next fused one."""
    a, b = _pair_nets([6, 9, 4], "sigmoid", "softmax", "cross-entropy", "float64")
    X, T = _data(64, 6, 4, one_hot=True)
    opt_a, opt_b = OPTIMIZERS[optimizer](), OPTIMIZERS[optimizer]()
    fused_b = FusedStep(b, transcriptions.NumpyKernels())
    for t in range(12):
        rows = slice(8 * (t % 8), 8 * (t % 8) + 8)
        a.train_step_unchecked(X[rows], T[rows], 0.01, opt_a)
        (b.train_step_unchecked if t % 3 == 1 else fused_b)(X[rows], T[rows], 0.01, opt_b)
    assert opt_b.t == 12 and int(fused_b.optimizer.step_count[0]) == 12
    for k, p in a.params.items():
        assert rel_diff(b.params[k], p) <= 1e-12, k


# --- host logic: layout, views, workspaces, launch geometry, name expressions ----------------------------

def test_layout_puts_weights_first_aligned():
    lay = layout({"W1": (784, 100), "b1": (100,), "W2": (100, 10), "b2": (10,)})
    assert list(lay.offsets) == ["W1", "W2", "b1", "b2"]
    assert lay.offsets == {"W1": 0, "W2": 78400, "b1": 79424, "b2": 79552}  # 78400 and 1000 rounded up to 32
    assert lay.n_weights == 79424 and lay.size == 79584
    assert all(o % ALIGN == 0 for o in lay.offsets.values())


def test_flat_views_share_memory_and_net_params_stay_usable():
    net = gpunet.Network.article([5, 4, 3], backend="numpy", dtype="float64", seed=1)
    old = net.get_params()
    flat = FlatParameters(net.params, np)
    for k, p in net.params.items():
        assert np.shares_memory(p, flat.params) and np.array_equal(p, old[k])
    net.set_params({k: v + 1 for k, v in old.items()})  # in place, through the views
    assert np.array_equal(flat.param_views["b2"], old["b2"] + 1)
    assert not flat.params[views(flat.params, flat.layout)["b2"].size + flat.layout.offsets["b2"]:].any()
    net.params["W1"] = np.zeros((5, 4))  # someone rebinds an entry: the next adopt copies it in
    flat.adopt(net.params)
    assert net.params["W1"] is flat.param_views["W1"] and not flat.param_views["W1"].any()


def test_an_unpickled_network_is_stepped_in_its_own_flat_buffer():
    # pickle copies each view apart from the buffer; unpickling packs again, so a fast path never rebinds
    net = pickle.loads(pickle.dumps(gpunet.Network.article([5, 4, 3], backend="numpy", dtype="float64", seed=1)))
    arrays, before = dict(net.params), net.get_params()
    step = FusedStep(net, transcriptions.NumpyKernels())
    X, T = _data(8, 5, 3, one_hot=True)
    _run(net, Adam(), X, T, step, 2, 4, 0.01)
    for k, a in arrays.items():
        assert net.params[k] is a and np.shares_memory(a, step.flat.params)
        assert not np.array_equal(a, before[k]), k


def test_workspace_shapes():
    assert workspace_shapes([784, 100, 50, 10], 64) == {
        "A1": (64, 100), "A2": (64, 50), "A3": (64, 10), "dA1": (64, 100), "dA2": (64, 50), "loss": (64,)}


@pytest.mark.parametrize(("rows", "cols", "walkers"), [(1, 10, 1), (7, 10, 1), (8, 33, 2), (64, 100, 16),
                                                     (1024, 1024, 32), (60000, 5, 32)])
def test_delta_bias_geometry(rows, cols, walkers):
    grid, block = delta_bias_geometry(rows, cols)
    assert block == (32, walkers) and grid[0] * 32 >= cols > (grid[0] - 1) * 32
    assert walkers == 1 or rows >= 4 * walkers  # each walker has at least 4 rows


def test_elementwise_geometry_covers_or_strides():
    assert elementwise_geometry(1) == ((1,), (256,))
    assert elementwise_geometry(64 * 100) == ((25,), (256,))
    assert elementwise_geometry(10**9) == ((8192,), (256,))  # grid-stride past the cap


def test_name_expression_table_covers_every_configuration():
    table = build.name_expressions()
    for ctype in ("float", "double"):
        for activation in HIDDEN:
            for output, loss in PAIRS:
                assert set(fused.fused_expressions(ctype, activation, output, loss)) <= set(table["fused.cu"])
        assert set(fused.optim_expressions(ctype)) <= set(table["optim.cu"])


# --- selection ------------------------------------------------------------------------------------

def test_auto_takes_the_paths_a_device_run_verified():
    """The H100 runs of 2026-11-27 verified "fused" for batches and the per-sample kernel, the H200 run graph
    mode for batches and whole per-sample epochs."""
    assert select.VERIFIED == frozenset({"fused", "per-sample", "graph", "per-sample-epochs"})
    net = gpunet.Network.article([4, 3, 2], backend="numpy")
    assert net.kernels == "auto" and select.choose("auto", net, SGD()) == "plain"  # NumPy: plain, always
    cupy_net = _FakeCupyNet()
    assert [select.choose("auto", cupy_net, opt) for opt in (SGD(), Momentum(), Adam())] == ["graph"] * 3
    assert select.choose("auto", cupy_net, SGD(), per_sample=True) == "graph"  # PerSampleEpochs
    assert select.choose("plain", cupy_net, SGD(), per_sample=True) == "plain"
    assert select.choose("fused", cupy_net, SGD(), per_sample=True) == "fused"  # asked for: the kernel runs


@pytest.mark.parametrize("kernels", ("fused", "graph"))
def test_cuda_paths_on_numpy_are_refused(kernels):
    with pytest.raises(ValueError, match=f"kernels='{kernels}' needs the cupy backend; got backend 'numpy'"):
        gpunet.Network.article([4, 3, 2], backend="numpy", kernels=kernels)
    net = gpunet.Network.article([4, 3, 2], backend="numpy")
    with pytest.raises(ValueError, match="needs the cupy backend"):
        gpunet.train(net, np.ones((4, 4)), np.array([0, 1, 0, 1]), epochs=1, kernels=kernels)


def test_unknown_kernels_name_is_refused():
    with pytest.raises(ValueError, match="kernels must be one of auto, plain, fused, graph; got 'fast'"):
        gpunet.Network.article([4, 3, 2], backend="numpy", kernels="fast")


class _FakeCupyNet:
    """Enough of a Network on the cupy backend for select's decisions (no device needed)."""

    backend = type("B", (), {"name": "cupy"})()
    activation, output = "sigmoid", "sigmoid"


class _Custom(Optimizer):
    def _update(self, name, p, g, lr):
        p -= lr * g


def test_choose_on_cupy(monkeypatch):
    net = _FakeCupyNet()
    monkeypatch.setattr(select, "VERIFIED", frozenset())
    assert select.choose("fused", net, Adam()) == "fused"
    assert select.choose("auto", net, Adam()) == "plain"
    with pytest.raises(ValueError, match="flat optimiser kernel implements SGD, Momentum, Adam and AdamW; got _Custom"):
        select.choose("fused", net, _Custom())
    monkeypatch.setattr(select, "VERIFIED", frozenset({"fused"}))
    assert select.choose("auto", net, Adam()) == "fused"
    assert select.choose("auto", net, _Custom()) == "plain"  # auto never fails: it falls back
    assert select.choose("auto", net, SGD(), per_sample=True) == "plain"
    monkeypatch.setattr(select, "VERIFIED", frozenset({"fused", "per-sample"}))
    assert select.choose("auto", net, SGD(), per_sample=True) == "fused"


def test_auto_takes_per_sample_epochs_only_once_verified_apart_from_batch_graphs(monkeypatch):
    """"graph" trains batches in CUDA graphs and per-sample SGD in PerSampleEpochs: auto needs a device run's
    word for each ("graph" and "per-sample-epochs"), and the per-sample kernel of "fused" for "fused" too."""
    net = _FakeCupyNet()
    assert select.choose("graph", net, SGD(), per_sample=True) == "graph"  # asked for: PerSampleEpochs
    assert select.choose("graph", net, SGD()) == "graph"
    monkeypatch.setattr(select, "VERIFIED", frozenset({"graph", "fused", "per-sample"}))
    assert select.choose("auto", net, SGD(), per_sample=True) == "fused"
    assert select.choose("auto", net, SGD()) == "graph"
    monkeypatch.setattr(select, "VERIFIED", frozenset({"fused", "per-sample", "per-sample-epochs"}))
    assert select.choose("auto", net, SGD(), per_sample=True) == "graph"
    assert select.choose("auto", net, SGD()) == "fused"
    monkeypatch.setattr(select, "VERIFIED", frozenset({"graph", "per-sample"}))
    assert select.choose("auto", net, SGD(), per_sample=True) == "plain"  # the kernel is fused's: not verified


class _PlanNet(_FakeCupyNet):
    sizes = [4, 3, 2]

    def __init__(self, kernels):
        self.kernels = kernels


def _refuse(*args):
    raise ValueError("graph mode does not support this")


def _fake_engines(monkeypatch, graph=None, per_sample_graph=None, supports=lambda net: None):
    """select's engines replaced by ones that say which ran, and with how many rows a step."""
    def tag(name):
        return lambda net, optimizer, X, T, rows: (name, rows)
    monkeypatch.setattr(select, "BATCH_ENGINES", {"plain": tag("plain"), "fused": tag("fused"),
                                                  "graph": graph or tag("graph")})
    monkeypatch.setattr(select, "PER_SAMPLE_ENGINES", {"plain": tag("plain per-sample"), "fused": tag("kernel chunk"),
                                                       "graph": per_sample_graph or tag("per-sample epochs")})
    monkeypatch.setattr(select.per_sample_kernel, "supports", supports)


def test_engine_picks_the_path(monkeypatch):
    _fake_engines(monkeypatch, graph=_refuse)
    monkeypatch.setattr(select, "VERIFIED", frozenset())
    assert select.engine(_PlanNet("fused"), "plain", Adam(), None, None, 16, False) == ("plain", 16)  # train's wins
    assert select.engine(_PlanNet("auto"), None, Adam(), None, None, 16, False) == ("plain", 16)
    assert select.engine(_PlanNet("fused"), None, Adam(), None, None, 16, False) == ("fused", 16)
    with pytest.raises(ValueError, match="graph mode does not support this"):
        select.engine(_PlanNet("graph"), None, Adam(), None, None, 16, False)
    monkeypatch.setattr(select, "VERIFIED", frozenset({"graph"}))
    assert select.engine(_PlanNet("auto"), None, Adam(), None, None, 16, False) == ("plain", 16)  # auto falls back


def test_auto_takes_graph_mode_up_to_the_largest_product_a_device_run_saw_it_win(monkeypatch):
    """Graph mode won up to 784-1024-10 at batch 1024 (docs/benchmarks.md); beyond, auto takes fused, while
    kernels="graph" asked for still gets graph mode, and per-sample epochs are not bounded by it."""
    _fake_engines(monkeypatch)
    net = _PlanNet("auto")
    net.sizes = [784, 1024, 10]
    assert select.widest_product(net, 1024) == select.GRAPH_MAX_PRODUCT == 1024 * 784 * 1024
    assert select.engine(net, None, Adam(), None, None, 1024, False) == ("graph", 1024)
    assert select.engine(net, None, Adam(), None, None, 1025, False) == ("fused", 1025)
    assert select.engine(net, "graph", Adam(), None, None, 4096, False) == ("graph", 4096)
    net.sizes = [100, 2048, 2048, 10]  # the widest layer sets the bound: 196 x 2048 x 2048 <= 1024 x 784 x 1024
    assert select.engine(net, None, SGD(), None, None, 196, False)[0] == "graph"
    assert select.engine(net, None, SGD(), None, None, 197, False)[0] == "fused"


def test_auto_passes_graph_mode_over_where_the_caller_wants_calls_every_step(monkeypatch):
    _fake_engines(monkeypatch)
    net = _PlanNet("auto")
    for per_sample, wanted, instead in ((False, "graph", "fused"), (True, "per-sample epochs", "kernel chunk")):
        assert select.engine(net, None, SGD(), None, None, 64, per_sample)[0] == wanted
        assert select.engine(net, None, SGD(), None, None, 64, per_sample, step_calls=True)[0] == instead
        assert select.engine(net, "graph", SGD(), None, None, 64, per_sample, step_calls=True)[0] == wanted


def test_graph_mode_asks_should_stop_after_each_epoch_and_the_run_resumes_at_the_next(monkeypatch):
    """gpunet.train with a graph plan (its launches run by the NumPy transcriptions here): on_batch once an epoch,
    should_stop after each epoch but the last; True stops at row 0 of the next epoch, and resuming there gives
    the uninterrupted run."""
    from gpunet.engines.graph import GraphEngine
    from gpunet.training import TrainingInterrupted

    real_engine = select.engine

    def graph_plan(net, kernels, optimizer, X, T, rows, per_sample, step_calls=False):
        return GraphEngine(net, optimizer, X, T, rows, transcriptions.graph_launch)

    rng = np.random.default_rng(5)
    X, y = rng.random((11, 5)), rng.integers(0, 3, 11)

    def net():
        return gpunet.Network.article([5, 4, 3], "tanh", "softmax", "cross-entropy", seed=2, backend="numpy", dtype="float64")

    whole = net()
    history = gpunet.train(whole, X, y, epochs=3, batch_size=4, lr=0.3, optimizer="sgd", seed=7)
    monkeypatch.setattr(select, "engine", graph_plan)
    stopped, asked, rows = net(), [], []
    with pytest.raises(TrainingInterrupted) as stop:
        gpunet.train(stopped, X, y, epochs=3, batch_size=4, lr=0.3, optimizer="sgd", seed=7,
                     on_batch=lambda n, loss: rows.append(n),
                     should_stop=lambda: asked.append(1) or len(asked) == 2)
    assert (stop.value.epoch, stop.value.rows, stop.value.loss_sum) == (3, 0, 0.0) and rows == [11, 11]
    monkeypatch.setattr(select, "engine", real_engine)
    rest = gpunet.train(stopped, X, y, epochs=3, batch_size=4, lr=0.3, optimizer="sgd", seed=7, start_epoch=3)
    assert rel_diff(rest[0]["train_loss"], history[2]["train_loss"]) < 1e-12
    for k, v in whole.get_params().items():
        assert rel_diff(stopped.get_params()[k], v) < 1e-12


def test_per_sample_sgd_on_a_network_the_kernel_does_not_cover_takes_the_plain_path(monkeypatch):
    """A network the per-sample kernel cannot run (two hidden layers, say) trains per-sample SGD on the plain
    path under "fused" and "graph", not a kernel that refuses it mid-run."""
    _fake_engines(monkeypatch, supports=lambda net: "the kernel covers networks with one hidden layer; this one has 2")
    for kernels in ("fused", "graph"):
        assert select.engine(_PlanNet(kernels), None, SGD(), None, None, 1, True) == ("plain per-sample", 1), kernels
    monkeypatch.setattr(select.per_sample_kernel, "supports", lambda net: None)
    assert select.engine(_PlanNet("fused"), None, SGD(), None, None, 64, True) == ("kernel chunk", 64)
    assert select.engine(_PlanNet("graph"), None, SGD(), None, None, 64, True) == ("per-sample epochs", 64)
    assert select.engine(_PlanNet("fused"), None, Adam(), None, None, 1, False) == ("fused", 1)  # batches of 1, Adam
    monkeypatch.setitem(select.PER_SAMPLE_ENGINES, "graph", _refuse)
    monkeypatch.setattr(select, "VERIFIED", frozenset({"fused", "per-sample", "per-sample-epochs"}))
    assert select.engine(_PlanNet("auto"), None, SGD(), None, None, 64, True) == ("kernel chunk", 64)  # falls back
    with pytest.raises(ValueError, match="graph mode does not support this"):
        select.engine(_PlanNet("graph"), None, SGD(), None, None, 64, True)  # asked for: the reason



def test_plain_kernels_train_the_same_as_auto():
    X, T = _data(40, 6, 3)
    runs = []
    for kernels in ("auto", "plain"):
        net = gpunet.Network.article([6, 5, 3], backend="numpy", dtype="float64", seed=2)
        gpunet.train(net, X, T, epochs=2, batch_size=8, lr=0.1, optimizer="momentum", kernels=kernels)
        runs.append(net.get_params())
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_cli_kernels_fused_on_numpy_is_one_line_and_writes_nothing(tmp_path, capsys):
    from gpunet.cli import main

    out = tmp_path / "run"
    assert main(["train", "--backend", "numpy", "--kernels", "fused", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--kernels fused needs the cupy backend" in err
    assert "(use --kernels auto or --kernels plain)" in err  # the library's kernels='auto', spelled as an option
    assert not out.exists()


# --- on a device (marker gpu): the fused kernels against the plain path ---------------------------------

# The learning rate of each optimiser in the runs below. Momentum's step is about lr / (1 - 0.9) = 10 lr:
# at lr 0.1 the one absolute-loss run with a tanh output passes residuals so close to zero that their
# sign, and so the whole trajectory, turns on rounding (H100, 2026-11-27: fused 1.03e-4 from plain in
# float32, and NumPy's own float32 run 1.1e-4 from its float64 run).
PAIR_LR = {"sgd": 0.1, "sgd-wd": 0.1, "momentum": 0.03, "adam": 0.01, "adamw": 0.01}


def _pair_setup(activation, output, loss, dtype, backend):
    """The data, the network settings and train()'s settings shared by every plain/fused pair below."""
    X, T = _data(250, 12, 4, one_hot=loss == "cross-entropy")
    kw = dict(activation=activation, output=output, loss=loss, init="xavier", seed=3, backend=backend, dtype=dtype)
    return X, T, kw, dict(batch_size=16, lr_decay=0.9, seed=1)


def _pair_cases():
    """(activation, output, loss, optimizer) of every pair the gpu tests train."""
    # silu with the absolute loss is left out: its float32 trajectory turns on the loss's sign changes
    # (1.4e-5 from float64 after 112 steps of plain SGD), more than the tenth of 1e-4 this check allows.
    every_pair = [(HIDDEN[i % len(HIDDEN)], output, loss) for i, (output, loss) in enumerate(PAIRS)
                  if (output, loss) != ("silu", "absolute")]
    with_resume = [(activation, "softmax", "cross-entropy") for activation in HIDDEN]
    return [(*case, optimizer) for case in every_pair + with_resume for optimizer in OPTIMIZERS]


def test_the_gpu_pairs_are_well_conditioned_in_float32():
    """A float32 run can only be held to the plain path's 1e-4 where float32 rounding cannot move it that
    far: NumPy's float32 run of each pair must stay within a tenth of that of its float64 run."""
    worst = {}
    for activation, output, loss, optimizer in _pair_cases():
        params = {}
        for dtype in DTYPES:
            X, T, kw, common = _pair_setup(activation, output, loss, dtype, "numpy")
            net = gpunet.Network.article([12, 16, 8, 4], **kw)
            gpunet.train(net, X, T, epochs=7, optimizer=OPTIMIZERS[optimizer](), lr=PAIR_LR[optimizer], **common)
            params[dtype] = net.get_params()
        worst[activation, output, loss, optimizer] = max(rel_diff(params["float32"][k], params["float64"][k])
                                                         for k in params["float64"])
    assert max(worst.values()) <= TOLERANCE["float32"] / 10, max(worst, key=worst.get)


def _train_pair(activation, output, loss, optimizer, dtype, resume, kernels="fused"):
    """gpunet.train, plain and by ``kernels``, 7 epochs of 16 batches (the last of 10 rows): 112 steps. With
    ``resume``, a fused run stops after 3 epochs and 40 rows (graph mode asks should_stop only between
    epochs), and a new network and optimiser continue it by ``kernels``."""
    backend = require("cupy")
    X, T, kw, common = _pair_setup(activation, output, loss, dtype, backend)
    common["lr"] = PAIR_LR[optimizer]
    plain_net, plain_opt = gpunet.Network.article([12, 16, 8, 4], **kw), OPTIMIZERS[optimizer]()
    plain = gpunet.train(plain_net, X, T, epochs=7, optimizer=plain_opt, kernels="plain", **common)
    fast_net, fast_opt = gpunet.Network.article([12, 16, 8, 4], kernels=kernels, **kw), OPTIMIZERS[optimizer]()
    if not resume:
        got = gpunet.train(fast_net, X, T, epochs=7, optimizer=fast_opt, **common)
    else:
        calls = iter(range(10**6))
        with pytest.raises(gpunet.training.TrainingInterrupted) as stop:
            gpunet.train(fast_net, X, T, epochs=7, optimizer=fast_opt, kernels="fused",
                         should_stop=lambda: next(calls) == 3 * 16 + 2, **common)
        fresh_net, fresh_opt = gpunet.Network.article([12, 16, 8, 4], kernels=kernels, **kw), OPTIMIZERS[optimizer]()
        fresh_net.set_params(fast_net.get_params())
        fresh_opt.load_state_dict(fast_opt.state_dict(), fresh_net.params)
        got = gpunet.train(fresh_net, X, T, epochs=7, optimizer=fresh_opt, start_epoch=stop.value.epoch,
                           start_row=stop.value.rows, start_loss=stop.value.loss_sum, **common)
        fast_net, fast_opt = fresh_net, fresh_opt
    tol = TOLERANCE[dtype]
    assert rel_diff([r["train_loss"] for r in got], [r["train_loss"] for r in plain[-len(got):]]) <= tol
    for k, p in plain_net.get_params().items():
        assert rel_diff(fast_net.get_params()[k], p) <= tol, k
    assert fast_opt.t == plain_opt.t == 7 * 16


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize(("output", "loss"), PAIRS)
def test_gpu_fused_equals_plain_for_every_output_loss_and_optimiser(output, loss, optimizer, dtype):
    _train_pair(HIDDEN[PAIRS.index((output, loss)) % len(HIDDEN)], output, loss, optimizer, dtype, resume=False)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_gpu_fused_equals_plain_for_every_hidden_activation_with_resume(activation, optimizer, dtype):
    _train_pair(activation, "softmax", "cross-entropy", optimizer, dtype, resume=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("resume", [False, True], ids=["whole", "resumed"])
def test_gpu_graph_mode_through_train_equals_plain(resume, optimizer, dtype):
    """gpunet.train(kernels="graph"): every epoch one replay; resumed, the interrupted epoch's rest runs as
    fused steps (their own flat buffers), then the graph takes the parameters and state over."""
    _train_pair("sigmoid", "softmax", "cross-entropy", optimizer, dtype, resume, kernels="graph")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_kernels_equal_their_numpy_transcriptions(dtype):
    backend = require("cupy")
    xp = backend.xp
    rng = np.random.default_rng(9)
    for activation, (output, loss) in zip(HIDDEN * 4, PAIRS):
        k = fused.CudaKernels(backend, dtype, activation, output, loss)
        Z, b = rng.normal(0, 2, (70, 45)).astype(dtype), rng.normal(0, 1, 45).astype(dtype)
        _, T = _data(70, 1, 45, one_hot=loss == "cross-entropy")
        T = T.astype(dtype)
        loss_rows = np.empty(70, dtype=dtype)
        Zd, bd, Td, ld = (xp.asarray(a) for a in (Z, b, T, loss_rows))
        transcriptions.output_layer(Z, b, T, loss_rows, 0.01, out=OUTPUT_CODES[output], loss_code=LOSS_CODES[loss])
        k.output_layer(Zd, bd, Td, ld, output, loss, 0.01)
        assert rel_diff(backend.to_host(Zd), Z) <= KERNEL_TOLERANCE[dtype] * 10, (output, loss)
        assert rel_diff(backend.to_host(ld), loss_rows) <= KERNEL_TOLERANCE[dtype] * 10, (output, loss)
        A = ACTIVATIONS[activation].forward(rng.normal(0, 2, (70, 45))).astype(dtype)
        dA, db = rng.normal(0, 1, (70, 45)).astype(dtype), np.zeros(45, dtype=dtype)
        dAd, Ad, dbd = xp.asarray(dA), xp.asarray(A), xp.asarray(db)
        transcriptions.delta_bias(dA, A, db, delta_bias_geometry(70, 45)[1][1], act=ACT_CODES[activation], update=False)
        k.delta_bias(dAd, Ad, dbd, activation, False)
        assert rel_diff(backend.to_host(dAd), dA) <= KERNEL_TOLERANCE[dtype]
        assert rel_diff(backend.to_host(dbd), db) <= KERNEL_TOLERANCE[dtype] * 10


def test_auto_runs_a_rule_no_device_has_run_on_the_plain_path_and_kernels_runs_it_when_asked():
    net = _FakeCupyNet()
    assert "adamw" not in select.VERIFIED_RULES
    assert select.choose("auto", net, AdamW()) == "plain"
    assert select.choose("auto", net, Adam()) == "graph"
    assert select.choose("fused", net, AdamW()) == "fused"  # asked for: it runs
