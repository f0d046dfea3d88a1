"""Hardening of the native bindings (issue 15, items 2-4): no caller's thread, thread limit or crafted
index may crash the process.

Everything that could crash runs in a subprocess: a segfault or an abort fails the test (a negative
return code) instead of killing pytest.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ragcore as rc
from ragcore import _core
from ragcore.io import storage

ROOT = Path(__file__).resolve().parents[1]
# tools/sanitize.sh sets it: the library runs under AddressSanitizer, which reserves terabytes of
# address space (an RLIMIT_AS test cannot run) and is several times slower.
SANITIZED = bool(os.environ.get("RAGCORE_SANITIZED"))
THREADS_CAP = 4096


def run_py(script: str, *args: str, timeout: float = 60, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_clean(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0 and "OK" in r.stdout, (
        f"return code {r.returncode} (negative: killed by signal {-r.returncode})\n"
        f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")


# ------------------------------------------------------------------------- item 2: use after free
# Strings of 256 KB are allocated with mmap and unmapped when freed: a view of a freed one faults. A fixed
# mmap threshold keeps glibc from raising it after the first free (then they would come from the heap).
RACE_PRELUDE = """
    import sys, threading, time
    import ragcore as rc
    from ragcore import _core
    REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    BIG = 1 << 18
    def big(i, r):  # a fresh str of ~256 KB, referenced only by the list it goes into
        return ("alpha beta gamma %d %d " % (i, r)) * (BIG // 24)
    def race(make, mutate, call, deadline=4.0):
        t_end = time.monotonic() + deadline
        for r in range(REPS):
            if time.monotonic() > t_end:
                break
            items = make(r)
            go, stop = threading.Event(), threading.Event()
            def mutator():  # runs as soon as the call releases the GIL
                go.wait()
                while not stop.is_set():
                    mutate(items)
            t = threading.Thread(target=mutator)
            t.start()
            go.set()
            try:
                call(items)
            except (ValueError, TypeError):
                pass  # a clean error about an item replaced mid-call is fine; a crash is not
            finally:
                stop.set()
                t.join()
    bm25 = rc.BM25().index(["alpha beta", "gamma delta alpha", "beta beta zeta", "epsilon"] * 50)
"""


def _race(body: str) -> None:
    r = run_py(textwrap.dedent(RACE_PRELUDE) + textwrap.dedent(body) + "\nprint('OK')\n", timeout=60,
               MALLOC_MMAP_THRESHOLD_="131072")
    assert_clean(r)


def test_search_text_while_the_caller_replaces_queries():
    _race("""
        def mutate(qs):
            for i in range(len(qs)):
                qs[i] = "x"
        race(lambda r: [big(i, r) for i in range(48)], mutate, lambda qs: bm25.search(qs, k=5, threads=2))
    """)


def test_search_tokens_while_the_caller_replaces_tokens_and_lists():
    _race("""
        def make(r):
            return [[big(i, r), "alpha", big(i + 1000, r), "beta"] for i in range(48)]
        def mutate(qs):
            for i in range(len(qs)):
                if i % 2:
                    qs[i] = ["x"]
                else:
                    qs[i][0] = "y"; qs[i][2] = "z"
        race(make, mutate, lambda qs: bm25.search(qs, k=5, threads=2))
    """)


def test_indexing_while_the_caller_replaces_documents():
    _race("""
        an = rc.Analyzer()
        def mutate(docs):
            for i in range(len(docs)):
                docs[i] = "x"
        def add(docs):  # the binding sees the caller's list itself (BM25.index slices it)
            _core.SparseBuilder(an._core, an.stems).add_batch(docs, 0, 2)
        race(lambda r: [big(i, r) for i in range(48)], mutate, add)
        def make_tok(r):
            return [[big(i, r), "alpha"] for i in range(24)]
        def mutate_tok(docs):  # the inner token lists are the caller's, even through index()
            for d in docs:
                d[0] = "y"
        race(make_tok, mutate_tok, lambda docs: rc.BM25().index(docs, threads=2))
    """)


# ------------------------------------------------------------- item 4: threads that cannot start
@pytest.mark.skipif(SANITIZED, reason="AddressSanitizer reserves more address space than RLIMIT_AS allows")
def test_threads_that_cannot_start_do_not_abort():
    r = run_py(f"""
        import resource
        import numpy as np
        import ragcore as rc
        bm25 = rc.BM25().index(["alpha beta", "gamma delta alpha", "beta zeta"] * 40)
        want = rc.BM25().index(["alpha beta", "gamma delta alpha", "beta zeta"] * 40).search(
            ["alpha beta", "zeta"] * 2048, k=3, threads=1)
        gib = 1 << 30
        resource.setrlimit(resource.RLIMIT_AS, (3 * gib, 3 * gib))  # ~8 MiB of stack per thread: a few hundred
        try:
            got = bm25.search(["alpha beta", "zeta"] * 2048, k=3, threads={THREADS_CAP})
        except MemoryError:
            print("MemoryError")
        else:
            assert np.array_equal(got.indices, want.indices) and np.array_equal(got.scores, want.scores)
        print("OK")
    """, timeout=120)
    assert_clean(r)


@pytest.mark.parametrize("threads", [2**31, 2**31 - 1, 2**63, THREADS_CAP + 1])
def test_threads_beyond_the_cap_are_a_clear_value_error(threads):
    bm25 = rc.BM25().index(["alpha beta", "gamma"])
    with pytest.raises(ValueError, match=f"threads must be between 1 and {THREADS_CAP}, got {threads}"):
        bm25.search(["alpha"], threads=threads)
    with pytest.raises(ValueError, match=f"between 1 and {THREADS_CAP}"):
        rc.TfIdf().index(["alpha beta", "gamma"], threads=threads)
    dense = rc.DenseIndex(dim=4, device="cpu").add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match=f"between 1 and {THREADS_CAP}"):
        dense.search(np.ones(4, np.float32), threads=threads)


def test_threads_at_the_bindings():
    """Every binding that takes threads checks them (the Python layer may not)."""
    an = rc.Analyzer()
    b = _core.SparseBuilder(an._core, an.stems)
    x = np.eye(4, dtype=np.float32)
    calls = [lambda t: b.add_batch(["a b"], 0, t), lambda t: b.commit_batch(t),
             lambda t: _core.dense_search(x, None, None, x, 1, t),
             lambda t: _core.dense_prefilter_codes(x, t), lambda t: _core._testing.read_probe(x, t)]
    for call in calls:
        for bad in (0, -1, THREADS_CAP + 1, 2**64):
            with pytest.raises(ValueError, match=f"threads must be between 1 and {THREADS_CAP}"):
                call(bad)
        with pytest.raises(TypeError, match="threads must be an int"):
            call(1.5)
    idx = rc.BM25().index(["alpha beta", "gamma"])._state.index
    for bad in (0, 2**31):
        with pytest.raises(ValueError, match="threads must be between"):
            idx.search_text(["alpha"], 1, None, bad)
        with pytest.raises(ValueError, match="threads must be between"):
            idx.search_tokens([["alpha"]], 1, None, bad)


# ------------------------------------------------------------------ item 3: crafted index arrays
DOCS = ["The runners were running", "a RUNNER runs fast", "alpha beta gamma", "gamma delta alpha alpha",
        "zeta eta theta", "beta beta beta epsilon", "generously generous generations"] * 3

CRAFT = """
    import json, sys, traceback
    import numpy as np
    import ragcore as rc
    from ragcore.io import storage
    kind, path, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    cls = rc.TfIdf if kind == "tfidf" else rc.BM25
    manifest, clean = storage.load_index(path, mmap=False, verify=True)
    meta = manifest["meta"]
    n_docs = int(meta["n_docs"])
    def fresh():
        return {k: np.array(v) for k, v in clean.items()}
    def apply(arrays, case):
        name, op, *args = case
        a = arrays[name]
        if op == "set":
            a[args[0]] = args[1]
        elif op == "set_float":
            a[args[0]] = float(args[1])
        elif op == "signflip":
            a.view(np.uint8)[args[0] * a.itemsize + a.itemsize - 1] ^= 0x80
        elif op == "swap":
            i, j = args
            a[i], a[j] = a[j].copy(), a[i].copy()
        elif op == "truncate":
            arrays[name] = a[: len(a) - args[0]]
        elif op == "dup_term":  # make term args[0] a copy of term args[1] (same length)
            off = arrays["term_str_offsets"]
            i, j = args
            a[off[i]: off[i + 1]] = a[off[j]: off[j + 1]]
        return arrays
    for case in cases:
        route = case[0]
        arrays = apply(fresh(), case[1:])
        try:
            if route == "install":
                obj = cls(**meta["params"], analyzer=rc.Analyzer.from_config(meta["analyzer"]))
                arrays.pop("ids_data", None), arrays.pop("ids_offsets", None)
                obj._install(arrays, n_docs, None)
            else:
                out = path + "-crafted"
                storage.save_index(out, manifest["kind"], meta, arrays)  # checksums recomputed
                cls.load(out, mmap=route == "load-mmap", verify=route != "load-noverify")
            res = "loaded"
        except Exception as e:
            res = type(e).__name__ + ": " + str(e)
        print(json.dumps([case, res]), flush=True)
    print("OK")
"""


def _saved(tmp_path, kind):
    if kind == "tfidf":
        eng = rc.TfIdf()
    else:
        eng = rc.BM25(method=kind)
    eng.index(DOCS, ids=[f"d{i}" for i in range(len(DOCS))])
    path = tmp_path / kind
    eng.save(path)
    return eng, str(path)


def _run_cases(kind, path, cases):
    r = run_py(CRAFT, kind, path, json.dumps(cases), timeout=120)
    assert_clean(r)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("[")]


def _cases(eng):
    a = {k: np.asarray(v) for k, v in eng._state.arrays.items()}
    n_terms = len(a["term_offsets"]) - 1
    tso = a["term_str_offsets"]
    lens = np.diff(tso)
    same = next((i, j) for i in range(n_terms) for j in range(i) if lens[i] == lens[j])
    long_term = int(np.argmax(np.diff(a["term_offsets"])))
    p_long = int(a["term_offsets"][long_term])
    cases = []
    for name in ("term_str_offsets", "surface_offsets", "term_offsets"):
        cases += [[name, "set", 0, -1], [name, "set", 0, -64], [name, "signflip", 0], [name, "set", 0, -(2**62)]]
    cases += [
        ["term_str_offsets", "set", -1, int(tso[-1]) + 1],
        ["term_str_offsets", "swap", 1, 2],
        ["term_str_offsets", "signflip", n_terms // 2],
        ["term_offsets", "swap", long_term, long_term + 1],
        ["term_offsets", "set", -1, int(a["term_offsets"][-1]) - 1],
        ["term_offsets", "signflip", n_terms],
        ["post_docs", "set", 0, len(DOCS)],
        ["post_docs", "set", 0, 2**32 - 1],
        ["post_docs", "swap", p_long, p_long + 1],
        ["post_docs", "set", p_long + 1, int(a["post_docs"][p_long])],
        ["post_weights", "set_float", 0, "nan"],
        ["post_weights", "set_float", 3, "inf"],
        ["post_weights", "set_float", 5, "-1"],
        ["post_weights", "truncate", 1],
        ["post_docs", "truncate", 1],
        ["term_data", "truncate", 1],
        ["term_data", "dup_term", same[0], same[1]],
    ]
    if "term_idf" in a and a["term_idf"].size:
        cases += [["term_idf", "set_float", 1, "nan"], ["term_idf", "set_float", 1, "-1"],
                  ["term_idf", "truncate", 1]]
    if "term_const" in a and a["term_const"].size:
        cases += [["term_const", "set_float", 1, "inf"], ["term_const", "truncate", 1]]
    return cases


@pytest.mark.parametrize("kind", ["lucene", "bm25l", "tfidf"])
def test_crafted_sparse_arrays_are_refused_on_install(tmp_path, kind):
    eng, path = _saved(tmp_path, kind)
    cases = [["install", *c] for c in _cases(eng)]
    results = _run_cases(kind, path, cases)
    assert len(results) == len(cases)
    for case, res in results:
        assert res.startswith("ValueError: ") and ("corrupt index" in res or "is not a valid" in res), (case, res)


@pytest.mark.parametrize("route", ["load-noverify", "load-verify", "load-mmap"])
def test_crafted_sparse_files_are_refused_on_load(tmp_path, route):
    eng, path = _saved(tmp_path, "lucene")
    n_terms = eng.vocabulary_size
    cases = [[route, "term_str_offsets", "set", 0, -1], [route, "term_str_offsets", "set", 0, -64],
             [route, "term_str_offsets", "signflip", 0], [route, "surface_offsets", "signflip", 0],
             [route, "term_offsets", "set", 0, -1], [route, "term_offsets", "signflip", n_terms],
             [route, "post_docs", "set", 2, len(DOCS)], [route, "post_weights", "set_float", 0, "nan"]]
    results = _run_cases("lucene", path, cases)
    assert len(results) == len(cases)
    for case, res in results:
        assert res.startswith("ValueError: ") and ("corrupt index" in res or "is not a valid" in res), (case, res)


def test_untouched_arrays_still_load_and_match(tmp_path):
    eng, path = _saved(tmp_path, "lucene")
    results = _run_cases("lucene", path, [["install", "post_docs", "set", 0, int(eng._state.arrays["post_docs"][0])],
                                          ["load-verify", "post_docs", "set", 0, int(eng._state.arrays["post_docs"][0])]])
    assert [res for _, res in results] == ["loaded", "loaded"]
    back = rc.BM25.load(path, verify=False)
    q = ["runners alpha", "beta", "zeta generous"]
    np.testing.assert_array_equal(back.search(q, k=5).scores, eng.search(q, k=5).scores)


def test_crafted_surface_map_is_refused(tmp_path):
    """A stemming index built in memory keeps its word -> stem map: its term ids are checked too."""
    pytest.importorskip("Stemmer")
    eng = rc.BM25(analyzer=rc.Analyzer(stemmer="english")).index(DOCS)
    arrays = {k: np.array(v) for k, v in eng._state.arrays.items()}
    assert arrays["surface_term"].size
    for bad, what in ((eng.vocabulary_size, "surface_term"), (-2, "surface_term")):
        crafted = {k: v.copy() for k, v in arrays.items()}
        crafted["surface_term"][0] = bad
        with pytest.raises(ValueError, match=f"corrupt index: {what}"):
            eng._install(crafted, len(DOCS), None)
    crafted = {k: v.copy() for k, v in arrays.items()}
    crafted["surface_offsets"][0] = -8
    with pytest.raises(ValueError, match="corrupt index: surface_offsets"):
        eng._install(crafted, len(DOCS), None)
    crafted = {k: v.copy() for k, v in arrays.items()}
    crafted["surface_term"] = crafted["surface_term"][:-1]
    with pytest.raises(ValueError, match="corrupt index: surface_term"):
        eng._install(crafted, len(DOCS), None)


def test_corrupt_message_names_array_and_values(tmp_path):
    eng, _ = _saved(tmp_path, "lucene")
    arrays = {k: np.array(v) for k, v in eng._state.arrays.items()}
    arrays["term_str_offsets"][0] = -64
    with pytest.raises(ValueError, match=r"corrupt index: term_str_offsets\[0\] is -64, expected 0"):
        eng._install(arrays, len(DOCS), None)
    arrays = {k: np.array(v) for k, v in eng._state.arrays.items()}
    arrays["post_docs"][4] = 999
    with pytest.raises(ValueError, match=rf"corrupt index: post_docs\[4\] is 999, expected < n_docs \({len(DOCS)}\)"):
        eng._install(arrays, len(DOCS), None)


# ------------------------------------------------------------------------ dense: loaded rows
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_dense_nonfinite_rows_are_refused_on_load(tmp_path, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((97, 8)).astype(np.float32)
    idx = rc.DenseIndex(dim=8, dtype=dtype, device="cpu").add(x)
    path = tmp_path / "d"
    idx.save(path)
    manifest, clean = storage.load_index(path, mmap=False)
    cases = []
    if dtype == "int8":
        cases += [("aux", (5, 0), np.nan), ("aux", (5, 0), -1.0), ("aux", (6, 1), 3.0), ("vectors", (7, 2), -128)]
    else:
        cases += [("vectors", (5, 3), np.nan), ("vectors", (96, 7), np.inf), ("vectors", (0, 0), -np.inf)]
    for name, at, value in cases:
        arrays = {k: np.array(v) for k, v in clean.items()}
        arrays[name][at] = value
        out = tmp_path / f"bad-{name}-{at[0]}"
        storage.save_index(out, manifest["kind"], manifest["meta"], arrays)
        for verify in (False, True):
            with pytest.raises(ValueError, match=rf"corrupt index: {name} row {at[0]}|{name}.bin has numbers "
                                                 "that are not finite"):
                rc.DenseIndex.load(out, verify=verify, device="cpu")
    back = rc.DenseIndex.load(path, device="cpu")
    np.testing.assert_array_equal(back.search(x[:3], k=4).indices, idx.search(x[:3], k=4).indices)


def test_dense_prefilter_aux_is_checked(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 16)).astype(np.float32)
    idx = rc.DenseIndex(dim=16, device="cpu", prefilter="int8").add(x)
    path = tmp_path / "p"
    idx.save(path)
    manifest, clean = storage.load_index(path, mmap=False)
    for value in (np.nan, -1.0, np.inf):
        arrays = {k: np.array(v) for k, v in clean.items()}
        arrays["pre_aux"][9, 3] = value
        out = tmp_path / "bad"
        storage.save_index(out, manifest["kind"], manifest["meta"], arrays)
        with pytest.raises(ValueError, match="corrupt index: pre_aux row 9|pre_aux.bin has numbers that are not finite"):
            rc.DenseIndex.load(out, device="cpu")
