"""The manifest schema of each index kind: what ``meta`` holds and which arrays, of which exact dtype
and shape, an index of that kind has.

:func:`ragcore.io.storage.save_index` checks what it is asked to write and
:func:`ragcore.io.storage.load_index` what it reads, both against the schema of the manifest's kind
(kinds without a schema get the generic checks only). Everything here reads the manifest alone
(no file is opened), except :func:`check_arrays`, which looks at a few elements and the small arrays
(O(n_docs + n_terms), never the postings or the vectors). Structural invariants inside the large
arrays (offsets monotone, ids in range, finite floats) are checked by the native core.

Errors are ``ValueError("<dir> is not a valid <kind> index: manifest.json <field> is <actual>,
expected <expected>")``.

Public functions: :func:`check_manifest` (meta + files of a parsed manifest), :func:`check_meta`,
:func:`check_files`, :func:`check_arrays`; :data:`KINDS` lists the kinds with a schema.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = ["KINDS", "BM25_METHODS", "check_manifest", "check_meta", "check_files", "check_arrays"]

BM25_METHODS = ("robertson", "lucene", "atire", "bm25l", "bm25+")
DENSE_METRICS = ("cosine", "ip")
DENSE_DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "|i1", "bfloat16": "<u2"}
_MAX_INT32 = 2 ** 31 - 1
_MAX_DOCS = 2 ** 32          # post_docs are uint32


class _Text(str):
    """An actual value described in words (shown as is, not repr'd): ``<missing>``, ``present``."""


MISSING, PRESENT = _Text("<missing>"), _Text("present")


class _Bad(Exception):
    def __init__(self, field: str, actual: Any, expected: str, note: str = "") -> None:
        super().__init__(field)
        self.field, self.actual, self.expected, self.note = field, actual, expected, note


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


# ---- value validators: fn(value, field) raises _Bad ------------------------------------------

Check = Callable[[Any, str], None]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(lo: int = 0, hi: int = 2 ** 63 - 1) -> Check:
    def check(v, field):
        if not _is_int(v) or not lo <= v <= hi:
            raise _Bad(field, v, f"an integer in [{lo}, {hi}]")
    return check


def _num(lo: float, hi: float = math.inf) -> Check:
    def check(v, field):
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or not lo <= v <= hi):
            raise _Bad(field, v, f"a finite number in [{lo}, {hi}]")
    return check


def _bool(v: Any, field: str) -> None:
    if not isinstance(v, bool):
        raise _Bad(field, v, "true or false")


def _enum(*values: Any) -> Check:
    def check(v, field):
        # bool == int in Python: compare types too, so that true is not taken for 1
        if not any(type(v) is type(x) and v == x for x in values):
            raise _Bad(field, v, "one of " + ", ".join(_show(x) for x in values))
    return check


def _str(max_len: int = 1 << 16, min_len: int = 1) -> Check:
    def check(v, field):
        if not isinstance(v, str) or not min_len <= len(v) <= max_len:
            raise _Bad(field, v, f"a string of {min_len} to {max_len} characters")
    return check


def _list_of(item: Check) -> Check:
    def check(v, field):
        if not isinstance(v, list):
            raise _Bad(field, v, "a list")
        for i, x in enumerate(v):
            item(x, f"{field}[{i}]")
    return check


def _any_of(*checks: Check, expected: str) -> Check:
    def check(v, field):
        for c in checks:
            try:
                c(v, field)
                return
            except _Bad:
                pass
        raise _Bad(field, v, expected)
    return check


def _json_object(v: Any, field: str) -> None:
    if not isinstance(v, dict):
        raise _Bad(field, v, "a JSON object")


def _obj(fields: Mapping[str, Check]) -> Check:
    """An object with exactly these keys."""
    def check(v, field):
        if not isinstance(v, dict):
            raise _Bad(field, v, "a JSON object")
        for key, c in fields.items():
            if key not in v:
                raise _Bad(f"{field}.{key}", MISSING, "present")
            c(v[key], f"{field}.{key}")
        extra = sorted(set(v) - set(fields))
        if extra:
            raise _Bad(f"{field}.{extra[0]}", v[extra[0]], "absent (unknown key)")
    return check


_IDS = _enum(None, "str", "int")
_ANALYZER = _obj({
    "lowercase": _bool,
    # any word the Analyzer takes (an empty one included); the manifest's size bounds the list
    "stopwords": _any_of(_enum(None, "english"), _list_of(_str(1 << 20, min_len=0)),
                         expected="null, 'english' or a list of words"),
    "stemmer": _any_of(_enum(None), _str(64), expected="null or a Snowball language name"),
    "min_token_len": _int(1, _MAX_INT32),
})
# n_docs >= 1: index() refuses empty corpora
_SPARSE_COMMON = {"analyzer": _ANALYZER, "n_docs": _int(1, _MAX_DOCS), "n_terms": _int(0, 2 ** 62),
                  "ids": _IDS}
