"""Fuzz targets (issue 15): the analyzer, the corpus readers, ``load`` on mutated index directories and the
search API, each run on one generated input and classified against an oracle.

Nothing here is a test: ``tests/test_fuzz.py`` drives the targets with hypothesis for a few seconds each (in
CI), ``tools/fuzz.py`` with random bytes for longer, in worker processes that survive a crash.

A target is ``fn(src)``: it draws what it needs from ``src`` (a :class:`Source`: random bytes read as
integers by :class:`BytesSource`, or hypothesis draws by :class:`HypothesisSource`), runs one operation and
checks the outcome. :func:`run_one` classifies it:

* ``ok``: a result that passed the oracle;
* ``clean``: a documented clean error (:data:`CLEAN_ERRORS`; ``load`` documents ``ValueError`` only);
* ``error`` (a finding): any other exception (``RecursionError``, ``MemoryError``, ``OverflowError``,
  ``SyntaxError``, ``RuntimeError``, ``KeyError`` ...), pybind11's generic ``TypeError`` for arguments that
  the Python layer should have validated, or a call that should have raised and did not;
* ``wrong`` (a finding): a result that differs from the oracle (:class:`Mismatch`).

A crash (a signal) or a hang is caught by the runner, which holds each target in a subprocess.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
import traceback
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference  # noqa: E402  (tests/reference.py: the pure-Python oracles)

import ragcore as rc  # noqa: E402
from ragcore.io import corpus as rc_corpus  # noqa: E402
from ragcore.eval import datasets as rc_datasets  # noqa: E402
from ragcore.io import storage  # noqa: E402

_HAVE_STEMMER = importlib.util.find_spec("Stemmer") is not None  # PyStemmer is optional (ragcore[stem])

#: The errors the API documents for bad input (DESIGN.md "Errors"; an optional dependency's ImportError).
CLEAN_ERRORS = (ValueError, TypeError, IndexError, ImportError)
OUTCOMES = ("ok", "clean", "error", "wrong")
FINDINGS = ("error", "wrong", "crash", "timeout")


# --------------------------------------------------------------------------------------------- outcomes
class Finding(Exception):
    """A finding a target detected itself: ``kind`` "error" (misbehaviour) or "wrong" (silent wrong result);
    ``check`` names the check (the finding's signature)."""

    kind = "error"

    def __init__(self, check: str, detail: str = "") -> None:
        super().__init__(f"{check}: {detail}" if detail else check)
        self.check, self.detail = check, detail


class Mismatch(Finding):
    """A result that differs from the oracle: a silently wrong result."""

    kind = "wrong"


def _is_generic_pybind_error(e: BaseException) -> bool:
    """pybind11's own TypeError for arguments the bindings could not convert: the boundary did not validate."""
    return isinstance(e, TypeError) and "incompatible function arguments" in str(e)


def _normalise(msg: str) -> str:
    msg = re.sub(r"(/[^\s:'\"]+)+", "<path>", msg)
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "<s>", msg)
    msg = re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", "N", msg)
    return msg.splitlines()[0][:90] if msg else ""


def _where(e: BaseException) -> str:
    """The innermost frame of ragcore (else of this file) in the traceback."""
    best = ""
    for fs in traceback.extract_tb(e.__traceback__):
        if "/ragcore/" in fs.filename or fs.filename.endswith("fuzz_targets.py"):
            best = f"{Path(fs.filename).name}:{fs.name}"
    return best


def signature(e: BaseException) -> str:
    """A short key that groups the same finding: type, message shape and the raising function."""
    if isinstance(e, Finding):
        return e.check
    return f"{type(e).__name__}: {_normalise(str(e))} @ {_where(e)}"


def classify(e: BaseException, clean: Tuple[type, ...]) -> str:
    if isinstance(e, Finding):
        return e.kind
    if isinstance(e, clean) and not _is_generic_pybind_error(e):
        return "clean"
    return "error"


def run_one(name: str, src: "Source") -> Tuple[str, str, str]:
    """Run target ``name`` on ``src`` -> (outcome, signature, detail)."""
    target = TARGETS[name]
    try:
        target.fn(src)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - classifying every exception is the point
        if _is_hypothesis_control(e):  # hypothesis ran out of data for this example: not an outcome
            raise
        outcome = classify(e, target.clean)
        if outcome == "clean":
            return "clean", type(e).__name__, str(e)[:200]
        detail = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return outcome, signature(e), detail
    return "ok", "", ""


def _is_hypothesis_control(e: BaseException) -> bool:
    """hypothesis's own control flow (StopTest when an example's data runs out, Frozen, ...), which a
    target must let through: hypothesis discards that example."""
    return type(e).__module__.startswith("hypothesis.")


def expect_clean(check: str, fn: Callable[[], Any], clean: Tuple[type, ...] = CLEAN_ERRORS) -> BaseException:
    """``fn()`` must raise a clean error (input the API documents as invalid); returns it."""
    try:
        fn()
    except clean as e:
        if _is_generic_pybind_error(e):
            raise
        return e
    raise Finding(f"accepted-invalid:{check}", "the call returned instead of raising a clean error")


# --------------------------------------------------------------------------------------------- sources
TRICKY = [
    "\u03a3", "\u03c3", "\u03c2", "\u0391", "\u0130", "\u0131", "I", "i", "\u0301", "\u0307", "\u0345",
    "\u20dd", "\u0663", "\u0969", "\uff15", "\u00b2", "\u00bd", "\u216b", "\u3007", "_", " ", "'", ".", "-",
    "\t", "\n", "\u3000", "\u00a0", "\u200d", "\u00ad", "\u200b", "\u00df", "\u1e9e", "\u01c5", "\u1fbc",
    "\u2126", "\u212a", "\u212b", "\u4e2d", "\ud55c", "\u0e01", "\u05d0", "\U0001f600", "\U0001d400",
    "\U00010400", "\U00010428", "\u13a0", "\uab70", "\u1c90", "\ufb01", "\u24b6", "\ufffd", "\x00", "\x7f",
    "\ud800", "\udfff", "\ud83d", "\ude00", "\u00e9", "\u00c9",
]
_SIMPLE = "abcdefghij klmno"


class Source:
    """What a target draws its input from: integers in ranges and raw bytes, plus helpers on top.

    ``notes`` is a readable description of the input (what was chosen), printed with a finding; ``on_note``
    (if set) sees each note as it is made, so that a runner can keep the current input across a crash.
    """

    def __init__(self) -> None:
        self.notes: List[str] = []
        self.on_note: Optional[Callable[[str], None]] = None

    # primitives ------------------------------------------------------------------------------------
    def int(self, lo: int, hi: int) -> int:  # noqa: A003 - the natural name
        raise NotImplementedError

    def raw(self, n: int) -> bytes:
        raise NotImplementedError

    # helpers ---------------------------------------------------------------------------------------
    def note(self, key: str, value: Any) -> None:
        r = repr(value)
        line = f"{key} = {r if len(r) <= 400 else r[:400] + f'... ({len(r)} chars)'}"
        self.notes.append(line)
        if self.on_note is not None:
            self.on_note(line)

    def bool(self) -> bool:
        return self.int(0, 1) == 1

    def chance(self, num: int, den: int) -> bool:
        """True with probability num/den (shrinks to False)."""
        return self.int(0, den - 1) >= den - num

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.int(0, len(seq) - 1)]

    def bytes(self, max_size: int) -> bytes:
        return self.raw(self.int(0, max_size))

    def char(self) -> str:
        kind = self.int(0, 9)
        if kind <= 3:
            return _SIMPLE[self.int(0, len(_SIMPLE) - 1)]
        if kind == 4:
            return chr(self.int(0x20, 0x7E))
        if kind in (5, 6):
            return self.choice(TRICKY)
        if kind == 7:
            return chr(self.int(0, 0xFFFF))  # the BMP, lone surrogates included
        if kind == 8:
            return chr(self.int(0, 0x10FFFF))
        return chr(self.int(0xD800, 0xDFFF))

    def text(self, max_size: int) -> str:
        return "".join(self.char() for _ in range(self.int(0, max_size)))


