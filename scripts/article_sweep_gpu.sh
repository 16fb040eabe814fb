#!/usr/bin/env bash
# The article's 20-seed sweep (scripts/sweeps/article-seeds.toml as it is: kernels "auto", whole per-sample
# epochs) on 8 Dask workers sharing one GPU, first with NVIDIA's Multi-Process Service, then without it while
# time is left: the command of run 8b (one H100, 2026-11-27: 44 s with MPS, 83 s without; its results are in
# scripts/results/h100/2026-11-27-run8b/, see docs/benchmarks.md). About 3 minutes on a fresh machine.
#
#     OUT=/some/new/folder bash scripts/article_sweep_gpu.sh
#
# It expects what the device machines of that run had: the four MNIST IDX files in .devdata/mnist and
# wheels for dask[distributed] in .devdata/wheels (no internet); gpunet is installed from this checkout
# without touching the CuPy, NumPy and PyTorch already there. In $OUT: article-seeds-w8-mps.json and
# article-seeds-w8.json (each with the .jsonl it was made from), sweep-log-w8-mps.txt and sweep-log-w8.txt.
cd "$(dirname "$0")/.." || exit 1
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT" || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
python3 -m pip install -q --no-index --find-links .devdata/wheels "dask[distributed]" || exit 1
export PYTHONUNBUFFERED=1 CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
sweep() { local name=$1 limit=$2 t0=$SECONDS
  timeout "$limit" gpunet sweep scripts/sweeps/article-seeds.toml --data-dir .devdata/mnist --backend cupy \
    --workers 8 --out "$OUT/article-seeds-$name.json" > "$OUT/sweep-log-$name.txt" 2>&1
  echo "[$name] rc=$? $((SECONDS - t0)) s: $(tail -n 1 "$OUT/sweep-log-$name.txt" | cut -c1-300)"; }
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
if nvidia-cuda-mps-control -d; then
  sweep w8-mps 100
  echo quit | nvidia-cuda-mps-control; sleep 2
else
  echo "MPS daemon did not start"; tail -5 /tmp/mps-log/* 2>/dev/null
fi
sweep w8 $((250 - SECONDS))