_META: Dict[str, Check] = {
    "bm25": _obj(dict(params=_obj({"k1": _num(0), "b": _num(0, 1), "method": _enum(*BM25_METHODS),
                                   "delta": _num(0)}), **_SPARSE_COMMON)),
    "tfidf": _obj(dict(params=_obj({"sublinear_tf": _bool, "smooth_idf": _bool}), **_SPARSE_COMMON)),
    "dense": _obj({"dim": _int(1, _MAX_INT32), "metric": _enum(*DENSE_METRICS),
                   "dtype": _enum(*DENSE_DTYPES), "n": _int(0, 2 ** 62), "ids": _IDS,
                   "info": _json_object, "prefilter": _enum(None, "int8")}),
}
KINDS = tuple(_META)


# ---- arrays ----------------------------------------------------------------------------------

Files = Mapping[str, Tuple[str, Tuple[int, ...]]]   # name -> (dtype string, shape)


class _Arrays:
    """Checks ``files`` (name -> (dtype, shape)) array by array; remembers which were looked at."""

    def __init__(self, files: Files) -> None:
        self.files, self.seen = files, set()

    def need(self, name: str, dtype: str, shape: Tuple[Optional[int], ...], why: str = "") -> Tuple[int, ...]:
        """Array ``name`` must exist with ``dtype`` and ``shape`` (None: any length there)."""
        self.seen.add(name)
        if name not in self.files:
            raise _Bad(f"files.{name}", MISSING, f"a {dtype} array of shape {_shape(shape)}", why)
        dt, sh = self.files[name]
        if dt != dtype:
            raise _Bad(f"files.{name}.dtype", dt, repr(dtype), why)
        if len(sh) != len(shape) or any(w is not None and w != s for s, w in zip(sh, shape)):
            raise _Bad(f"files.{name}.shape", list(sh), _shape(shape), why)
        return sh

    def forbid(self, name: str, why: str) -> None:
        if name in self.files:
            raise _Bad(f"files.{name}", PRESENT, "absent", why)

    def done(self) -> None:
        extra = sorted(set(self.files) - self.seen)
        if extra:
            raise _Bad(f"files.{extra[0]}", PRESENT, "absent (not an array of this kind)")


def _shape(shape: Tuple[Optional[int], ...]) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _ids_files(a: _Arrays, ids: Any, n: int) -> None:
    if ids == "str":
        a.need("ids_data", "|u1", (None,), "meta.ids is 'str'")
        a.need("ids_offsets", "<i8", (n + 1,), "meta.ids is 'str': one offset per document and one more")
    else:
        a.forbid("ids_data", f"meta.ids is {ids!r}")
        a.forbid("ids_offsets", f"meta.ids is {ids!r}")
    if ids == "int":
        a.need("ids_int", "<i8", (n,), "meta.ids is 'int': one id per document")
    else:
        a.forbid("ids_int", f"meta.ids is {ids!r}")


def _sparse_files(kind: str, meta: Dict[str, Any], a: _Arrays) -> None:
    nt = meta["n_terms"]
    a.need("term_offsets", "<i8", (nt + 1,), "one offset per term and one more (meta.n_terms)")
    (p,) = a.need("post_docs", "<u4", (None,))
    a.need("post_weights", "<f4", (p,), "one weight per posting (files.post_docs)")
    tfidf = kind == "tfidf"
    const = not tfidf and meta["params"]["method"] in ("bm25l", "bm25+")
    a.need("term_idf", "<f4", (nt if tfidf else 0,), "one idf per term for tfidf, none for bm25")
    a.need("term_const", "<f4", (nt if const else 0,), "one constant per term for bm25l and bm25+ only")
    a.need("term_data", "|u1", (None,))
    a.need("term_str_offsets", "<i8", (nt + 1,), "one offset per term and one more (meta.n_terms)")
    a.need("surface_data", "|u1", (None,))
    (s1,) = a.need("surface_offsets", "<i8", (None,))
    if s1 < 1:
        raise _Bad("files.surface_offsets.shape", [s1], "(n_surface + 1,) with n_surface >= 0")
    a.need("surface_term", "<i4", (s1 - 1,), "one term per surface word (files.surface_offsets)")
    _ids_files(a, meta["ids"], meta["n_docs"])


def _dense_files(meta: Dict[str, Any], a: _Arrays) -> None:
    n, dim, dtype, pre = meta["n"], meta["dim"], meta["dtype"], meta["prefilter"]
    a.need("vectors", DENSE_DTYPES[dtype], (n, dim), f"meta.dtype is {dtype!r}; (meta.n, meta.dim)")
    if dtype == "int8":
        a.need("aux", "<f4", (n, 2), "int8 rows need their (n, 2) float32 scales")
    else:
        a.forbid("aux", f"meta.dtype is {dtype!r}")
    if pre is not None:
        if dtype not in ("float32", "float16"):
            raise _Bad("meta.prefilter", pre, "null", f"an int8 prefilter is for float32 or float16 rows, "
                                                      f"not {dtype}")
        for name, shape, what in (("pre_codes", (n, dim), "int8 codes"), ("pre_aux", (n, 4), "float32 aux")):
            if name not in a.files:
                raise _Bad(f"files.{name}", MISSING, "present",
                           f"an int8 prefilter without its {_shape(shape)} {what}")
        a.need("pre_codes", "|i1", (n, dim), "meta.prefilter is 'int8'")
        a.need("pre_aux", "<f4", (n, 4), "meta.prefilter is 'int8'")
    else:
        a.forbid("pre_codes", "meta.prefilter is null")
        a.forbid("pre_aux", "meta.prefilter is null")
    if "deleted" in a.files:
        a.need("deleted", "|u1", (n,), "one flag per row (meta.n)")
    _ids_files(a, meta["ids"], n)


