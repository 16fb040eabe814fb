"""Benchmarks: the same network, data, dtype, initial parameters and steps on gpunet and its peers, side by side.

Contenders: gpunet on NumPy (and CuPy with a GPU); PyTorch eager on the CPU
(and on CUDA, eager and the whole epoch captured in a CUDA graph); scikit-learn's
MLPClassifier; and the original article's per-sample algorithm written plainly.
Each is timed over the same rows, by one harness for all (``harness.time_rounds``:
perf_counter on the CPU, CUDA events on the GPU, around one run of the same work:
one pass over data already on the device, in the same order); the figure is the
median of ``repeats`` timed runs after one warm-up, with its 95% order-statistic
interval, the contenders (and a matrix-product ceiling) taking turns round by
round. Library code: it returns results and never prints.

:func:`run_gpu_benchmark` is the GPU side (issues 12, 13 and 46): one MNIST epoch
per case on gpunet's CuPy paths, PyTorch (eager, the whole epoch in a CUDA graph,
the whole step through torch.compile) and JAX (a jitted step, the whole epoch in
``lax.scan``), with gpunet on NumPy on the same machine's CPU for reference. The
issues' targets are not the library's: scripts/benchmark.py holds them and judges
these measurements against them (``harness.judge``).

The modules: ``cases`` (what is trained), ``harness`` (a contender's interface,
the clocks, timing, the median's interval and the rule for a target, the figures
recorded), ``contenders`` (gpunet's paths, the article's code,
the tables by name), ``peers`` (PyTorch, JAX, scikit-learn), ``cpu`` and ``gpu``
(the two benchmarks and their text tables; ``gpu.measure_case``, one case, is also
scripts/shape_table.py's).
"""

from .cases import ALL_GPU_CONTENDERS, EPOCH_ROWS, LR, Case, cases, gpu_cases
from .contenders import CONTENDERS, GPU_CONTENDERS
from .cpu import format_results, measure_memory, run_benchmark
from .gpu import format_gpu_results, gpu_machine, run_gpu_benchmark
from .harness import judge, median_interval, per_call_us

__all__ = ["ALL_GPU_CONTENDERS", "CONTENDERS", "EPOCH_ROWS", "GPU_CONTENDERS", "LR", "Case", "cases",
           "format_gpu_results", "format_results", "gpu_cases", "gpu_machine", "judge", "measure_memory", "median_interval", "per_call_us",
           "run_benchmark", "run_gpu_benchmark"]
