"""Where mnist_fast's train() call spends the time outside its epochs (run 8c, one H100).

    python3 scripts/results/mnist-fast-split.py --mnist-dir DIR

Runs scripts/mnist_fast.py's train_fast twice in one process (its warm-up, then its timed call, each time),
with gpunet.training's _prepare, _prepare_optional and evaluate and gpunet.engines.select.plan wrapped in
synchronised timers, and prints each call's seconds beside the epochs' own and the whole call's wall time.
"""
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mnist_fast  # noqa: E402

import gpunet  # noqa: E402
from gpunet import training  # noqa: E402
from gpunet.cli import OneLineParser  # noqa: E402
from gpunet.cuda import select  # noqa: E402
from gpunet.datasets import load_mnist  # noqa: E402
from gpunet.files import new_file, write_json  # noqa: E402

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
    p = OneLineParser(prog="mnist-fast-split.py", description=__doc__.splitlines()[0])
    p.add_argument("--mnist-dir", metavar="DIR", required=True, help="folder with the four MNIST IDX files")
    p.add_argument("--json", metavar="FILE", help="also write the figures here (a new file)")
    args = p.parse_args(argv)
    try:
        if args.json:
            new_file(args.json, overwrite=False, hint="name a new file")
        backend = gpunet.get_backend("cupy")
        data = load_mnist(args.mnist_dir, pixels="unit", dtype=np.float32)
    except (ValueError, TypeError, OSError, gpunet.BackendUnavailableError) as exc:
        print(f"mnist-fast-split.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for owner, name in ((training, "_prepare"), (training, "_prepare_optional"), (training, "evaluate"),
                        (select, "plan")):
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