# ---- the public checks -------------------------------------------------------------------------

def _error(where: str, kind: str, bad: _Bad) -> ValueError:
    actual = bad.actual if isinstance(bad.actual, _Text) else _show(bad.actual)
    if bad.note.startswith("an int8 prefilter without"):   # the message DenseIndex.load gave
        return ValueError(f"{where} is not a valid {kind} index: {bad.note} "
                          f"(manifest.json {bad.field} is {actual})")
    note = f" ({bad.note})" if bad.note else ""
    return ValueError(f"{where} is not a valid {kind} index: manifest.json {bad.field} is {actual}, "
                      f"expected {bad.expected}{note}")


def check_meta(kind: str, meta: Any, *, where: str) -> None:
    """Check ``meta`` (the manifest's ``meta``) against the schema of ``kind``: every field's type,
    enum and bounds, no unknown or missing key. Kinds without a schema pass."""
    check = _META.get(kind)
    if check is None:
        return
    try:
        check(meta, "meta")
        if kind == "bm25":
            params = meta["params"]
            if params["method"] == "bm25l" and params["k1"] == 0 and params["delta"] == 0:
                raise _Bad("meta.params.delta", 0, "> 0 with bm25l and k1 = 0 (0/0 scores)")
    except _Bad as bad:
        raise _error(where, kind, bad) from None


def check_files(kind: str, meta: Dict[str, Any], files: Files, *, where: str) -> None:
    """Check the arrays an index of ``kind`` has: ``files`` maps each array's name to its
    (dtype string, shape), as the manifest records them. Exactly the arrays of the kind, each
    with its exact dtype and a shape consistent with the counts in ``meta`` (call
    :func:`check_meta` first)."""
    if kind not in _META:
        return
    a = _Arrays(files)
    try:
        if kind == "dense":
            _dense_files(meta, a)
        else:
            _sparse_files(kind, meta, a)
        a.done()
    except _Bad as bad:
        raise _error(where, kind, bad) from None


def check_manifest(manifest: Mapping[str, Any], *, where: str) -> None:
    """:func:`check_meta` and :func:`check_files` on a parsed manifest (its ``kind``, ``meta`` and
    ``files`` entries' ``dtype`` and ``shape``, which must already be well-formed)."""
    kind = manifest.get("kind")
    if kind not in _META:
        return
    check_meta(kind, manifest.get("meta"), where=where)
    files = {name: (e["dtype"], tuple(e["shape"])) for name, e in manifest["files"].items()}
    check_files(kind, manifest["meta"], files, where=where)


def _endpoints(arrays: Mapping[str, np.ndarray], offsets: str, data: str) -> None:
    off = arrays[offsets]
    first, last, size = int(off[0]), int(off[-1]), int(arrays[data].shape[0])
    if first != 0 or last != size:
        raise _Bad(f"{offsets}.bin", _Text(f"offsets from {first} to {last}"),
                   f"offsets from 0 to {size} (the length of {data})")


def _finite(arrays: Mapping[str, np.ndarray], name: str) -> None:
    a = arrays.get(name)
    if a is not None and a.size and not np.isfinite(a).all():
        raise _Bad(f"{name}.bin", _Text("numbers that are not finite (NaN or infinity)"), "finite numbers")


def check_arrays(kind: str, meta: Dict[str, Any], arrays: Mapping[str, np.ndarray], *, where: str) -> None:
    """The cheap checks of array contents: every offsets array starts at 0 and ends at the length of
    its data; the per-term and per-row float arrays of the small kind (idf, bm25 constants, int8 scales,
    prefilter aux) are finite. O(1) per offsets array, O(n_terms) or O(n) for the rest: never the
    postings or the vectors (the native core checks those)."""
    if kind not in _META:
        return
    pairs = [("ids_offsets", "ids_data")]
    if kind != "dense":
        pairs += [("term_offsets", "post_docs"), ("term_str_offsets", "term_data"),
                  ("surface_offsets", "surface_data")]
    try:
        for off, data in pairs:
            if off in arrays:
                _endpoints(arrays, off, data)
        for name in ("term_idf", "term_const", "aux", "pre_aux"):
            _finite(arrays, name)
    except _Bad as bad:
        raise ValueError(f"{where} is not a valid {kind} index: {bad.field} has {bad.actual}, "
                         f"expected {bad.expected}") from None
