#!/usr/bin/env bash
# On a lent GPU machine: build, CUDA tests, compute-sanitizer, GPU benchmarks.
# Usage (device tool): bash benchmarks/gpu_session.sh [build] [test] [sanitize] [bench] [dask]
# (default: all five, writing under $OUT). One device call may run 10 minutes at most, so a
# session runs "build test", then "sanitize", then "bench" as three calls (the machine stays
# warm between calls and keeps the installed package).
set -uo pipefail
stages=${*:-build test sanitize bench dask}
want() { [[ " $stages " == *" $1 "* ]]; }
OUT=${OUT:-/tmp/hdlfast-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr ' ' '-')

if want build; then
  HDLFAST_CUDA=ON HDLFAST_CUDA_ARCHITECTURES=90 \
    python3 -m pip install --no-build-isolation --no-deps -q . 2>&1 | tail -n 20 || exit 1
fi
cd /tmp  # import the installed package, not the source tree
python3 -c "import hdlfast, json; print(json.dumps(hdlfast.info()))"
repo=$OLDPWD

if want test; then
  timeout 240 python3 -m pytest -q -m cuda "$repo/tests" 2>&1 | tee "$OUT/pytest-cuda.log" | tail -n 30
fi
if want sanitize; then
  for tool in memcheck racecheck initcheck synccheck; do
    timeout 60 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      python3 "$repo/benchmarks/gpu_sanitize.py" > "$OUT/sanitizer-$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $? ($(grep -c 'ERROR SUMMARY: 0' "$OUT/sanitizer-$tool.log") clean summaries)"
  done
fi
if want bench; then
  timeout 200 python3 "$repo/benchmarks/bench_knn_gpu.py" --out "$OUT/knn-gpu-$gpu.json"
  timeout 150 python3 "$repo/benchmarks/bench_sinkhorn_gpu.py" --out "$OUT/sinkhorn-gpu-$gpu.json"
  timeout 150 python3 "$repo/benchmarks/bench_kmeans_gpu.py" --out "$OUT/kmeans-gpu-$gpu.json"
fi
if want dask; then
  if python3 -c "import dask.distributed" 2>/dev/null; then
    # CPU scaling over the machine's cores, then the block tasks on its GPU (one worker)
    timeout 300 python3 "$repo/benchmarks/dask_scaling.py" --n 200000 --block-rows 25000 \
      --repeats 1 --backend native --out "$OUT/dask-scaling-cpu-host-of-$gpu.json"
    timeout 200 python3 "$repo/benchmarks/dask_scaling.py" --n 200000 --d 512 \
      --block-rows 50000 --repeats 1 --workers 1 --out "$OUT/dask-scaling-$gpu.json"
  else
    echo "dask stage skipped: dask.distributed is not installed on this machine"
  fi
fi
