"""The shape table (issue 46): every contender at every batch size and hidden width, which path gpunet's
kernels="auto" takes, and whether that was the fastest; writes JSON.

    python scripts/shape_table.py --json shape-table.json            # on a GPU: 6 batches x 3 widths, one epoch each
    python scripts/shape_table.py --quick --json /tmp/shape.json     # CPU contenders, tiny shapes, seconds

The network is 784-H-10 (sigmoid hidden and output layers, gpunet's squared loss, SGD at lr 0.1), float32, at
batch {32, 64, 128, 256, 1024, 4096} x H {100, 1024, 4096}, on random pixels. Each shape is one case of
gpunet.bench: every contender trains the same rows in the same order from the same parameters, timed by one
clock (CUDA events on the GPU, perf_counter on the CPU: gpunet.bench.harness), 10 rounds after a warm-up; a
figure is the median epoch (60,000 rows) with its 95% order-statistic interval.

For each shape the JSON records ``auto_path`` (the engine kernels="auto" ran: "plain", "fused" or "graph"),
``fastest`` (the contender of the lowest median), ``auto_fastest`` (gpunet-auto was that contender) and
``auto_fastest_gpunet`` (auto's run beat gpunet's other paths, each forced, by their medians), and ``auto_clearly_slower``:
the gpunet paths whose 95% interval lies wholly below auto's (a sure loss, not a near tie). The JSON is rewritten
after every shape, so a run stopped early keeps what it finished.

--quick runs the same code on the CPU contenders (gpunet on NumPy, PyTorch eager and its whole-epoch graph
function run eagerly, JAX jit and scan on the CPU) at batch {16, 32} x H {8, 16} over 256 rows, 6 rounds: a check
that the script works (tests/test_shape_table.py runs it), not a measurement.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gpunet.bench.cases import EPOCH_ROWS, Case, gpu_data
from gpunet.bench.contenders import CONTENDERS, gpu_contender, gpunet_contender
from gpunet.bench.gpu import gpu_machine, measure_case
from gpunet.bench.harness import LEVEL, Contender, clock_for, matmul_ceiling
from gpunet.bench.peers import jax_contender, missing, torch_graph_contender
from gpunet.cli import OneLineParser

BATCHES = (32, 64, 128, 256, 1024, 4096)
HIDDEN = (100, 1024, 4096)
QUICK_BATCHES, QUICK_HIDDEN, QUICK_ROWS, QUICK_REPEATS = (16, 32), (8, 16), 256, 6
# gpunet's batch paths by the engine name the run reports (gpunet.engines.select)
GPUNET_PATHS = {"plain": "gpunet-cupy", "fused": "gpunet-cupy-fused", "graph": "gpunet-cupy-graph"}
GPU_PEERS = ("torch-cuda", "torch-cuda-graph", "torch-compile", "jax-jit", "jax-scan")
COMPILE_SKIP = "left out: compiling anew at each of the 18 shapes takes minutes (--with-compile runs it)"


def gpu_contenders(with_compile: bool) -> dict[str, Contender]:
    """gpunet on CuPy with kernels="auto" and each of its paths forced, and the GPU peers."""
    table = {"gpunet-auto": gpu_contender("gpunet-cupy-auto")}
    table.update({name: gpu_contender(name) for name in GPUNET_PATHS.values()})
    table.update({name: gpu_contender(name) for name in GPU_PEERS if with_compile or name != "torch-compile"})
    return table


def cpu_contenders() -> dict[str, Contender]:
    """The quick mode's: the same code on the CPU (the torch graph's function runs eagerly there)."""
    return {
        "gpunet-numpy-auto": (gpunet_contender("numpy", "auto"), lambda: None),
        "torch-cpu": CONTENDERS["torch-cpu"],
        "torch-cpu-graph-fn": (torch_graph_contender("cpu"), lambda: missing("torch")),
        "jax-jit-cpu": (jax_contender(False, "cpu"), lambda: missing("jax")),
        "jax-scan-cpu": (jax_contender(True, "cpu"), lambda: missing("jax")),
    }


def verdict(entry: dict[str, Any], auto: str) -> dict[str, Any]:
    """Which path ``auto`` (the kernels="auto" contender) ran, and whether it was the fastest (see the module's
    docstring); None where auto or every contender was not measured."""
    timed = {n: r for n, r in entry["contenders"].items() if "epoch_seconds" in r}
    if auto not in timed:
        return {"auto_path": None, "fastest": min(timed, key=lambda n: timed[n]["epoch_seconds"]) if timed else None,
                "auto_fastest": None, "auto_fastest_gpunet": None, "auto_clearly_slower": []}
    path = timed[auto]["path"]
    fastest = min(timed, key=lambda n: timed[n]["epoch_seconds"])
    ours = {p: timed[n] for p, n in GPUNET_PATHS.items() if n in timed}
    ours[path] = timed[auto]  # auto's path by auto's own run (on the CPU, the only gpunet path)
    best_ours = min(ours, key=lambda p: ours[p]["epoch_seconds"])
    interval = timed[auto].get("epoch_seconds_interval")
    beaten = [p for p, r in ours.items() if p != path and interval and r.get("epoch_seconds_interval")
              and r["epoch_seconds_interval"][1] < interval[0]]
    return {"auto_path": path, "fastest": fastest, "auto_fastest": fastest == auto,
            "auto_fastest_gpunet": best_ours == path, "auto_clearly_slower": beaten}


def run_table(quick: bool, repeats: int, fraction: float, with_compile: bool,
              on_result: Any = None) -> dict[str, Any]:
    """Every shape's case on every contender; the results as the JSON holds them."""
    gpu = not quick
    devices = ("cpu", "gpu") if gpu else ("cpu",)
    clocks = {device: clock_for(device) for device in devices}
    ceilings = {device: matmul_ceiling(device, 256 if quick else 2048) for device in devices}
    rows = QUICK_ROWS if quick else max(1, round(EPOCH_ROWS * fraction))
    contenders = cpu_contenders() if quick else gpu_contenders(with_compile)
    auto = "gpunet-numpy-auto" if quick else "gpunet-auto"
    X, labels, data = gpu_data(rows, None)
    results: dict[str, Any] = {
        "machine": gpu_machine(), "quick": quick, "repeats": repeats, "rows": rows, "epoch_rows": EPOCH_ROWS,
        "data": data, "dtype": "float32", "clocks": {d: c.name for d, c in clocks.items()},
        "interval": f"{LEVEL:.0%} order-statistic interval of the median",
        "skipped": {} if quick or with_compile else {"torch-compile": COMPILE_SKIP}, "shapes": []}
    for h in (QUICK_HIDDEN if quick else HIDDEN):
        for batch in (QUICK_BATCHES if quick else BATCHES):
            case = Case(f"batch {batch} 784-{h}-10", (784, h, 10), batch, rows)
            entry = measure_case(case, contenders, X, labels, repeats, clocks, ceilings)
            results["shapes"].append({"batch": batch, "hidden": h, **verdict(entry, auto), **entry})
            if on_result is not None:
                on_result(results)
    return results


