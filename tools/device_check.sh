#!/usr/bin/env bash
# The GPU checks of ragcore in one call on a lent GPU machine (the device tool's `run`), sized to fit its
# 10-minute limit: build ragcore._cuda for the card there, run the CUDA tests, then the GPU rows of the
# dense benchmark. Uses only what that machine's image has (nvcc, CMake, ninja, pybind11, pytest,
# hypothesis, CuPy); nothing is fetched. Logs and results go to $OUT (the device tool brings them back).
#
#   run(command="bash tools/device_check.sh", timeout_s=590)    # steps end by BUDGET=570 s
#   run(command="STEPS='build test sanitize' bash tools/device_check.sh", timeout_s=450)  # then bench alone
#   STEPS="build test" bash tools/device_check.sh      # a subset: build, test, sanitize, bench
#
# Without a GPU (here, CI) the build step still compiles with nvcc, and the others say why they skip.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ragcore-device}
STEPS=${STEPS:-"build test sanitize bench"}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}
has() { [[ " $STEPS " == *" $1 "* ]]; }
source tools/device_budget.sh   # BUDGET (570 s), limit, enough, status
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the in-place ragcore (build step), for the bench too
gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  gpu=1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
fi
if has build; then
  # the card's own architecture when known (sm_90 for an H100/H200), else the defaults (80;90)
  if [[ $gpu == 1 ]]; then
    cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
    [[ -n "$cc" ]] && export CUDAARCHS="$cc"
  fi
  echo "== build (RAGCORE_CUDA=ON, CUDAARCHS=${CUDAARCHS:-default})"
  start=$SECONDS
  # in place (tools/build_inplace.sh: CMake + ninja + pybind11 only, no build backend to install)
  if RAGCORE_CUDA=ON PYTHON=$PY tools/build_inplace.sh >"$OUT/build.log" 2>&1; then
    echo "built in $((SECONDS - start)) s"
  else
    tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
  fi
  $PY -c "import ragcore as rc; print('cuda_available:', rc.cuda_available())"
fi
if has test && enough test; then
  echo "== CUDA tests"
  timeout "$(limit 300)" $PY -m pytest -q -p no:cacheprovider tests/test_dense_cuda.py tests/test_dense_gpu_index.py 2>&1 \
    | tee "$OUT/test_dense_cuda.log" | tail -15
  [[ ${PIPESTATUS[0]} == 0 ]] || status=1
fi
if has sanitize && enough sanitize; then
  if [[ $gpu == 1 ]] && command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer memcheck + racecheck (small sizes)"
    # the small cases only (n and nq up to 97; k up to 1024): a sanitized kernel runs ~100x slower
    for tool in memcheck racecheck; do
      enough "sanitize $tool" || break
      timeout "$(limit 120)" compute-sanitizer --tool $tool --error-exitcode 9 $PY -m pytest -q -p no:cacheprovider \
        tests/test_dense_cuda.py -k "exact and not 70000 and not 1000" -x >"$OUT/sanitize-$tool.log" 2>&1
      rc=$?; echo "$tool: exit $rc"; [[ $rc == 0 ]] || { tail -30 "$OUT/sanitize-$tool.log"; status=1; }
    done
  else
    echo "== sanitize: skipped (no GPU or no compute-sanitizer)"
  fi
fi
if has bench && enough bench; then
  echo "== GPU rows of bench_dense (1M x 384)"
  timeout "$(limit 240)" $PY bench/bench_dense.py --gpu-only --sizes 1000000 --out "$OUT" --stem dense-gpu 2>&1 | tail -25
  [[ ${PIPESTATUS[0]} == 0 ]] || status=1
fi
exit $status
