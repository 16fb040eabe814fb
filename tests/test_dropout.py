"""Dropout: the counter-based masks (NumPy against Random123's known answers and against the CUDA header compiled for
the host), their statistics, the step's gradients against torch, the paths that train it, resume, the CLI, and
CuPy against NumPy (the gpu marker)."""

from __future__ import annotations

import ctypes
import json
import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest

import gpunet
from gpunet import dropout as drop
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.cli import main
from gpunet.config import SettingError, TrainConfig
from gpunet.engines import build, kernels, select
from gpunet.engines.fused import FusedStep
from gpunet.engines.plain import train_per_sample
from gpunet.optim import OPTIMIZERS, SGD
from gpunet.training import TrainingInterrupted

import transcriptions
from conftest import TOLERANCE, assert_close, backend_param, require
from test_device_arithmetic import _compile_and_run

# Random123's kat_vectors, "philox4x32 10" lines: counter (4 words), key (2 words) -> the 4 output words.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
# The header's grid: seeds across the key's two words, steps past 2**32 (taken mod 2**32), several layers and rows.
SEEDS = [0, 1, 12345, 2**32 - 1, 2**32 + 7, 2**45 + 3]
LAYERS = [0, 1, 5]
STEPS = [0, 1, 99, 2**31 + 5, 2**32 - 1, 2**32 + 2]
ROWS = [0, 1, 63, 1000]
UNITS = list(range(0, 40)) + [783, 65535, 2**31]
RATES = [0.0, 1e-12, 0.1, 0.5, 0.875, 0.999]


def test_philox_matches_the_random123_known_answers():
    for counter, key, expected in KNOWN_ANSWERS:
        got = drop.philox4x32(np, counter, key)
        assert tuple(int(w) for w in got) == expected
        # as arrays too, broadcast: the counter words a column and a row
        rows = drop.philox4x32(np, (np.array([counter[0]] * 3, dtype=np.uint64)[:, None], counter[1],
                                    np.full((1, 2), counter[2], dtype=np.uint32), counter[3]), key)
        assert all(w.shape == (3, 2) and w.dtype == np.uint32 and (w == e).all() for w, e in zip(rows, expected))


@pytest.mark.parametrize("units", [1, 3, 4, 5, 30, 784])
def test_a_layers_words_four_units_an_evaluation_are_the_words_unit_by_unit(units):
    unit = np.arange(units)[None, :]
    batch = drop.layer_words(np, 77, 2, 31, np.arange(9, dtype=np.uint32), units)  # a batch: rows 0..8
    assert batch.shape == (9, units) and batch.dtype == np.uint32
    np.testing.assert_array_equal(batch, drop.words(np, 77, 2, 31, np.arange(9)[:, None], unit))
    steps = np.arange(5, dtype=np.uint32) + np.uint32(2**32 - 2)  # per-sample: a step a row, wrapping past 2**32
    np.testing.assert_array_equal(drop.layer_words(np, 77, 2, steps, 0, units),
                                  drop.words(np, 77, 2, steps[:, None], 0, unit))
    block = drop.philox4x32(np, (0, 3, 31, 2), (77, 0))  # units 0-3 of row 3 are one evaluation's four words
    assert [int(w) for w in batch[3, :4]] == [int(w) for w in block][: min(units, 4)]


