#!/usr/bin/env bash
# The whole GPU check in one device call of at most 9.5 minutes (570 s), stages in order:
#   install   the carried wheel .whl/hdlfast-*-cp312-*.whl (benchmarks/build_gpu_wheel.sh); if
#             there is none or it does not import, build here for sm_90 only
#   smoke     benchmarks/gpu_smoke.py, one process per kernel family, CUDA_LAUNCH_BLOCKING=1
#             and HDLFAST_POISON=1 (outputs start as NaN), one JSON line per check
#   pytest    pytest -m cuda with xdist and a per-test timeout
#   bench     the three GPU benchmarks in --quick form, one JSON line per measurement
#   sanitize  compute-sanitizer memcheck, racecheck, synccheck on hdlfast's kernels only
#             (--kernel-name kns=hdlfast), tiny inputs (benchmarks/gpu_sanitize.py)
# Each stage has its own time box and is skipped, and reported skipped, when too little of the
# 570 s is left. Usage, from the repository root on the device machine:
#   bash benchmarks/gpu_check.sh [stage ...]     (default: all five; writes under $OUT)
# Exactly 8 files come back: check.log, summary.json, smoke.jsonl, pytest-cuda.log,
# knn-gpu.jsonl, sinkhorn-gpu.jsonl, kmeans-gpu.jsonl, sanitizer.log.
set -uo pipefail
BUDGET=${HDLFAST_CHECK_BUDGET:-570}
stages=${*:-install smoke pytest bench sanitize}
OUT=${OUT:-/tmp/hdlfast-out}
mkdir -p "$OUT"
repo=$(pwd)
log="$OUT/check.log"
export PYTHONUNBUFFERED=1
declare -A status seconds
order=()

blocked=""
want() { [[ " $stages " == *" $1 "* ]]; }
left() { echo $((BUDGET - SECONDS)); }
# box T: T seconds, or what is left of the budget (less 5 s) if that is smaller
box() { local l=$(( $(left) - 5 )); (( l < 1 )) && l=1; echo $(( $1 < l ? $1 : l )); }
# run_stage NAME NEEDED_SECONDS COMMAND...: run unless fewer than NEEDED seconds are left
run_stage() {
  local name=$1 need=$2; shift 2
  order+=("$name")
  if ! want "$name"; then status[$name]="not asked"; return; fi
  if [[ -n $blocked ]]; then status[$name]="skipped: $blocked"; echo "== $name ${status[$name]}" | tee -a "$log"; return; fi
  if (( $(left) < need )); then
    status[$name]="skipped: $(left) s left, needs $need"; echo "== $name ${status[$name]}" | tee -a "$log"; return
  fi
  echo "== $name (at ${SECONDS} s, box $need s)" | tee -a "$log"
  local t0=$SECONDS
  "$@"; local rc=$?
  seconds[$name]=$((SECONDS - t0))
  status[$name]=$([[ $rc == 0 ]] && echo ok || echo "failed (exit $rc)")
  echo "== $name: ${status[$name]} in ${seconds[$name]} s" | tee -a "$log"
}

install() {
  local whl
  whl=$(ls .whl/hdlfast-*-cp312-*.whl 2>/dev/null | head -n1)
  if [[ -n $whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$whl" >>"$log" 2>&1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    if (cd /tmp && python3 -c "import hdlfast._cuda") >>"$log" 2>&1; then
      echo "installed the carried wheel $whl" | tee -a "$log"; return 0
    fi
    echo "the carried wheel does not import: building here" | tee -a "$log"
    export PYTHONPATH=${PYTHONPATH#/tmp/site:}
  fi
  HDLFAST_CUDA=ON HDLFAST_CUDA_ARCHITECTURES=90 CMAKE_BUILD_PARALLEL_LEVEL=16 \
    timeout "$(box 240)" python3 -m pip install -q --no-build-isolation --no-deps . >>"$log" 2>&1 || return 1
  (cd /tmp && python3 -c "import hdlfast._cuda") >>"$log" 2>&1
}

smoke() {
  local rc=0 fam
  for fam in knn labeling sinkhorn kmeans neighbors; do
    (cd /tmp && CUDA_LAUNCH_BLOCKING=1 HDLFAST_POISON=1 timeout "$(box 45)" \
      python3 "$repo/benchmarks/gpu_smoke.py" "$fam" --out "$OUT/smoke.jsonl") \
      > /tmp/smoke-$fam.log 2>&1 || rc=1
    grep -E '^FAIL|^[a-z]+: [0-9]+/|Error' /tmp/smoke-$fam.log | tail -n 12 | cut -c1-400 \
      | tee -a "$log"
  done
  return $rc
}

pytest_cuda() {
  local extra=()  # xdist and pytest-timeout are on the device image; run without them if not
  python3 -c "import xdist, pytest_timeout" 2>/dev/null && extra=(-n 8 --timeout 90)
  (cd /tmp && timeout "$(box 170)" python3 -m pytest -q -m cuda "${extra[@]}" \
    -p no:cacheprovider "$repo/tests" > "$OUT/pytest-cuda.log" 2>&1)
  local rc=$?
  tail -n 15 "$OUT/pytest-cuda.log" | tee -a "$log"
  return $rc
}

bench() {
  local rc=0
  (cd /tmp && timeout "$(box 130)" python3 "$repo/benchmarks/bench_knn_gpu.py" --quick \
     --out "$OUT/knn-gpu.jsonl") >>"$log" 2>&1 || rc=1
  (cd /tmp && timeout "$(box 70)" python3 "$repo/benchmarks/bench_sinkhorn_gpu.py" --quick \
     --out "$OUT/sinkhorn-gpu.jsonl") >>"$log" 2>&1 || rc=1
  (cd /tmp && timeout "$(box 70)" python3 "$repo/benchmarks/bench_kmeans_gpu.py" --n 200000 --repeats 1 \
     --out "$OUT/kmeans-gpu.jsonl") >>"$log" 2>&1 || rc=1
  grep -h '"check_ok": false' "$OUT"/*-gpu.jsonl | tee -a "$log" && rc=1
  return $rc
}

sanitize() {
  local rc=0 tool
  for tool in memcheck racecheck synccheck; do
    (cd /tmp && timeout "$(box 55)" compute-sanitizer --tool "$tool" --kernel-name kns=hdlfast \
       --error-exitcode 9 python3 "$repo/benchmarks/gpu_sanitize.py") >> "$OUT/sanitizer.log" 2>&1
    local r=$?
    echo "compute-sanitizer $tool: exit $r" | tee -a "$log" "$OUT/sanitizer.log"
    [[ $r == 0 ]] || rc=1
  done
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
run_stage install 120 install
if ! (cd /tmp && python3 -c "import hdlfast._cuda" 2>/dev/null); then
  blocked="hdlfast._cuda does not import (see the install stage)"
  echo "$blocked" | tee -a "$log"
fi
(cd /tmp && python3 -c "import hdlfast, json; print(json.dumps(hdlfast.info()))") >>"$log" 2>&1
run_stage smoke 90 smoke
run_stage pytest 120 pytest_cuda
run_stage bench 150 bench
run_stage sanitize 60 sanitize

{
  echo "{\"gpu\": \"$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)\","
  echo " \"total_s\": $SECONDS, \"budget_s\": $BUDGET, \"stages\": {"
  sep=""
  for s in "${order[@]}"; do
    printf '%s  "%s": {"status": "%s", "seconds": %s}' "$sep" "$s" "${status[$s]}" "${seconds[$s]:-null}"
    sep=$',\n'
  done
  echo; echo "}}"
} > "$OUT/summary.json"
cat "$OUT/summary.json"
