"""Where mnist_fast's train() call spends the time outside its epochs: first uses (plan, upload, evaluation).

    python3 scripts/mnist_fast_first_use.py --mnist-dir DIR [--json FILE]

Runs scripts/mnist_fast.py's train_fast twice in one process (its warm-up, then its timed call, each time),
with gpunet.training's _prepare, _prepare_optional and evaluate and gpunet.engines.select.engine wrapped in
synchronised timers, and prints each call's seconds beside the epochs' own and the whole call's wall time.
The first attempt on a fresh machine pays every first use; the second shows what is left once nothing is new.
Its results: scripts/results/h100/2026-11-27-run8d/mnist-fast-first-use.json (one H100; see docs/changelog.md,
run 8, for run 8c's figures before mnist_fast's warm-up fix).
"""
import collections
import json
import sys
import time

import numpy as np

import gpunet
from gpunet import training
from gpunet.cli import OneLineParser
from gpunet.engines import select
from gpunet.datasets import load_mnist
from gpunet.files import output_path, write_json

import mnist_fast  # scripts/mnist_fast.py: the run this probe times

spent = collections.defaultdict(list)  # each wrapped function's calls' seconds, in call order


def timed(owner, name, backend):
    """Replace ``owner.name`` by a wrapper that records each call's synchronised seconds in spent[name]."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        backend.synchronize()
        t0 = time.perf_counter()
        out = inner(*args, **kwargs)
        backend.synchronize()
        spent[name].append(round(time.perf_counter() - t0, 4))
        return out
    setattr(owner, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="mnist_fast_first_use.py", description=__doc__.splitlines()[0])
    p.add_argument("--mnist-dir", metavar="DIR", required=True, help="folder with the four MNIST IDX files")
    p.add_argument("--json", metavar="FILE", help="also write the figures here (a new file)")
    args = p.parse_args(argv)
    try:
        if args.json:
            output_path(args.json, hint="name a new file")
        backend = gpunet.get_backend("cupy")
        data = load_mnist(args.mnist_dir, pixels="unit", dtype=np.float32)
    except (ValueError, TypeError, OSError, gpunet.BackendUnavailableError) as exc:
        print(f"mnist_fast_first_use.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for owner, name in ((training, "_prepare"), (training, "_prepare_optional"), (training, "evaluate"),
                        (select, "engine")):
        timed(owner, name, backend)
    rows = []
    for attempt in (1, 2):
        spent.clear()
        result = mnist_fast.train_fast(data, "cupy", 6)
        rows.append({"attempt": attempt, "kernels": result["kernels"], "test_accuracy": result["test_accuracy"],
                     "train_seconds": round(result["train_seconds"], 4),
                     "wall_seconds": round(result["wall_seconds"], 4),
                     "epoch_seconds": [round(e["seconds"], 4) for e in result["epochs"]],
                     "calls": dict(spent)})  # the warm-up's calls first, then the timed call's
        print(json.dumps(rows[-1]))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