class BytesSource(Source):
    """Reads the draws from a byte string (zeros once it is used up): any bytes are a valid input."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data, self.pos = data, 0

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out + bytes(n - len(out))

    def int(self, lo: int, hi: int) -> int:  # noqa: A003
        span = hi - lo
        if span <= 0:
            return lo
        v = int.from_bytes(self.raw((span.bit_length() + 7) // 8), "big")
        return lo + v % (span + 1)


class HypothesisSource(Source):
    """Draws from hypothesis's ``st.data()`` (so that hypothesis explores and shrinks the choices)."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        from hypothesis import strategies as st

        self._data, self._st = data, st

    def int(self, lo: int, hi: int) -> int:  # noqa: A003
        return self._data.draw(self._st.integers(lo, hi)) if hi > lo else lo

    def raw(self, n: int) -> bytes:
        return self._data.draw(self._st.binary(min_size=n, max_size=n)) if n else b""


# --------------------------------------------------------------------------------------------- helpers
def _scratch() -> Path:
    """A per-process scratch folder for the targets' files (under RAGCORE_FUZZ_TMP or the system tmp)."""
    global _SCRATCH
    if _SCRATCH is None or not _SCRATCH.is_dir():
        base = os.environ.get("RAGCORE_FUZZ_TMP") or None
        _SCRATCH = Path(tempfile.mkdtemp(prefix="ragcore-fuzz-", dir=base))
    return _SCRATCH


_SCRATCH: Optional[Path] = None


def cleanup() -> None:
    """Remove the scratch folder (the runners call this on exit)."""
    global _SCRATCH
    if _SCRATCH is not None:
        shutil.rmtree(_SCRATCH, ignore_errors=True)
        _SCRATCH = None


