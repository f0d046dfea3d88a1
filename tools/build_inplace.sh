#!/usr/bin/env bash
# Build the extension modules in place, for working from the checkout (PYTHONPATH=. or the repository
# root as the current directory) without installing: CMake + Ninja straight into build/inplace-<SOABI>,
# then ragcore/_core<ext> (and ragcore/_cuda<ext> when built) copied into ragcore/. Re-running it is
# incremental: only what changed is recompiled, and a module is replaced (atomically: a running
# process keeps its old copy) only when it changed.
#
#   tools/build_inplace.sh                       RAGCORE_CUDA=OFF tools/build_inplace.sh
#
# Environment (the same knobs as `pip install .`):
#   RAGCORE_CUDA=AUTO|ON|OFF   AUTO (default): ragcore._cuda is built when a CUDA compiler is found;
#                              ON: no compiler or a compile error fails; OFF: never (a ragcore/_cuda
#                              module of this interpreter left by an earlier build is removed)
#   RAGCORE_SANITIZE           e.g. address,undefined (see tools/sanitize.sh); default none
#   RAGCORE_BUILD_TYPE         CMake build type, default Release
#   RAGCORE_BUILD_JOBS         parallel compile jobs, default: all cores
#   CMAKE_ARGS                 extra CMake arguments (split on spaces)
#   CUDAARCHS                  CUDA architectures of _cuda (default 80;90)
#   PYTHON                     the interpreter to build for (default: python)
#
# Needs cmake (>= 3.18), pybind11 (pip install pybind11) and a C++17 compiler; ninja when present
# (else Makefiles). A clean rebuild: rm -rf build/inplace-*.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
PY="${PYTHON:-python}"
PY_EXE="$("$PY" -c 'import sys; print(sys.executable)')"
read -r SOABI EXT_SUFFIX < <("$PY_EXE" -c '
import sys, sysconfig
print(sysconfig.get_config_var("SOABI") or sys.implementation.cache_tag, sysconfig.get_config_var("EXT_SUFFIX"))')
PYBIND11_DIR="$("$PY_EXE" -m pybind11 --cmakedir 2>/dev/null)" || {
  echo "build_inplace.sh: pybind11 is not importable by $PY_EXE (pip install pybind11)" >&2; exit 2; }
BUILD="$ROOT/build/inplace-$SOABI"
BUILD_TYPE="${RAGCORE_BUILD_TYPE:-Release}"
JOBS="${RAGCORE_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

args=(-S "$ROOT" -B "$BUILD"
  "-DCMAKE_BUILD_TYPE=$BUILD_TYPE"
  "-DRAGCORE_CUDA=${RAGCORE_CUDA:-AUTO}"
  "-DRAGCORE_SANITIZE=${RAGCORE_SANITIZE:-}"
  "-DPython_EXECUTABLE=$PY_EXE"
  "-Dpybind11_DIR=$PYBIND11_DIR")
generator="Unix Makefiles"
if NINJA="$(command -v ninja)" && "$NINJA" --version >/dev/null 2>&1; then
  generator="Ninja"
  # passed on every run: a cached path to a ninja that has since gone would fail the build
  args+=(-G Ninja "-DCMAKE_MAKE_PROGRAM=$NINJA")
else
  args+=(-G "Unix Makefiles")
fi
[[ -n "${CUDAARCHS:-}" ]] && args+=("-DCMAKE_CUDA_ARCHITECTURES=$CUDAARCHS")
# shellcheck disable=SC2206  # CMAKE_ARGS is split on spaces, as scikit-build-core does
[[ -n "${CMAKE_ARGS:-}" ]] && args+=($CMAKE_ARGS)

# a build directory configured for another generator or source tree cannot be reused: start it afresh
cache="$BUILD/CMakeCache.txt"
if [[ -f "$cache" ]]; then
  cached_gen="$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$cache")"
  cached_src="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$cache")"
  if [[ "$cached_gen" != "$generator" || "$cached_src" != "$ROOT" ]]; then
    echo "build_inplace.sh: $BUILD was configured for '$cached_gen' in $cached_src: starting it afresh"
    rm -rf "$cache" "$BUILD/CMakeFiles"
  fi
fi

cmake "${args[@]}"
cmake --build "$BUILD" -j "$JOBS"

# what `pip install` would install (the install() rules), staged, then copied into ragcore/
STAGE="$BUILD/stage"
rm -rf "$STAGE"
cmake --install "$BUILD" --prefix "$STAGE" >/dev/null
built=()
for mod in _core _cuda; do
  src="$STAGE/ragcore/$mod$EXT_SUFFIX" dst="$ROOT/ragcore/$mod$EXT_SUFFIX"
  if [[ -f "$src" ]]; then
    if ! cmp -s "$src" "$dst"; then
      cp "$src" "$dst.tmp.$$" && mv -f "$dst.tmp.$$" "$dst"
    fi
    built+=("ragcore/$mod$EXT_SUFFIX")
  elif [[ -e "$dst" ]]; then
    rm -f "$dst"   # not built this time (RAGCORE_CUDA=OFF, or AUTO without nvcc): no stale module left
    echo "build_inplace.sh: removed ragcore/$mod$EXT_SUFFIX (not built by this configuration)"
  fi
done
echo "build_inplace.sh: ${built[*]} ($BUILD_TYPE${RAGCORE_SANITIZE:+, -fsanitize=$RAGCORE_SANITIZE}; build dir ${BUILD#"$ROOT"/})"
