"""The defaults against the previous ones: ``gpunet train``'s settings, 10 epochs, on MNIST-format folders.

    python scripts/defaults_check.py                                     # the digits and MNIST
    python scripts/defaults_check.py --data fashion=DIR --out results.json  # and any folder of four IDX files

Each data set trains twice from seed 0, in float32 on NumPy, as ``gpunet train --epochs 10`` would: once with
today's defaults (``gpunet.config.TrainConfig()``: ``gpunet.defaults``) and once with gpunet 0.2.0's (784-100-10
or 64-100-10, batches of 16, a constant rate). Each row is the last epoch's test accuracy and the training
seconds. The digits are scikit-learn's 8x8 images (their 30 default epochs too); MNIST comes from
``$GPUNET_MNIST_DIR`` (default ../shared/data/mnist); ``--data NAME=DIR`` adds any folder of MNIST's four files.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import gpunet
from gpunet.backend import get_backend
from gpunet.config import TrainConfig
from gpunet.datasets import Split, load_digits, load_mnist
from gpunet.files import output_path, write_json
from gpunet.machine import machine
from gpunet.run import build, schedule_settings

MNIST_DIR = Path(os.environ.get("GPUNET_MNIST_DIR", Path(__file__).resolve().parents[2] / "shared/data/mnist"))
EPOCHS = 10  # issue 45: "10 epochs on held-out MNIST-format data"
# gpunet 0.2.0's defaults, where today's differ
BEFORE = {"hidden": (100,), "batch_size": 16, "lr_schedule": "exponential", "lr_decay": 1.0}


def run(name: str, data: Split, config: TrainConfig) -> dict[str, Any]:
    """One training run as ``gpunet train`` makes it from ``config``: its last epoch's test accuracy."""
    net, optimizer = build(config, data.X_train.shape[1], get_backend("numpy"))
    history = gpunet.train(net, data.X_train, data.y_train, epochs=config.epochs, batch_size=config.batch_size,
                           lr=config.lr, **schedule_settings(config), optimizer=optimizer, seed=config.seed,
                           X_test=data.X_test, y_test=data.y_test)
    return {"data": name, "hidden": list(config.hidden), "batch_size": config.batch_size,
            "lr_schedule": config.lr_schedule, "epochs": config.epochs,
            "test_accuracy": history[-1]["test_accuracy"],
            "accuracy_by_epoch": [round(r["test_accuracy"], 4) for r in history],
            "seconds": round(sum(r["seconds"] for r in history), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                        help="another folder of MNIST-format IDX files (repeatable)")
    parser.add_argument("--no-mnist", action="store_true", help="leave MNIST out")
    parser.add_argument("--out", help="write the rows as JSON to this new file")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    folders = {} if args.no_mnist else {"mnist": MNIST_DIR}
    for item in args.data:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--data must be NAME=DIR; got {item!r}")
        folders[name] = Path(folder)
    try:  # checked before the long part: an existing file is kept unless --force
        out = output_path(args.out, overwrite=args.force) if args.out else None
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    sets = [("digits", load_digits(dtype="float32"), TrainConfig())]  # the digits: their 30 default epochs
    sets += [(name, load_mnist(folder, dtype="float32"), TrainConfig(dataset="mnist", epochs=EPOCHS))
             for name, folder in folders.items()]
    rows = []
    for name, data, now in sets:
        for label, config in (("before", replace(now, **BEFORE)), ("now", now)):
            row = {"defaults": label, **run(name, data, config)}
            print(f"{name:8} {label:6} {row['test_accuracy']:.4f}  ({row['seconds']} s)", flush=True)
            rows.append(row)
    if out is not None:
        write_json(out, {"machine": machine(), "command": " ".join(["python", *sys.argv]), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