def _fresh_dir(name: str) -> Path:
    d = _scratch() / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def _as_text(data: Any) -> str:
    """What the analyzer reads: bytes decoded with 'replace', lone surrogates of a str as separators."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data).decode("utf-8", "replace")
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in data)


def _check_row(what: str, indices, scores, ref_scores, matching, k, rtol=1e-5) -> None:
    try:
        reference.assert_row_matches(np.asarray(indices), np.asarray(scores), ref_scores, matching, k, rtol=rtol,
                                     what=what)
    except AssertionError as e:
        raise Mismatch(f"oracle:{what.split(' ')[0]}", str(e)[:1500]) from None


def check_hits_sane(what: str, hits: Any, nq: int, k: int, n_rows: int, table: Any = None,
                    allowed: Optional[np.ndarray] = None, n_live: Optional[int] = None) -> int:
    """Invariants of any result: shapes, indices in [-1, n_rows) and distinct, padding last with -inf, finite
    scores sorted descending, ids from the table (of n_rows entries), only allowed rows. The width is ``k``,
    or less where ``k`` exceeds the ``n_live`` documents (a k capped at the collection size); returns it."""
    ind, sc = np.asarray(hits.indices), np.asarray(hits.scores)
    n_live = n_rows if n_live is None else n_live
    width = ind.shape[1] if ind.ndim == 2 else -1
    if not (width == k or n_live <= width < k) or ind.shape != (nq, width) or sc.shape != ind.shape:
        raise Mismatch(f"sanity:{what}:shape", f"indices {ind.shape}, scores {sc.shape}, expected {(nq, k)} "
                       f"(or k capped at the {n_live} documents)")
    k = width
    if ind.dtype != np.int64 or sc.dtype != np.float32:
        raise Mismatch(f"sanity:{what}:dtype", f"{ind.dtype}, {sc.dtype}")
    if ind.size and (ind.min() < -1 or ind.max() >= n_rows):
        raise Mismatch(f"sanity:{what}:index-range", f"indices {ind.tolist()} outside [-1, {n_rows})")
    for r in range(nq):
        valid = ind[r] >= 0
        m = int(valid.sum())
        if not valid[:m].all():
            raise Mismatch(f"sanity:{what}:padding-not-last", str(ind[r].tolist()))
        if not np.isneginf(sc[r, m:]).all():
            raise Mismatch(f"sanity:{what}:padding-score", str(sc[r].tolist()))
        if not np.isfinite(sc[r, :m]).all():
            raise Mismatch(f"sanity:{what}:non-finite-score", f"{ind[r].tolist()} {sc[r].tolist()}")
        if np.any(np.diff(sc[r, :m].astype(np.float64)) > 0):
            raise Mismatch(f"sanity:{what}:unsorted", str(sc[r].tolist()))
        if len(set(ind[r, :m].tolist())) != m:
            raise Mismatch(f"sanity:{what}:duplicate", str(ind[r].tolist()))
        if allowed is not None and m and not allowed[ind[r, :m]].all():
            raise Mismatch(f"sanity:{what}:filter-leak", f"{ind[r].tolist()} not all allowed")
    if table is not None:
        if len(table) != n_rows:
            raise Mismatch(f"sanity:{what}:ids-size", f"{len(table)} ids for {n_rows} rows")
        ids = hits.ids
        for r in range(nq):
            for c in range(k):
                want = None if ind[r, c] < 0 else table[ind[r, c]]
                if ids[r, c] != want:
                    raise Mismatch(f"sanity:{what}:ids", f"row {r} col {c}: {ids[r, c]!r} != {want!r}")
    return width


# ============================================================================================ analyzer
class _Boom(Exception):
    """Raised by a user stemmer: must come back to the caller unchanged."""


def _stem_prefix(ws):
    return [w[:3] for w in ws]


def _stem_drop_a(ws):
    return ["" if w.startswith("a") else w.upper() for w in ws]


def _stem_short(ws):
    return list(ws)[:-1] if ws else []


def _stem_bytes(ws):
    return [w.encode("utf-8", "surrogatepass") for w in ws]


def _stem_raise(ws):
    raise _Boom("stemmer failed")


# name -> (stemmer argument, oracle per list of words or None when the call must fail)
_STEMMERS: Dict[str, Tuple[Any, Any]] = {
    "none": (None, lambda ws: ws),
    **({"english": ("english", None)} if _HAVE_STEMMER else {}),  # oracle: PyStemmer, below
    "prefix3": (_stem_prefix, _stem_prefix),
    "drop-a": (_stem_drop_a, _stem_drop_a),
    "short-list": (_stem_short, "TypeError"),
    "bytes": (_stem_bytes, "TypeError"),
    "raises": (_stem_raise, "_Boom"),
}
_BAD_ANALYZER_ARGS = [
    ("min_token_len", 0), ("min_token_len", -1), ("min_token_len", 1.5), ("min_token_len", "2"),
    ("min_token_len", None), ("lowercase", "yes"), ("lowercase", None), ("stopwords", "klingon"),
    ("stopwords", [1, 2]), ("stopwords", 5), ("stemmer", "klingon"), ("stemmer", 5),
]


def target_analyzer(src: Source) -> None:
    """rc.Analyzer(...)(text) == the regex definition (+ stopwords, stemmer) on any str or bytes."""
    if src.chance(1, 30):  # a huge min_token_len: nothing is kept, or a clean error
        value = src.choice([2 ** 31, 2 ** 63, 10 ** 30])
        src.note("min_token_len", value)
        out = rc.Analyzer(min_token_len=value)("some words here " + src.text(10))
        if out:
            raise Mismatch("oracle:analyzer:huge-min_token_len", repr(out))
        return
    if src.chance(1, 12):
        key, value = src.choice(_BAD_ANALYZER_ARGS)
        src.note("bad_arg", (key, value))
        expect_clean(f"analyzer:{key}={value!r}", lambda: rc.Analyzer(**{key: value}))
        return
    lowercase = not src.chance(1, 4)
    min_len = src.choice([2, 2, 2, 1, 3, 5])
    stop_kind = src.choice(["none", "none", "english", "list"])
    stop: Any = {"none": None, "english": "english"}.get(stop_kind)
    if stop_kind == "list":
        stop = [src.text(6) for _ in range(src.int(0, 4))] + ["the", "\u03c3\u03bf\u03c6\u03bf\u03c2"]
    stem_name = src.choice(list(_STEMMERS)) if src.chance(1, 3) else "none"
    mode = src.choice(["str", "str", "bytes", "utf8"])
    text = src.text(src.choice([16, 80, 300]))
    if mode == "bytes":
        data: Any = src.bytes(96) if src.bool() else text.encode("utf-8", "surrogatepass") + src.bytes(8)
    elif mode == "utf8":
        data = _as_text(text).encode("utf-8")
    else:
        data = text
    src.note("analyzer", dict(lowercase=lowercase, min_token_len=min_len, stopwords=stop, stemmer=stem_name))
    src.note("input", data)
    stem_arg, stem_oracle = _STEMMERS[stem_name]
    an = rc.Analyzer(lowercase=lowercase, stopwords=stop, stemmer=stem_arg, min_token_len=min_len)

    s = _as_text(data)
    toks = re.findall(r"(?u)\b\w{%d,}\b" % min_len, s.lower() if lowercase else s)
    if stop is not None:
        words = reference.STOPWORDS_EN if stop == "english" else frozenset(stop)
        toks = [t for t in toks if t not in words]
    if isinstance(stem_oracle, str):  # the user's stemmer misbehaves: its error, or TypeError
        if not toks:
            an(data)
            return
        exc = {"TypeError": TypeError, "_Boom": _Boom}[stem_oracle]
        try:
            an(data)
        except exc:
            return
        raise Finding(f"analyzer:stemmer-{stem_name}-not-reported", "a misbehaving stemmer's result was used")
    if stem_name == "english":
        import Stemmer

        toks = Stemmer.Stemmer("english").stemWords(toks)
    else:
        toks = stem_oracle(toks)
    expected = [t for t in toks if t]
    got = an(data)
    if got != expected:
        raise Mismatch("oracle:analyzer", f"got {got!r:.300}, expected {expected!r:.300}")


# ============================================================================================== corpus
def _json_line(obj: Any, src: Source) -> bytes:
    text = json.dumps(obj, ensure_ascii=src.bool())
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: only their \\uXXXX escapes are valid UTF-8 JSON
        return json.dumps(obj).encode("utf-8")


def _corpus_line(src: Source, lineno: int, n_good: int) -> Tuple[bytes, str, Any]:
    """One line of a JSONL corpus/queries file -> (bytes, status, record) with status "good" (record =
    (id, text, title)), "blank", "bad" (the reader must reject it) or "unknown" (random bytes)."""
    kind = src.int(0, 13)
    doc_id: Any = src.choice([f"d{lineno}", lineno * 7, f"\u00e9\u4e2d{lineno}", str(10 ** 30 + lineno)])
    text, title = src.text(20), src.text(6)
    if kind <= 3:
        rec: Dict[str, Any] = {"_id": doc_id, "text": text}
        if src.bool():
            rec["title"] = title if src.bool() else None
        if src.chance(1, 4):
            rec["extra"] = src.choice([[1, 2], {"a": None}, 1e300, -0.0, "x"])
        items = list(rec.items())
        line = b"{" + b", ".join(_json_line(k, src) + b": " + _json_line(v, src) for k, v in items) + b"}"
        t = json.loads(json.dumps(rec.get("title") or ""))  # escaped surrogate pairs come back joined
        x = json.loads(json.dumps(text))
        return line, "good", (str(doc_id), f"{t} {x}" if t else x, x)
    if kind == 4:
        return src.choice([b"", b"   ", b"\t \r", b"\x0b\x0c", b" \r"]), "blank", None
    if kind == 5:  # a bad id
        bad = src.choice([None, "", True, 1.5, [1], {"a": 1}, 1e999])
        rec = {"text": text} if src.bool() else {"_id": bad, "text": text}
        return json.dumps(rec).encode(), "bad", None
    if kind == 6:  # a bad text or title
        bad = src.choice([None, 5, ["a"], {"t": 1}, True]) if src.bool() else src.choice([5, ["a"], True])
        key = "text" if bad is None or src.bool() else "title"
        rec = {"_id": doc_id, key: bad}
        if key == "title":  # queries have no title: a bad one is fine there
            rec["text"] = text
            return json.dumps(rec).encode(), "badtitle", (str(doc_id), None, json.loads(json.dumps(text)))
        return json.dumps(rec).encode(), "bad", None
    if kind == 7:  # invalid JSON or not an object
        return src.choice([b"{", b'{"_id": "a", "text": "b"', b"[1, 2]", b"42", b'"text"', b"null", b"{'_id': 1}",
                           b'{"_id": "a", "text": "b"} x', b"NaN", b"{,}"]), "bad", None
    if kind == 8:  # deeply nested JSON, in the text or in an ignored field
        depth = src.choice([50, 2000, 100_000])
        nest = b"[" * depth + b"]" * depth
        if src.bool():
            return b'{"_id": "a", "text": ' + nest + b"}", "bad", None
        line = b'{"_id": "a", "text": "t", "meta": ' + nest + b"}"
        return (line, "good", ("a", "t", "t")) if depth < 500 else (line, "unknown", None)
    if kind == 9:  # huge numbers
        digits = src.choice([30, 5000, 100_000])
        big = b"9" * digits
        line = src.choice([b'{"_id": ' + big + b', "text": "t"}', b'{"_id": "a", "text": "t", "n": 1e' + big + b"}",
                           b'{"_id": 1e999, "text": "t"}', b'{"_id": -' + big + b', "text": "t"}'])
        return line, "unknown", None
    if kind == 10:  # invalid UTF-8 inside a string
        bad = src.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"])
        return b'{"_id": "a", "text": "x' + bad + b'y"}', "bad", None
    if kind == 11:  # a BOM: fine on line 1 (utf-8-sig), invalid JSON elsewhere
        line = b"\xef\xbb\xbf" + json.dumps({"_id": doc_id, "text": text}).encode()
        if lineno == 1:
            x = json.loads(json.dumps(text))
            return line, "good", (str(doc_id), x, x)
        return line, "bad", None
    if kind == 12:  # NUL bytes, control characters, CR inside the line
        return src.choice([b"\x00", b'{"_id": "a",\r "text": "b"}', b'{"_id": "a", "text": "b\x01"}']), "unknown", None
    return src.bytes(40).replace(b"\n", b" "), "unknown", None


def _qrels_line(src: Source, lineno: int) -> Tuple[bytes, str, Any]:
    kind = src.int(0, 8)
    q, d = src.choice(["q1", "q2", "\u00e9q"]), src.choice(["d1", "d2", "d3", "\u4e2d"])
    if kind <= 2:
        score = src.choice([0, 1, 2, -1, 10 ** 20])
        sep = src.choice(["\t", " ", "  "])
        if src.bool():
            return f"{q}{sep}{d}{sep}{score}".encode(), "good", (q, d, int(score))
        return f"{q} 0 {d} {score}".encode(), "good", (q, d, int(score))
    if kind == 3:
        score = src.choice(["1.0", "-0", "2.0", "1e2"])
        return f"{q}\t{d}\t{score}".encode(), "good", (q, d, int(float(score)))
    if kind == 4:
        score = src.choice(["1.5", "nan", "inf", "1e999", "x1", "9" * 5000, "0x10", "", "1e-999"])
        if lineno == 1 and re.fullmatch(r"[A-Za-z][A-Za-z_\- ]*", score) and score.lower() not in ("nan", "inf"):
            return f"{q}\t{d}\t{score}".encode(), "blank", None  # a header
        return f"{q}\t{d}\t{score}".encode(), "unknown", None
    if kind == 5:
        return src.choice([b"q1\td1", b"q1\td1\t1\t2\t3", b"\td1\t1", b"q1\t\t1", b"q1"]), "bad", None
    if kind == 6:
        return src.choice([b"", b"  ", b"\t"]), "unknown", None
    if kind == 7:
        return b"query-id\tcorpus-id\tscore", "blank" if lineno == 1 else "bad", None
    return src.bytes(30).replace(b"\n", b" "), "unknown", None


def _write_lines(src: Source, path: Path, lines: List[bytes]) -> Tuple[bool, bool]:
    """Write ``lines`` (maybe gzip, maybe truncated) -> (gzipped, truncated)."""
    eol = b"\r\n" if src.chance(1, 6) else b"\n"
    raw = eol.join(lines) + (eol if src.bool() else b"")
    gz = src.chance(1, 5)
    truncated = False
    if gz:
        raw = gzip.compress(raw, mtime=0)
        if src.chance(1, 3):
            raw = raw[: src.int(0, max(0, len(raw) - 1))]
            truncated = True
    path.write_bytes(raw)
    return gz, truncated


def _expected_prefix(statuses: List[Tuple[str, Any]]) -> Tuple[List[Any], Optional[int], bool]:
    """(good records before the first non-good line, that line's number if it is known bad, all known good)."""
    good = []
    for lineno, (status, rec) in enumerate(statuses, 1):
        if status == "good":
            good.append(rec)
        elif status == "blank":
            continue
        elif status == "bad":
            return good, lineno, False
        else:
            return good, None, False
    return good, None, True


def _check_error_names_line(e: BaseException, path: Path, lineno: Optional[int], what: str) -> None:
    if lineno is not None and f"{path}:{lineno}" not in str(e):
        raise Mismatch(f"{what}:error-without-line", f"expected '{path}:{lineno}' in {str(e)[:300]!r}")


def _check_reader(what: str, call: Callable[[], Any], path: Path, bad_line: Optional[int], all_good: bool,
                  unique: bool, want: Any) -> None:
    """A reader of a file whose lines are known up to a point: a ValueError naming the first bad line, or (all
    lines good) exactly ``want``; a duplicate id (pair) is documented to raise too."""
    try:
        got = call()
    except ValueError as e:
        _check_error_names_line(e, path, bad_line, what)
        if all_good and unique:
            raise Mismatch(f"oracle:{what}:rejected-valid", str(e)[:300]) from None
        raise
    if bad_line is not None:
        raise Finding(f"{what}:accepted-bad-line", f"line {bad_line} was accepted")
    if all_good and not unique:
        raise Finding(f"{what}:accepted-duplicate", repr(want)[:300])
    if all_good and got != want:
        raise Mismatch(f"oracle:{what}", f"{got!r:.300} vs {want!r:.300}")


def target_corpus(src: Source) -> None:
    """The corpus readers on generated and mutated files: documented results or ValueError naming file:line."""
    op = src.choice(["iter_corpus", "iter_corpus", "count_lines", "load_queries", "load_qrels", "load_beir"])
    folder = _fresh_dir("corpus")
    n = src.int(0, 8)
    if op == "load_qrels":
        made = [_qrels_line(src, i + 1) for i in range(n)]
    else:
        made = [_corpus_line(src, i + 1, 0) for i in range(n)]
    lines = [m[0] for m in made]
    if op == "load_queries":  # (id, text): no title
        statuses = [("good" if s == "badtitle" else s, r and (r[0], r[2])) for _, s, r in made]
    elif op == "load_qrels":
        statuses = [(s, r) for _, s, r in made]
    else:  # (id, title + " " + text)
        statuses = [("bad" if s == "badtitle" else s, r and (r[0], r[1])) for _, s, r in made]
    fname = {"load_qrels": "test.tsv", "load_queries": "queries.jsonl"}.get(op, "corpus.jsonl")
    path = folder / fname
    gz, truncated = _write_lines(src, path, lines)
    src.note("op", op)
    src.note("file", path.read_bytes()[:2000])
    good, bad_line, all_good = _expected_prefix(statuses)
    keys = [g[:2] if op == "load_qrels" else g[0] for g in good]
    if op in ("load_queries", "load_qrels") and len(set(keys)) != len(keys):
        bad_line = None  # a duplicate id (pair) is refused on its own line, before the bad one
    if gz:  # a gzip member's lines are numbered the same, but truncation errors have their own message
        bad_line = None if truncated else bad_line
        all_good = all_good and not truncated

    if op == "count_lines":
        got = rc_corpus.count_lines(path)
        if not truncated:
            raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
            want = sum(1 for line in raw.split(b"\n") if line and not line.isspace())
            if got != want:
                raise Mismatch("oracle:count_lines", f"{got} != {want}")
        return
    if op == "iter_corpus":
        out = []
        try:
            for rec in rc_corpus.iter_corpus(path):
                out.append(rec)
        except ValueError as e:
            m = min(len(out), len(good))
            if out[:m] != good[:m]:
                raise Mismatch("oracle:iter_corpus:records", f"{out!r:.300} vs {good!r:.300}") from None
            if all_good:
                raise Mismatch("oracle:iter_corpus:rejected-valid", str(e)[:300]) from None
            _check_error_names_line(e, path, bad_line, "iter_corpus")
            raise
        if bad_line is not None:
            raise Finding("iter_corpus:accepted-bad-line", f"line {bad_line} was accepted")
        if all_good and out != good:
            raise Mismatch("oracle:iter_corpus:records", f"{out!r:.300} vs {good!r:.300}")
        return
    if op == "load_queries":
        ids = [qid for qid, _ in good]
        _check_reader("load_queries", lambda: rc_corpus.load_queries(path), path, bad_line, all_good,
                      len(set(ids)) == len(ids), dict(good))
        return
    if op == "load_qrels":
        want_r: Dict[str, Dict[str, int]] = {}
        for q, d, score in good:
            want_r.setdefault(q, {})[d] = score
        pairs = [(q, d) for q, d, _ in good]
        _check_reader("load_qrels", lambda: rc_corpus.load_qrels(path), path, bad_line, all_good,
                      len(set(pairs)) == len(pairs), want_r)
        return
    # load_beir: the folder with this corpus, a queries file and a qrels split (either may be mutated)
    (folder / "queries.jsonl").write_bytes(src.choice([b'{"_id": "q1", "text": "a"}\n', b"", b"\xff\n", b"[" * 5000]))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_bytes(src.choice([b"q1\td1\t1\n", b"", b"q1\td1\n", b"q1\td1\t1e999\n"]))
    rc_datasets.load_beir(folder)


# ========================================================================================= index loads
_WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "lambda", "sigma", "tau", "zeta", "running",
          "runs", "\u03c3\u03bf\u03c6\u03bf\u03c2", "caf\u00e9", "\u4e2d\u6587"]