def test_the_cuda_header_draws_the_numpy_masks_bit_for_bit(tmp_path):
    """dropout.cuh compiled by the host's C++ compiler: Philox's known answers, then every key of the grid's word and
    keep decision, and the mask's value in float and double, against gpunet.dropout."""
    calls = []
    for counter, key, _ in KNOWN_ANSWERS:
        words = ", ".join(f"{c}u" for c in counter)
        calls.append(f"    {{ philox4x32_words w = philox4x32_10(philox4x32_words{{{{{words}}}}},\n"
                     f"                                         {key[0]}u, {key[1]}u);\n"
                     '      std::printf("kat %08x %08x %08x %08x\\n", w.w[0], w.w[1], w.w[2], w.w[3]); }')
    thresholds = ", ".join(f"{drop.keep_threshold(r)}ull" for r in RATES)
    scales = ", ".join(repr(drop.scale(r)) for r in RATES)
    calls.append(
        "    for (unsigned long long seed : seeds) for (unsigned int layer : layers)\n"
        "    for (unsigned long long step : steps) for (unsigned int row : rows) for (unsigned int unit : units) {\n"
        "        unsigned int lo = (unsigned int)seed, hi = (unsigned int)(seed >> 32), s = (unsigned int)step;\n"
        '        std::printf("word %08x\\n", dropout_word(lo, hi, layer, s, row, unit));\n'
        "        for (int r = 0; r < n_rates; ++r)\n"
        '            std::printf("mask %d %a %a\\n", (int)dropout_keep(lo, hi, layer, s, row, unit, thresholds[r]),\n'
        "                        (double)dropout_mask<float>(lo, hi, layer, s, row, unit, thresholds[r],\n"
        "                                                    (float)scales[r]),\n"
        "                        dropout_mask<double>(lo, hi, layer, s, row, unit, thresholds[r], scales[r]));\n"
        "    }")
    listed = {name: ", ".join(f"{v}ull" for v in values)
              for name, values in (("seeds", SEEDS), ("steps", STEPS), ("layers", LAYERS), ("rows", ROWS),
                                   ("units", UNITS))}
    prelude = ('#include "dropout.cuh"\n'
               f"static const unsigned long long seeds[] = {{{listed['seeds']}}}, steps[] = {{{listed['steps']}}};\n"
               f"static const unsigned int layers[] = {{{listed['layers']}}}, rows[] = {{{listed['rows']}}}, "
               f"units[] = {{{listed['units']}}};\n"
               f"static const unsigned long long thresholds[] = {{{thresholds}}};\n"
               f"static const double scales[] = {{{scales}}};\nstatic const int n_rates = {len(RATES)};\n")
    lines = _compile_and_run(tmp_path, "dropout", prelude, calls)
    assert [tuple(int(w, 16) for w in line.split()[1:]) for line in lines[:3]] == [e for _, _, e in KNOWN_ANSWERS]
    words = np.array([int(line.split()[1], 16) for line in lines if line.startswith("word")], dtype=np.uint64)
    masks = [line.split()[1:] for line in lines if line.startswith("mask")]
    keys = np.array([(s, la, st, r, u) for s in SEEDS for la in LAYERS for st in STEPS for r in ROWS for u in UNITS],
                    dtype=object)
    assert len(words) == len(keys) and len(masks) == len(keys) * len(RATES)
    expected_words, expected_keep = [], {r: [] for r in RATES}
    for seed in SEEDS:  # NumPy, a whole (layer, step, row, unit) block per seed
        for layer in LAYERS:
            step = np.array(STEPS, dtype=np.uint64)[:, None, None]  # taken mod 2**32 as the header's cast does
            row = np.array(ROWS, dtype=np.uint32)[None, :, None]
            unit = np.array(UNITS, dtype=np.uint32)[None, None, :]
            expected_words.append(drop.words(np, seed, layer, step, row, unit).ravel())
            for r in RATES:
                expected_keep[r].append(drop.keep(np, seed, layer, step, row, unit, r).ravel())
    np.testing.assert_array_equal(words, np.concatenate(expected_words).astype(np.uint64))
    got_keep = np.array([int(m[0]) for m in masks], dtype=bool).reshape(len(keys), len(RATES))
    for j, r in enumerate(RATES):
        keep = np.concatenate(expected_keep[r])
        np.testing.assert_array_equal(got_keep[:, j], keep, err_msg=f"rate {r}")
        for ctype, column, dtype in (("float", 1, np.float32), ("double", 2, np.float64)):
            values = np.array([float.fromhex(m[column]) for m in masks[j :: len(RATES)]])
            expected = np.where(keep, dtype(drop.scale(r)), dtype(0)).astype(np.float64)
            np.testing.assert_array_equal(values, expected, err_msg=f"{ctype} mask at rate {r}")
    assert got_keep[:, RATES.index(0.0)].all() and got_keep[:, RATES.index(1e-12)].all()  # nothing to drop


# A kernel that writes the header's masks: what NVRTC compiles here and the gpu test runs on a device.
MASK_KERNEL = r"""
#include "dropout.cuh"
extern "C" __global__ void dropout_masks(float* mask, unsigned int seed_lo, unsigned int seed_hi, unsigned int layer,
                                         unsigned int step, int rows, int units, unsigned long long threshold,
                                         float scale) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (long long)rows * units)
        mask[i] = dropout_mask<float>(seed_lo, seed_hi, layer, step, (unsigned int)(i / units),
                                      (unsigned int)(i % units), threshold, scale);
}
"""


