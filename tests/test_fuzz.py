"""The fuzz targets of tests/fuzz_targets.py, each driven by hypothesis for a short time (issue 15).

Each target runs in its own subprocess, so that a crash (a signal) fails the test with the input that caused
it instead of killing pytest. Inside it, hypothesis runs the target in chunks of examples, each chunk with its
own fixed seed, until the time budget is spent: the run is reproducible (the same seeds in the same order);
only how many chunks fit depends on the machine.

Environment:
    RAGCORE_FUZZ_SECONDS   budget per target (default 8; 4 targets: about 35 s in all)
    RAGCORE_FUZZ_SEED      first chunk's seed (default 0)
    RAGCORE_FUZZ_SHRINK    1: let hypothesis shrink a failing example (slower)
    RAGCORE_FUZZ_MEMORY_MB address-space cap of the subprocess (default 4096)

For a longer run with crash counting and saved reproducers: ``python tools/fuzz.py --seconds 300``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SECONDS = float(os.environ.get("RAGCORE_FUZZ_SECONDS", "8"))
SEED = int(os.environ.get("RAGCORE_FUZZ_SEED", "0"))
SHRINK = os.environ.get("RAGCORE_FUZZ_SHRINK", "") not in ("", "0")
MEMORY_MB = int(os.environ.get("RAGCORE_FUZZ_MEMORY_MB", "4096"))
NAMES = ["analyzer", "corpus", "load", "search"]


@pytest.mark.slow  # SECONDS (8) of fuzzing each, in a subprocess
@pytest.mark.parametrize("name", NAMES)
def test_fuzz_target(name, tmp_path):
    pytest.importorskip("hypothesis")
    notes = tmp_path / "current-input.txt"
    env = dict(os.environ, RAGCORE_FUZZ_TMP=str(tmp_path), PYTHONFAULTHANDLER="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), name, str(notes)], env=env,
                          capture_output=True, text=True, errors="replace", timeout=4 * SECONDS + 120)
    out = proc.stdout[-8000:] + proc.stderr[-4000:]
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        current = notes.read_text(errors="replace") if notes.exists() else "(no notes)"
        pytest.fail(f"fuzz target {name!r} crashed with {sig} on this input:\n{current}\n{out}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"fuzz target {name!r} found a problem:\n{out}", pytrace=False)


def _run(name: str, notes_path: str) -> None:
    """The subprocess: hypothesis over target ``name`` for SECONDS, in chunks with seeds SEED, SEED + 1, ..."""
    sys.path.insert(0, str(HERE))
    import fuzz_targets as ft
    from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
    from hypothesis import strategies as st

    ft.limit_memory(MEMORY_MB)
    notes = ft.NotesFile(notes_path)
    counts: Counter = Counter()
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if SHRINK else [])
    deadline = time.monotonic() + SECONDS
    chunk, i = 20, 0
    try:
        while time.monotonic() < deadline:
            @seed(SEED + i)
            @settings(max_examples=chunk, deadline=None, database=None, phases=phases, print_blob=False,
                      suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet,
                      report_multiple_bugs=False)
            @given(st.data())
            def one(data):
                src = ft.HypothesisSource(data)
                notes.start(src, f"# target {name}, hypothesis seed {SEED + i}")
                outcome, sig, detail = ft.run_one(name, src)
                counts[outcome] += 1
                if outcome in ("error", "wrong"):
                    raise AssertionError(f"{name}: {outcome}: {sig}\n--- input ---\n" + "\n".join(src.notes)
                                         + f"\n--- detail ---\n{detail}")

            t0 = time.monotonic()
            try:
                one()
            except AssertionError as e:
                print(f"FINDING after {sum(counts.values())} inputs (hypothesis seed {SEED + i}):\n{e}")
                sys.exit(1)
            i += 1
            if time.monotonic() - t0 < 0.5:
                chunk *= 2
    finally:
        print(f"{name}: {sum(counts.values())} inputs in {i} chunks: {dict(counts)}")
        ft.cleanup()


if __name__ == "__main__":
    _run(sys.argv[1], sys.argv[2])
