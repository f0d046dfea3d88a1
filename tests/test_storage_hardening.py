"""Hardening of the on-disk format (issue 15, items 6, 7 and the storage parts of 9): atomic saves
under kills, loads racing re-saves, the manifest's checksum and per-kind schema, deeply nested JSON,
crafted dtypes, directory modes, and file descriptors of mapped indexes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ragcore as rc
from ragcore.io import _dirswap, _schema, model_folder, storage
from ragcore.io.storage import load_index, save_index

ROOT = str(Path(rc.__file__).resolve().parent.parent)
posix_only = pytest.mark.skipif(os.name != "posix", reason="kills, umask and fds are POSIX here")


def _run(script, *args, timeout=60):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _version(v, n=3000):
    """The arrays of index version ``v``: every element equals ``v`` (a mix of two versions shows)."""
    return {"a": np.full(n, v, np.int64), "b": np.full(n // 2, v, np.float32), "c": np.full(7, v, np.uint8)}


def _check_whole(path, mmap=True):
    """Load ``path``; it must be one whole version: meta.v and every element equal."""
    m, arrays = load_index(path, mmap=mmap)
    v = m["meta"]["v"]
    assert sorted(arrays) == ["a", "b", "c"], (v, sorted(arrays))
    for name, a in arrays.items():
        assert a.shape == _version(v)[name].shape and (np.asarray(a) == v).all(), (v, name)
    return v


def _leftovers(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


# ---- item 6: kills during save ---------------------------------------------------------------

_KILLED_SAVE = """
    import os, signal, sys
    import numpy as np
    from ragcore.io import _dirswap, storage
    path, point, fallback = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    if fallback:
        _dirswap._renameat2 = None              # as on a system without RENAME_EXCHANGE
    def kill(step):
        if step == point:
            os.kill(os.getpid(), signal.SIGKILL)
    _dirswap._on_step = kill
    storage.save_index(path, "x", {"v": 2}, {"a": np.full(3000, 2, np.int64),
                                             "b": np.full(1500, 2, np.float32), "c": np.full(7, 2, np.uint8)})
    print("not killed")
"""

POINTS = [("file-written", False), ("manifest-written", False), ("exchanged", False), ("removed", False),
          ("manifest-written", True), ("moved-aside", True), ("moved-in", True)]


@posix_only
@pytest.mark.parametrize("point, fallback", POINTS, ids=[f"{p}{'-2step' if f else ''}" for p, f in POINTS])
@pytest.mark.parametrize("then", ["load", "save"])
def test_kill_at_each_step_leaves_a_whole_index(tmp_path, point, fallback, then):
    if not fallback and _dirswap._renameat2 is None:
        pytest.skip("no renameat2 here")
    path = tmp_path / "idx"
    save_index(path, "x", {"v": 1}, _version(1))
    r = _run(_KILLED_SAVE, path, point, int(fallback))
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stdout, r.stderr)
    if point == "moved-aside":
        assert not path.exists() and len(_leftovers(path)) == 2   # the window the two-step has
    elif point != "removed":
        assert _leftovers(path), "the kill left nothing to clean: the test tests nothing"
    if then == "load":
        v = _check_whole(path)
        assert v == {"file-written": 1, "manifest-written": 1}.get(point, 2) or point == "moved-aside"
    else:
        save_index(path, "x", {"v": 3}, _version(3))
        assert _check_whole(path) == 3
    assert _leftovers(path) == []


_RANDOM_KILLS = """
    import json, os, random, signal, sys, time
    import numpy as np
    from ragcore.io import _dirswap, storage
    path, kills, fallback = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    if fallback:
        _dirswap._renameat2 = None
    def version(v):
        return {"a": np.full(30000, v, np.int64), "b": np.full(15000, v, np.float32), "c": np.full(7, v, np.uint8)}
    storage.save_index(path, "x", {"v": 0}, version(0))
    rng, bad, seen = random.Random(15), [], set()
    for i in range(kills):
        pid = os.fork()
        if pid == 0:                          # the saver: re-saves until killed
            v = 1
            while True:
                storage.save_index(path, "x", {"v": v}, version(v))
                v = 3 - v
        time.sleep(rng.uniform(0.0, 0.02))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        try:
            m, arrays = storage.load_index(path)
            v = m["meta"]["v"]
            seen.add(v)
            if not all((np.asarray(a) == v).all() for a in arrays.values()) or len(arrays) != 3:
                bad.append(f"kill {i}: a mixed index")
        except Exception as e:
            bad.append(f"kill {i}: {type(e).__name__}: {e}")
    prefix = "." + os.path.basename(path) + "."
    left = [n for n in os.listdir(os.path.dirname(path)) if n.startswith(prefix)]
    print(json.dumps({"bad": bad, "seen": sorted(seen), "left": left}))
