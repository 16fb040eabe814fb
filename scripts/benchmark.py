"""gpunet side by side with PyTorch, scikit-learn and the article's plain per-sample code; prints a table, writes JSON.

    python scripts/benchmark.py            # the full CPU run (a few minutes on 2 cores)
    python scripts/benchmark.py --quick    # a small version, seconds
    python scripts/benchmark.py --gpu --mnist-dir DIR --json benchmark-gpu.json   # the GPU cases (issues 12, 13)

Without --gpu: the same as `gpunet bench`; see gpunet/bench.py for what is measured and how.
With --gpu: one MNIST epoch per case on gpunet's CuPy paths, PyTorch CUDA (eager,
CUDA graph, torch.compile), JAX (jit, lax.scan) and gpunet on NumPy for reference
(gpunet.bench.run_gpu_benchmark). Contenders that cannot run are recorded as skipped.
The JSON is rewritten after every case, so a run stopped early keeps what it finished.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gpunet.cli import OneLineParser, main


def gpu_main(argv: list[str]) -> int:
    from gpunet.bench import ALL_GPU_CONTENDERS, format_gpu_results, run_gpu_benchmark
    from gpunet.files import write_json

    p = OneLineParser(prog="benchmark.py", description="the GPU benchmark cases")
    p.add_argument("--gpu", action="store_true", required=True)
    p.add_argument("--quick", action="store_true", help="an eighth of an epoch per run, 3 runs, no torch.compile")
    p.add_argument("--fraction", type=float, help="share of an epoch per timed run (default: 1, or 1/8 with --quick)")
    p.add_argument("--repeats", type=int, help="timed runs per contender after a warm-up (default: 5, 3 with --quick)")
    p.add_argument("--only", metavar="NAMES", help="comma-separated contenders to run (default: all)")
    p.add_argument("--mnist-dir", metavar="DIR", help="MNIST IDX files (default: random pixels)")
    p.add_argument("--json", metavar="FILE", required=True, help="where the results go")
    args = p.parse_args(argv)
    fraction = args.fraction if args.fraction is not None else (1 / 8 if args.quick else 1.0)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if not 0 < fraction <= 1:
        p.error(f"--fraction must be in (0, 1]; got {fraction}")
    if repeats < 1:
        p.error(f"--repeats must be >= 1; got {repeats}")
    only = args.only.split(",") if args.only else None
    unknown = [n for n in only or [] if n not in ALL_GPU_CONTENDERS]
    if unknown:
        p.error(f"unknown contender {unknown[0]!r}; expected some of {', '.join(ALL_GPU_CONTENDERS)}")
    if args.mnist_dir and not any((Path(args.mnist_dir) / n).is_file()
                                  for n in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")):
        p.error(f"--mnist-dir {args.mnist_dir!r} holds no train-images-idx3-ubyte(.gz)")
    out = Path(args.json)
    if not out.parent.is_dir():
        p.error(f"--json {args.json!r}: folder {str(out.parent)!r} does not exist")

    def save(results: dict) -> None:
        write_json(out, results)  # atomic: a run stopped mid-write leaves the previous case's file
        print(f"done: {results['cases'][-1]['case']}", file=sys.stderr, flush=True)

    results = run_gpu_benchmark(fraction, repeats, only, args.mnist_dir, args.quick, on_result=save)
    print(format_gpu_results(results))
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(gpu_main(argv) if "--gpu" in argv else main(["bench", *argv]))
