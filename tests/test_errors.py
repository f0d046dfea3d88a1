"""Bad input (API.md "Errors"): the right exception type, a message naming the offending value, and the
index left exactly as it was."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import ragcore as rc
from reference import RefBM25, analyze

DOCS = ["alpha beta gamma", "beta gamma", "gamma delta", "alpha alpha epsilon", "zeta"]
IDS = ["d0", "d1", "d2", "d3", "d4"]
QUERIES = ["alpha", "gamma beta", "delta zeta", "nothing"]


def snapshot(eng):
    h = eng.search(QUERIES, k=4)
    return (h.indices.copy(), h.scores.copy(), None if h.ids is None else h.ids.copy(), len(eng),
            eng.vocabulary_size, None if eng.ids is None else list(eng.ids),
            [eng.get_scores(q).copy() for q in QUERIES])


def assert_unchanged(eng, snap):
    now = snapshot(eng)
    np.testing.assert_array_equal(now[0], snap[0])
    np.testing.assert_array_equal(now[1], snap[1])
    if snap[2] is None:
        assert now[2] is None
    else:
        assert now[2].tolist() == snap[2].tolist()
    assert now[3:6] == snap[3:6]
    for a, b in zip(now[6], snap[6]):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(params=["bm25", "bm25l", "tfidf"])
def engine(request):
    if request.param == "tfidf":
        eng = rc.TfIdf()
    else:
        eng = rc.BM25(method="lucene" if request.param == "bm25" else "bm25l")
    return eng.index(DOCS, ids=IDS)


def mentions_number(msg: str, x: float) -> bool:
    """Whether ``msg`` contains the number ``x`` in any usual formatting ("2", "2.0", "2.000000", "nan")."""
    if math.isnan(x):
        return "nan" in msg.lower()
    if math.isinf(x):
        return "inf" in msg.lower() and (x > 0 or "-inf" in msg.lower())
    for tok in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", msg):
        try:
            v = float(tok)
        except ValueError:
            continue
        if v == x or (x != 0 and abs(v - x) <= 1e-6 * abs(x)):
            return True
    return False


def _raises(exc, *needles, fn, **kw):
    with pytest.raises(exc) as info:
        fn(**kw) if kw else fn()
    msg = str(info.value)
    for n in needles:
        assert str(n) in msg, f"message {msg!r} should mention {n!r}"
    return info


# ------------------------------------------------------------------------------------- constructors
@pytest.mark.parametrize("k1", [float("nan"), -0.5, float("inf"), -float("inf")])
def test_bad_k1(k1):
    with pytest.raises(ValueError) as info:
        rc.BM25(k1=k1)
    msg = str(info.value)
    assert "k1" in msg and mentions_number(msg, k1), msg


@pytest.mark.parametrize("b", [-0.01, 1.01, float("nan"), 2.0])
def test_bad_b(b):
    with pytest.raises(ValueError) as info:
        rc.BM25(b=b)
    msg = str(info.value)
    assert "b" in msg and mentions_number(msg, b), msg


def test_bad_delta():
    info = _raises(ValueError, "delta", fn=lambda: rc.BM25(delta=-1.5))
    assert mentions_number(str(info.value), -1.5), str(info.value)


@pytest.mark.parametrize("method", ["okapi", "BM25", "", "bm25-plus"])
def test_unknown_method(method):
    with pytest.raises(ValueError) as info:
        rc.BM25(method=method)
    assert repr(method) in str(info.value) or (method and method in str(info.value))


def test_boundary_parameters_are_accepted():
    """Accepted, and scored as the pure-Python oracle scores them (k1=0: as its limit k1 -> 0+, which
    settles bm25+'s 0/0 for absent terms)."""
    tokens = [analyze(d) for d in DOCS]
    for m in ("robertson", "lucene", "atire", "bm25l", "bm25+"):
        for kw in (dict(k1=0.0), dict(b=0.0), dict(b=1.0), dict(delta=0.0), dict(k1=1e6)):
            eng = rc.BM25(method=m, **kw).index(DOCS)
            ref = RefBM25(method=m, **{**kw, **({"k1": 1e-12} if kw.get("k1") == 0 else {})}).index(tokens)
            for q in QUERIES:
                np.testing.assert_allclose(eng.get_scores(q), ref.get_scores(analyze(q)), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{m} {kw} {q!r}")


def test_bad_min_token_len():
    _raises(ValueError, "0", fn=lambda: rc.Analyzer(min_token_len=0))


# --------------------------------------------------------------------------------------------- index
def test_ids_length_mismatch(engine):
    snap = snapshot(engine)
    info = _raises(ValueError, fn=lambda: engine.index(["a b", "c d", "e f"], ids=["x", "y"]))
    msg = str(info.value)
    assert mentions_number(msg, 2) and mentions_number(msg, 3), msg
    assert_unchanged(engine, snap)


@pytest.mark.parametrize("dup", ["dup-id-42", 4242])
def test_duplicate_ids(engine, dup):
    snap = snapshot(engine)
    ids = ["a", dup, "b", dup] if isinstance(dup, str) else [1, dup, 2, dup]
    _raises(ValueError, dup, fn=lambda: engine.index(["aa bb", "cc dd", "ee ff", "gg hh"], ids=ids))
    assert_unchanged(engine, snap)


@pytest.mark.parametrize("ids", [["a", 1, "c"], [1, "b", 3], [1.5, 2.5, 3.5], [None, "b", "c"], [True, False, 2]])
def test_bad_id_types(engine, ids):
    """ids are all str or all int: anything else is a TypeError (not e.g. a leaked StopIteration)."""
    snap = snapshot(engine)
    with pytest.raises(TypeError):
        engine.index(["aa bb", "cc dd", "ee ff"], ids=ids)
    assert_unchanged(engine, snap)


@pytest.mark.parametrize("bad", [3, None, 4.5, {"text": "x"}])
def test_non_string_document(engine, bad):
    snap = snapshot(engine)
    docs = ["fine text", "more fine text", bad, "tail"]
    with pytest.raises(TypeError) as info:
        engine.index(docs)
    msg = str(info.value)
    assert mentions_number(msg, 2), f"position 2 not named: {msg!r}"
    assert type(bad).__name__ in msg or repr(bad) in msg, f"type not named: {msg!r}"
    assert_unchanged(engine, snap)


def test_non_string_token_in_pretokenized_document(engine):
    snap = snapshot(engine)
    _raises(TypeError, "1", fn=lambda: engine.index([["ok", "fine"], ["bad", 7]]))
    assert_unchanged(engine, snap)


def test_error_after_several_batches_keeps_previous_index(engine):
    """The corpus is streamed in batches: a bad document late in the stream must not leave a partial index."""
    snap = snapshot(engine)
    docs = (f"word{i} common text" if i != 57 else 12345 for i in range(100))
    _raises(TypeError, "57", "int", fn=lambda: engine.index(docs, batch_size=8))
    assert_unchanged(engine, snap)


def test_exception_from_the_iterable_propagates_and_keeps_index(engine):
    snap = snapshot(engine)

    def gen():
        for i in range(40):
            yield f"text number {i}"
        raise RuntimeError("source broke at 40")

    with pytest.raises(RuntimeError, match="source broke at 40"):
        engine.index(gen(), batch_size=16)
    assert_unchanged(engine, snap)


def test_exception_from_stemmer_propagates_and_keeps_index():
    calls = {"n": 0}

    def stemmer(words):  # works whether it is handed a list of words or one word
        calls["n"] += 1
        if "explode" in ([words] if isinstance(words, str) else words):
            raise KeyError("stemmer failed on explode")
        return words

    eng = rc.BM25(analyzer=rc.Analyzer(stemmer=stemmer)).index(DOCS, ids=IDS)
    snap = snapshot(eng)
    with pytest.raises(KeyError, match="explode"):
        eng.index(DOCS + ["this will explode now"], ids=IDS + ["x"])
    assert_unchanged(eng, snap)


# -------------------------------------------------------------------------------------------- search
@pytest.mark.parametrize("k", [0, -1, -100])
def test_bad_k_value(engine, k):
    snap = snapshot(engine)
    info = _raises(ValueError, fn=lambda: engine.search("alpha", k=k))
    assert mentions_number(str(info.value), k), str(info.value)
    assert_unchanged(engine, snap)


@pytest.mark.parametrize("k", [1.5, "3", None, 2.0])
def test_bad_k_type(engine, k):
    snap = snapshot(engine)
    with pytest.raises(TypeError) as info:
        engine.search("alpha", k=k)
    assert type(k).__name__ in str(info.value) or repr(k) in str(info.value), str(info.value)
    assert_unchanged(engine, snap)


def test_numpy_integer_k_is_accepted(engine):
    a = engine.search("alpha", k=np.int64(3))
    b = engine.search("alpha", k=3)
    np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("q", [3, None, [1, 2], ["ok", 5], [["ok"], "mixed"], [["ok", 3]], {"q": 1}, 2.5])
def test_bad_query_types(engine, q):
    snap = snapshot(engine)
    with pytest.raises(TypeError):
        engine.search(q, k=2)
    assert_unchanged(engine, snap)


@pytest.mark.parametrize("make", [lambda: rc.BM25(), lambda: rc.TfIdf()], ids=["bm25", "tfidf"])
def test_search_on_empty_index(make):
    eng = make()
    with pytest.raises(ValueError):
        eng.search("alpha", k=3)
    with pytest.raises(ValueError):
        eng.get_scores("alpha")


@pytest.mark.parametrize("shape", [(4,), (6,), (0,), (5, 1), (1, 5)])
def test_bad_filter_shape(engine, shape):
    snap = snapshot(engine)
    info = _raises(ValueError, fn=lambda: engine.search("alpha", k=2, filter=np.ones(shape, dtype=bool)))
    if len(shape) == 1:
        assert mentions_number(str(info.value), shape[0]), str(info.value)
    assert_unchanged(engine, snap)


def test_failed_search_does_not_poison_later_searches(engine):
    snap = snapshot(engine)
    for bad in (dict(k=0), dict(k=2, filter=np.ones(3, bool))):
        with pytest.raises(ValueError):
            engine.search(QUERIES, **bad)
    assert_unchanged(engine, snap)
