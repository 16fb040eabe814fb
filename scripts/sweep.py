"""Run every configuration of a sweep file (TOML or JSON), print one results table and write it as JSON.

    python scripts/sweep.py scripts/sweeps/article.toml --data-dir ../shared/data/mnist

Each run trains from scratch with `gpunet.runs.run_experiment`; the table and the
JSON give the equivalent `gpunet train` command, the backend and device, the
training time and the test accuracy. See the README's "Experiments" section.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from gpunet.backend import BACKEND_NAMES
from gpunet.runs import format_table, load_data, load_grid, run_experiment, write_results

COLUMNS = [("network", "network", "{}"), ("command", "command", "{}"), ("backend", "backend", "{}"),
           ("epochs", "epochs", "{}"), ("seconds", "seconds", "{:.1f}"), ("test acc", "test_accuracy", "{:.2%}"),
           ("best epoch", "best_epoch_accuracy", "{:.2%}")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a .toml or .json sweep file (see scripts/sweeps/)")
    parser.add_argument("--data-dir", default=os.environ.get("GPUNET_MNIST_DIR"),
                        help="MNIST IDX folder for runs on mnist (default: $GPUNET_MNIST_DIR, else download)")
    parser.add_argument("--backend", choices=BACKEND_NAMES, help="override every run's backend")
    parser.add_argument("--epochs", type=int, help="override every run's epochs (a quick look)")
    parser.add_argument("--out", help="results JSON (default: scripts/results/<name>.json)")
    args = parser.parse_args(argv)
    try:
        name, configs = load_grid(args.sweep)
        overrides = {k: v for k, v in (("backend", args.backend), ("epochs", args.epochs)) if v is not None}
        configs = [replace(c, **overrides, **({"data_dir": args.data_dir} if c.dataset == "mnist" and args.data_dir
                                              else {})) for c in configs]
    except ValueError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or Path(__file__).parent / "results" / f"{name}.json")
    rows, cache = [], {}
    for k, config in enumerate(configs, start=1):
        key = (config.dataset, config.data_dir, config.train_csv, config.test_csv, config.pixels, config.dtype,
               config.validation, config.seed if config.validation else None)  # the seed picks validation rows
        if key not in cache:
            cache = {key: load_data(config)}  # keep one dataset in memory at a time
        row = run_experiment(config, cache[key])
        rows.append(row)
        print(f"[{k}/{len(configs)}] {row['test_accuracy']:.2%} in {row['seconds']:.1f} s: {row['command']}",
              flush=True)
        write_results(out, name, rows)  # after every run: a long sweep keeps what it has done
    print()
    print(format_table(rows, COLUMNS))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