def test_nvrtc_compiles_the_header_for_the_device():
    """dropout.cuh in a kernel, compiled by NVRTC as CuPy compiles the engines' sources (no host headers)."""
    lib = build.nvrtc_library()
    if lib is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12, or set GPUNET_NVRTC)")
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), MASK_KERNEL.encode(), b"dropout_masks.cu", 0, None, None) == 0
    try:
        for arch in build.ARCHS:
            options = [*kernels.NVRTC_OPTIONS, f"--gpu-architecture={arch}"]
            result = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(
                *[o.encode() for o in options]))
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            assert result == 0, f"{arch}: {log.value.decode(errors='replace')}"
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.mark.parametrize("name", [backend_param("cupy")])
def test_the_header_draws_the_numpy_masks_on_the_device(name):
    backend = require(name)
    xp = backend.xp
    module = xp.RawModule(code=MASK_KERNEL, options=kernels.NVRTC_OPTIONS)
    kernel = module.get_function("dropout_masks")
    for seed, layer, step, rate in ((0, 0, 0, 0.5), (2**33 + 9, 2, 2**32 + 77, 0.2), (7, 1, 123456, 0.9)):
        rows, units = 67, 300
        out = xp.empty((rows, units), dtype=xp.float32)
        kernel((-(-rows * units // 256),), (256,), (out, np.uint32(seed % 2**32), np.uint32(seed >> 32),
                                                     np.uint32(layer), np.uint32(step % 2**32), np.int32(rows),
                                                     np.int32(units), np.uint64(drop.keep_threshold(rate)),
                                                     np.float32(drop.scale(rate))))
        expected = drop.batch_mask(np, seed, layer, step, rows, units, rate, "float32")
        np.testing.assert_array_equal(backend.to_host(out), expected)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
def test_the_keep_fraction_is_one_minus_the_rate_within_five_sigma(rate):
    """A million fixed keys: the kept count is a fixed number (the hash is deterministic), asserted within 5 binomial
    standard deviations of 1 - rate: a fair generator falls outside with probability below 1e-6, a biased one
    (a wrong threshold, a word not uniform) by far more."""
    n = 1000 * 1000
    keep = drop.keep(np, 2024, 1, 17, np.arange(1000)[:, None], np.arange(1000)[None, :], rate)
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(int(keep.sum()) - n * (1 - rate)) <= 5 * sigma
    # each row and each unit keeps its share too (no row or column left whole): 5 sigma of 1000 draws
    sigma_line = math.sqrt(1000 * rate * (1 - rate))
    assert np.abs(keep.sum(axis=0) - 1000 * (1 - rate)).max() <= 5.5 * sigma_line
    assert np.abs(keep.sum(axis=1) - 1000 * (1 - rate)).max() <= 5.5 * sigma_line
    # another step, layer or seed draws an unrelated mask: they agree on p^2 + (1-p)^2 of the units
    agree = rate**2 + (1 - rate) ** 2
    for other in (drop.keep(np, 2024, 1, 18, np.arange(1000)[:, None], np.arange(1000)[None, :], rate),
                  drop.keep(np, 2024, 2, 17, np.arange(1000)[:, None], np.arange(1000)[None, :], rate),
                  drop.keep(np, 2025, 1, 17, np.arange(1000)[:, None], np.arange(1000)[None, :], rate)):
        assert abs(int((other == keep).sum()) - n * agree) <= 5 * math.sqrt(n * agree * (1 - agree))


def test_inverted_scaling_keeps_the_mean():
    rate, n = 0.4, 500 * 800
    mask = drop.batch_mask(np, 3, 1, 0, 500, 800, rate, "float64")
    assert set(np.unique(mask)) == {0.0, 1 / 0.6}
    A = np.random.default_rng(0).uniform(0, 2, (500, 800))
    # E[mask] = 1: the mean of A * mask within 5 sigma of the mean of A (sigma of a mean of n scaled draws)
    sigma = math.sqrt(rate / (1 - rate) * (A**2).mean() / n)
    assert abs((A * mask).mean() - A.mean()) <= 5 * sigma
    assert abs(mask.mean() - 1) <= 5 * math.sqrt(rate / (1 - rate) / n)


def test_the_rates_and_their_errors():
    assert gpunet.Network([4, 3, 2], backend="numpy").dropout == (0.0, 0.0)
    assert gpunet.Network([4, 3, 3, 2], dropout=0.5, backend="numpy").dropout == (0.0, 0.5, 0.5)  # hidden only
    assert gpunet.Network([4, 3, 3, 2], dropout=[0.2, 0.5, 0], backend="numpy").dropout == (0.2, 0.5, 0.0)
    assert gpunet.Network([4, 2], dropout=0.5, backend="numpy").dropout == (0.0,)  # no hidden layer: nothing dropped
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\); got 1.0"):
        gpunet.Network([4, 3, 2], dropout=1.0, backend="numpy")
    with pytest.raises(ValueError, match=r"dropout\[1\] must be a number in \[0, 1\); got -0.1"):
        gpunet.Network([4, 3, 2], dropout=[0.1, -0.1], backend="numpy")
    with pytest.raises(ValueError, match=r"dropout must list 2 rates .* got 3: \[0.1, 0.2, 0.3\]"):
        gpunet.Network([4, 3, 2], dropout=[0.1, 0.2, 0.3], backend="numpy")
    with pytest.raises(TypeError, match=r"dropout must be a rate in \[0, 1\) or a list of 2 rates .*got 'half'"):
        gpunet.Network([4, 3, 2], dropout="half", backend="numpy")
    with pytest.raises(TypeError, match=r"dropout\[0\] must be a number in \[0, 1\); got True"):
        gpunet.Network([4, 3, 2], dropout=[True, 0.1], backend="numpy")
    with pytest.raises(SettingError, match=r"dropout must be a number in \[0, 1\); got 1"):
        TrainConfig(dropout=1)


