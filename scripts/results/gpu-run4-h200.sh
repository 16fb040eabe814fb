# Run 4: after graph mode's fewer launches and auto's new rule. One prepared command, about 5 minutes.
# .devdata/article-seeds-auto.toml is scripts/sweeps/article-seeds.toml with kernels = "auto" (the default) in its base.
# At most 8 files come back: pytest-gpu.txt, graph-profile.json, graph-vs-fused.json, benchmark-gpu.json,
# article-seeds-gpu-w8.json, article-seeds-gpu-w8-mps.json, run4-log.txt.
cd "$(dirname "$0")/.." || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
python3 -m pip install -q --no-index --find-links .devdata/wheels "dask[distributed]" || echo "dask install failed"
mkdir -p /tmp/r4
LOG="$OUT/run4-log.txt"
stage() { local name=$1 limit=$2; shift 2; local t0=$SECONDS
  timeout "$limit" "$@" > "/tmp/r4/$name.txt" 2>&1; local rc=$?
  { echo "===== $name: rc=$rc, $((SECONDS - t0)) s (limit $limit): $*"; tail -n 40 "/tmp/r4/$name.txt"; } >> "$LOG"
  echo "[$name] rc=$rc $((SECONDS - t0)) s: $(tail -n 1 "/tmp/r4/$name.txt" | cut -c1-300)"; }
export GPUNET_MNIST_DIR=.devdata/mnist PYTHONUNBUFFERED=1
stage pytest-gpu 100 python3 -m pytest -m gpu -n 4 --timeout 90 --timeout-method thread -p no:cacheprovider -rfEs --tb=short -q tests
cp /tmp/r4/pytest-gpu.txt "$OUT/pytest-gpu.txt"
grep -E "^(FAILED|ERROR)" /tmp/r4/pytest-gpu.txt | head -20
stage graph-profile 20 python3 scripts/graph_profile.py --json "$OUT/graph-profile.json"
head -12 /tmp/r4/graph-profile.txt
stage graph-vs-fused 30 python3 scripts/graph_vs_fused.py --json "$OUT/graph-vs-fused.json"
head -14 /tmp/r4/graph-vs-fused.txt
stage benchmark 90 python3 scripts/benchmark.py --gpu --repeats 3 --mnist-dir .devdata/mnist \
  --only gpunet-cupy-fused,gpunet-cupy-graph,torch-cuda-graph,jax-scan --json "$OUT/benchmark-gpu.json"
grep -v "^done" /tmp/r4/benchmark.txt | tail -22
stage sweep 100 gpunet sweep .devdata/article-seeds-auto.toml --data-dir .devdata/mnist --backend cupy --workers 8 \
  --out /tmp/r4/article-seeds-gpu-w8.json
cp /tmp/r4/article-seeds-gpu-w8.json "$OUT/" 2>/dev/null
tail -n 2 /tmp/r4/sweep.txt | cut -c1-200
# If time is left: the same sweep with CUDA MPS, so the 8 workers' kernels can run side by side on the GPU.
left=$((365 - SECONDS))
echo "seconds left for the MPS sweep: $left"
if command -v nvidia-cuda-mps-control >/dev/null && [ "$left" -gt 60 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then
    stage sweep-mps "$left" gpunet sweep .devdata/article-seeds-auto.toml --data-dir .devdata/mnist --backend cupy \
      --workers 8 --out /tmp/r4/article-seeds-gpu-w8-mps.json
    cp /tmp/r4/article-seeds-gpu-w8-mps.json "$OUT/" 2>/dev/null
    tail -n 2 /tmp/r4/sweep-mps.txt | cut -c1-200
    echo quit | nvidia-cuda-mps-control
  else
    echo "MPS daemon did not start"; tail -5 /tmp/mps-log/* 2>/dev/null
  fi
else
  echo "no MPS run: $(command -v nvidia-cuda-mps-control || echo 'nvidia-cuda-mps-control not found')"
fi