def _docs(n: int, seed: int) -> List[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m = 0 if i % 11 == 5 else int(rng.integers(1, 9))
        out.append(" ".join(_WORDS[int(j)] for j in rng.integers(0, len(_WORDS), m)))
    out[7 % n] = out[3 % n]  # an exact duplicate: score ties
    return out


class _LoadTemplate:
    """A saved index, what loads it, and its reference results on a fixed set of searches."""

    def __init__(self, name: str, path: Path, loader: Callable[..., Any], kind: str, n: int) -> None:
        self.name, self.path, self.loader, self.kind, self.n = name, path, loader, kind, n
        rng = np.random.default_rng(7)
        self.mask = rng.random(n) < 0.5
        if kind == "dense":
            self.queries = rng.standard_normal((3, 8)).astype(np.float32)
        else:
            self.queries = ["alpha beta", "sigma \u03a3\u039f\u03a6\u039f\u03a3 runner", "zzz", "Gamma CAF\u00c9 tau"]
        self.reference = self.searches(self.loader(path, mmap=False, verify=True))

    def searches(self, index: Any) -> List[Any]:
        """The fixed searches: k = 1, 5 and n + 3, and a filtered one (sparse: a bool mask)."""
        out = [index.search(self.queries, k=k, threads=1) for k in (1, 5, self.n + 3)]
        if self.kind != "dense" and len(index) == len(self.mask):
            # (a resealed n_docs changes the document count: the template's mask is then rightly refused)
            out.append(index.search(self.queries, k=5, threads=2, filter=self.mask))
        return out


def _build_templates() -> Dict[str, _LoadTemplate]:
    root = _scratch() / "templates"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    docs = _docs(29, 1)
    t: Dict[str, _LoadTemplate] = {}

    def add(name, index, loader, kind, n):
        index.save(root / name)
        t[name] = _LoadTemplate(name, root / name, loader, kind, n)

    an = rc.Analyzer(stopwords="english", stemmer="english" if _HAVE_STEMMER else None)
    add("bm25_str_ids", rc.BM25(analyzer=an).index(docs, ids=[f"doc-{i}" for i in range(29)]), rc.BM25.load,
        "bm25", 29)
    add("bm25plus_int_ids", rc.BM25(method="bm25+", k1=1.2).index(docs, ids=[1000 + 3 * i for i in range(29)]),
        rc.BM25.load, "bm25", 29)
    add("tfidf", rc.TfIdf(sublinear_tf=True).index(docs), rc.TfIdf.load, "tfidf", 29)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((23, 8)).astype(np.float32)
    x[5] = x[2]  # a duplicate row: a tie

    def dense(dtype, metric, ids, deletes, prefilter=None):
        d = rc.DenseIndex(dim=8, metric=metric, dtype=dtype, device="cpu", prefilter=prefilter).add(x, ids=ids)
        if deletes:
            d.delete(deletes)
        return d

    def dload(path, mmap, verify):
        return rc.DenseIndex.load(path, mmap=mmap, verify=verify, device="cpu")

    sids = [f"v{i}" for i in range(23)]
    add("dense_f32", dense("float32", "cosine", sids, ["v1", "v9"]), dload, "dense", 23)
    add("dense_f16_ip", dense("float16", "ip", list(range(100, 123)), [104]), dload, "dense", 23)
    add("dense_i8", dense("int8", "cosine", None, [0, 22]), dload, "dense", 23)
    add("dense_prefilter", dense("float32", "ip", sids, ["v3"], prefilter="int8"), dload, "dense", 23)
    return t


_TEMPLATES: Optional[Dict[str, _LoadTemplate]] = None


def _templates() -> Dict[str, _LoadTemplate]:
    global _TEMPLATES
    if _TEMPLATES is None or not all(t.path.is_dir() for t in _TEMPLATES.values()):
        _TEMPLATES = _build_templates()
    return _TEMPLATES


def _manifest_checksum_function() -> Optional[Callable[[dict], Any]]:
    """ragcore.io.storage's function that checksums a manifest, when it has one (issue 15 item 7 adds it)."""
    for name in dir(storage):
        if name == "seal_manifest":
            continue
        if "checksum" in name.lower() and "manifest" in name.lower() and callable(getattr(storage, name)):
            return getattr(storage, name)
    return None


def reseal(path: Path, original: dict, manifest: Any) -> None:
    """Recompute every file entry's CRC-32 and the manifest's own checksum: ``storage.seal_manifest`` where it
    exists, else a storage function named like a manifest checksum (the key holding it is the one whose value
    the function reproduces on the original manifest)."""
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
        for entry in manifest["files"].values():
            if isinstance(entry, dict) and isinstance(entry.get("file"), str) and "crc32" in entry:
                f = path / entry["file"]
                if re.fullmatch(r"[A-Za-z0-9_]+\.bin", entry["file"]) and f.is_file():
                    entry["crc32"] = zlib.crc32(f.read_bytes())
    seal = getattr(storage, "seal_manifest", None)  # manifest -> manifest with its checksum recomputed
    if callable(seal) and isinstance(manifest, dict):
        try:
            sealed = seal(manifest)
        except (TypeError, ValueError):  # not JSON (an edit made it so): left unsealed, the load must refuse it
            return
        if isinstance(sealed, dict):
            manifest.clear()
            manifest.update(sealed)
        return
    fn = _manifest_checksum_function()
    if fn is not None and isinstance(manifest, dict):
        try:
            want = fn(original)
            for key, value in original.items():
                if value == want and key in manifest:
                    manifest[key] = fn(manifest)
        except Exception:  # noqa: BLE001 - an unknown signature: the load then fails cleanly, as it should
            pass


_INT_SPECIALS = [0, -1, -64, 1, 2, -(2 ** 31), 2 ** 31 - 1, 2 ** 63 - 1, -(2 ** 63), 10 ** 6]
_FLOAT_SPECIALS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e38, -1e38, 3e38, 65504.0, 1e-45, -1.0]
_DTYPES = ["<f8", "<c8", "<f2", "<i4", "<u8", "|b1", "|u1", "|i1", ">f4", "O", "<U4", "(2,)<i4", "[('a', '<i4')]",
           "<m8[s]", "float32", "int", "S3", "V8", "<f16", "", "i8; import os", "(2,3)f4", "<i8"]
