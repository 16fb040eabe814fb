"""Initial parameters, drawn on the host from a seeded numpy.random.Generator.

Drawing on the host and moving once means the same seed gives bit-identical
starting parameters on every backend.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# name -> (rng, fan_in, fan_out) -> weights of shape (fan_in, fan_out), float64
INITS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    # The original article: 0.01 * standard normal.
    "article": lambda rng, n_in, n_out: 0.01 * rng.standard_normal((n_in, n_out)),
    # Glorot & Bengio (2010), uniform form: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
    "xavier": lambda rng, n_in, n_out: rng.uniform(
        -np.sqrt(6.0 / (n_in + n_out)), np.sqrt(6.0 / (n_in + n_out)), (n_in, n_out)
    ),
    # He et al. (2015): normal with std sqrt(2 / fan_in), for ReLU layers.
    "he": lambda rng, n_in, n_out: np.sqrt(2.0 / n_in) * rng.standard_normal((n_in, n_out)),
    # LeCun-style: normal with std fan_in ** -0.5.
    "fan-in": lambda rng, n_in, n_out: n_in**-0.5 * rng.standard_normal((n_in, n_out)),
}


# Names that earlier versions used, still accepted (checkpoints and sweep files name them).
ALIASES = {"seed": "article"}


def init_name(init: str) -> str:
    """The current name of an initialisation: an old alias maps to its new name, anything else is returned as is."""
    return ALIASES.get(init, init) if isinstance(init, str) else init


def init_params(sizes: list[int], init: str, seed: int) -> dict[str, np.ndarray]:
    """Float64 host parameters {"W1", "b1", ...}: weights drawn layer by layer, biases zero."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{i}"] = INITS[init](rng, n_in, n_out)  # (n_in, n_out)
        params[f"b{i}"] = np.zeros(n_out)  # (n_out,)
    return params