"""


@posix_only
@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "2step"])
def test_random_kills_while_resaving(tmp_path, fallback):
    r = _run(_RANDOM_KILLS, tmp_path / "idx", 30, int(fallback), timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["bad"] == []
    assert out["left"] == [], "leftovers of killed savers were not removed by the next load"


_RESAVER = """
    import os, sys, time
    import numpy as np
    from ragcore.io import storage
    path, ready, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    def version(v):
        return {"a": np.full(100000, v, np.int64), "b": np.full(50000, v, np.float32), "c": np.full(7, v, np.uint8)}
    v, deadline = 1, time.time() + 30
    while not os.path.exists(stop) and time.time() < deadline:
        storage.save_index(path, "x", {"v": v}, version(v))
        if v == 2 and not os.path.exists(ready):
            open(ready, "w").close()
        v = 3 - v
"""


@posix_only
def test_loads_racing_resaves_see_one_whole_index(tmp_path):
    """Item 6: one process re-saves A/B in a loop, two threads load the same path: every load is A or B,
    whole, and none reports a corruption."""
    path, ready, stop = tmp_path / "idx", tmp_path / "ready", tmp_path / "stop"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    saver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_RESAVER), str(path), str(ready), str(stop)],
                             env=env)
    try:
        deadline = time.time() + 30
        while not ready.exists():
            assert saver.poll() is None and time.time() < deadline, "the saver did not start"
            time.sleep(0.01)
        errors, seen, count = [], [], [0]

        def loader(mmap):
            end = time.time() + 1.5
            while time.time() < end or count[0] < 300:
                try:
                    m, arrays = load_index(path, mmap=mmap)
                    v = m["meta"]["v"]
                    if sorted(arrays) != ["a", "b", "c"] or not all((np.asarray(a) == v).all()
                                                                  for a in arrays.values()):
                        errors.append(f"version {v} mixed")
                    seen.append(v)
                except Exception as e:  # noqa: BLE001 - every failure is one
                    errors.append(f"{type(e).__name__}: {e}")
                count[0] += 1
                if count[0] > 5000:
                    break

        threads = [threading.Thread(target=loader, args=(mmap,)) for mmap in (True, False)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.touch()
        saver.wait(timeout=60)
    assert errors == [], f"{len(errors)} of {count[0]} loads failed, first: {errors[:3]}"
    assert count[0] >= 300 and set(seen) == {1, 2}


# ---- item 6: the leftover rule ---------------------------------------------------------------

def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_leftover_rule(tmp_path):
    path = tmp_path / "idx"
    save_index(path, "x", {"v": 1}, _version(1))
    tag, dead = _dirswap._TAG, _dead_pid()
    names = {
        "dead": f".idx.tmp-{tag}-{dead}-0badf00d",           # ours, writer dead: removed
        "dead-old": f".idx.old-{tag}-{dead}-0badf00e",       # likewise
        "live": f".idx.tmp-{tag}-{os.getpid()}-0badf00f",    # ours, writer alive (this process): kept
        "foreign": ".idx.tmp-ffffffff-1-0badf010",           # another host, recent: kept
        "foreign-old": ".idx.tmp-ffffffff-1-0badf011",       # another host, an hour old: removed
        "legacy-old": ".idx.tmp-k3j4h5g6",                   # an old mkdtemp name, an hour old: removed
        "other-index": f".idx2.tmp-{tag}-{dead}-0badf012",   # another path's: not ours to judge here
    }
    for n in names.values():
        (tmp_path / n).mkdir()
        (tmp_path / n / "a.bin").write_bytes(b"x")
    old = time.time() - _dirswap.FOREIGN_STALE_S - 60
    for key in ("foreign-old", "legacy-old"):
        os.utime(tmp_path / names[key] / "a.bin", (old, old))
        os.utime(tmp_path / names[key], (old, old))
    load_index(path)
    left = {k for k, n in names.items() if (tmp_path / n).exists()}
    assert left == {"live", "foreign", "other-index"}


def test_recovery_needs_a_complete_leftover(tmp_path):
    """A missing index with only an incomplete leftover (a writer killed mid-write) is not invented."""
    path = tmp_path / "idx"
    save_index(path, "x", {"v": 1}, _version(1))
    left = tmp_path / f".idx.tmp-{_dirswap._TAG}-{_dead_pid()}-00000001"
    os.rename(path, left)
    (left / "b.bin").write_bytes(b"\0")       # damaged: its size no longer matches
    with pytest.raises(ValueError, match="does not exist"):
        load_index(path)
    assert left.exists()                      # kept while it may be all there is


def test_finish_export_still_swaps_and_cleans(tmp_path):
    out = tmp_path / "model"

    def ours(p):
        return (p / "kind.txt").is_file()

    for text in ("v1", "v2"):
        with model_folder.staged_export(out, cached=False, is_ours=ours, what="a model folder") as tmp:
            (tmp / "kind.txt").write_text(text)
        assert (out / "kind.txt").read_text() == text
    stale = tmp_path / f".model.tmp-{_dirswap._TAG}-{_dead_pid()}-00000002"
    stale.mkdir()
    with model_folder.staged_export(out, cached=False, is_ours=ours, what="a model folder") as tmp:
        (tmp / "kind.txt").write_text("v3")
    assert (out / "kind.txt").read_text() == "v3" and not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# ---- item 7: the manifest ------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One index of each kind and shape of meta: name -> directory (copied per test)."""
    root = tmp_path_factory.mktemp("saved")
    texts = ["a cat is here", "dogs run fast", "cats and dogs", "a lone document"]
    rng = np.random.default_rng(0)
    rc.BM25(method="bm25+").index(texts, ids=["a", "b", "c", "d"]).save(root / "bm25")
    rc.BM25(analyzer=rc.Analyzer(stopwords=["x", "y"])).index(texts, ids=[1, 2, 3, 4]).save(root / "bm25-int")
    rc.TfIdf(sublinear_tf=True).index(texts).save(root / "tfidf")
    d = rc.DenseIndex(8, device="cpu")
    d.add(rng.standard_normal((5, 8)).astype(np.float32), ids=["a", "b", "c", "d", "e"])
    d.delete(["b"])
    d.save(root / "dense")
    d = rc.DenseIndex(8, dtype="int8", device="cpu").add(rng.standard_normal((5, 8)).astype(np.float32))
    d.save(root / "dense-int8")
    d = rc.DenseIndex(8, device="cpu", prefilter="int8", metric="ip")
    d.add(rng.standard_normal((5, 8)).astype(np.float32), ids=[5, 6, 7, 8, 9])
    d.save(root / "dense-pre")
    return root


