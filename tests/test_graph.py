"""Graph mode: gemm.cu's kernels through their NumPy transcriptions (transcriptions.py) against the plain path of
network.py and train, GraphTrainer's bookkeeping, and the same runs on a GPU (test_cuda_compile.py compiles
gemm.cu, with every instantiation and no spills, as it does every source)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import transcriptions
from conftest import rel_diff, require
from gpunet import Network, train
from gpunet.activations import ACTIVATIONS, FUSED, LEAKY_SLOPE
from gpunet.activations import HIDDEN_ACTIVATIONS as ALL_HIDDEN
from gpunet.engines import kernels as cuda
from gpunet.engines import fused, gemm
from gpunet.engines import graph as graph_module
from gpunet.engines.graph import PAIRS, GraphEngine, GraphTrainer
from gpunet.engines.kernels import READ_OFF_OUTPUT

HIDDEN_ACTIVATIONS = tuple(a for a in ALL_HIDDEN if a in cuda.ACT_CODES)  # the ones graph mode has code for
from gpunet.engines.graph import EXPRESSIONS as NAME_EXPRESSIONS
from gpunet.optim import SGD, Adam, AdamW, Momentum
from gpunet.training import TrainingInterrupted

SIZES = [5, 7, 6, 4]  # two hidden layers: every kind of launch, twice where a step has one per layer
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}  # CPU transcription against the plain path
GPU_TOLERANCE = {"float32": 1e-4, "float64": 1e-9}


def data(n: int, sizes: list[int] = SIZES, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, sizes[0])), rng.integers(0, sizes[-1], n)


def make_net(activation: str, output: str, loss: str, dtype: str, backend: str = "numpy", sizes=SIZES,
             dropout=None) -> Network:
    return Network(sizes, activation, output, loss, init="article", seed=3, backend=backend, dtype=dtype,
                   dropout=dropout)


def trainer(net: Network, X: np.ndarray, y: np.ndarray, batch_size: int, optimizer=None) -> GraphTrainer:
    """A GraphTrainer: on NumPy its launches run by the transcriptions, on CuPy by the device."""
    to = net.backend.to_device
    T = to(net.targets_from_labels(y), net.dtype)
    launcher = transcriptions.graph_launch if net.backend.name == "numpy" else None
    return GraphTrainer(net, optimizer or SGD(), to(X, net.dtype), T, batch_size, launcher)


LAUNCHER = transcriptions.graph_launch


def graph_epochs(g: GraphTrainer, epochs: range, lr: float, seed: int, lr_decay: float = 1.0) -> list[float]:
    """Epochs driven like gpunet.train drives the plain path: its permutations and learning rates."""
    losses = []
    for e in epochs:
        order = g.net.backend.to_device(np.random.default_rng([seed, e]).permutation(g.n))
        losses.append(float(g.run_epoch(order, lr * lr_decay ** (e - 1))) / g.n)
    return losses


def params_diff(a: Network, b: Network) -> float:
    return max(rel_diff(b.get_params()[k], a.get_params()[k]) for k in a.params)


# --- the transcribed kernels against plain formulas --------------------------------------------------


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False)])
def test_tile_product_is_the_matrix_product(trans_a: bool, trans_b: bool) -> None:
    rng = np.random.default_rng(0)
    M, Nc, K = 19, 23, 600  # none a multiple of TILE; K spans three slices of KTILE, five of KTILE_DOUBLE
    A, B = rng.normal(size=(M, K)), rng.normal(size=(K, Nc))
    stored_A = np.ascontiguousarray(A.T) if trans_a else A
    stored_B = np.ascontiguousarray(B.T) if trans_b else B
    C = transcriptions.tile_product(stored_A, stored_B, M, Nc, K, trans_a, trans_b)
    assert C.shape == (M, Nc)
    assert rel_diff(C, A @ B) < 1e-13


def test_tile_product_adds_in_k_order() -> None:
    # 1 + 2^-53 + 2^-53 ... rounds to 1 in order k = 0, 1, ...: the big term first swallows each small one.
    K = 20
    A = np.ones((1, K))
    B = np.full((K, 1), 2.0**-53)
    B[0, 0] = 1.0
    assert transcriptions.tile_product(A, B, 1, 1, K, False, False)[0, 0] == 1.0
    assert math.fsum(B[:, 0]) > 1.0  # summed exactly, the small terms add up


def test_loss_total_sums_more_rows_than_threads_and_accumulates() -> None:
    loss = np.arange(1.0, 601.0)  # 600 rows > LOSS_THREADS
    total = np.array([123.0])
    transcriptions.loss_total(loss, 600, 1, total)
    assert total[0] == 600 * 601 / 2
    transcriptions.loss_total(loss, 10, 0, total)
    assert total[0] == 600 * 601 / 2 + 55


def test_gather_rows_takes_the_ordered_rows_of_both_arrays_and_marks_bad_indices_with_nan() -> None:
    X, T = np.arange(12.0).reshape(4, 3), -np.arange(8.0).reshape(4, 2)
    order = np.array([2, 0, 3, 7, 1])
    Xb, Tb = np.zeros((3, 3)), np.zeros((3, 2))
    transcriptions.gather_rows(X, T, order, 1, 3, 3, 2, 4, Xb, Tb)  # rows order[1:4] = 0, 3, 7 (out of range)
    np.testing.assert_array_equal(Xb[:2], X[[0, 3]])
    np.testing.assert_array_equal(Tb[:2], T[[0, 3]])
    assert np.isnan(Xb[2]).all() and np.isnan(Tb[2]).all()


def test_weight_grad_writes_the_weight_and_bias_gradients_in_one_launch() -> None:
    rng = np.random.default_rng(2)
    A_prev, delta = rng.normal(size=(9, 5)), rng.normal(size=(9, 4))
    dW, db = np.zeros((5, 4)), np.zeros(4)
    lr = np.array([0.5])
    transcriptions.weight_grad(A_prev, delta, None, dW, None, db, lr, 0.0, 9, 5, 4, mode=gemm.GRAD_WRITE)
    assert rel_diff(dW, A_prev.T @ delta) < 1e-13
    in_row_order = np.zeros(4)
    for r in range(9):  # the bias's row of the product adds delta's rows in order: exactly
        in_row_order += delta[r]
    np.testing.assert_array_equal(db, in_row_order)
    W, b = rng.normal(size=(5, 4)), rng.normal(size=4)
    W0, b0 = W.copy(), b.copy()
    transcriptions.weight_grad(A_prev, delta, W, None, b, None, lr, 0.1, 9, 5, 4, mode=gemm.SGD_DECAY)
    assert rel_diff(W, W0 - 0.5 * (dW + 0.1 * W0)) < 1e-13
    assert rel_diff(b, b0 - 0.5 * db) < 1e-13  # biases never decay


def test_act_codes_match_the_python_activations() -> None:
    from gpunet.engines.kernels import ACT_CODES

    Z = np.linspace(-3, 3, 13)
    for name, code in ACT_CODES.items():
        A = ACTIVATIONS[name].forward(Z.copy())
        assert rel_diff(transcriptions.act_forward(code, Z), A) < 1e-15
        dA = np.linspace(1, 2, 13)
        kept = A if ACTIVATIONS[name].from_output else Z  # where the derivative is read: the output, or the input
        want = ACTIVATIONS[name].backward(kept.copy(), dA.copy())
        assert rel_diff(transcriptions.act_backward_at(code, kept, dA), want) < 1e-15


def test_cross_entropy_comes_from_the_logits_worked_by_hand() -> None:
    # Sigmoid: Z = (40, -40, 0), T = (0, 0, 1). Y rounds to (1, 0, 0.5), where log(1 - y) and log(y) break
    # down; from the logits the loss is softplus(40) + softplus(-40) + softplus(0) - 0 = 40 + 2 e^-40 + log 2.
    Z = np.array([[40.0, -40.0, 0.0]])
    T = np.array([[0.0, 0.0, 1.0]])
    Y, delta, loss, lr = Z.copy(), np.zeros((1, 3)), np.zeros(1), np.array([0.5])
    transcriptions.output_delta(Y, T, delta, loss, lr, 1, 1, 3, out=transcriptions.SIGMOID,
                                loss_code=transcriptions.CROSS_ENTROPY)
    assert abs(loss[0] - (40 + 2 * math.exp(-40) + math.log(2))) < 1e-14
    np.testing.assert_array_equal(Y, [[1.0, 0.0, 0.5]])  # the sigmoid, in place (the old loss: 708 + log 2)
    np.testing.assert_array_equal(delta, (Y - T) * 0.5)  # dL/dZ = y - t, times lr / N
    # Softmax: Z = (1000, 0, -1000), T = (0, 1, 0): logsumexp(Z) = 1000 (+ e^-1000, lost), minus t . z = 0.
    Z = np.array([[1000.0, 0.0, -1000.0]])
    T = np.array([[0.0, 1.0, 0.0]])
    Y = Z.copy()
    transcriptions.output_delta(Y, T, delta, loss, lr, 0, 1, 3, out=transcriptions.SOFTMAX,
                                loss_code=transcriptions.CROSS_ENTROPY)
    assert loss[0] == 1000.0
    np.testing.assert_array_equal(Y, [[1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(delta, [[1.0, -1.0, 0.0]])  # y sum(t) - t, times 1 / N


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_cross_entropy_rows_equal_the_fused_losses(output: str) -> None:
    # Soft targets whose rows do not sum to 1 and logits in the hundreds: every term of the fused formula counts.
    rng = np.random.default_rng(4)
    Z = rng.normal(scale=300.0, size=(37, 6))
    T = rng.uniform(size=(37, 6))
    Y, delta, loss = Z.copy(), np.zeros((37, 6)), np.zeros(37)
    code = transcriptions.SOFTMAX if output == "softmax" else transcriptions.SIGMOID
    ce = transcriptions.CROSS_ENTROPY
    transcriptions.output_delta(Y, T, delta, loss, np.array([0.1]), 1, 37, 6, out=code, loss_code=ce)
    fused = FUSED[(output, "cross-entropy")]
    assert rel_diff(loss, fused.per_sample(Z, T)) < 1e-15
    A = ACTIVATIONS[output].forward(Z.copy())
    assert rel_diff(Y, A) < 1e-15
    assert rel_diff(delta, fused.delta(A, T) * (0.1 / 37)) < 1e-15


# --- whole epochs against gpunet.train's plain path -------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output,loss", PAIRS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_epochs_equal_the_plain_path(activation: str, output: str, loss: str, dtype: str) -> None:
    X, y = data(11)  # batches of 4: 4, 4 and a partial 3
    plain, graph = make_net(activation, output, loss, dtype), make_net(activation, output, loss, dtype)
    history = train(plain, X, y, epochs=2, batch_size=4, lr=0.3, lr_decay=0.5, seed=5, optimizer="sgd")
    opt, arrays = SGD(), dict(graph.params)
    losses = graph_epochs(trainer(graph, X, y, 4, opt), range(1, 3), 0.3, 5, lr_decay=0.5)
    assert all(graph.params[k] is a for k, a in arrays.items())  # the network's own arrays, stepped in place
    assert params_diff(graph, plain) < TOLERANCE[dtype]
    assert rel_diff(losses, [r["train_loss"] for r in history]) < TOLERANCE[dtype]
    assert opt.t == 6


def old_clamped_loss(net: Network, X: np.ndarray, y: np.ndarray) -> float:
    """The mean loss graph mode used to compute for cross-entropy, -sum t log max(y, tiny) (and the
    1 - y term for sigmoid outputs), from the outputs Y instead of the logits."""
    Y, T, tiny = net.forward(X), net.targets_from_labels(y), np.finfo(np.float64).tiny
    L = T * np.log(np.maximum(Y, tiny))
    if net.output == "sigmoid":
        L += (1 - T) * np.log(np.maximum(1 - Y, tiny))
    return float(-L.sum(axis=1).mean())


@pytest.mark.parametrize("output,loss", PAIRS)
def test_saturated_epoch_losses_equal_the_plain_path(output: str, loss: str) -> None:
    # Weights of scale 300: the hidden tanh units sit at +-1 and the logits reach the thousands, where a
    # sigmoid output rounds to exactly 0 or 1 and a softmax output to a one-hot row.
    X, y = data(11)
    plain, graph = make_net("tanh", output, loss, "float64"), make_net("tanh", output, loss, "float64")
    rng = np.random.default_rng(12)
    params = {k: rng.normal(scale=300.0 if k[0] == "W" else 1.0, size=v.shape) for k, v in plain.get_params().items()}
    for net in (plain, graph):
        net.set_params(params)
    if loss == "cross-entropy":  # the data saturates: the old formula from Y would be far off
        assert abs(old_clamped_loss(plain, X, y) - plain.loss(X, plain.targets_from_labels(y))) > 1.0
    history = train(plain, X, y, epochs=2, batch_size=4, lr=0.01, lr_decay=1.0, seed=5, optimizer="sgd")
    losses = graph_epochs(trainer(graph, X, y, 4), range(1, 3), 0.01, 5)
    assert rel_diff(losses, [r["train_loss"] for r in history]) <= 1e-12
    assert params_diff(graph, plain) <= 1e-12


@pytest.mark.parametrize("depth", [[5, 4], [5, 9, 4], [5, 9, 8, 4], [5, 9, 8, 7, 4], [5, *[6] * 10, 4],
                                   [5, 9, 20], [5, 9, 8, 20]])
def test_any_depth(depth: list[int]) -> None:
    """1 to 11 layers (1: a lone weight_grad; 11: weight_grads in parts of MAX_LAYERS), and 20 outputs (wider
    than a tile: the output delta runs as its own launch)."""
    X, y = data(13, depth)
    plain, graph = (make_net("tanh", "softmax", "cross-entropy", "float64", sizes=depth) for _ in range(2))
    train(plain, X, y, epochs=2, batch_size=5, lr=0.2, lr_decay=1.0, seed=7, optimizer="sgd")
    graph_epochs(trainer(graph, X, y, 5), range(1, 3), 0.2, 7)
    assert params_diff(graph, plain) < 1e-12


def test_one_batch_larger_than_the_data() -> None:
    X, y = data(6)
    plain, graph = (make_net("relu", "sigmoid", "squared", "float64") for _ in range(2))
    train(plain, X, y, epochs=1, batch_size=50, lr=0.4, lr_decay=1.0, seed=2, optimizer="sgd")
    g = trainer(graph, X, y, 50)
    assert g.batches() == [(0, 6)] and g.buffers["X"].shape == (6, 5)
    graph_epochs(g, range(1, 2), 0.4, 2)
    assert params_diff(graph, plain) < 1e-12


def test_sgd_with_weight_decay_updates_in_the_epilogue() -> None:
    X, y = data(11)
    plain, graph = (make_net("sigmoid", "softmax", "cross-entropy", "float64") for _ in range(2))
    train(plain, X, y, epochs=2, batch_size=4, lr=0.3, lr_decay=1.0, weight_decay=0.01, seed=4, optimizer="sgd")
    g = trainer(graph, X, y, 4, SGD(weight_decay=0.01))
    assert g.mode == gemm.SGD_DECAY
    graph_epochs(g, range(1, 3), 0.3, 4)
    assert params_diff(graph, plain) < 1e-12


def test_a_new_trainer_continues_where_the_plain_path_left_off() -> None:
    X, y = data(11)
    plain, resumed = (make_net("leaky_relu", "identity", "absolute", "float64") for _ in range(2))
    history = train(plain, X, y, epochs=3, batch_size=4, lr=0.1, lr_decay=1.0, seed=6, optimizer="sgd")
    train(resumed, X, y, epochs=1, batch_size=4, lr=0.1, lr_decay=1.0, seed=6, optimizer="sgd")
    losses = graph_epochs(trainer(resumed, X, y, 4), range(2, 4), 0.1, 6)
    assert params_diff(resumed, plain) < 1e-12
    assert rel_diff(losses, [r["train_loss"] for r in history[1:]]) < 1e-12


def test_an_interrupted_epoch_resumes_at_its_row() -> None:
    X, y = data(11)
    plain, resumed = (make_net("sigmoid", "sigmoid", "cross-entropy", "float64") for _ in range(2))
    history = train(plain, X, y, epochs=1, batch_size=3, lr=0.5, lr_decay=1.0, seed=8, optimizer="sgd")
    asked = iter([False, True])
    with pytest.raises(TrainingInterrupted) as stop:
        train(resumed, X, y, epochs=1, batch_size=3, lr=0.5, lr_decay=1.0, seed=8, should_stop=lambda: next(asked), optimizer="sgd")
    assert stop.value.rows == 6
    g = trainer(resumed, X, y, 3)
    assert g.batches(6) == [(6, 3), (9, 2)]
    order = np.random.default_rng([8, 1]).permutation(11)
    rest = float(g.run_epoch(order, 0.5, start_row=6))
    assert params_diff(resumed, plain) < 1e-12
    assert abs((stop.value.loss_sum + rest) / 11 - history[0]["train_loss"]) < 1e-12


# --- bookkeeping ---------------------------------------------------------------------------------


def test_buffers_batches_and_launches() -> None:
    X, y = data(11)
    g = trainer(make_net("tanh", "softmax", "cross-entropy", "float32"), X, y, 4)
    shapes = {k: v.shape for k, v in g.buffers.items()}
    assert shapes == {
        "order": (11,), "lr": (1,), "X": (4, 5), "T": (4, 4), "A1": (4, 7), "delta1": (4, 7), "A2": (4, 6),
        "delta2": (4, 6), "A3": (4, 4), "delta3": (4, 4), "loss": (11,), "loss_total": (1,),
    }
    floats = 4 * (5 + 4 + 2 * (7 + 6 + 4)) + 11 + 1
    assert g.workspace_bytes == 11 * 8 + 8 + 4 * floats
    assert g.batches() == [(0, 4), (4, 4), (8, 3)]
    launches = g.launches()
    # the gather, the hidden forwards, the output forward with its delta, the backwards, then every layer's
    # weight_grad (the biases' too) in one launch
    per_step = 1 + 2 + 1 + 2 + 1
    assert len(launches) == 3 * per_step + 1  # and the epoch's loss total
    last = launches[-per_step - 1 : -1]
    assert [launch.kernel for launch in last] == [
        "gather_rows", "forward", "forward", "forward_output", "backward", "backward", "weight_grads",
    ]
    assert last[0].args[3] == 8 and last[0].args[4] == 3  # the partial batch: rows order[8:11]
    assert last[3].args[7].shape == (3,) and np.shares_memory(last[3].args[7], g.buffers["loss"])  # rows 8-10
    total = launches[-1]
    assert total.kernel == "loss_total" and total.args[1:3] == (11, 1) and total.args[0].shape == (11,)
    assert g.launches(4)[-1].args[0].shape == (7,)  # a resumed epoch sums its own rows
    # softmax output: identity in the forward epilogue, softmax in the output part
    assert last[3].expression == "forward_output<float, 4, 5, 2>"
    for output, loss, act in [("sigmoid", "cross-entropy", 4), ("sigmoid", "squared", 0), ("relu", "absolute", 2)]:
        # sigmoid with cross-entropy keeps the logits too (its loss needs them); otherwise f is fused
        launches = trainer(make_net("tanh", output, loss, "float32"), X, y, 4).launches()
        assert launches[3].expression.startswith(f"forward_output<float, {act}, ")
    assert last[1].grid == (1, 1) and last[1].block == (16, 16)
    W2 = last[6].args[0][1]  # weight_grads' layers from the top: W3, W2, W1
    assert W2.W.shape == (7, 6) and (W2.first_block, W2.tiles_x) == (1, 1)  # and its bias row: 8 rows, one tile
    assert last[6].grid == (3,)  # one tile a layer
    assert {launch.expression for launch in launches} <= set(NAME_EXPRESSIONS)


def test_large_products_run_register_tiled() -> None:
    """784-1024-10 at batch 1024: the first layer's three products (1024 x 1024, 1024 x 1024 and 785 x 1024
    elements) take RTILE x RTILE elements a thread, 64 x 64 a block; the output layer's stay one a thread."""
    rng = np.random.default_rng(0)
    net = Network.article([784, 1024, 10], "relu", "softmax", "cross-entropy", seed=1, backend="numpy", dtype="float32")
    X = rng.random((1024, 784), dtype=np.float32)
    T = net.targets_from_labels(rng.integers(0, 10, 1024)).astype(np.float32)
    step = GraphTrainer(net, SGD(), X, T, 1024, LAUNCHER)._step(0, 1024)
    products = [(launch.kernel, launch.params.get("r", 1), launch.grid) for launch in step[1:]]  # after the gather
    # the output layer's forward runs at R = 1 with its delta (forward_output); the weight_grads of layers at
    # different R take a launch each, and a launch of one layer is weight_grad itself
    assert products == [("forward", 4, (16, 16)), ("forward_output", 1, (1, 64)), ("backward", 4, (16, 16)),
                        ("weight_grad", 1, (1, 65)), ("weight_grad", 4, (16, 13))]
    assert all(launch.block == (16, 16) and launch.expression in NAME_EXPRESSIONS for launch in step[1:])
    assert graph_module._tile_geometry(511, 1024)[2] == 1 and graph_module._tile_geometry(512, 1024)[2] == 4


