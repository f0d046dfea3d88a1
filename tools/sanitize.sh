#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the native core (CI step).
#
# Builds ragcore._core with -fsanitize=address,undefined in a scratch copy of the tree (the checkout's
# own in-place or editable build is left alone), then runs the binding and loader tests against it
# with the ASan runtime preloaded into Python. Any report fails the run (halt_on_error; UBSan does not
# recover). Leak detection is off: CPython keeps objects alive until exit by design.
#
#   tools/sanitize.sh [pytest args...]      default: the test files listed below
#   RAGCORE_SANITIZE_KEEP=1                 keep the scratch copy (its path is printed)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CXX="${CXX:-g++}"
ASAN_LIB="$("$CXX" -print-file-name=libasan.so)"
UBSAN_LIB="$("$CXX" -print-file-name=libubsan.so)"
if [[ "$ASAN_LIB" != /* || ! -e "$ASAN_LIB" ]]; then
  echo "sanitize.sh: $CXX has no libasan.so (install the compiler's sanitizer runtime)" >&2
  exit 2
fi
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/ragcore-sanitize.XXXXXX")"
if [[ -z "${RAGCORE_SANITIZE_KEEP:-}" ]]; then trap 'rm -rf "$SCRATCH"' EXIT; fi
echo "sanitize.sh: scratch copy in $SCRATCH"

# the tree as git sees it (tracked and untracked-but-not-ignored files): no build outputs, no .so
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) |
  (cd "$ROOT" && tar --null --ignore-failed-read --files-from=- -cf - 2>/dev/null) | tar -xf - -C "$SCRATCH"

start=$SECONDS
(cd "$SCRATCH" && RAGCORE_CUDA=OFF RAGCORE_SANITIZE=address,undefined RAGCORE_BUILD_TYPE=RelWithDebInfo \
  tools/build_inplace.sh >"$SCRATCH/build.log" 2>&1) || { tail -40 "$SCRATCH/build.log"; exit 1; }
echo "sanitize.sh: _core built with ASan + UBSan in $((SECONDS - start)) s"

if [[ $# -eq 0 ]]; then
  set -- tests/test_hardening_native.py tests/test_hardening.py tests/test_persistence.py tests/test_search.py \
    tests/test_bm25.py tests/test_tfidf.py tests/test_dense.py tests/test_dense_prefilter.py tests/test_errors.py \
    tests/test_analyzer.py tests/test_fuzz.py
fi
start=$SECONDS
cd "$SCRATCH"
# RAGCORE_SANITIZED: tests that cannot run under ASan (an address-space limit) skip with that reason.
env LD_PRELOAD="$ASAN_LIB${UBSAN_LIB:+:$UBSAN_LIB}" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0:allocator_may_return_null=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  RAGCORE_SANITIZED=1 PYTHONPATH="$SCRATCH" RAGCORE_HYPOTHESIS_EXAMPLES="${RAGCORE_HYPOTHESIS_EXAMPLES:-25}" \
  RAGCORE_FUZZ_SECONDS="${RAGCORE_FUZZ_SECONDS:-5}" \
  python -m pytest -q -p no:cacheprovider "$@"
echo "sanitize.sh: tests passed under ASan + UBSan in $((SECONDS - start)) s"