@pytest.fixture
def copy(saved, tmp_path):
    import shutil

    def make(name):
        dst = tmp_path / name
        assert not dst.exists()
        shutil.copytree(saved / name, dst)
        return dst
    return make


def _load(path):
    kind = json.loads((path / "manifest.json").read_text())["kind"]
    if kind == "dense":
        return rc.DenseIndex.load(path)
    return rc.retrieval.sparse.load(path)


def _edit(path, fn, seal):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(storage.seal_manifest(m) if seal else m, indent=1))


def _set(*keys_value):
    *keys, value = keys_value

    def fn(m):
        d = m
        for k in keys[:-1]:
            d = d[k]
        if value is _DELETE:
            del d[keys[-1]]
        else:
            d[keys[-1]] = value
    return fn


_DELETE = object()

# (index, edit, what the schema says) -- each edit loaded silently (or crashed) before
EDITS = [
    ("bm25", _set("meta", "ids", "none"), r"meta.ids is 'none', expected one of None, 'str', 'int'"),
    ("bm25", _set("meta", "params", "method", "okapi"), r"meta.params.method is 'okapi', expected one of 'robertson'"),
    ("bm25", _set("meta", "params", "k1", -1), r"meta.params.k1 is -1, expected a finite number in \[0"),
    ("bm25", _set("meta", "params", "b", 1.5), r"meta.params.b is 1.5"),
    ("bm25", _set("meta", "params", "delta", "0.5"), r"meta.params.delta is '0.5'"),
    ("bm25", _set("meta", "params", "boost", 2), r"meta.params.boost is 2, expected absent \(unknown key\)"),
    ("bm25", _set("meta", "analyzer", "lowercase", 1), r"meta.analyzer.lowercase is 1, expected true or false"),
    ("bm25", _set("meta", "analyzer", "stopwords", "french"), r"meta.analyzer.stopwords is 'french'"),
    ("bm25", _set("meta", "analyzer", "min_token_len", 0), r"meta.analyzer.min_token_len is 0"),
    ("bm25", _set("meta", "analyzer", "stemmer", _DELETE), r"meta.analyzer.stemmer is <missing>"),
    ("bm25", _set("meta", "n_docs", 10 ** 9), r"files.ids_offsets.shape is \[5\], expected \(1000000001,\)"),
    ("bm25", _set("meta", "n_terms", 3), r"files.term_offsets.shape is \[\d+\], expected \(4,\)"),
    ("bm25", _set("files", "term_const", _DELETE), r"files.term_const is <missing>"),
    ("bm25-int", _set("files", "ids_int", "dtype", "<f8"), r"files.ids_int.dtype is '<f8', expected '<i8'"),
    ("bm25-int", _set("files", "ids_int", "dtype", "<c8"), r"inconsistent|files.ids_int.dtype is '<c8'"),
    ("bm25-int", _set("files", "extra", {"file": "extra.bin", "dtype": "|u1", "shape": [0], "bytes": 0,
                                         "crc32": 0}), r"files.extra is present, expected absent"),
    ("tfidf", _set("meta", "params", "sublinear_tf", 0), r"meta.params.sublinear_tf is 0, expected true or false"),
    ("tfidf", _set("meta", "ids", "str"), r"files.ids_data is <missing>"),
    ("dense", _set("meta", "metric", "l2"), r"meta.metric is 'l2', expected one of 'cosine', 'ip'"),
    ("dense", _set("meta", "dtype", "float64"), r"meta.dtype is 'float64'"),
    ("dense", _set("meta", "n", 6), r"files.vectors.shape is \[5, 8\], expected \(6, 8\)"),
    ("dense", _set("meta", "dim", 4), r"files.vectors.shape is \[5, 8\], expected \(5, 4\)"),
    ("dense", _set("meta", "info", []), r"meta.info is \[\], expected a JSON object"),
    ("dense", _set("meta", "device", "cuda"), r"meta.device is 'cuda', expected absent"),
    ("dense", _set("files", "deleted", "shape", [4]), r"inconsistent|files.deleted.shape"),
    ("dense-int8", _set("files", "aux", _DELETE), r"files.aux is <missing>"),
    ("dense-int8", _set("meta", "prefilter", "int8"), r"meta.prefilter is 'int8', expected null"),
    ("dense-pre", _set("files", "pre_aux", _DELETE), r"an int8 prefilter without its \(5, 4\) float32 aux"),
    ("dense-pre", _set("meta", "prefilter", "int4"), r"meta.prefilter is 'int4'"),
]