def _net(activation="relu", dropout=(0.25, 0.5, 0.4), dtype="float64", backend="numpy", sizes=(6, 9, 7, 4), **kw):
    return gpunet.Network(list(sizes), activation=activation, init="xavier", seed=11, backend=backend, dtype=dtype,
                          dropout=dropout, **kw)


def _data(n=40, n_in=6, n_out=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.01, 1.0, (n, n_in)), rng.integers(0, n_out, n)


@pytest.mark.parametrize("activation, output, loss", [("relu", "softmax", "cross-entropy"),
                                                      ("sigmoid", "sigmoid", "squared"),
                                                      ("silu", "identity", "squared")])
def test_a_step_with_dropout_is_sgd_on_torch_autograd_of_the_same_masked_network(activation, output, loss):
    torch = pytest.importorskip("torch")
    net = _net(activation, output=output, loss=loss)
    X, labels = _data(n=12)
    T = net.targets_from_labels(labels)
    opt = SGD()
    opt.count(41)  # a step count other than 0: the masks are the 42nd step's
    masks = net.dropout_masks(41, 12)
    assert [None if m is None else m.shape for m in masks] == [(12, 6), (12, 9), (12, 7)]
    params = {k: torch.tensor(v, requires_grad=True) for k, v in net.get_params().items()}
    acts = {"relu": torch.relu, "sigmoid": torch.sigmoid, "silu": torch.nn.functional.silu}
    A = torch.tensor(X)
    for i in range(1, 4):
        A = A * torch.tensor(masks[i - 1])  # inverted dropout on the layer's input
        Z = A @ params[f"W{i}"] + params[f"b{i}"]
        A = acts[activation](Z) if i < 3 else Z
    Tt = torch.tensor(T)
    if loss == "cross-entropy":
        per_row = -(Tt * torch.log_softmax(A, dim=1)).sum(dim=1)
    else:
        Y = torch.sigmoid(A) if output == "sigmoid" else A
        per_row = 0.5 * ((Y - Tt) ** 2).sum(dim=1)
    per_row.mean().backward()
    before = net.get_params()
    loss_sum = net.train_step(X, T, lr=0.3, optimizer=opt)
    assert opt.t == 42
    expected = float(per_row.detach().sum())
    assert abs(float(loss_sum) - expected) <= 1e-12 * max(1.0, expected)
    for k, p in net.get_params().items():
        np.testing.assert_allclose(p, before[k] - 0.3 * params[k].grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=k)
    # a hidden unit dropped in every row fed nothing forward: its row of the next layer's weights is untouched
    dead = (masks[1] == 0).all(axis=0)
    if dead.any():
        np.testing.assert_array_equal(net.get_params()["W2"][dead], before["W2"][dead])