def test_every_kernel_of_an_epoch_is_compiled_before_its_capture(monkeypatch) -> None:
    """A full batch of 1024 rows makes 784-1024-10's first-layer products register-tiled, a last batch of 300
    does not: both forms must be compiled before a capture (a resumed epoch's own last batch too)."""
    rng = np.random.default_rng(0)
    net = Network.article([784, 1024, 10], seed=1, backend="numpy", dtype="float32")
    X = rng.random((1324, 784), dtype=np.float32)
    T = net.targets_from_labels(rng.integers(0, 10, 1324)).astype(np.float32)
    g = GraphTrainer(net, SGD(), X, T, 1024, LAUNCHER)  # a launcher: nothing compiled at construction here
    expressions = {launch.expression for launch in g.launches()}
    assert {"forward<float, 0, 4>", "forward<float, 0, 1>"} <= expressions  # rows 0-1023, then 1024-1323
    compiled = []

    class Module:
        def __init__(self, names):
            compiled.extend(names)

        def get_function(self, name):
            return name
    monkeypatch.setattr(graph_module, "load", lambda backend, source, names: Module(names))
    g._load(g.launches())
    assert sorted(compiled) == sorted(expressions) and set(g._functions) == expressions
    compiled.clear()
    g._load(g.launches(700))  # a resume: batches of 624 rows (R = 4) and none new
    g._load(g.launches(1000))  # batches of 324 rows: nothing new either
    assert compiled == []


