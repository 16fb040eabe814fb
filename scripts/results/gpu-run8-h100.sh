# Run 8b (one H100), after the full gpu_check of run 8: issue 13's last target on an H100, the article's 20-seed
# sweep (scripts/sweeps/article-seeds.toml as it is: kernels "auto", whole per-sample epochs) on 8 Dask workers,
# first with NVIDIA's Multi-Process Service, then without it while time is left. About 3 minutes.
cd "$(dirname "$0")/../.." || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
python3 -m pip install -q --no-index --find-links .devdata/wheels "dask[distributed]" || exit 1
export PYTHONUNBUFFERED=1 CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
sweep() { local name=$1 limit=$2 t0=$SECONDS
  timeout "$limit" gpunet sweep scripts/sweeps/article-seeds.toml --data-dir .devdata/mnist --backend cupy \
    --workers 8 --out "$OUT/article-seeds-gpu-h100-run8-$name.json" > "$OUT/sweep-$name-log.txt" 2>&1
  echo "[$name] rc=$? $((SECONDS - t0)) s: $(tail -n 1 "$OUT/sweep-$name-log.txt" | cut -c1-300)"; }
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
if nvidia-cuda-mps-control -d; then
  sweep w8-mps 100
  echo quit | nvidia-cuda-mps-control; sleep 2
else
  echo "MPS daemon did not start"; tail -5 /tmp/mps-log/* 2>/dev/null
fi
sweep w8 $((250 - SECONDS))