def test_evaluation_never_drops():
    X, labels = _data()
    with_dropout, without = _net(), _net(dropout=None)
    T = without.targets_from_labels(labels)
    np.testing.assert_array_equal(with_dropout.forward(X), without.forward(X))
    np.testing.assert_array_equal(with_dropout.predict(X), without.predict(X))
    np.testing.assert_array_equal(with_dropout.predict_proba(X), without.predict_proba(X))
    assert with_dropout.loss(X, T) == without.loss(X, T)
    for k, g in without.gradients(X, T).items():
        np.testing.assert_array_equal(with_dropout.gradients(X, T)[k], g)
    # and a training step does: the same step without dropout gives other weights
    with_dropout.train_step(X, T, lr=0.1)
    without.train_step(X, T, lr=0.1)
    assert not np.array_equal(with_dropout.params["W1"], without.params["W1"])


def test_rate_zero_gives_exactly_the_numbers_without_dropout():
    X, labels = _data(n=90)
    runs = []
    for dropout in (None, 0.0, [0.0, 0.0, 0.0], [1e-12, 0.0, 0.0]):  # 1e-12 rounds to a threshold of 2**32
        net = _net(dropout=dropout)
        assert not net.has_dropout and "dropout" not in net.config() and "dropout" not in repr(net)
        gpunet.train(net, X, labels, epochs=2, batch_size=16, lr=0.01, optimizer="adam", seed=3)
        per_sample = _net(dropout=dropout)
        gpunet.train(per_sample, X, labels, epochs=1, batch_size=1, lr=0.05, optimizer="sgd", seed=3)
        runs.append((net.get_params(), per_sample.get_params()))
    for params in runs[1:]:
        for a, b in zip(params, runs[0]):
            for k in b:
                np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "silu"])
def test_per_sample_sgd_draws_the_masks_of_one_row_steps(activation):
    """plain.gram_chunk (per-sample SGD in chunks) equals train_step on each row in turn, masks and all."""
    X, labels = _data(n=23)
    one, chunked = _net(activation), _net(activation)
    T = one.targets_from_labels(labels)
    opt_one, opt_chunk = SGD(), SGD()
    losses = [float(one.train_step(X[t : t + 1], T[t : t + 1], 0.1, opt_one)) for t in range(23)]
    loss = float(train_per_sample(chunked, X[:10], T[:10], 0.1, opt_chunk)) + float(
        train_per_sample(chunked, X[10:], T[10:], 0.1, opt_chunk))
    assert opt_one.t == opt_chunk.t == 23
    assert abs(loss - sum(losses)) <= 1e-12 * sum(losses)
    for k, p in one.get_params().items():
        np.testing.assert_allclose(chunked.params[k], p, rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "silu"])
def test_the_fused_step_drops_as_the_plain_path(activation, optimizer):
    """FusedStep on the kernels' NumPy transcriptions, with dropout, against Network.train_step_unchecked."""
    plain, fused = _net(activation), _net(activation)
    plain_opt, fused_opt = OPTIMIZERS[optimizer](), OPTIMIZERS[optimizer]()
    step = FusedStep(fused, transcriptions.NumpyKernels())
    X, labels = _data(n=50)
    T = plain.targets_from_labels(labels)
    rng = np.random.default_rng(1)
    for _ in range(12):
        idx = rng.permutation(50)[: 16 if rng.random() < 0.7 else 5]  # full batches and shorter ones
        expected = float(plain.train_step_unchecked(X[idx], T[idx], 0.05, plain_opt))
        assert abs(float(step(X[idx], T[idx], 0.05, fused_opt)) - expected) <= 1e-12 * expected
    assert plain_opt.t == fused_opt.t == 12
    for k, p in plain.get_params().items():
        np.testing.assert_allclose(fused.params[k], p, rtol=1e-11, atol=1e-13, err_msg=k)