@pytest.mark.parametrize("name, edit, match", EDITS, ids=[f"{e[0]}-{i}" for i, e in enumerate(EDITS)])
def test_manifest_edits_are_caught(copy, name, edit, match):
    path = copy(name)
    _load(path)                                    # intact: loads
    _edit(path, edit, seal=False)                  # an edit: the checksum catches it
    with pytest.raises(ValueError, match=r"manifest.json is corrupt or was edited: checksum"):
        _load(path)
    _edit(path, lambda m: None, seal=True)         # the same edit, checksum recomputed: the schema does
    with pytest.raises(ValueError, match=match) as info:
        _load(path)
    assert str(path) in str(info.value)


def test_removed_deleted_entry_is_caught(copy):
    path = copy("dense")
    assert len(rc.DenseIndex.load(path)) == 4
    _edit(path, _set("files", "deleted", _DELETE), seal=False)
    with pytest.raises(ValueError, match="checksum"):
        rc.DenseIndex.load(path)


def test_version_1_is_refused(copy):
    path = copy("bm25")
    _edit(path, lambda m: (m.update(format_version=1), m.pop("checksum")), seal=False)
    with pytest.raises(ValueError, match="format version 1 .*rebuild the index"):
        rc.BM25.load(path)


@pytest.mark.parametrize("edit, match", [
    (_set("extra", 1), "unknown key 'extra'"),
    (_set("created", _DELETE), "no 'created'"),
    (_set("ragcore_version", 2), "ragcore_version is 2, expected a string or null"),
    (_set("files", "post_docs", "crc32", -1), "not a CRC-32"),
    (_set("files", "post_docs", "mtime", 1), "unknown key 'mtime'"),
])
def test_manifest_structure(copy, edit, match):
    path = copy("bm25")
    _edit(path, edit, seal=True)
    with pytest.raises(ValueError, match=match):
        storage.load_index(path)