_VALUES = [None, True, False, 0, -1, 1, 2, 7, 10 ** 9, 2 ** 63, -(2 ** 63), 1.5, -0.0, 1e308, "", "str", "int",
           "float", "bm25", "dense", "cosine", "ip", "lucene", "robertson", "tfidf", "english", "int8", "float16",
           "bfloat16", "float32", [], [1], [29], [30], [23, 8], [-1], {}, {"a": 1}, "../manifest.json", "x" * 300]


def _walk(obj: Any, prefix: Tuple = ()) -> List[Tuple]:
    """Paths of every node of a JSON value."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _walk(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _walk(v, prefix + (i,))
    return out


def _edit_manifest(src: Source, m: dict, t: _LoadTemplate) -> str:
    """Edit the manifest in place; returns a description."""
    paths = [p for p in _walk(m) if p]
    if src.chance(2, 5):  # a targeted edit of a meta field or a file entry
        if src.bool():
            paths = [p for p in paths if p[0] == "meta"] or paths
        else:
            paths = [p for p in paths if p[0] == "files" and len(p) == 3] or paths
    p = src.choice(paths)
    parent = m
    for key in p[:-1]:
        parent = parent[key]
    op = src.choice(["replace", "replace", "replace", "delete", "add", "retype"])
    if op == "delete":
        del parent[p[-1]]
        return f"delete {p}"
    if op == "add":
        target = parent if isinstance(parent, dict) else m
        key = src.choice(["extra", "n_docs", "checksum", "deleted", "prefilter", "ids", "1"])
        target[key] = src.choice(_VALUES)
        return f"add {key!r} under {p[:-1]}"
    old = parent[p[-1]]
    if op == "retype":
        new: Any = {int: float, float: str, str: lambda v: [v], bool: int, dict: list, type(None): lambda v: 0,
                    list: lambda v: {str(i): x for i, x in enumerate(v)}}.get(type(old), str)(old)
    elif p[-1] == "dtype" and len(p) == 3:
        new = src.choice(_DTYPES)
    elif p[-1] == "shape":
        new = src.choice([[], [0], [t.n + 1], [-1], [2 ** 62], ["3"], 3, [1.5], [t.n, 8, 1], [t.n * 8], [1, t.n]])
    elif isinstance(old, bool):
        new = not old
    elif isinstance(old, int):
        new = src.choice([old + 1, old - 1, -old, 0, -1, 2 ** 31, 10 ** 9, old * 1000])
    else:
        new = src.choice(_VALUES)
    parent[p[-1]] = new
    return f"set {p} from {old!r:.80} to {new!r:.80}"


def _mutate(src: Source, d: Path, t: _LoadTemplate) -> Tuple[str, bool]:
    """Mutate the copy ``d`` of a template -> (description, touched the manifest)."""
    mpath = d / "manifest.json"
    m = json.loads(mpath.read_text())
    original = json.loads(mpath.read_text())
    bins = sorted(f for f in os.listdir(d) if f.endswith(".bin"))
    nonempty = [f for f in bins if (d / f).stat().st_size] or bins
    op = src.choice(["flip", "poke", "poke", "resize", "manifest", "manifest", "manifest", "manifest_text",
                     "files"])
    touched_manifest = op in ("manifest", "manifest_text", "files", "resize")
    desc = op
    if op == "flip":
        f = d / src.choice(nonempty)
        raw = bytearray(f.read_bytes())
        flips = []
        for _ in range(src.int(1, 4)):
            if raw:
                pos, bit = src.int(0, len(raw) - 1), src.int(0, 7)
                raw[pos] ^= 1 << bit
                flips.append((pos, bit))
        f.write_bytes(bytes(raw))
        desc = f"flip {f.name} (byte, bit) {flips}"
    elif op == "poke":  # one element set to a special value
        name = src.choice(nonempty)[:-4]
        entry = m["files"][name]
        dtype = np.dtype(entry["dtype"])
        arr = np.fromfile(d / f"{name}.bin", dtype=dtype)
        if arr.size:
            i = src.choice([0, arr.size - 1, src.int(0, arr.size - 1)])
            if dtype.kind == "f":
                value: Any = src.choice(_FLOAT_SPECIALS)
            else:
                value = src.choice(_INT_SPECIALS + [int(arr[i]) + 1, int(arr[i]) - 1, t.n, t.n + 1])
            info = np.iinfo(dtype) if dtype.kind in "iu" else None
            if info is not None:
                value = int(value) % (1 << (8 * dtype.itemsize))
                if dtype.kind == "i" and value > info.max:
                    value -= 1 << (8 * dtype.itemsize)
            with np.errstate(over="ignore", invalid="ignore"):
                arr[i] = value
            arr.tofile(d / f"{name}.bin")
            desc = f"poke {name}[{i}] = {value!r} ({dtype.str})"
    elif op == "resize":  # whole elements cut or appended, the manifest's shape and bytes kept consistent
        name = src.choice(bins)[:-4]
        entry = m["files"][name]
        f = d / f"{name}.bin"
        raw = f.read_bytes()
        itemsize = np.dtype(entry["dtype"]).itemsize
        row = itemsize * int(np.prod(entry["shape"][1:], dtype=np.int64))
        if src.bool() and len(raw) >= row and row:
            cut = src.int(1, len(raw) // row) * row
            raw = raw[: len(raw) - cut]
        else:
            raw += src.raw(row * src.int(1, 3)) if row else b""
        f.write_bytes(raw)
        if src.chance(4, 5) and entry["shape"] and row:
            entry["shape"][0] = len(raw) // row
            entry["bytes"] = len(raw)
        desc = f"resize {name} to {len(raw)} bytes (shape {entry['shape']})"
    elif op == "manifest":
        desc = _edit_manifest(src, m, t)
    elif op == "files":
        what = src.choice(["remove", "extra", "phantom"])
        if what == "remove":
            name = src.choice(bins)
            os.remove(d / name)
            if src.bool():
                del m["files"][name[:-4]]
            desc = f"remove {name}"
        elif what == "extra":
            (d / "extra.bin").write_bytes(src.bytes(16))
            desc = "extra file"
        else:
            m["files"]["phantom"] = {"file": "phantom.bin", "dtype": "<i8", "shape": [2], "bytes": 16, "crc32": 0}
            (d / "phantom.bin").write_bytes(bytes(16))
            desc = "phantom entry"
    reseal_it = src.chance(3, 4)
    if reseal_it:
        reseal(d, original, m)
    text = json.dumps(m, indent=2)
    if op == "manifest_text":
        raw = bytearray(text.encode())
        how = src.choice(["flip", "truncate", "nest", "big-number", "non-utf8", "nan"])
        if how == "flip":
            pos = src.int(0, len(raw) - 1)
            raw[pos] ^= 1 << src.int(0, 7)
        elif how == "truncate":
            raw = raw[: src.int(0, len(raw) - 1)]
        elif how == "nest":
            depth = src.choice([100, 5000, 200_000])
            deep = '"meta": {"deep": ' + "[" * depth + "]" * depth + ", "
            raw = bytearray(text.replace('"meta": {', deep, 1).encode())
        elif how == "big-number":
            raw = bytearray(re.sub(r'"n(_docs)?": \d+', lambda mo: mo.group(0).split(":")[0] + ": 1" + "0" * 5000,
                                   text, count=1).encode())
        elif how == "non-utf8":
            raw = bytearray(text.replace('"meta"', '"me\udcfft"', 1).encode("utf-8", "surrogateescape"))
        else:
            raw = bytearray(text.replace('"k1": 1.5', '"k1": NaN').replace('"dim": 8', '"dim": Infinity').encode())
        desc += f" {how}"
        mpath.write_bytes(bytes(raw))
    else:
        mpath.write_text(text)
    return desc + (" (checksums recomputed)" if reseal_it else " (checksums kept)"), touched_manifest


def _same_results(a: List[Any], b: List[Any]) -> bool:
    for x, y in zip(a, b):
        if not (np.array_equal(x.indices, y.indices) and np.array_equal(x.scores, y.scores)):
            return False
        xi, yi = x.ids, y.ids
        if (xi is None) != (yi is None) or (xi is not None and not np.array_equal(xi, yi)):
            return False
    return True


def target_load(src: Source) -> None:
    """``load(verify=..., mmap=...)`` of a mutated index directory: a clean ValueError, or an index whose
    searches are sane (and, when nothing was resealed and verify=True, identical to the original's)."""
    templates = _templates()
    t = templates[src.choice(sorted(templates))]
    d = _scratch() / "load"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(t.path, d)
    src.note("index", t.name)
    desc, touched_manifest = _mutate(src, d, t)
    verify, mmap = src.bool(), src.bool()
    src.note("mutation", desc)
    src.note("load", dict(verify=verify, mmap=mmap))
    same_files = all((d / f).read_bytes() == (t.path / f).read_bytes() for f in os.listdir(t.path)
                     if f.endswith(".bin") and (d / f).is_file())
    index = t.loader(d, mmap=mmap, verify=verify)  # a ValueError here is the clean outcome
    try:
        results = t.searches(index)
    except Exception as e:  # noqa: BLE001
        raise Finding(f"load:accepted-then-search-raised:{signature(e)}",
                      "".join(traceback.format_exception(type(e), e, e.__traceback__))) from None
    n_rows = len(index) if t.kind != "dense" else index.ntotal
    table = index.ids
    nq = len(t.queries)
    for hits, k in zip(results, (1, 5, t.n + 3, 5)):
        check_hits_sane(f"load-{t.kind}", hits, nq, k, n_rows, table, n_live=len(index))
    if verify and "checksums kept" in desc and not _same_results(results, t.reference):
        what = "manifest" if touched_manifest and same_files else "array file"
        raise Mismatch(f"load:unverified-{what}-edit-changed-results",
                       f"{desc}: verify=True loaded it and its results differ from the original index's")


# ============================================================================================= search
class ToyEncoder:
    """A tiny deterministic text encoder: letter counts over 7 letters plus a constant (never zero)."""

    dim = 8

    def encode(self, texts, batch_size=64):
        out = np.ones((len(texts), 8), np.float32)
        for i, t in enumerate(texts):
            for j, c in enumerate("aeiostu"):
                out[i, j] += t.lower().count(c)
        return out


class _SearchSetup:
    def __init__(self) -> None:
        self.docs = _docs(31, 2)
        n = len(self.docs)
        self.n = n
        self.tokens = [reference.regex_tokens(t) for t in self.docs]
        sids = [f"s{i}" for i in range(n)]
        iids = [100 + 7 * i for i in range(n)]
        self.sparse: Dict[str, Tuple[Any, Any, Optional[list]]] = {
            "bm25": (rc.BM25(), reference.RefBM25(), None),
            "bm25l_str_ids": (rc.BM25(method="bm25l", k1=1.2, b=0.5), reference.RefBM25(1.2, 0.5, "bm25l"), sids),
            "tfidf_int_ids": (rc.TfIdf(), reference.RefTfIdf(), iids),
        }
        for index, ref, ids in self.sparse.values():
            index.index(self.docs, ids=ids)
            ref.index(self.tokens)
        rng = np.random.default_rng(5)
        x = rng.standard_normal((n, 8)).astype(np.float32)
        x[9] = x[4]
        self.dense: Dict[str, Tuple[Any, Optional[list], set]] = {}
        for name, dtype, metric, ids, dels, pre in (
                ("dense_cos_str_ids", "float32", "cosine", sids, ["s2", "s17"], None),
                ("dense_ip_i8", "int8", "ip", None, [0], None),
                ("dense_f16_prefilter", "float16", "cosine", iids, [], "int8")):
            d = rc.DenseIndex(8, metric=metric, dtype=dtype, device="cpu", prefilter=pre).add(x, ids=ids)
            if dels:
                d.delete(dels)
            dead = {(ids.index(i) if ids else i) for i in dels}
            self.dense[name] = (d, ids, dead)
        enc = ToyEncoder()
        dr = rc.DenseRetriever(rc.DenseIndex(8, device="cpu"), enc).index(self.docs, ids=sids)
        self.hybrid = rc.Hybrid([self.sparse["bm25l_str_ids"][0], dr])
        self.hybrid_parts = (self.sparse["bm25l_str_ids"][0], dr)


_SETUP: Optional[_SearchSetup] = None

_KS = [0, -1, 1, 2, 3, 5, 30, 31, 32, 34, 10 ** 9, 2 ** 31, 2 ** 63, np.int64(4), np.uint8(2), np.int32(-3), True,
       3.0, "3", None]
_THREADS = [None, None, 1, 2, 3, 0, -1, 64, np.int32(2), True, 2.0, 2 ** 31, 2 ** 31 - 1, 2 ** 63, "2"]


def _valid_int(v: Any, lo: int) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= lo


def _draw_text_query(src: Source, setup: _SearchSetup) -> Any:
    kind = src.int(0, 5)
    if kind <= 2:
        words = [src.choice(_WORDS + ["ALPHA", "Sigma", "\u03a3\u039f\u03a6\u039f\u03a3", "zzz"])
                 for _ in range(src.int(0, 5))]
        return " ".join(words)
    if kind == 3:
        return src.text(40)
    if kind == 4:
        return src.bytes(30) if src.bool() else src.choice(_WORDS).encode() + src.bytes(4)
    return src.choice(["", " ", "alpha " * 5000, "\ud800alpha\udfff"])


def _draw_queries(src: Source, setup: _SearchSetup) -> Tuple[Any, Optional[List[Any]], str]:
    """-> (queries, the per-query inputs of a valid batch (str/bytes text or token lists), how)."""
    kind = src.int(0, 11)
    if kind <= 2:
        q = _draw_text_query(src, setup)
        return q, [q], "single"
    if kind <= 5:
        qs = [_draw_text_query(src, setup) for _ in range(src.int(1, 4))]
        return qs, qs, "text list"
    if kind == 6:
        qs = [[src.choice(_WORDS + ["", "zzz", "ALPHA", "\ud800"]) for _ in range(src.int(0, 4))]
              for _ in range(src.int(1, 3))]
        if src.bool():
            qs = [tuple(x) for x in qs]
        return qs, [list(x) for x in qs], "token lists"
    if kind == 7:
        return [], [], "empty"
    if kind == 8:
        qs = [_draw_text_query(src, setup) for _ in range(src.int(1, 3))]
        if src.bool():
            return tuple(qs), qs, "tuple"
        qs = [q for q in qs if isinstance(q, str)] or ["alpha"]
        return np.array(qs), qs, "numpy str array"
    # invalid
    return src.choice([
        [None], ["alpha", None], [1, 2], [["alpha"], "beta"], ["alpha", ["beta"]], [[["alpha"]]], [["alpha", 3]],
        5, None, {"alpha"}, np.array([1.0, 2.0]), [np.array(["alpha"])], [{"a": 1}],
    ]), None, "invalid"


def _draw_filter(src: Source, n: int, ids: Optional[list]) -> Tuple[Any, Optional[np.ndarray], str]:
    """-> (filter, the allowed mask when the filter is valid, how)."""
    kind = src.int(0, 13)
    rng = np.random.default_rng(src.int(0, 2 ** 16))
    mask = rng.random(n) < src.choice([0.0, 0.3, 0.7, 1.0])
    keys = ids if ids is not None else list(range(n))
    chosen = [keys[i] for i in np.flatnonzero(mask)]
    if kind <= 3:
        return None, np.ones(n, bool), "none"
    if kind == 4:
        return mask, mask, "mask"
    if kind == 5:
        big = np.repeat(mask, 2)
        return big[::2], mask, "strided mask"
    if kind == 6:
        return list(chosen) + list(chosen[:1]), mask, "id list (a duplicate)"
    if kind == 7:
        arr = np.array(chosen, dtype=object if ids is not None and isinstance(keys[0], str) else np.int64)
        return arr, mask, "id array"
    if kind == 8:
        return set(chosen), mask, "id set"
    if kind == 9 and ids is None:  # a non-bool array is a sequence of document indices
        return mask.astype(np.uint8), np.isin(np.arange(n), np.unique(mask.astype(np.uint8))) if n else mask, \
            "uint8 0/1 array (document indices 0 and 1)"
    return src.choice([
        np.ones(n + 1, bool), np.ones(max(n - 1, 0), bool), np.ones((1, n), bool), np.array(True),
        mask.astype(np.float32), ["no-such-id"], [n], [-1], [n + 5, 0], "s1", 3, [None], [1.5], {"a": 1},
    ]), None, "invalid"


def _ref_sparse_scores(ref: Any, tokens: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    return ref.get_scores(tokens), ref.matching(tokens)


def _sparse_oracle(setup: _SearchSetup, name: str, items: List[Any], hits: Any, k: int, allowed: np.ndarray) -> None:
    index, ref, ids = setup.sparse[name]
    width = check_hits_sane(name, hits, len(items), k, setup.n, index.ids, allowed)
    for qi, item in enumerate(items):
        tokens = list(item) if isinstance(item, list) else reference.regex_tokens(_as_text(item))
        scores, matching = _ref_sparse_scores(ref, tokens)
        _check_row(f"{name} query {qi} {item!r:.80}", hits.indices[qi], hits.scores[qi], scores,
                   matching & allowed, width, rtol=2e-5)


def _dense_oracle(name: str, index: Any, dead: set, q: np.ndarray, hits: Any, k: int, allowed: np.ndarray) -> None:
    n = index.ntotal
    alive = np.ones(n, bool)
    alive[list(dead)] = False
    alive &= allowed  # a filter restricts the candidates as deletes do
    width = check_hits_sane(name, hits, q.shape[0], k, n, index.ids, alive, n_live=len(index))
    rows = index.vectors().astype(np.float64)
    q32 = np.asarray(q, np.float32).reshape(-1, index.dim)
    if index.metric == "cosine":
        q32 = (q32 / np.sqrt(np.einsum("ij,ij->i", q32, q32, dtype=np.float64))[:, None]).astype(np.float32)
    ref = q32.astype(np.float64) @ rows.T
    for qi in range(q32.shape[0]):
        _check_row(f"{name} query {qi}", hits.indices[qi], hits.scores[qi], ref[qi], alive, width, rtol=1e-4)


def _draw_vectors(src: Source, dim: int) -> Tuple[Any, bool]:
    """-> (queries, valid)."""
    rng = np.random.default_rng(src.int(0, 2 ** 16))
    nq = src.choice([1, 1, 2, 3, 0])
    base = rng.standard_normal((nq, dim)).astype(np.float32)
    kind = src.int(0, 12)
    if kind <= 4:
        return base, True
    if kind == 5:
        return rng.standard_normal(dim).astype(np.float32), True
    if kind == 6:
        return base.astype(src.choice([np.float64, np.float16])), True
    if kind == 7:
        return base.tolist(), True
    if kind == 8:
        return base * np.float32(src.choice([1e-30, 1e18, 1e30, 1e37])), True  # finite; products may overflow float32
    if kind == 9:
        return np.zeros((1, dim), np.float32), True  # valid for "ip" (scores 0); cosine: refused below
    return src.choice([
        base.astype(np.int32), np.full((1, dim), np.nan, np.float32),
        np.full((1, dim), np.inf, np.float32), rng.standard_normal((2, dim + 1)).astype(np.float32),
        np.asfortranarray(rng.standard_normal((3, dim)).astype(np.float32)).T.copy().T,
        rng.standard_normal((1, 2, dim)).astype(np.float32), "alpha", None, [[1.0] * dim, [1.0]],
        np.empty((0, dim + 2), np.float32),
    ]), False


def _rrf(parts: List[Any], k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Reference reciprocal rank fusion (rrf_k=60, weights 1), ties to the lower document index."""
    nq = parts[0].indices.shape[0]
    idx = np.full((nq, k), -1, np.int64)
    sc = np.full((nq, k), -np.inf, np.float32)
    for r in range(nq):
        fused: Dict[int, float] = {}
        for h in parts:
            for rank, d in enumerate(h.indices[r].tolist(), 1):
                if d >= 0:
                    fused[d] = fused.get(d, 0.0) + 1.0 / (60.0 + rank)
        order = sorted(fused, key=lambda d: (-np.float32(fused[d]), d))[:k]
        idx[r, :len(order)] = order
        sc[r, :len(order)] = [np.float32(fused[d]) for d in order]
    return idx, sc


def target_search(src: Source) -> None:
    """search() on BM25 / TfIdf / DenseIndex / Hybrid with random k, threads, queries and filters: oracle
    results (pure-Python BM25 and TF-IDF, numpy brute force, a reference RRF), or a clean error."""
    global _SETUP
    if _SETUP is None:
        _SETUP = _SearchSetup()
    setup = _SETUP
    k = src.choice(_KS)
    threads = src.choice(_THREADS)
    which = src.choice(sorted(setup.sparse) + sorted(setup.dense) + ["hybrid"])
    src.note("retriever", which)
    src.note("k", k)
    src.note("threads", threads)
    k_ok = _valid_int(k, 1)
    threads_ok = threads is None or _valid_int(threads, 1)
    if which in setup.sparse:
        index, _, ids = setup.sparse[which]
        queries, items, how = _draw_queries(src, setup)
        flt, allowed, fhow = _draw_filter(src, setup.n, ids)
        src.note("queries", (how, queries))
        src.note("filter", (fhow, flt))
        call = lambda: index.search(queries, k=k, threads=threads, filter=flt)  # noqa: E731
        if not (k_ok and threads_ok and items is not None and allowed is not None):
            bad = "k" if not k_ok else "threads" if not threads_ok else how if items is None else f"filter {fhow}"
            expect_clean(f"sparse:{bad}", call)
            return
        hits = call()
        if not items:
            if np.shape(hits.indices)[0] != 0:
                raise Mismatch("oracle:sparse:empty-batch", f"shape {np.shape(hits.indices)}")
            return
        _sparse_oracle(setup, which, items, hits, int(k), allowed)
        return
    if which in setup.dense:
        index, ids, dead = setup.dense[which]
        q, valid = _draw_vectors(src, index.dim)
        flt, allowed, fhow = _draw_filter(src, index.ntotal, ids)
        src.note("queries", q)
        src.note("filter", (fhow, flt))
        if valid and index.metric == "cosine" and np.asarray(q).size and \
                not (np.linalg.norm(np.asarray(q, np.float64).reshape(-1, index.dim), axis=1) > 0).all():
            valid = False
        call = lambda: index.search(q, k=k, threads=threads, filter=flt)  # noqa: E731
        if not (k_ok and threads_ok and valid and allowed is not None):
            bad = "k" if not k_ok else "threads" if not threads_ok else "queries" if not valid else f"filter {fhow}"
            expect_clean(f"dense:{bad}", call)
            return
        hits = call()
        qa = np.asarray(q, np.float32).reshape(-1, index.dim)
        if np.isfinite(qa).all() and index.metric == "ip":
            with np.errstate(over="ignore"):
                prods = np.abs(qa.astype(np.float64)) @ np.abs(index.vectors().astype(np.float64)).T
            if (prods > np.finfo(np.float32).max).any():
                src.note("note", "products beyond float32: scores must still be right, or the call refused")
        _dense_oracle(which, index, dead, qa, hits, int(k), allowed)
        return
    # hybrid: text queries only (the dense side encodes them)
    q = src.choice([_draw_text_query(src, setup), [_draw_text_query(src, setup) for _ in range(src.int(0, 3))],
                    None, [b"alpha"], [["alpha"]]])
    flt, allowed, fhow = _draw_filter(src, setup.n, setup.sparse["bm25l_str_ids"][2])
    src.note("queries", q)
    src.note("filter", (fhow, flt))
    valid = isinstance(q, str) or (isinstance(q, list) and all(isinstance(x, str) for x in q))
    call = lambda: setup.hybrid.search(q, k=k, threads=threads, filter=flt)  # noqa: E731
    if not (k_ok and threads_ok and valid and allowed is not None):
        expect_clean("hybrid", call)
        return
    hits = call()
    nq = 1 if isinstance(q, str) else len(q)
    width = check_hits_sane("hybrid", hits, nq, int(k), setup.n, setup.sparse["bm25l_str_ids"][0].ids, allowed)
    # each part filtered, then fused
    parts = [p.search(q, k=max(setup.hybrid.depth, width), filter=flt) for p in setup.hybrid_parts]
    want_idx, want_sc = _rrf(parts, width)
    if not (np.array_equal(hits.indices, want_idx) and np.allclose(hits.scores, want_sc, rtol=1e-6)):
        raise Mismatch("oracle:hybrid-rrf", f"got {hits.indices.tolist()!r:.300}, expected {want_idx.tolist()!r:.300}")


# ============================================================================================= registry
class Target:
    def __init__(self, name: str, fn: Callable[[Source], None], clean: Tuple[type, ...], doc: str) -> None:
        self.name, self.fn, self.clean, self.doc = name, fn, clean, doc


TARGETS: Dict[str, Target] = {
    "analyzer": Target("analyzer", target_analyzer, CLEAN_ERRORS, "rc.Analyzer on any text or bytes vs the regex"),
    "corpus": Target("corpus", target_corpus, CLEAN_ERRORS + (FileNotFoundError,),
                     "JSONL / BEIR / qrels readers on generated and mutated files"),
    "load": Target("load", target_load, (ValueError,), "BM25/TfIdf/DenseIndex.load of mutated index directories"),
    "search": Target("search", target_search, CLEAN_ERRORS, "search() of every retriever vs its oracle"),
}


# ============================================================================================== runners
def limit_memory(megabytes: int) -> None:
    """Cap this process's address space, so that a runaway allocation is a MemoryError, not the machine's.
    Not under AddressSanitizer (RAGCORE_SANITIZED, set by tools/sanitize.sh), whose shadow memory needs
    terabytes of address space, nor with ``megabytes <= 0``."""
    if os.environ.get("RAGCORE_SANITIZED") or int(megabytes) <= 0:
        return
    try:
        import resource

        limit = int(megabytes) << 20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not Linux
        pass


class NotesFile:
    """Keeps the current input's notes in a file, rewritten for each input (it survives a crash)."""

    def __init__(self, path: "str | os.PathLike[str]") -> None:
        self.fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.pos = 0

    def start(self, src: Source, header: str = "") -> None:
        os.ftruncate(self.fd, 0)
        self.pos = 0
        if header:
            self.write(header)
        src.on_note = self.write

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        os.pwrite(self.fd, data, self.pos)
        self.pos += len(data)
