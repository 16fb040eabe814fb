"""Dropout's masks: a counter-based generator, the same integers on NumPy, CuPy and in CUDA C++.

Whether unit ``j`` of row ``r`` is kept at layer input ``l`` in optimiser step ``s`` of a network seeded
``seed`` is a pure function of those five integers: word ``j mod 4`` of Philox4x32-10 (Salmon, Moraes, Dror
and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the Random123 library's reference, whose
known-answer vectors tests/test_dropout.py checks) on

    counter = (j // 4, r, s mod 2**32, l),  key = (seed mod 2**32, (seed >> 32) mod 2**32),

(one evaluation gives four adjacent units' words), kept iff that word is below
``keep_threshold(rate) = round((1 - rate) * 2**32)``: an integer comparison, no float rounding in the decision.
No state is drawn from or advanced, so any step's mask can be made again
(a resumed run draws the masks it would have drawn) and any engine can make it where it needs it: the
``xp`` code here runs as is on NumPy and CuPy, and gpunet/engines/dropout.cuh is the same function for the
kernels, tested bit for bit against this one on the host (tests/test_dropout.py).

A kept unit is scaled by ``1 / (1 - rate)`` (inverted dropout): training sees the same expected input as
evaluation, which uses no mask at all.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

Array = Any

# Philox4x32's multipliers and Weyl key increments (Random123's PHILOX_M4x32_0/1 and PHILOX_W32_0/1).
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
WORD = 2**32


def philox4x32(xp: Any, counter: Sequence[Any], key: Sequence[int], rounds: int = ROUNDS) -> tuple[Array, ...]:
    """Philox4x32-``rounds`` of the four counter words (integer arrays or ints, broadcast together, each taken
    mod 2**32) under the two key words (ints): its four output words, uint32 arrays of the broadcast shape.

    Each round: ``(hi0, lo0) = M0 * c0``, ``(hi1, lo1) = M1 * c2`` as 64-bit products, then
    ``c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)``; the key takes ``(W0, W1)`` before every round but the first.
    """
    u32, u64 = xp.uint32, xp.uint64
    c0, c1, c2, c3 = (c.astype(u32) if hasattr(c, "dtype") else xp.asarray(int(c) % WORD, dtype=u32) for c in counter)
    k0, k1 = (int(k) % WORD for k in key)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + W0) % WORD, (k1 + W1) % WORD
        p0 = c0.astype(u64) * u64(M0)  # (2**32 - 1)**2 < 2**64: exact
        p1 = c2.astype(u64) * u64(M1)
        c0, c1, c2, c3 = ((p1 >> u64(32)).astype(u32) ^ c1 ^ u32(k0), p1.astype(u32),
                          (p0 >> u64(32)).astype(u32) ^ c3 ^ u32(k1), p0.astype(u32))
    return c0, c1, c2, c3


def keep_threshold(rate: float) -> int:
    """A unit is kept iff its word is below this: ``round((1 - rate) * 2**32)``, exact in float64 (a product by a
    power of two), in [1, 2**32]; 2**32 keeps every unit (a rate too small to drop any: no mask is drawn)."""
    return max(1, min(WORD, round((1.0 - float(rate)) * WORD)))


def scale(rate: float) -> float:
    """What a kept unit is multiplied by: ``1 / (1 - rate)``, in float64 (cast to the network's dtype once)."""
    return 1.0 / (1.0 - float(rate))


def words(xp: Any, seed: int, layer: int, step: Any, row: Any, unit: Any) -> Array:
    """Each unit's uint32 word, broadcast over ``step``, ``row`` and ``unit`` (integer arrays or ints): word
    ``unit mod 4`` of Philox4x32-10 on counter ``(unit // 4, row, step, layer)``. The definition, unit by unit;
    :func:`layer_words` computes the same for a whole layer four units an evaluation."""
    unit = xp.asarray(unit, dtype=xp.uint32)
    block = philox4x32(xp, (unit >> xp.uint32(2), row, step, layer), (seed, seed >> 32))
    lane = unit & xp.uint32(3)
    return xp.where(lane == 0, block[0], xp.where(lane == 1, block[1], xp.where(lane == 2, block[2], block[3])))


def layer_words(xp: Any, seed: int, layer: int, step: Any, row: Any, units: int) -> Array:
    """:func:`words` of units ``0 .. units - 1`` along a new last axis, after the broadcast shape of ``step`` and
    ``row`` (arrays, or ints): one Philox evaluation per four units. ``row = arange(N)`` gives a batch's (N, units)."""
    blocks = xp.arange(-(-units // 4), dtype=xp.uint32)
    step, row = (xp.asarray(v)[..., None] if hasattr(v, "shape") else v for v in (step, row))
    block = xp.broadcast_arrays(*philox4x32(xp, (blocks, row, step, layer), (seed, seed >> 32)))
    out = xp.stack(block, axis=-1)  # (..., blocks, 4): unit 4 b + i is word i of block b
    return out.reshape(*out.shape[:-2], -1)[..., :units]


def keep(xp: Any, seed: int, layer: int, step: Any, row: Any, unit: Any, rate: float) -> Array:
    """Boolean array, broadcast over ``step``, ``row`` and ``unit`` (integer arrays or ints): which units are kept.
    ``layer``: the index of the layer whose input is dropped (0: the network's inputs)."""
    return _kept(xp, words(xp, seed, layer, step, row, unit), rate)


def mask(xp: Any, seed: int, layer: int, step: Any, row: Any, units: int, rate: float, dtype: Any) -> Array:
    """The mask a layer input of ``units`` units is multiplied by, in forward and backward alike, shaped as
    :func:`layer_words`: ``1 / (1 - rate)`` where the unit is kept, 0 where
    it is dropped, in ``dtype``."""
    dtype = np.dtype(dtype)
    kept = _kept(xp, layer_words(xp, seed, layer, step, row, units), rate)
    return kept.astype(dtype) * dtype.type(scale(rate))  # 1 * scale and 0 * scale: exact


def batch_mask(xp: Any, seed: int, layer: int, step: int, rows: int, units: int, rate: float, dtype: Any) -> Array:
    """The ``(rows, units)`` mask of one batch step: row ``r`` of the batch, unit ``j`` of the layer input."""
    return mask(xp, seed, layer, step, xp.arange(rows, dtype=xp.uint32), units, rate, dtype)


def sample_mask(xp: Any, seed: int, layer: int, step: int, rows: int, units: int, rate: float, dtype: Any) -> Array:
    """The ``(rows, units)`` mask of per-sample SGD's rows from step ``step``: row ``r`` is step ``step + r`` (mod
    2**32), the only row (0) of its batch, as ``rows`` steps on one row each draw it."""
    steps = xp.arange(rows, dtype=xp.uint32) + xp.uint32(step % WORD)  # wraps mod 2**32, as the key's word does
    return mask(xp, seed, layer, steps, 0, units, rate, dtype)


def key_words(seed: int) -> tuple[int, int]:
    """The key's two words, ``(seed mod 2**32, (seed >> 32) mod 2**32)``: dropout.cuh's ``seed_lo, seed_hi``."""
    return int(seed) % WORD, (int(seed) >> 32) % WORD


def _kept(xp: Any, word: Array, rate: float) -> Array:
    return word.astype(xp.uint64) < xp.uint64(keep_threshold(rate))


def rates(value: Any, n_layers: int) -> tuple[float, ...]:
    """Each layer input's dropout rate, input first: ``n_layers`` rates in [0, 1).

    A number is the rate of every hidden layer's output (the inputs keep theirs: 0), as Keras's ``Dropout``
    placed after each hidden layer; a sequence of ``n_layers`` numbers gives the inputs' rate and then each
    hidden layer's, as PyTorch's ``nn.Dropout`` placed before each ``Linear``. None is 0 everywhere.
    """
    if value is None:
        return (0.0,) * n_layers
    if _is_rate_number(value):
        return (0.0,) + (_rate(value, "dropout"),) * (n_layers - 1)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"dropout must be a rate in [0, 1) or a list of {n_layers} rates (the inputs', then each "
                        f"hidden layer's); got {value!r}")
    values = list(value)
    if len(values) != n_layers:
        raise ValueError(f"dropout must list {n_layers} rates for this network (the inputs', then each of its "
                         f"{n_layers - 1} hidden layers'); got {len(values)}: {values!r}")
    return tuple(_rate(v, f"dropout[{i}]") for i, v in enumerate(values))


def _is_rate_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _rate(v: Any, label: str) -> float:
    if not _is_rate_number(v):
        raise TypeError(f"{label} must be a number in [0, 1); got {v!r}")
    v = float(v)
    if not 0.0 <= v < 1.0:  # also refuses NaN
        raise ValueError(f"{label} must be a number in [0, 1); got {v!r}")
    return v
