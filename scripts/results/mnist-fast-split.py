"""Where mnist_fast's train() call spends the time outside its epochs (run 8c, one H100).

    python3 scripts/results/mnist-fast-split.py --mnist-dir DIR

Runs scripts/mnist_fast.py's train_fast twice in one process (its warm-up, then its timed call, each time),
with gpunet.training's _prepare, _prepare_optional and evaluate and gpunet.cuda.select.plan wrapped in
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
from gpunet.cuda import select  # noqa: E402
from gpunet.datasets import load_mnist  # noqa: E402

spent = collections.defaultdict(list)


def timed(owner, name):
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        gpunet.get_backend("cupy").synchronize()
        t0 = time.perf_counter()
        out = inner(*args, **kwargs)
        gpunet.get_backend("cupy").synchronize()
        spent[name].append(round(time.perf_counter() - t0, 4))
        return out
    setattr(owner, name, wrapper)


for owner, name in ((training, "_prepare"), (training, "_prepare_optional"), (training, "evaluate"),
                    (select, "plan")):
    timed(owner, name)
mnist_dir = sys.argv[sys.argv.index("--mnist-dir") + 1]
data = load_mnist(mnist_dir, pixels="unit", dtype=np.float32)
rows = []
for attempt in (1, 2):
    spent.clear()
    result = mnist_fast.train_fast(data, "cupy", 6)
    rows.append({"attempt": attempt, "kernels": result["kernels"], "test_accuracy": result["test_accuracy"],
                 "train_seconds": round(result["train_seconds"], 4), "wall_seconds": round(result["wall_seconds"], 4),
                 "epoch_seconds": [round(e["seconds"], 4) for e in result["epochs"]],
                 "calls": dict(spent)})  # warm-up and timed call both: the timed call's are the last of each
    print(json.dumps(rows[-1]))
out = Path(sys.argv[sys.argv.index("--json") + 1]) if "--json" in sys.argv else None
if out:
    out.write_text(json.dumps(rows, indent=1))
