"""gemm.cu's defines and its WeightGradLayer, as graph.py's host code needs them (tests/transcriptions.py holds
the kernels' NumPy transcriptions)."""

from __future__ import annotations

from typing import Any, NamedTuple

Array = Any
TILE = 16  # a TILE x TILE block computes a TILE x TILE tile of a product (R = 1)
KTILE = 256  # the slice of k a float block stages per pass; a double block's is KTILE_DOUBLE
KTILE_DOUBLE = 128
RTILE = 4  # the register-tiled products' RTILE x RTILE elements a thread (template parameter R)
KTILE_R = 32  # the slice of k a register-tiled block stages per pass
LOSS_THREADS = 256  # loss_total's one block
MAX_LAYERS = 8  # weight_grads: the most layers one launch takes
GRAD_WRITE, SGD_FOLDED, SGD_DECAY = 0, 1, 2  # weight_grad's MODE: write dW, W -= dW (lr folded in), W -= lr (dW + wd W)


class WeightGradLayer(NamedTuple):
    """gemm.cu's WeightGradLayer: one layer's weight_grad arguments, and its tiles' place in weight_grads' grid."""

    A_prev: Array
    delta: Array
    W: Array
    dW: Array
    b: Array
    db: Array
    n_prev: int
    n_i: int
    first_block: int  # its (tiles_x, tiles_y) tiles are blocks first_block, first_block + 1, ..., row by row
    tiles_x: int