def test_duplicate_keys_and_non_finite_numbers(copy):
    path = copy("bm25")
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text.replace('"n_docs": 4', '"n_docs": 40, "n_docs": 4'))
    with pytest.raises(ValueError, match="duplicate key 'n_docs'"):
        rc.BM25.load(path)
    (path / "manifest.json").write_text(text.replace('"k1": 1.5', '"k1": 1e999'))
    with pytest.raises(ValueError, match="overflows"):
        rc.BM25.load(path)
    (path / "manifest.json").write_text(text.replace('"k1": 1.5', '"k1": NaN'))
    with pytest.raises(ValueError, match="NaN is not a JSON number"):
        rc.BM25.load(path)


def test_save_checks_the_schema(tmp_path):
    arrays = {"vectors": np.zeros((2, 4), np.float32)}
    meta = {"dim": 4, "metric": "cosine", "dtype": "float32", "n": 2, "ids": None, "info": {}, "prefilter": None}
    save_index(tmp_path / "ok", "dense", meta, arrays)
    with pytest.raises(ValueError, match="meta.metric is 'l2'"):
        save_index(tmp_path / "bad", "dense", dict(meta, metric="l2"), arrays)
    with pytest.raises(ValueError, match=r"files.vectors.shape is \[2, 4\], expected \(3, 4\)"):
        save_index(tmp_path / "bad", "dense", dict(meta, n=3), arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def _rewrite_array(path, name, fn):
    """Change an array file in place and record its new CRC (manifest resealed): a valid-looking index."""
    import zlib
    m = json.loads((path / "manifest.json").read_text())
    e = m["files"][name]
    a = np.fromfile(path / e["file"], dtype=e["dtype"])
    fn(a)
    a.tofile(path / e["file"])
    e["crc32"] = zlib.crc32(a.tobytes())
    (path / "manifest.json").write_text(json.dumps(storage.seal_manifest(m)))


@pytest.mark.parametrize("name, array, fn, match", [
    ("tfidf", "term_idf", lambda a: a.__setitem__(0, np.nan), "term_idf.bin has numbers that are not finite"),
    ("bm25", "term_const", lambda a: a.__setitem__(1, np.inf), "term_const.bin has numbers that are not finite"),
    ("dense-int8", "aux", lambda a: a.__setitem__(0, np.nan), "aux.bin has numbers that are not finite"),
    ("dense-pre", "pre_aux", lambda a: a.__setitem__(3, -np.inf), "pre_aux.bin has numbers that are not finite"),
    ("bm25", "term_str_offsets", lambda a: a.__setitem__(0, -1), "offsets from -1 to"),
    ("bm25", "term_offsets", lambda a: a.__setitem__(-1, a[-1] + 1), r"offsets from 0 to \d+, expected offsets from 0 to"),
    ("bm25", "ids_offsets", lambda a: a.__setitem__(-1, 99), "ids_offsets.bin has offsets from 0 to 99"),
])
def test_small_arrays_are_checked(copy, name, array, fn, match):
    path = copy(name)
    _rewrite_array(path, array, fn)
    # in a subprocess: before these checks some of these crashed the process
    r = _run("""
        import sys, ragcore as rc
        from ragcore.io import storage
        for verify in (True, False):
            try:
                storage.load_index(sys.argv[1], verify=verify)
                print("loaded")
            except ValueError as e:
                print("ValueError:", e)
    """, path)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("ValueError:") for line in lines), lines
    import re
    assert re.search(match, lines[0]), lines[0]


# ---- item 9: nested JSON, crafted dtypes, modes, file descriptors ------------------------------

@pytest.mark.parametrize("depth", [70, 1000, 200000])
def test_deeply_nested_manifest(copy, depth):
    path = copy("bm25")
    m = json.loads((path / "manifest.json").read_text())
    text = json.dumps(m)
    inner = "[" * depth + "]" * depth
    text = text.replace('"ids": "str"', '"ids": "str", "deep": ' + inner)
    (path / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match=r"manifest.json is not valid JSON: nested deeper than 64 levels"):
        rc.BM25.load(path)


