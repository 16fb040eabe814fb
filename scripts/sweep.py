"""Run every configuration of a sweep file (TOML or JSON): ``gpunet sweep``, with results in scripts/results/.

    python scripts/sweep.py scripts/sweeps/article.toml --data-dir ../shared/data/mnist

The same as ``gpunet sweep FILE --out scripts/results/<name>.json``; see the
README's "Experiments" section and ``gpunet sweep --help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gpunet.cli import build_parser, main
from gpunet.sweep import load_grid


def with_results_default(argv: list[str]) -> list[str]:
    """``gpunet sweep``'s arguments, with ``--out scripts/results/<name>.json`` unless they name an --out."""
    args = build_parser().parse_args(["sweep", *argv])  # a bad option: one line, exit status 2
    if args.out is not None or args.sweep is None:  # no file: gpunet sweep prints --example, or says what is missing
        return argv
    try:
        name, _ = load_grid(args.sweep)
    except ValueError:
        return argv  # gpunet sweep reports the bad file in one line
    return [*argv, "--out", str(Path(__file__).parent / "results" / f"{name}.json")]


if __name__ == "__main__":
    sys.exit(main(["sweep", *with_results_default(sys.argv[1:])]))
