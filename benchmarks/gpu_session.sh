#!/usr/bin/env bash
# One call on a lent GPU machine: build, CUDA tests, compute-sanitizer, GPU benchmarks.
# Usage (device tool): bash benchmarks/gpu_session.sh   (writes under $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/hdlfast-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr ' ' '-')

HDLFAST_CUDA=ON HDLFAST_CUDA_ARCHITECTURES=90 \
  python3 -m pip install --no-build-isolation --no-deps -q . 2>&1 | tail -n 20 || exit 1
cd /tmp  # import the installed package, not the source tree
python3 -c "import hdlfast, json; print(json.dumps(hdlfast.info()))"
repo=$OLDPWD

timeout 300 python3 -m pytest -q -m cuda "$repo/tests" 2>&1 | tee "$OUT/pytest-cuda.log" | tail -n 30
for tool in memcheck racecheck initcheck synccheck; do
  timeout 120 compute-sanitizer --tool "$tool" --error-exitcode 9 \
    python3 "$repo/benchmarks/gpu_sanitize.py" > "$OUT/sanitizer-$tool.log" 2>&1
  echo "compute-sanitizer $tool: exit $? ($(grep -c 'ERROR SUMMARY: 0' "$OUT/sanitizer-$tool.log") clean summaries)"
done
timeout 400 python3 "$repo/benchmarks/bench_knn_gpu.py" --out "$OUT/knn-gpu-$gpu.json"
timeout 300 python3 "$repo/benchmarks/bench_sinkhorn_gpu.py" --out "$OUT/sinkhorn-gpu-$gpu.json"
timeout 300 python3 "$repo/benchmarks/bench_kmeans_gpu.py" --out "$OUT/kmeans-gpu-$gpu.json"