def test_every_path_runs_dropout_when_named_and_auto_waits_for_a_device_run(monkeypatch):
    stand_in = SimpleNamespace(backend=SimpleNamespace(name="cupy"), activation="relu", output="softmax",
                               has_dropout=True, dropout=(0.0, 0.5))
    for path in ("fused", "graph"):  # named, each runs: batches and per-sample SGD (the per-sample kernel)
        for per_sample in (False, True):
            assert select.why_not(path, stand_in, SGD(), per_sample) is None
            assert select.choose(path, stand_in, SGD(), per_sample) == path
    # ... auto passes over each until a device run has verified it with dropout, naming it by VERIFIED's name
    for path, per_sample, name in (("fused", False, "fused"), ("graph", False, "graph"),
                                   ("fused", True, "per-sample"), ("graph", True, "per-sample-epochs")):
        assert select.why_not(path, stand_in, SGD(), per_sample, auto=True) == (
            f"no device run has verified dropout on the {name!r} path (select.VERIFIED_DROPOUT); "
            f"kernels={path!r} runs it when asked")
    assert select.VERIFIED_DROPOUT == frozenset()
    assert select.choose("auto", stand_in, SGD()) == "plain"
    assert select.choose("auto", stand_in, SGD(), per_sample=True) == "plain"
    monkeypatch.setattr(select, "VERIFIED_DROPOUT", frozenset({"graph", "per-sample"}))  # as a device run would
    assert select.choose("auto", stand_in, SGD()) == "graph"
    assert select.choose("auto", stand_in, SGD(), per_sample=True) == "fused"  # per-sample-epochs not verified
    monkeypatch.setattr(select, "VERIFIED_DROPOUT", frozenset())
    stand_in.has_dropout = False  # the same network without dropout: auto takes the fast paths as before
    assert select.choose("auto", stand_in, SGD()) == "graph"


# (batch size, optimiser, the should_stop call that interrupts, where): asked after every step but an epoch's last,
# 6 times an epoch in batches of 16, once in per-sample SGD's chunks of 64 (gpunet.training.PER_SAMPLE_CHUNK)
@pytest.mark.parametrize("batch_size, optimizer, ask, where", [(16, "adam", 9, (2, 48)), (1, "sgd", 2, (2, 64))])
def test_resume_with_dropout_is_bit_identical(tmp_path, batch_size, optimizer, ask, where):
    """Interrupted mid-epoch, checkpointed, loaded and continued: the uninterrupted run's losses and weights, bit for
    bit, the masks keyed by the checkpointed step count (batches, and per-sample SGD's chunks)."""
    X, labels = _data(n=100)
    options = dict(batch_size=batch_size, lr=0.01, seed=9, kernels="plain")
    whole, whole_opt = _net(dtype="float32"), OPTIMIZERS[optimizer]()
    whole_history = gpunet.train(whole, X, labels, epochs=3, optimizer=whole_opt, **options)
    net, opt, asked = _net(dtype="float32"), OPTIMIZERS[optimizer](), []
    with pytest.raises(TrainingInterrupted) as info:
        gpunet.train(net, X, labels, epochs=3, optimizer=opt, should_stop=lambda: asked.append(1) or len(asked) == ask,
                     **options)
    stop = info.value
    assert (stop.epoch, stop.rows) == where  # mid-epoch
    save_checkpoint(tmp_path / "m.npz", net, opt, {})
    net, opt, _ = load_checkpoint(tmp_path / "m.npz", "numpy")
    assert net.dropout == (0.25, 0.5, 0.4) and opt.t > 0
    history = gpunet.train(net, X, labels, epochs=3, optimizer=opt, start_epoch=stop.epoch, start_row=stop.rows,
                           start_loss=stop.loss_sum, **options)
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in whole_history[stop.epoch - 1:]]
    for k, v in whole.get_params().items():
        np.testing.assert_array_equal(net.get_params()[k], v)


