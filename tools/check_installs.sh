#!/usr/bin/env bash
# Walk the ways ragcore gets installed, in throwaway virtual environments and a scratch copy of the
# tree (the checkout, its build/ and the current environment are left alone); any failure fails the run.
#
#   tools/check_installs.sh [STEP...]     default: all steps, in this order (~8-10 min on 2 cores)
#     regular     1. pip install .                       (a fresh venv; import from another directory)
#     again       2. pip install . again, same clone     (the build/ of the first install is reused)
#     touched     3. pip install . after touching a .cpp
#     editable    4. pip install -e .                    (a fresh venv; import from the clone and elsewhere)
#     over        5. pip install -e . over the regular install of steps 1-3
#     cuda        6. RAGCORE_CUDA=ON builds ragcore._cuda (where nvcc exists); ON without a usable CUDA
#                    compiler fails loudly; AUTO without one installs _core alone (steps 1-5: OFF, no _cuda)
#     sdist       7. python -m build --sdist, then pip install of that sdist
#
# Steps 2, 3 and 5 need step 1 in the same run. The venvs are plain (numpy, tqdm and PyStemmer come from
# the package index, or pip's cache); RAGCORE_CHECK_SYSTEM_SITE=1: venvs with the system site-packages
# (faster; not where an editable ragcore is installed there). RAGCORE_CHECK_KEEP=1: keep the scratch
# directory. RAGCORE_BUILD_JOBS: compile jobs (default: all cores).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
PY="${PYTHON:-python}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
STEPS=("$@")
[[ ${#STEPS[@]} -eq 0 ]] && STEPS=(regular again touched editable over cuda sdist)
has() { local s; for s in "${STEPS[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/ragcore-installs.XXXXXX")"
if [[ -z "${RAGCORE_CHECK_KEEP:-}" ]]; then trap 'rm -rf "$SCRATCH"' EXIT; fi
CLONE="$SCRATCH/clone"
mkdir -p "$CLONE"
# the tree as git sees it (tracked and untracked-but-not-ignored files): no build/, no .so
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) |
  (cd "$ROOT" && tar --null --ignore-failed-read --files-from=- -cf - 2>/dev/null) | tar -xf - -C "$CLONE"
echo "check_installs.sh: scratch clone in $CLONE"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$CLONE/ragcore/_version.py")"

# plain venvs by default: with the system site-packages, an editable ragcore installed there (its
# import finder) would answer for ragcore._cuda in every venv
venv_flags=()
[[ -n "${RAGCORE_CHECK_SYSTEM_SITE:-}" ]] && venv_flags=(--system-site-packages)
mkvenv() { "$PY" -m venv "${venv_flags[@]}" "$SCRATCH/$1"; }

failed=0
declare -a summary
# run NAME CMD...: time a step, its output in $SCRATCH/NAME.log (its tail shown when it fails)
run() {
  local name=$1; shift
  local start=$SECONDS
  if "$@" >"$SCRATCH/$name.log" 2>&1; then
    summary+=("ok    $(printf '%4d' $((SECONDS - start))) s  $name")
    echo "check_installs.sh: ok   $name ($((SECONDS - start)) s)"
  else
    summary+=("FAIL  $(printf '%4d' $((SECONDS - start))) s  $name")
    echo "check_installs.sh: FAIL $name ($((SECONDS - start)) s); the end of $name.log:"
    tail -30 "$SCRATCH/$name.log" | sed 's/^/    /'
    failed=1
  fi
}
# check_import VENV WHERE EXPECT_DIR CUDA: import ragcore with VENV's python from directory WHERE; the
# package must come from EXPECT_DIR, _core must load, the version must be _version.py's, and
# ragcore._cuda must be importable (CUDA=yes) or absent (CUDA=no)
check_import() {
  (cd "$2" && "$SCRATCH/$1/bin/python" - "$3" "$4" "$VERSION" <<'EOF'
import importlib.util, os, sys
expect_dir, cuda, version = sys.argv[1:]
import ragcore, ragcore._core
pkg = os.path.dirname(os.path.realpath(ragcore.__file__))
assert pkg == os.path.realpath(expect_dir), f"ragcore imported from {pkg}, expected {expect_dir}"
assert ragcore.__version__ == version, (ragcore.__version__, version)
has_cuda = importlib.util.find_spec("ragcore._cuda") is not None
if has_cuda:
    import ragcore._cuda
assert has_cuda == (cuda == "yes"), f"ragcore._cuda {'present' if has_cuda else 'absent'}, expected {cuda}"
print("ragcore", ragcore.__version__, "from", pkg, "| _core:", ragcore._core.__file__, "| _cuda:", has_cuda)
EOF
  )
}
site() { "$SCRATCH/$1/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'; }
# pip_in VENV [VAR=value...] PIP-INSTALL-ARGS...: pip install with VENV's python, in the clone, with
# those environment variables
pip_in() {
  local venv=$1; shift
  local -a vars=()
  while [[ $# -gt 0 && $1 == [A-Z]*=* ]]; do vars+=("$1"); shift; done
  (cd "$CLONE" && env "${vars[@]}" "$SCRATCH/$venv/bin/python" -m pip install "$@")
}
# RAGCORE_CUDA=ON where no CUDA compiler works (CUDACXX=/bin/false: CMake's CUDA check fails as on a
# machine without nvcc) must fail the install, with the CMake message that says why
cuda_on_without_compiler_fails() {
  local out
  if out="$(pip_in v-cuda RAGCORE_CUDA=ON CUDACXX=/bin/false . 2>&1)"; then
    echo "$out"; echo "installed, but a failure was expected"; return 1
  fi
  echo "$out"
  grep -q "RAGCORE_CUDA=ON but no CUDA compiler" <<<"$out"
}

cd "$SCRATCH"
# steps 1-5 without CUDA (step 6 covers it): RAGCORE_CUDA=OFF must leave no _cuda behind, nvcc or not
if has regular; then
  mkvenv v-regular
  run "1-regular" pip_in v-regular RAGCORE_CUDA=OFF .
  run "1-regular-import" check_import v-regular "$SCRATCH" "$(site v-regular)/ragcore" no
fi
if has again; then
  run "2-again" pip_in v-regular RAGCORE_CUDA=OFF .
  run "2-again-import" check_import v-regular "$SCRATCH" "$(site v-regular)/ragcore" no
fi
if has touched; then
  touch "$CLONE"/csrc/src/dense_validate.cpp
  run "3-touched" pip_in v-regular RAGCORE_CUDA=OFF .
  run "3-touched-import" check_import v-regular "$SCRATCH" "$(site v-regular)/ragcore" no
fi
if has editable; then
  mkvenv v-editable
  run "4-editable" pip_in v-editable RAGCORE_CUDA=OFF -e .
  run "4-editable-import-elsewhere" check_import v-editable "$SCRATCH" "$CLONE/ragcore" no
  run "4-editable-import-in-clone" check_import v-editable "$CLONE" "$CLONE/ragcore" no
fi
if has over; then
  run "5-editable-over-regular" pip_in v-regular RAGCORE_CUDA=OFF -e .
  run "5-editable-over-regular-import" check_import v-regular "$SCRATCH" "$CLONE/ragcore" no
fi
if has cuda; then
  mkvenv v-cuda
  if command -v nvcc >/dev/null 2>&1 || [[ -n "${CUDACXX:-}" ]]; then
    run "6-cuda-on" pip_in v-cuda RAGCORE_CUDA=ON .
    run "6-cuda-on-import" check_import v-cuda "$SCRATCH" "$(site v-cuda)/ragcore" yes
  else
    echo "check_installs.sh: no nvcc here: RAGCORE_CUDA=ON with a compiler not checked"
  fi
  run "6-cuda-on-without-compiler-fails" cuda_on_without_compiler_fails
  run "6-cuda-auto-without-compiler" pip_in v-cuda RAGCORE_CUDA=AUTO CUDACXX=/bin/false .
  run "6-cuda-auto-without-compiler-import" check_import v-cuda "$SCRATCH" "$(site v-cuda)/ragcore" no
fi
if has sdist; then
  mkvenv v-sdist
  run "7-sdist" bash -c "'$SCRATCH/v-sdist/bin/python' -m pip install -q build && cd '$CLONE' && \
    '$SCRATCH/v-sdist/bin/python' -m build --sdist --outdir '$SCRATCH/dist' && \
    tar -tzf '$SCRATCH'/dist/ragcore-$VERSION.tar.gz | grep -E '/(CMakeLists.txt|tools/gen_unicode_tables.py|csrc/src/dense.cpp|ragcore/_version.py)$'"
  # the wheel built from the unpacked sdist (no git, no build/ of the clone)
  run "7-wheel-from-sdist" env RAGCORE_CUDA=OFF "$SCRATCH/v-sdist/bin/python" -m pip install "$SCRATCH/dist/ragcore-$VERSION.tar.gz"
  run "7-wheel-from-sdist-import" check_import v-sdist "$SCRATCH" "$(site v-sdist)/ragcore" no
fi

echo "check_installs.sh: summary"
printf '  %s\n' "${summary[@]}"
exit $failed
