#!/usr/bin/env python
"""A longer fuzzing run of the targets in tests/fuzz_targets.py, in worker processes that may crash.

    python tools/fuzz.py --seconds 300 --target all        # 300 s per target, one worker each
    python tools/fuzz.py --seconds 120 --target load,search --jobs 2
    python tools/fuzz.py --replay FINDINGS/load/crash-SIGSEGV-1a2b3c4d5e.bin   # rerun one input, in-process

Each worker feeds its target random byte strings (from a seeded generator: ``--seed``), which the target reads
as its choices. A worker killed by a signal counts a crash and is restarted; an input running longer than
``--timeout`` counts a hang. Every finding's input is saved under the folder printed at the start (the
shortest input per distinct finding, ``<outcome>-<key>.bin``, with ``.txt``: the input described, the
traceback or the Python stack at the crash). Printed per target: inputs tried, ok, clean errors, errors
(unexpected exceptions), wrong (oracle mismatches), crashes, hangs, then each distinct finding.
"""
from __future__ import annotations

import argparse
import faulthandler
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

COUNTERS = ("tried", "ok", "clean", "error", "wrong")
SIZES = (8, 32, 64, 256, 1024, 4096)


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:10]


def _save(folder: Path, outcome: str, sig: str, data: bytes, text: str) -> Path:
    """Keep the shortest input per distinct finding; log every occurrence in findings.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{outcome}-{_key(sig)}"
    binf = stem.with_suffix(".bin")
    if not binf.exists() or len(data) < binf.stat().st_size:
        tmp = stem.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, binf)
        stem.with_suffix(".txt").write_text(f"{outcome}: {sig}\n\n{text}", errors="replace")
    with open(folder / "findings.jsonl", "a") as f:
        f.write(json.dumps({"outcome": outcome, "sig": sig, "file": binf.name}) + "\n")
    return binf


def _worker(name, seed, deadline, counts, started, wdir, out, memory_mb):
    """One worker: random inputs until the deadline; the current input and its notes stay in wdir."""
    os.environ["RAGCORE_FUZZ_TMP"] = str(wdir)
    import fuzz_targets as ft

    ft.limit_memory(memory_mb)
    stack = open(wdir / "stack.txt", "w")
    faulthandler.enable(file=stack, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True)  # the parent's "where are you?"
    notes = ft.NotesFile(wdir / "notes.txt")
    cur = os.open(wdir / "input.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    rng = random.Random(seed)
    folder = Path(out) / name
    try:
        while time.time() < deadline:
            data = rng.randbytes(rng.choice(SIZES))
            os.ftruncate(cur, 0)
            os.pwrite(cur, data, 0)
            src = ft.BytesSource(data)
            notes.start(src)
            counts[0] += 1
            started.value = time.time()
            outcome, sig, detail = ft.run_one(name, src)
            started.value = 0.0
            counts[COUNTERS.index(outcome)] += 1
            if outcome in ("error", "wrong"):
                _save(folder, outcome, sig, data, "\n".join(src.notes) + "\n\n" + detail)
    finally:
        ft.cleanup()


def _crash_text(wdir: Path) -> str:
    parts = []
    for f, title in (("notes.txt", "input"), ("stack.txt", "Python stack at the crash")):
        p = wdir / f
        if p.exists():
            parts.append(f"--- {title} ---\n" + p.read_text(errors="replace")[-6000:])
    return "\n".join(parts)


def _crash_sig(kind: str, wdir: Path) -> str:
    """crash:<signal> @ the innermost ragcore frame of the faulthandler stack (else of the target)."""
    where = ""
    p = wdir / "stack.txt"
    if p.exists():
        for line in p.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("File ") and ("/ragcore/" in line or "fuzz_targets" in line):
                parts = line.split('"')
                if len(parts) >= 3:
                    where = f"{Path(parts[1]).name}:{parts[2].split(' in ')[-1].strip()}"
                if "/ragcore/" in line:
                    break  # faulthandler prints the innermost frame first
    return f"{kind} @ {where}" if where else kind


def run_target(name: str, seconds: float, jobs: int, seed: int, out: Path, timeout: float, memory_mb: int) -> dict:
    ctx = mp.get_context("spawn")
    deadline = time.time() + seconds
    root = Path(tempfile.mkdtemp(prefix=f"ragcore-fuzz-{name}-"))
    totals = defaultdict(int)
    crashes = defaultdict(int)
    workers = []
    restarts = 0

    def start(slot):
        nonlocal restarts
        wdir = root / f"w{slot}-{restarts}"
        wdir.mkdir()
        counts = ctx.Array("q", len(COUNTERS), lock=False)
        started = ctx.Value("d", 0.0, lock=False)
        wseed = seed * 1_000_003 + slot * 7919 + restarts * 104_729
        restarts += 1
        p = ctx.Process(target=_worker, args=(name, wseed, deadline, counts, started, wdir, str(out), memory_mb),
                        daemon=True)
        p.start()
        return [p, counts, started, wdir]

    def retire(w, kind=None):
        p, counts, _, wdir = w
        for i, c in enumerate(COUNTERS):
            totals[c] += counts[i]
        if kind is not None:
            data = (wdir / "input.bin").read_bytes() if (wdir / "input.bin").exists() else b""
            sig = _crash_sig(kind, wdir)
            crashes["timeout" if kind.startswith("timeout") else "crash"] += 1
            _save(out / name, "timeout" if kind.startswith("timeout") else "crash", sig, data, _crash_text(wdir))
        shutil.rmtree(wdir, ignore_errors=True)

    workers = [start(s) for s in range(jobs)]
    try:
        while workers:
            time.sleep(0.2)
            for slot, w in enumerate(list(workers)):
                p, counts, started, wdir = w
                if p.is_alive():
                    since = started.value  # read once: the worker resets it to 0 between inputs
                    if since and time.time() - since > timeout:
                        os.kill(p.pid, signal.SIGUSR1)  # the stack of the hang, then the end
                        time.sleep(1)
                        if started.value != since:  # it finished after all
                            continue
                        os.kill(p.pid, signal.SIGKILL)
                        p.join()
                        retire(w, f"timeout (> {timeout:g} s)")
                        workers.remove(w)
                        if time.time() < deadline - 1:
                            workers.append(start(slot))
                    continue
                p.join()
                code = p.exitcode
                workers.remove(w)
                if code == 0:
                    retire(w)
                    continue
                kind = f"crash:{signal.Signals(-code).name}" if code < 0 else f"crash:exit {code}"
                retire(w, kind)
                if time.time() < deadline - 1:
                    workers.append(start(slot))
    finally:
        for p, *_ in workers:
            if p.is_alive():
                p.kill()
        shutil.rmtree(root, ignore_errors=True)
    totals.update(crashes)
    return dict(totals)


def _summary(out: Path, name: str) -> dict:
    f = out / name / "findings.jsonl"
    groups: dict = defaultdict(lambda: [0, ""])
    if f.exists():
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            g = groups[(rec["outcome"], rec["sig"])]
            g[0] += 1
            g[1] = rec["file"]
    return groups


def replay(path: Path, name: str, memory_mb: int) -> int:
    import fuzz_targets as ft

    ft.limit_memory(memory_mb)
    faulthandler.enable()
    src = ft.BytesSource(path.read_bytes())
    src.on_note = lambda line: print("  " + line, flush=True)
    print(f"target {name}, input {path}:")
    outcome, sig, detail = ft.run_one(name, src)
    print(f"outcome: {outcome}" + (f" ({sig})" if sig else ""))
    if detail and outcome != "clean":
        print(detail)
    ft.cleanup()
    return 0 if outcome in ("ok", "clean") else 1


def main(argv=None) -> int:
    import fuzz_targets as ft

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="time per target (default 60)")
    ap.add_argument("--target", default="all", help=f"'all' or a comma-separated list of {', '.join(ft.TARGETS)}")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes per target (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="where findings go (default: a new folder in /tmp)")
    ap.add_argument("--timeout", type=float, default=30, help="seconds one input may run before it counts as a hang")
    ap.add_argument("--memory-mb", type=int, default=4096, help="address-space cap of each worker (MiB)")
    ap.add_argument("--replay", type=Path, help="run one saved input in this process and print what it does")
    args = ap.parse_args(argv)
    names = list(ft.TARGETS) if args.target == "all" else args.target.split(",")
    unknown = [n for n in names if n not in ft.TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {unknown}; choose from {list(ft.TARGETS)}")
    if args.replay:
        name = args.replay.parent.name if args.target == "all" else names[0]
        return replay(args.replay, name, args.memory_mb)
    out = args.out or Path(tempfile.mkdtemp(prefix="ragcore-fuzz-findings-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"findings (inputs and descriptions) go under {out}", flush=True)
    cols = ("tried", "ok", "clean", "error", "wrong", "crash", "timeout")
    rows = {}
    for name in names:
        t0 = time.time()
        rows[name] = run_target(name, args.seconds, args.jobs, args.seed, out, args.timeout, args.memory_mb)
        counts = ", ".join(f"{c} {rows[name].get(c, 0)}" for c in cols)
        print(f"{name}: {time.time() - t0:.0f} s: {counts}", flush=True)
    print("\n" + f"{'target':<10}" + "".join(f"{c:>9}" for c in cols))
    for name, row in rows.items():
        print(f"{name:<10}" + "".join(f"{row.get(c, 0):>9}" for c in cols))
    found = 0
    for name in names:
        groups = _summary(out, name)
        if groups:
            print(f"\n{name}: {len(groups)} distinct findings")
        for (outcome, sig), (count, fname) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
            found += 1
            print(f"  {count:>6} x {outcome:<7} {sig[:150]}\n           {out / name / fname}")
    print(f"\nreplay one: python tools/fuzz.py --replay {out}/<target>/<file>.bin")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