def test_checkpoints_and_pickles_carry_dropout(tmp_path):
    net = _net(dropout=[0.1, 0.2, 0.3])
    gpunet.save(net, tmp_path / "a.npz")
    back = gpunet.load(tmp_path / "a.npz", backend="numpy")
    assert back.dropout == (0.1, 0.2, 0.3) and back.config() == net.config()
    hidden_only = _net(dropout=0.3)
    gpunet.save(hidden_only, tmp_path / "b.npz")
    _, _, meta = load_checkpoint(tmp_path / "b.npz", "numpy")
    assert meta["train_config"]["dropout"] == 0.3  # one rate: the train config's too
    assert TrainConfig.from_dict(meta["train_config"]).dropout == 0.3
    # a network written before dropout existed (no "dropout" in its config) loads without
    plain = _net(dropout=None)
    gpunet.save(plain, tmp_path / "c.npz")
    assert "dropout" not in plain.config()
    assert not gpunet.load(tmp_path / "c.npz", backend="numpy").has_dropout
    copy = pickle.loads(pickle.dumps(net))
    assert copy.dropout == net.dropout
    state = net.__getstate__()
    del state["dropout"]  # a network pickled before dropout existed
    old = gpunet.Network.__new__(gpunet.Network)
    old.__setstate__(state)
    assert old.dropout == (0.0, 0.0, 0.0) and not old.has_dropout


def test_the_command_line_passes_dropout_to_the_network(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--dropout", "0.5", "--backend", "numpy",
                 "--out", str(tmp_path / "run")]) == 0
    net, _, meta = load_checkpoint(tmp_path / "run" / "model.npz", "numpy")
    assert net.dropout == (0.0, 0.5)
    assert meta["train_config"]["dropout"] == 0.5
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dropout"] == 0.5
    assert "dropout=[0.0, 0.5]" in capsys.readouterr().out
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--dropout", "1.5", "--backend", "numpy",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dropout must be a number in [0, 1); got 1.5" in err[0]
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name", [backend_param("cupy")])
def test_cupy_draws_numpy_masks_and_trains_as_numpy_with_dropout(name):
    """CuPy's masks are NumPy's bit for bit; the plain path and the fused one (named) train as NumPy's plain path."""
    backend = require(name)
    cupy_net, numpy_net = _net(dtype="float32", backend=backend), _net(dtype="float32")
    for step, rows in ((0, 16), (12345, 7), (2**32 + 1, 3)):
        for got, expected in zip(cupy_net.dropout_masks(step, rows), numpy_net.dropout_masks(step, rows)):
            np.testing.assert_array_equal(backend.to_host(got), expected)
        for got, expected in zip(cupy_net.dropout_masks(step, rows, per_sample=True),
                                 numpy_net.dropout_masks(step, rows, per_sample=True)):
            np.testing.assert_array_equal(backend.to_host(got), expected)
    X, labels = _data(n=200)
    options = dict(epochs=3, batch_size=16, lr=0.01, optimizer="adam", seed=4)
    reference = _net(dtype="float32")
    ref_history = gpunet.train(reference, X, labels, kernels="plain", **options)
    for kernels in ("plain", "fused", "graph"):  # graph: captured epochs, fused.cu's dropout_apply
        net = _net(dtype="float32", backend=backend)
        history = gpunet.train(net, X, labels, kernels=kernels, **options)
        assert_close([r["train_loss"] for r in history], [r["train_loss"] for r in ref_history], TOLERANCE["float32"],
                     f"{kernels} losses")
        for k, p in reference.get_params().items():
            assert_close(net.get_params()[k], p, TOLERANCE["float32"], f"{kernels} {k}")
    per_sample, ref_per_sample = _net(dtype="float32", backend=backend), _net(dtype="float32")
    for n in (per_sample, ref_per_sample):
        gpunet.train(n, X, labels, epochs=1, batch_size=1, lr=0.02, optimizer="sgd", seed=4, kernels="plain")
    for k, p in ref_per_sample.get_params().items():
        assert_close(per_sample.get_params()[k], p, TOLERANCE["float32"], f"per-sample {k}")
    # one hidden layer: the per-sample kernel, chunk by chunk ("fused") and whole epochs ("graph")
    sizes = (6, 40, 4)
    ref_one = _net(dtype="float32", sizes=sizes, dropout=[0.25, 0.5])
    gpunet.train(ref_one, X, labels, epochs=2, batch_size=1, lr=0.02, optimizer="sgd", seed=4, kernels="plain")
    for kernels in ("fused", "graph"):
        net = _net(dtype="float32", backend=backend, sizes=sizes, dropout=[0.25, 0.5])
        gpunet.train(net, X, labels, epochs=2, batch_size=1, lr=0.02, optimizer="sgd", seed=4, kernels=kernels)
        for k, p in ref_one.get_params().items():
            assert_close(net.get_params()[k], p, TOLERANCE["float32"], f"per-sample {kernels} {k}")