def format_table(results: dict[str, Any]) -> str:
    """One line a shape: auto's path and median epoch, the fastest contender and its median."""
    lines = [(f"{'batch':>6} {'hidden':>6}  {'auto path':<9} {'auto s':>9}  {'fastest':<20} {'its s':>9}  "
              "auto fastest (of gpunet's paths)")]
    for s in results["shapes"]:
        c = s["contenders"]
        auto = next((r for n, r in c.items() if n.startswith("gpunet-") and "auto" in n and "epoch_seconds" in r),
                    None)
        best = c.get(s["fastest"] or "", {})
        lines.append(f"{s['batch']:>6} {s['hidden']:>6}  {s['auto_path'] or '-':<9} "
                     f"{auto['epoch_seconds'] if auto else float('nan'):>9.4f}  {s['fastest'] or '-':<20} "
                     f"{best.get('epoch_seconds', float('nan')):>9.4f}  {s['auto_fastest']} ({s['auto_fastest_gpunet']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from gpunet.backend import cupy_unavailable_reason
    from gpunet.files import write_json

    p = OneLineParser(prog="shape_table.py", description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE", required=True, help="where the results go")
    p.add_argument("--quick", action="store_true", help="the CPU contenders at tiny shapes: a check, seconds")
    p.add_argument("--repeats", type=int, help=f"timed rounds after a warm-up (default 10, {QUICK_REPEATS} with "
                   "--quick; a 95%% interval needs at least 6)")
    p.add_argument("--fraction", type=float, default=1.0, help="share of an epoch per timed run (default 1)")
    p.add_argument("--with-compile", action="store_true", help="also torch.compile (compiles anew at every shape)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    repeats = args.repeats if args.repeats is not None else (QUICK_REPEATS if args.quick else 10)
    if repeats < 1:
        p.error(f"--repeats must be >= 1; got {repeats}")
    if not 0 < args.fraction <= 1:
        p.error(f"--fraction must be in (0, 1]; got {args.fraction}")
    out = Path(args.json)
    if not out.parent.is_dir():
        p.error(f"--json {args.json!r}: folder {str(out.parent)!r} does not exist")
    if not args.quick and cupy_unavailable_reason() is not None:
        p.error(f"the full table needs a GPU ({cupy_unavailable_reason()}); --quick runs the CPU check")

    def save(results: dict[str, Any]) -> None:
        write_json(out, results)  # atomic: a run stopped mid-write leaves the previous shape's file
        s = results["shapes"][-1]
        print(f"done: batch {s['batch']} hidden {s['hidden']}", file=sys.stderr, flush=True)

    results = run_table(args.quick, repeats, args.fraction, args.with_compile, on_result=save)
    print(format_table(results))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