def test_save_refuses_meta_it_could_not_read(tmp_path):
    deep = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper"):
        save_index(tmp_path / "idx", "x", {"deep": deep}, {})
    deep = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper"):
        save_index(tmp_path / "idx", "x", {"deep": deep}, {})


@pytest.mark.parametrize("dtype", [",", "i4,(2", "(2,)<i4", "V8", "O", "M8", "<f16", ">i8", "u1", "<U1",
                                   "[('a','<i4')]", 7, None])
def test_crafted_dtype(tmp_path, dtype):
    path = tmp_path / "idx"
    save_index(path, "x", {}, {"a": np.zeros(8, np.uint8)})
    _edit(path, lambda m: m["files"]["a"].update(dtype=dtype), seal=True)
    with pytest.raises(ValueError, match="unknown dtype"):
        load_index(path)


def test_long_double_is_refused_at_save(tmp_path):
    if np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("long double is a double here")
    with pytest.raises(TypeError, match="cannot be stored|can be stored"):
        save_index(tmp_path / "idx", "x", {}, {"a": np.zeros(2, np.longdouble)})


@posix_only
def test_modes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        save_index(tmp_path / "idx", "x", {"v": 1}, _version(1))
        assert (tmp_path / "idx").stat().st_mode & 0o777 == 0o750
        assert {p.stat().st_mode & 0o777 for p in (tmp_path / "idx").iterdir()} == {0o640}
        os.chmod(tmp_path / "idx", 0o755)             # the owner opened it up: a re-save keeps that
        save_index(tmp_path / "idx", "x", {"v": 2}, _version(2))
        assert (tmp_path / "idx").stat().st_mode & 0o777 == 0o755
        os.umask(0o022)
        with model_folder.staged_export(tmp_path / "model", cached=False, is_ours=lambda p: True, what="x") as t:
            (t / "f").write_text("x")
        assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
        assert (tmp_path / "model" / "f").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        save_index(tmp_path / "private", "x", {"v": 1}, _version(1))
        assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)


@posix_only
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_mapped_indexes_hold_no_file_descriptors(saved):
    r = _run("""
        import os, resource, sys
        import ragcore as rc
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        before = len(os.listdir("/proc/self/fd"))
        kept = [rc.BM25.load(sys.argv[1], mmap=True) for _ in range(300)]     # 12 arrays each
        kept += [rc.DenseIndex.load(sys.argv[2], mmap=True) for _ in range(300)]
        after = len(os.listdir("/proc/self/fd"))
        assert kept[0].search("cat").ids.tolist() == kept[299].search("cat").ids.tolist()
        # the limit reached by something else: the error names it
        hog = []
        try:
            while True:
                hog.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            rc.BM25.load(sys.argv[1])
        except OSError as e:
            print("error:", e)
        print(before, after)
    """, saved / "bm25", saved / "dense")
    assert r.returncode == 0, r.stderr[-3000:]
    error, counts = r.stdout.strip().splitlines()[-2:]
    before, after = map(int, counts.split())
    assert after - before <= 2, (before, after)
    assert "limit of 256 open files (RLIMIT_NOFILE" in error, error


def test_mapped_arrays_are_read_only_memmaps(saved):
    _, arrays = load_index(saved / "bm25", mmap=True)
    a = arrays["post_docs"]
    assert isinstance(a, np.memmap) and not a.flags.writeable
    with pytest.raises(ValueError):
        a.flags.writeable = True
    b = a[1:]
    del arrays, a
    assert b.sum() >= 0                           # a view outlives the array: the mapping stays


def test_schema_api():
    assert set(_schema.KINDS) == {"bm25", "tfidf", "dense"}
    meta = {"dim": 2, "metric": "ip", "dtype": "float32", "n": 1, "ids": None, "info": {}, "prefilter": None}
    _schema.check_meta("dense", meta, where="here")
    _schema.check_files("dense", meta, {"vectors": ("<f4", (1, 2))}, where="here")
    with pytest.raises(ValueError, match=r"here is not a valid dense index: manifest.json files.vectors.dtype "
                                         r"is '<f2', expected '<f4'"):
        _schema.check_files("dense", meta, {"vectors": ("<f2", (1, 2))}, where="here")
    _schema.check_meta("my-kind", {"anything": 1}, where="here")   # kinds without a schema pass