def _register_tiled(A, B, M, Nc, K, trans_a, trans_b, ones_row):
    """gemm.cu's tile_product_r and product<R = RTILE>, index for index: every block, every thread's staging
    loads into As and Bs, then its RTILE x RTILE elements; returns C as the kernels' element(r, c, value)
    calls would see it (rows beyond M + ones_row and columns beyond Nc dropped, as the epilogues drop them)."""
    T, R, KT = gemm.TILE, gemm.RTILE, gemm.KTILE_R
    W, threads = T * R, T * T
    C = np.full((M + 1, Nc), np.nan)
    for by in range(-(-(M + ones_row) // W)):
        for bx in range(-(-Nc // W)):
            r0, c0 = by * W, bx * W
            acc = np.zeros((threads, R, R))
            for k0 in range(0, K, KT):
                As, Bs = np.full((W, KT), np.nan), np.full((KT, W), np.nan)
                for q in range(W * KT // threads):
                    for tid in range(threads):
                        e = tid + q * threads
                        if trans_a:
                            i, kk = e % W, e // W
                        else:
                            kk, i = e % KT, e // KT
                        r, k = r0 + i, k0 + kk
                        if r < M and k < K:
                            As[i, kk] = A[k * M + r] if trans_a else A[r * K + k]
                        else:
                            As[i, kk] = 1.0 if (ones_row and r == M and k < K) else 0.0
                        if trans_b:
                            kk, j = e % KT, e // KT
                        else:
                            j, kk = e % W, e // W
                        c, k = c0 + j, k0 + kk
                        Bs[kk, j] = (B[c * K + k] if trans_b else B[k * Nc + c]) if (c < Nc and k < K) else 0.0
                assert not np.isnan(As).any() and not np.isnan(Bs).any()  # every staged element written
                for kk in range(min(KT, K - k0)):
                    for tid in range(threads):
                        tx, ty = tid % T, tid // T
                        a = As[ty + np.arange(R) * T, kk]
                        b = Bs[kk, tx + np.arange(R) * T]
                        acc[tid] += a[:, None] * b[None, :]
            for tid in range(threads):
                tx, ty = tid % T, tid // T
                for i in range(R):
                    for j in range(R):
                        r, c = r0 + ty + i * T, c0 + tx + j * T
                        if r <= M and c < Nc:
                            C[r, c] = acc[tid, i, j]
    return C if ones_row else C[:M]


@pytest.mark.parametrize("trans_a,trans_b,ones_row", [(False, False, False), (False, True, False),
                                                       (True, False, True)])
def test_register_tiled_product_indexes_every_element_once(trans_a: bool, trans_b: bool, ones_row: bool) -> None:
    # 70 x 67 over K = 45: two block tiles each way, the second ragged, and two k-slices, the second ragged;
    # forward (A @ B), backward (A @ B^T) and weight_grad (A^T @ B with the bias's row of ones).
    rng = np.random.default_rng(4)
    M, Nc, K = 70, 67, 45
    A, B = rng.normal(size=(M, K)), rng.normal(size=(K, Nc))
    stored_A = (A.T if trans_a else A).reshape(-1)
    stored_B = (B.T if trans_b else B).reshape(-1)
    C = _register_tiled(stored_A, stored_B, M, Nc, K, trans_a, trans_b, ones_row)
    want = np.vstack([A @ B, B.sum(axis=0)]) if ones_row else A @ B
    assert rel_diff(C, want) < 1e-13


def test_name_expressions_cover_every_configuration() -> None:
    # 120 for the activations read off the output; silu adds forward_keep, backward, and output_delta and
    # forward_output for its two output pairs (squared, absolute): 4 of each, 2 dtypes x 2 (R or pair)
    assert len(NAME_EXPRESSIONS) == len(set(NAME_EXPRESSIONS)) == 120 + 4 * 4
    compiled = {("gemm.cu", e) for e in NAME_EXPRESSIONS}
    compiled |= {("optim.cu", e) for e in fused.NAME_EXPRESSIONS["optim.cu"]}
    X, y = data(5)
    for dtype in ("float32", "float64"):
        for activation in HIDDEN_ACTIVATIONS:
            for output, loss in PAIRS:
                for opt in (SGD(), SGD(weight_decay=0.1), Momentum(), Adam()):
                    g = trainer(make_net(activation, output, loss, dtype), X, y, 2, opt)
                    assert {(launch.source, launch.expression) for launch in g.launches()} <= compiled


def test_the_returned_loss_is_a_copy() -> None:
    X, y = data(8)
    g = trainer(make_net("relu", "softmax", "cross-entropy", "float32"), X, y, 4)
    first = g.run_epoch(np.arange(8), 0.1)
    kept = float(first)
    g.run_epoch(np.arange(8), 0.1)
    assert first.shape == () and float(first) == kept


# --- momentum and Adam: gradients into the flat buffer, then one flat_step a step -------------------

GRAPH_OPTIMIZERS = {
    "momentum": lambda: Momentum(0.9),
    "momentum-wd": lambda: Momentum(0.8, weight_decay=0.01),
    "adam": lambda: Adam(),
    "adam-wd": lambda: Adam(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.02),
    "adamw": lambda: AdamW(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05),
}
GRAPH_LR = {"momentum": 0.05, "momentum-wd": 0.05, "adam": 0.01, "adam-wd": 0.01, "adamw": 0.01}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", GRAPH_OPTIMIZERS)
def test_momentum_and_adam_epochs_equal_the_plain_path(name: str, dtype: str) -> None:
    X, y = data(11)
    plain, graph = (make_net("tanh", "softmax", "cross-entropy", dtype) for _ in range(2))
    lr = GRAPH_LR[name]
    plain_opt, graph_opt = GRAPH_OPTIMIZERS[name](), GRAPH_OPTIMIZERS[name]()
    history = train(plain, X, y, epochs=3, batch_size=4, lr=lr, lr_decay=0.8, seed=5, optimizer=plain_opt)
    arrays = dict(graph.params)
    losses = graph_epochs(trainer(graph, X, y, 4, graph_opt), range(1, 4), lr, 5, lr_decay=0.8)
    assert all(graph.params[k] is a for k, a in arrays.items())  # the network's own arrays, stepped in place
    assert graph_opt.t == plain_opt.t == 9
    assert params_diff(graph, plain) < TOLERANCE[dtype]
    assert rel_diff(losses, [r["train_loss"] for r in history]) < TOLERANCE[dtype]
    for key, buffer in plain_opt.state.items():  # the state stays the optimiser's, as views into the flat buffers
        assert rel_diff(graph_opt.state[key], buffer) < TOLERANCE[dtype], key


@pytest.mark.parametrize("name,rule", [("momentum", 1), ("adam", 2)])
def test_momentum_and_adam_write_gradients_and_step_in_one_launch(name: str, rule: int) -> None:
    X, y = data(11)
    net = make_net("tanh", "softmax", "cross-entropy", "float32")
    g = trainer(net, X, y, 4, GRAPH_OPTIMIZERS[name]())
    assert g.mode == gemm.GRAD_WRITE
    assert all(net.params[k] is g.flat.param_views[k] for k in net.params)
    launches = g.launches()
    per_step = 1 + 2 + 1 + 2 + 1 + 1  # the SGD step's launches and the flat step
    assert len(launches) == 3 * per_step + 1  # and the epoch's loss total
    step = launches[-2]
    assert (step.kernel, step.source, step.expression) == ("flat_step", "optim.cu", f"flat_step<float, {rule}>")
    assert step.args[0] is g.flat.params and step.args[1] is g.flat.grads
    assert step.args[2] is g.flat.state["buf" if name == "momentum" else "m"]
    assert step.args[3] is (g.flat.params if name == "momentum" else g.flat.state["v"])  # v: unused by momentum
    assert step.args[4] == g.flat.params.size and step.args[6] is g.flat_optimizer.lr
    writes = launches[-3]  # every layer's weight_grad, in one launch before the flat step
    assert writes.kernel == "weight_grads" and writes.params == {"mode": gemm.GRAD_WRITE, "r": 1}
    first = writes.args[0][-1]  # the layers from the top: the last is the first layer
    assert first.dW is g.flat.grad_views["W1"] and first.db is g.flat.grad_views["b1"]  # its dW and db


def test_train_runs_graph_epochs_as_the_plain_path_and_makes_the_next_order_meanwhile(monkeypatch) -> None:
    """gpunet.train on a graph engine on NumPy (a GraphTrainer of transcriptions): each epoch's
    parameters and loss as the plain path's, and each next epoch's order made after the epoch's replay is
    launched and before its one sync, so the host's work runs while the device trains."""
    from gpunet import training
    from gpunet.engines import select

    real_order, real_check = training.epoch_order, training._check_finite
    events: list[tuple] = []

    def graph_plan(net, kernels, opt, X, T, rows, per_sample, step_calls=False):
        engine = GraphEngine(net, opt, X, T, rows, LAUNCHER)
        run_epoch = engine.trainer.run_epoch
        engine.trainer.run_epoch = lambda order, lr, start_row=0: (events.append(("replay",)), run_epoch(order, lr))[1]
        return engine

    X, y = data(203)
    nets = [make_net("tanh", "softmax", "cross-entropy", "float64") for _ in range(2)]
    plain = train(nets[0], X, y, epochs=3, batch_size=16, lr=0.1, lr_decay=1.0, seed=5, optimizer=SGD())
    monkeypatch.setattr(select, "engine", graph_plan)
    monkeypatch.setattr(training, "epoch_order",
                        lambda seed, epoch, n: (events.append(("order", epoch)), real_order(seed, epoch, n))[1])
    monkeypatch.setattr(training, "_check_finite", lambda *a: (events.append(("sync",)), real_check(*a))[1])
    graph = train(nets[1], X, y, epochs=3, batch_size=16, lr=0.1, lr_decay=1.0, seed=5, optimizer=SGD())
    assert events == [("order", 1), ("replay",), ("order", 2), ("sync",), ("replay",), ("order", 3), ("sync",),
                      ("replay",), ("sync",)]
    assert params_diff(*nets) < 1e-12
    assert rel_diff([r["train_loss"] for r in graph], [r["train_loss"] for r in plain]) < 1e-12


def test_fused_steps_and_graph_epochs_hand_over_parameters_and_state() -> None:
    """A resumed epoch in gpunet.train runs its first rows as fused steps, the rest in the graph: both step the
    network's own flat buffer, and each adopts the optimiser's state (in flat buffers of its own) from the other."""
    X, y = data(11)
    plain, graph = (make_net("relu", "sigmoid", "cross-entropy", "float64") for _ in range(2))
    plain_opt, graph_opt = Adam(weight_decay=0.01), Adam(weight_decay=0.01)
    train(plain, X, y, epochs=2, batch_size=4, lr=0.02, lr_decay=1.0, seed=2, optimizer=plain_opt)
    g = trainer(graph, X, y, 4, graph_opt)
    step = fused.FusedStep(graph, transcriptions.NumpyKernels())
    T = graph.targets_from_labels(y)
    order = np.random.default_rng([2, 1]).permutation(11)
    step(X[order[:4]], T[order[:4]], 0.02, graph_opt)  # epoch 1's first batch, fused
    assert graph.params["W1"] is step.flat.param_views["W1"]
    assert graph_opt.state["m.W1"] is step.flat.state_views["m"]["W1"]
    g.run_epoch(order, 0.02, start_row=4)  # the rest of epoch 1 in the graph
    assert graph.params["W1"] is g.flat.param_views["W1"]
    assert graph_opt.state["v.b2"] is g.flat.state_views["v"]["b2"]
    graph_epochs(g, range(2, 3), 0.02, 2)
    assert graph_opt.t == plain_opt.t == 6
    assert params_diff(graph, plain) < 1e-12


def test_a_restored_checkpoint_is_copied_into_the_graph() -> None:
    """set_params and load_state_dict after the graph was made (as a resume does): the next epoch trains
    from the restored parameters, state and step count, and equals the epoch first trained from them."""
    X, y = data(11)
    net, opt = make_net("sigmoid", "softmax", "cross-entropy", "float64"), Adam()
    g = trainer(net, X, y, 4, opt)
    graph_epochs(g, range(1, 2), 0.01, 3)
    params, state = net.get_params(), opt.state_dict()
    first = graph_epochs(g, range(2, 3), 0.01, 3)
    trained = net.get_params()
    net.set_params(params)
    opt.load_state_dict(state, net.params)  # new state arrays and t back to 3: the device's count is rewritten
    again = graph_epochs(g, range(2, 3), 0.01, 3)
    assert again == first and opt.t == 6
    assert all(np.array_equal(net.get_params()[k], trained[k]) for k in trained)


@pytest.mark.parametrize("optimizer", [SGD(), Momentum(0.5)])
def test_a_rebound_parameter_is_copied_in_before_the_next_epoch(optimizer) -> None:
    X, y = data(11)
    plain, graph = (make_net("leaky_relu", "identity", "squared", "float64") for _ in range(2))
    plain_opt = type(optimizer)(**optimizer.hyperparameters())
    train(plain, X, y, epochs=1, batch_size=4, lr=0.05, lr_decay=1.0, seed=4, optimizer=plain_opt)
    g = trainer(graph, X, y, 4, optimizer)
    graph_epochs(g, range(1, 2), 0.05, 4)
    for net in (plain, graph):
        net.params["W2"] = net.params["W2"] * 0.5  # a new array in the dict, not a write into the old one
    train(plain, X, y, epochs=2, start_epoch=2, batch_size=4, lr=0.05, lr_decay=1.0, seed=4, optimizer=plain_opt)
    graph_epochs(g, range(2, 3), 0.05, 4)
    assert graph.params["W2"] is g.flat.param_views["W2"]
    assert params_diff(graph, plain) < 1e-12


def test_other_optimisers_and_changed_hyperparameters_are_refused() -> None:
    class Nesterov(Momentum):  # a subclass may change the rule: the flat kernel would not follow
        pass

    X, y = data(5)
    net = make_net("relu", "softmax", "cross-entropy", "float32")
    with pytest.raises(ValueError, match="graph mode supports SGD, Momentum, Adam and AdamW; got Nesterov"):
        trainer(net, X, y, 2, Nesterov())
    with pytest.raises(TypeError, match="optimizer must be a gpunet Optimizer; got str"):
        trainer(net, X, y, 2, "adam")
    opt = Momentum(0.9)
    g = trainer(net, X, y, 2, opt)
    opt.momentum = 0.5
    with pytest.raises(ValueError, match=r"hyperparameters changed to \{'momentum': 0.5, .*make a new GraphTrainer"):
        g.run_epoch(np.arange(5), 0.1)
    assert opt.t == 0


def test_bad_arguments_are_named() -> None:
    X, y = data(5)
    net = make_net("relu", "softmax", "cross-entropy", "float32")
    T = net.targets_from_labels(y)
    with pytest.raises(ValueError, match="graph mode needs the cupy backend, or a launcher for its launches; got "
                                         "backend 'numpy' and no launcher"):
        GraphTrainer(net, SGD(), X.astype(np.float32), T, 2)
    with pytest.raises(TypeError, match="launcher must be a callable taking a Launch, or None; got str"):
        GraphTrainer(net, SGD(), X.astype(np.float32), T, 2, "transcriptions")
    with pytest.raises(ValueError, match=r"X must be C-contiguous float32"):
        GraphTrainer(net, SGD(), X, T, 2, LAUNCHER)  # float64 data for a float32 network
    with pytest.raises(ValueError, match=r"X must have shape \(n, 5\)"):
        GraphTrainer(net, SGD(), X[:, :3].astype(np.float32), T, 2, LAUNCHER)
    with pytest.raises(ValueError, match=r"T must have one row per row of X \(5\); got 4"):
        GraphTrainer(net, SGD(), X.astype(np.float32), T[:4], 2, LAUNCHER)
    with pytest.raises(ValueError, match="batch_size"):
        GraphTrainer(net, SGD(), X.astype(np.float32), T, 0, LAUNCHER)
    with pytest.raises(TypeError, match="net must be a gpunet Network"):
        GraphTrainer("net", SGD(), X, T, 2, LAUNCHER)
    g = GraphTrainer(net, SGD(), X.astype(np.float32), T, 2, LAUNCHER)
    with pytest.raises(ValueError, match=r"order must be a permutation of the 5 rows"):
        g.run_epoch(np.arange(4), 0.1)
    with pytest.raises(ValueError, match=r"order must be .* integer array; got ndarray of shape \(5,\) dtype float64"):
        g.run_epoch(np.arange(5.0), 0.1)
    with pytest.raises(ValueError, match="lr"):
        g.run_epoch(np.arange(5), -0.1)
    with pytest.raises(ValueError, match="start_row must be below the 5 training rows; got 5"):
        g.run_epoch(np.arange(5), 0.1, start_row=5)


# --- a step's launches: forward_output and weight_grads where they apply ---------------------------------

STEP_OPTIMIZERS = {"sgd": SGD, "sgd-wd": lambda: SGD(weight_decay=0.01), **GRAPH_OPTIMIZERS}
STEP_CASES = [  # sizes, batch, optimiser: the kernels of a step
    ([784, 100, 10], 64, "sgd", ["gather_rows", "forward", "forward_output", "backward", "weight_grads"]),
    ([784, 100, 50, 10], 64, "sgd",
     ["gather_rows", "forward", "forward", "forward_output", "backward", "backward", "weight_grads"]),
    ([784, 100, 10], 64, "adam", ["gather_rows", "forward", "forward_output", "backward", "weight_grads", "flat_step"]),
    ([784, 10], 64, "sgd", ["gather_rows", "forward_output", "weight_grad"]),  # one layer: a lone weight_grad
    ([784, 100, 20], 64, "sgd",  # 20 outputs, two column tiles: the output delta stays its own launch
     ["gather_rows", "forward", "forward", "output_delta", "backward", "weight_grads"]),
    ([784, 1024, 10], 1024, "sgd",  # the first layer's weight_grad at R = RTILE, the second's at R = 1
     ["gather_rows", "forward", "forward_output", "backward", "weight_grad", "weight_grad"]),
    ([5, *[6] * 10, 4], 4, "sgd",  # 11 layers: weight_grads in parts of MAX_LAYERS
     ["gather_rows", *["forward"] * 10, "forward_output", *["backward"] * 10, "weight_grads", "weight_grads"]),
]


@pytest.mark.parametrize("sizes,batch,name,kernels", STEP_CASES)
def test_a_step_s_launches(sizes: list[int], batch: int, name: str, kernels: list[str]) -> None:
    """Each layer's weight gradient in the launches after the last backward, from the top: in weight_grads, its
    tiles are weight_grad's grid for the layer, laid end to end in the one 1-D grid."""
    rng = np.random.default_rng(0)
    net = Network.article(sizes, "sigmoid", "sigmoid", "squared", seed=1, backend="numpy", dtype="float32")
    X = rng.random((batch, sizes[0]), dtype=np.float32)
    T = net.targets_from_labels(rng.integers(0, sizes[-1], batch)).astype(np.float32)
    g = GraphTrainer(net, STEP_OPTIMIZERS[name](), X, T, batch, LAUNCHER)
    step = g._step(0, batch)
    assert [launch.kernel for launch in step] == kernels
    assert all(launch.expression in NAME_EXPRESSIONS for launch in step if launch.source == "gemm.cu")
    from_the_top = iter(range(net.n_layers, 0, -1))
    for launch in step:
        if launch.kernel == "weight_grad":
            i = next(from_the_top)
            assert launch.args[2] is net.params[f"W{i}"] and launch.params["mode"] == g.mode
            assert launch.grid == graph_module._tile_geometry(sizes[i - 1] + 1, sizes[i])[0]
        if launch.kernel != "weight_grads":
            continue
        first = 0
        for layer in launch.args[0]:
            i = next(from_the_top)
            assert layer.W is net.params[f"W{i}"] and (layer.n_prev, layer.n_i) == (sizes[i - 1], sizes[i])
            (tiles_x, tiles_y), block, r = graph_module._tile_geometry(layer.n_prev + 1, layer.n_i)
            assert (layer.first_block, layer.tiles_x) == (first, tiles_x)
            assert launch.params == {"mode": g.mode, "r": r} and launch.block == block == (16, 16)
            first += tiles_x * tiles_y
        assert launch.grid == (first,) and len(launch.args[0]) <= gemm.MAX_LAYERS
    assert next(from_the_top, None) is None  # every layer's weight gradient, once


def test_forward_output_is_forward_and_output_delta_in_one_launch() -> None:
    X, y = data(11)
    g = trainer(make_net("tanh", "softmax", "cross-entropy", "float32"), X, y, 4)
    step = g._step(8, 3)  # the partial batch: rows order[8:11]
    fo = step[3]
    assert fo.kernel == "forward_output" and fo.expression == "forward_output<float, 4, 5, 2>"
    assert fo.grid == (1, 1) and fo.block == (16, 16)
    assert fo.args[3] is g.buffers["A3"] and fo.args[5] is g.buffers["T"] and fo.args[6] is g.buffers["delta3"]
    assert fo.args[7].shape == (3,) and np.shares_memory(fo.args[7], g.buffers["loss"])
    assert [int(a) for a in (fo.args[4], fo.args[9], fo.args[10], fo.args[11])] == [6, 1, 3, 4]  # n_in, fold, N, n_out


def test_gemm_py_holds_gemm_cu_s_defines() -> None:
    """gemm.py's constants, which graph.py's geometry and the transcriptions' slices use, are gemm.cu's #defines."""
    defines = {name: int(value) for name, value in re.findall(r"#define (\w+) (\d+)", cuda.source("gemm.cu"))}
    for name in ("TILE", "KTILE", "KTILE_DOUBLE", "RTILE", "KTILE_R", "LOSS_THREADS", "MAX_LAYERS", "GRAD_WRITE",
                 "SGD_FOLDED", "SGD_DECAY"):
        assert getattr(gemm, name) == defines[name], name
    assert transcriptions.LEAKY_SLOPE == LEAKY_SLOPE  # read from activations.cuh: the table's slope too


def test_the_layer_table_is_the_structs_layout() -> None:
    """graph.py packs weight_grads' WeightGradLayers by hand: its layout must be the C struct's (gemm.cu's
    static_asserts hold the struct to the same sizes): 6 pointers and 4 ints a layer, then the count."""
    text = cuda.source("gemm.cu")
    assert f"#define MAX_LAYERS {gemm.MAX_LAYERS} " in text
    assert "sizeof(WeightGradLayers<float>) == 64 * MAX_LAYERS + 8" in text
    assert graph_module.LAYER_DTYPE.itemsize == 64
    assert graph_module.LAYERS_DTYPE.itemsize == 64 * gemm.MAX_LAYERS + 8
    a = np.zeros(8)
    layers = (gemm.WeightGradLayer(a, a[1:], a[2:], a[3:], a[4:], a[5:], 3, 4, 0, 2),
              gemm.WeightGradLayer(a[6:], a, a, a, a, a, 5, 6, 7, 8))
    raw = graph_module.pack_layers(layers).tobytes()
    assert len(raw) == 520
    pointers = np.frombuffer(raw[:48], dtype=np.uint64) - a.ctypes.data
    assert pointers.tolist() == [0, 8, 16, 24, 32, 40]  # byte offsets of a[0], a[1], ...
    assert np.frombuffer(raw[48:64], dtype=np.int32).tolist() == [3, 4, 0, 2]
    assert np.frombuffer(raw[112:128], dtype=np.int32).tolist() == [5, 6, 7, 8]
    assert np.frombuffer(raw[512:516], dtype=np.int32).tolist() == [2] and raw[128:512] == bytes(384)
    for count in (0, gemm.MAX_LAYERS + 1):
        with pytest.raises(ValueError, match=f"weight_grads takes 1 to 8 layers; got {count}"):
            graph_module.pack_layers(layers[:1] * count)


STEP_FORM_CASES = [  # activation, output, loss, sizes, batch, optimiser, dtype
    ("sigmoid", "softmax", "cross-entropy", SIZES, 4, "sgd", "float32"),
    ("relu", "sigmoid", "squared", [5, 9, 20], 4, "sgd-wd", "float64"),  # 20 outputs: output_delta separate
    ("tanh", "sigmoid", "cross-entropy", [5, 9, 8, 7, 4], 3, "adam-wd", "float32"),
    ("leaky_relu", "identity", "absolute", [5, 4], 4, "momentum", "float64"),
    ("tanh", "softmax", "squared", [5, *[6] * 10, 4], 4, "momentum-wd", "float32"),
]


@pytest.mark.parametrize("tiling", ["one a thread", "register-tiled"])
@pytest.mark.parametrize("activation,output,loss,sizes,batch,name,dtype", STEP_FORM_CASES)
def test_every_step_form_equals_the_plain_path(activation, output, loss, sizes, batch, name, dtype, tiling,
                                               monkeypatch) -> None:
    """Two epochs (11 rows: a partial last batch) against gpunet.train's plain path: the parameters, losses and
    optimiser state. Register-tiled: every product at R = RTILE (no forward_output; weight_grads at R = RTILE)."""
    if tiling == "register-tiled":
        monkeypatch.setattr(graph_module, "BIG_PRODUCT", 0)
    X, y = data(11, sizes)
    plain, graph = (make_net(activation, output, loss, dtype, sizes=sizes) for _ in range(2))
    plain_opt, graph_opt = STEP_OPTIMIZERS[name](), STEP_OPTIMIZERS[name]()
    history = train(plain, X, y, epochs=2, batch_size=batch, lr=0.05, lr_decay=1.0, seed=3, optimizer=plain_opt)
    g = trainer(graph, X, y, batch, graph_opt)
    kernels = {launch.kernel for launch in g.launches()}
    assert ("forward_output" in kernels) == (tiling == "one a thread" and sizes[-1] <= gemm.TILE)
    losses = graph_epochs(g, range(1, 3), 0.05, 3)
    assert rel_diff(losses, [r["train_loss"] for r in history]) < TOLERANCE[dtype]
    assert params_diff(graph, plain) < TOLERANCE[dtype]
    assert graph_opt.t == plain_opt.t
    for key, state in plain_opt.state.items():
        assert rel_diff(graph_opt.state[key], state) < TOLERANCE[dtype], key


# --- on a GPU: the captured graph against the plain path and against the transcription ------------

GPU_SIZES = [20, 16, 12, 5]
# The hidden activations take turns over the pairs (those read off the output; the silu outputs come last in
# PAIRS), then silu hidden layers (forward_keep, backward reading Z) with an output of each kind.
_TURNS = tuple(a for a in HIDDEN_ACTIVATIONS if a in READ_OFF_OUTPUT)
GPU_CASES = [(_TURNS[k % len(_TURNS)], o, loss) for k, (o, loss) in enumerate(PAIRS)] + [
    ("silu", "softmax", "cross-entropy"), ("silu", "identity", "squared"), ("silu", "silu", "squared")]
# The data of the runs against the plain path. With seed 1, the tanh / identity / absolute run passes an
# output within 1e-8 of its target, the sign of which turns on rounding: graph mode ended 0.047 from the
# plain path in float32 (H100, 2026-11-27), as far as NumPy's own float32 run ends from its float64 run.
GPU_DATA_SEED = 2


# Momentum and Adam on the device: each with a cross-entropy and a squared-loss case (the rule is the same
# flat_step for every pair; the pairs themselves are covered with SGD above).
GPU_OPTIMIZER_CASES = [(*case, name) for name in GRAPH_OPTIMIZERS
                       for case in [("sigmoid", "softmax", "cross-entropy"), ("tanh", "sigmoid", "squared")]]


def gpu_run_settings(name: str) -> dict:
    """train()'s settings of the runs on the device: 2 epochs of 126 steps (125 batches of 8, a partial 3), on
    the plain path (on CuPy, kernels="auto" would pick graph mode)."""
    return dict(epochs=2, batch_size=8, lr=GRAPH_LR.get(name, 0.05), lr_decay=0.9, seed=3, kernels="plain")


def test_the_gpu_cases_are_well_conditioned_in_float32() -> None:
    """A float32 run can only be held to the plain path's 1e-4 where float32 rounding cannot move it that
    far: NumPy's float32 run of each case must stay within a tenth of that of its float64 run."""
    X, y = data(1003, GPU_SIZES, GPU_DATA_SEED)
    worst = {}
    for *case, name in [(*c, "sgd") for c in GPU_CASES] + GPU_OPTIMIZER_CASES:
        nets = [make_net(*case, dtype, "numpy", GPU_SIZES) for dtype in ("float32", "float64")]
        for net in nets:
            optimizer = GRAPH_OPTIMIZERS[name]() if name in GRAPH_OPTIMIZERS else SGD()
            train(net, X, y, optimizer=optimizer, **gpu_run_settings(name))
        worst[(*case, name)] = params_diff(*nets)
    assert max(worst.values()) <= GPU_TOLERANCE["float32"] / 10, max(worst, key=worst.get)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation,output,loss", GPU_CASES)
def test_gpu_graph_equals_the_plain_path(activation: str, output: str, loss: str, dtype: str) -> None:
    require("cupy")
    X, y = data(1003, GPU_SIZES, GPU_DATA_SEED)  # batches of 8: 125 full and a partial 3, 126 steps an epoch
    plain, graph, resumed = (make_net(activation, output, loss, dtype, "cupy", GPU_SIZES) for _ in range(3))
    history = train(plain, X, y, optimizer="sgd", **gpu_run_settings("sgd"))
    losses = graph_epochs(trainer(graph, X, y, 8), range(1, 3), 0.05, 3, lr_decay=0.9)  # capture, then a replay
    assert params_diff(graph, plain) <= GPU_TOLERANCE[dtype]
    assert rel_diff(losses, [r["train_loss"] for r in history]) <= GPU_TOLERANCE[dtype]
    train(resumed, X, y, optimizer="sgd", **{**gpu_run_settings("sgd"), "epochs": 1})  # resume: a new trainer, epoch 2
    graph_epochs(trainer(resumed, X, y, 8), range(2, 3), 0.05, 3, lr_decay=0.9)
    assert params_diff(resumed, plain) <= GPU_TOLERANCE[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation,output,loss,name", GPU_OPTIMIZER_CASES)
def test_gpu_graph_momentum_and_adam_equal_the_plain_path(activation: str, output: str, loss: str, name: str,
                                                          dtype: str) -> None:
    """Momentum and Adam in the graph (flat_step captured, lr and the step count read from device memory)
    against the plain path over 252 steps, then a resume: a new trainer with a restored optimiser."""
    require("cupy")
    X, y = data(1003, GPU_SIZES, GPU_DATA_SEED)
    settings = gpu_run_settings(name)
    plain, graph, resumed = (make_net(activation, output, loss, dtype, "cupy", GPU_SIZES) for _ in range(3))
    plain_opt, graph_opt = GRAPH_OPTIMIZERS[name](), GRAPH_OPTIMIZERS[name]()
    history = train(plain, X, y, optimizer=plain_opt, **settings)
    losses = graph_epochs(trainer(graph, X, y, 8, graph_opt), range(1, 3), settings["lr"], 3, lr_decay=0.9)
    assert graph_opt.t == plain_opt.t == 2 * 126
    assert params_diff(graph, plain) <= GPU_TOLERANCE[dtype]
    assert rel_diff(losses, [r["train_loss"] for r in history]) <= GPU_TOLERANCE[dtype]
    first_opt, resumed_opt = GRAPH_OPTIMIZERS[name](), GRAPH_OPTIMIZERS[name]()
    train(resumed, X, y, optimizer=first_opt, **{**settings, "epochs": 1})
    resumed_opt.load_state_dict(first_opt.state_dict(), resumed.params)  # as a checkpoint restores it
    graph_epochs(trainer(resumed, X, y, 8, resumed_opt), range(2, 3), settings["lr"], 3, lr_decay=0.9)
    assert params_diff(resumed, plain) <= GPU_TOLERANCE[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["sgd", "momentum-wd", "adam-wd"])
@pytest.mark.parametrize("sizes,batch", [(GPU_SIZES, 16), ([300, 70, 5], 100)])
@pytest.mark.parametrize("tiling", ["one a thread", "register-tiled"])
def test_gpu_graph_equals_the_transcription(dtype: str, sizes: list[int], batch: int, name: str, tiling: str,
                                            monkeypatch) -> None:
    """203 rows: batches of 16 (12 full and a partial 11), or of 100 (2 and a partial 3). The second shape
    has products over 300, 100 and 70 terms: the first two of the kernels' k-slices (KTILE for float32,
    KTILE_DOUBLE for float64), the second ragged.
    Momentum and Adam add the flat buffers, lr, the step count and flat_step's block counter to what the
    graph holds across replays. Register-tiled: every product at RTILE x RTILE elements a thread (no size is
    a multiple of the 64 x 64 block tile, nor k of its 32-wide slices)."""
    require("cupy")
    if tiling == "register-tiled":
        monkeypatch.setattr(graph_module, "BIG_PRODUCT", 0)
    X, y = data(203, sizes)
    device, host = (make_net("sigmoid", "softmax", "cross-entropy", dtype, b, sizes) for b in ("cupy", "numpy"))
    optimizers = [GRAPH_OPTIMIZERS[name]() if name in GRAPH_OPTIMIZERS else SGD() for _ in range(2)]
    on_device, on_host = (trainer(net, X, y, batch, opt) for net, opt in zip((device, host), optimizers))
    xp = device.backend.xp
    losses = []
    for epoch in range(1, 4):
        losses.append([graph_epochs(g, range(epoch, epoch + 1), GRAPH_LR.get(name, 0.1), 9)[0]
                       for g in (on_device, on_host)])
        # Fill the memory pool's free blocks with NaN: a buffer freed during the capture would be handed
        # out here, and the next replay would read NaN or write into these arrays.
        junk = [xp.full(1 << k, xp.nan, dtype=dtype) for k in range(4, 20)]
        del junk
    assert params_diff(device, host) <= GPU_TOLERANCE[dtype]
    assert rel_diff(*zip(*losses)) <= GPU_TOLERANCE[dtype]
    assert optimizers[0].t == optimizers[1].t == 3 * len(on_host.batches())


# --- dropout: fused.cu's dropout_apply in the graph, the step count read from device memory ------------------

# Per-layer rates of SIZES' three layer inputs (inputs, then the two hidden layers'), one rate for the hidden
# layers, the inputs alone, and rates whose scale is no power of two (1 / 0.9, 1 / 0.125, 1 / 0.7).
DROPOUTS = [[0.2, 0.5, 0.3], 0.5, [0.3, 0.0, 0.0], [0.1, 0.875, 0.0]]
DROPOUT_OPTIMIZERS = {"sgd": SGD, "sgd-wd": lambda: SGD(weight_decay=0.01), "adam": Adam}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dropout", DROPOUTS, ids=str)
@pytest.mark.parametrize("activation,output,loss", [("sigmoid", "softmax", "cross-entropy"),
                                                    ("silu", "sigmoid", "squared"), ("relu", "identity", "absolute")])
@pytest.mark.parametrize("name", DROPOUT_OPTIMIZERS)
def test_epochs_with_dropout_equal_the_plain_path(name, activation, output, loss, dropout, dtype) -> None:
    """Two epochs of three steps (the last partial) against gpunet.train's plain path with the same dropout: the
    masks of every step (the count before the epoch from device memory, plus the step's place in it), applied
    where the plain path applies them. silu keeps Z_i (forward_keep), which dropout must leave undropped."""
    X, y = data(11)
    plain, graph = (make_net(activation, output, loss, dtype, dropout=dropout) for _ in range(2))
    plain_opt, graph_opt = DROPOUT_OPTIMIZERS[name](), DROPOUT_OPTIMIZERS[name]()
    history = train(plain, X, y, epochs=2, batch_size=4, lr=0.1, lr_decay=1.0, seed=5, optimizer=plain_opt, kernels="plain")
    g = trainer(graph, X, y, 4, graph_opt)
    assert "dropout_apply" in {launch.kernel for launch in g.launches()}
    losses = graph_epochs(g, range(1, 3), 0.1, 5)
    assert rel_diff(losses, [r["train_loss"] for r in history]) < TOLERANCE[dtype]
    assert params_diff(graph, plain) < TOLERANCE[dtype]
    assert graph_opt.t == plain_opt.t == 6


def test_dropout_changes_the_graph_s_numbers_as_the_plain_path_s() -> None:
    """The comparison above can fail: the same graph without dropout, or with another seed's masks, ends
    far from the plain path with dropout."""
    X, y = data(11)
    plain = make_net("sigmoid", "softmax", "cross-entropy", "float64", dropout=[0.2, 0.5, 0.3])
    train(plain, X, y, epochs=2, batch_size=4, lr=0.1, lr_decay=1.0, seed=5, optimizer=SGD(), kernels="plain")
    without = make_net("sigmoid", "softmax", "cross-entropy", "float64")
    other_seed = Network(SIZES, "sigmoid", "softmax", "cross-entropy", init="article", seed=3, backend="numpy",
                         dtype="float64", dropout=[0.2, 0.5, 0.3])
    other_seed.seed = 4  # the same weights, the masks of seed 4
    for net in (without, other_seed):
        graph_epochs(trainer(net, X, y, 4), range(1, 3), 0.1, 5)
        assert params_diff(net, plain) > 1e-3


def test_a_step_s_launches_with_dropout() -> None:
    """dropout_apply after the gather (the inputs) and after each hidden forward (In_i, which the next forward and
    the weight gradients read), and after each backward on the delta it wrote (in place), none for a layer whose
    rate drops nothing; each keyed by the layer, the step buffer and the step's place in the epoch."""
    X, y = data(11)
    net = make_net("tanh", "softmax", "cross-entropy", "float32", dropout=[0.25, 0.0, 0.5])
    g = trainer(net, X, y, 4)
    buf = g.buffers
    assert g.dropped == [0, 2]
    assert {k: buf[k].shape for k in ("step", "In0", "In2")} == {"step": (1,), "In0": (4, 5), "In2": (4, 6)}
    assert "In1" not in buf and buf["step"].dtype == np.int64
    step = g._step(8, 3, 2)  # the epoch's third step, a partial batch
    assert [launch.kernel for launch in step] == [
        "gather_rows", "dropout_apply", "forward", "forward", "dropout_apply", "forward_output", "backward",
        "dropout_apply", "backward", "weight_grads"]
    inputs, hidden, delta = (launch for launch in step if launch.kernel == "dropout_apply")
    for launch, layer, source, out in ((inputs, 0, buf["X"], buf["In0"]), (hidden, 2, buf["A2"], buf["In2"]),
                                       (delta, 2, buf["delta2"], buf["delta2"])):
        In, Out, rows, cols, seed_lo, seed_hi, lay, step0, offset, threshold, scale = launch.args
        assert In is source and Out is out and (int(rows), int(cols)) == (3, out.shape[1])
        assert (int(seed_lo), int(seed_hi), int(lay), int(offset)) == (3, 0, layer, 2) and step0 is buf["step"]
        assert int(threshold) == round((1 - net.dropout[layer]) * 2**32)
        assert scale.dtype == np.float32 and scale == np.float32(1 / (1 - net.dropout[layer]))
        assert launch.source == "fused.cu" and launch.expression == "dropout_apply<float>"
        assert launch.grid == fused.elementwise_geometry(3 * out.shape[1])[0] and launch.block == (fused.THREADS,)
    assert step[2].args[0] is buf["In0"] and step[3].args[0] is buf["A1"]  # layer 2's input keeps every unit
    assert step[5].args[0] is buf["In2"]  # the output layer multiplies the dropped A2
    layers = step[-1].args[0]  # from the top: W3, W2, W1
    assert [layer.A_prev for layer in layers] == [buf["In2"], buf["A1"], buf["In0"]]
    assert {launch.expression for launch in g.launches()} <= set(NAME_EXPRESSIONS) | set(
        graph_module.DROPOUT_EXPRESSIONS)


def test_the_step_buffer_holds_the_count_before_each_epoch() -> None:
    X, y = data(11)
    opt = SGD()
    g = trainer(make_net("relu", "softmax", "cross-entropy", "float64", dropout=0.5), X, y, 4, opt)
    seen = []
    g.launcher = lambda launch: (seen.append(int(g.buffers["step"][0])), LAUNCHER(launch))
    graph_epochs(g, range(1, 3), 0.1, 5)
    assert sorted(set(seen)) == [0, 3] and opt.t == 6
    assert trainer(make_net("relu", "softmax", "cross-entropy", "float64"), X, y, 4).dropped == []
    assert "step" not in trainer(make_net("relu", "softmax", "cross-entropy", "float64"), X, y, 4).buffers


def test_a_new_trainer_with_dropout_resumes_bit_for_bit() -> None:
    """Epoch 2 by a new trainer (as a resumed run makes one), after epoch 1 by another: the uninterrupted
    trainer's numbers exactly, the masks keyed by the optimiser's count; and an epoch resumed at a row."""
    X, y = data(11)
    whole, resumed = (make_net("sigmoid", "softmax", "cross-entropy", "float64", dropout=[0.2, 0.5, 0.3])
                      for _ in range(2))
    whole_opt, first_opt = Adam(), Adam()
    whole_losses = graph_epochs(trainer(whole, X, y, 4, whole_opt), range(1, 3), 0.01, 7)
    losses = graph_epochs(trainer(resumed, X, y, 4, first_opt), range(1, 2), 0.01, 7)
    resumed_opt = Adam()
    resumed_opt.load_state_dict(first_opt.state_dict(), resumed.params)  # as a checkpoint restores it
    losses += graph_epochs(trainer(resumed, X, y, 4, resumed_opt), range(2, 3), 0.01, 7)
    assert losses == whole_losses and resumed_opt.t == whole_opt.t == 6
    for k, v in whole.get_params().items():
        np.testing.assert_array_equal(resumed.get_params()[k], v, err_msg=k)
    # an epoch resumed at its row 4 (the first batch done by the plain path) lands on the plain path's numbers
    plain, mid = (make_net("relu", "sigmoid", "squared", "float64", dropout=0.5) for _ in range(2))
    history = train(plain, X, y, epochs=1, batch_size=4, lr=0.1, lr_decay=1.0, seed=8, optimizer="sgd", kernels="plain")
    order = np.random.default_rng([8, 1]).permutation(11)
    opt = SGD()
    T = mid.targets_from_labels(y)
    first = float(mid.train_step(X[order[:4]], T[order[:4]], 0.1, opt))  # step 0 on the plain path
    rest = float(trainer(mid, X, y, 4, opt).run_epoch(order, 0.1, start_row=4))  # steps 1 and 2 in the graph
    assert params_diff(mid, plain) < 1e-12 and opt.t == 3
    assert abs((first + rest) / 11 - history[0]["train_loss"]) < 1e-12


# On the device: the dropout runs below (cases of the CPU tests above, at GPU_SIZES over 252 steps).
GPU_DROPOUT_CASES = [("sigmoid", "softmax", "cross-entropy", [0.2, 0.5, 0.3], "sgd"),
                     ("relu", "sigmoid", "squared", 0.5, "adam"),
                     ("silu", "identity", "squared", [0.1, 0.875, 0.0], "sgd-wd")]


def _dropout_run_against_plain(backend: str, activation, output, loss, dropout, name, dtype) -> tuple[float, float]:
    """Two graph epochs on ``backend`` (the transcriptions on NumPy, a captured graph and a replay on CuPy)
    against gpunet.train's plain path on NumPy with the same dropout: (parameters' and losses' differences)."""
    X, y = data(1003, GPU_SIZES, GPU_DATA_SEED)
    settings = gpu_run_settings(name)
    plain, graph = (make_net(activation, output, loss, dtype, b, GPU_SIZES, dropout) for b in ("numpy", backend))
    plain_opt, graph_opt = DROPOUT_OPTIMIZERS[name](), DROPOUT_OPTIMIZERS[name]()
    history = train(plain, X, y, optimizer=plain_opt, **settings)
    losses = graph_epochs(trainer(graph, X, y, 8, graph_opt), range(1, 3), settings["lr"], 3, lr_decay=0.9)
    assert graph_opt.t == plain_opt.t == 2 * 126
    return params_diff(graph, plain), rel_diff(losses, [r["train_loss"] for r in history])


@pytest.mark.slow
@pytest.mark.parametrize("activation,output,loss,dropout,name", GPU_DROPOUT_CASES)
def test_the_gpu_dropout_runs_hold_on_the_transcriptions(activation, output, loss, dropout, name) -> None:
    """The device test's body on the transcriptions, in float64: its numbers are the plain path's; and its float32
    plain run stays within a tenth of the GPU tolerance of its float64 run (well conditioned)."""
    assert max(_dropout_run_against_plain("numpy", activation, output, loss, dropout, name, "float64")) < 1e-12
    X, y = data(1003, GPU_SIZES, GPU_DATA_SEED)
    nets = [make_net(activation, output, loss, dtype, "numpy", GPU_SIZES, dropout) for dtype in ("float32", "float64")]
    for net in nets:
        train(net, X, y, optimizer=DROPOUT_OPTIMIZERS[name](), **gpu_run_settings(name))
    assert params_diff(*nets) <= GPU_TOLERANCE["float32"] / 10


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation,output,loss,dropout,name", GPU_DROPOUT_CASES)
def test_gpu_graph_with_dropout_equals_the_plain_path(activation, output, loss, dropout, name, dtype) -> None:
    require("cupy")
    params, losses = _dropout_run_against_plain("cupy", activation, output, loss, dropout, name, dtype)
    assert params <= GPU_TOLERANCE[dtype] and losses <= GPU_TOLERANCE[dtype], (params, losses)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tiling", ["one a thread", "register-tiled"])
def test_gpu_graph_with_dropout_equals_the_transcription_and_resumes_bit_for_bit(dtype, tiling, monkeypatch) -> None:
    """203 rows in batches of 16 over three epochs, [300, 70, 5] with every layer input dropped: the captured
    graph against the transcriptions; then epoch 3 by a new trainer after two by another: the same bits."""
    require("cupy")
    if tiling == "register-tiled":
        monkeypatch.setattr(graph_module, "BIG_PRODUCT", 0)
    sizes, dropout = [300, 70, 5], [0.2, 0.5]
    X, y = data(203, sizes)
    device, host, resumed = (make_net("sigmoid", "softmax", "cross-entropy", dtype, b, sizes, dropout)
                             for b in ("cupy", "numpy", "cupy"))
    optimizers = [Adam() for _ in range(3)]
    on_device, on_host = (trainer(net, X, y, 16, opt) for net, opt in zip((device, host), optimizers))
    losses = [[graph_epochs(g, range(e, e + 1), 0.01, 9)[0] for g in (on_device, on_host)] for e in range(1, 4)]
    assert params_diff(device, host) <= GPU_TOLERANCE[dtype]
    assert rel_diff(*zip(*losses)) <= GPU_TOLERANCE[dtype]
    graph_epochs(trainer(resumed, X, y, 16, optimizers[2]), range(1, 3), 0.01, 9)
    restored = Adam()
    restored.load_state_dict(optimizers[2].state_dict(), resumed.params)
    graph_epochs(trainer(resumed, X, y, 16, restored), range(3, 4), 0.01, 9)
    for k, v in device.get_params().items():
        np.testing.assert_array_equal(resumed.get_params()[k], v, err_msg=k)
