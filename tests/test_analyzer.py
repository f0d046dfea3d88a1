"""rc.Analyzer against its definition: ``re.findall(r"(?u)\\b\\w\\w+\\b", text.lower())`` (+ options).

The oracle is Python itself (``str.lower`` with its full case mapping and Final_Sigma rule, the ``re``
module's ``\\w``), on random Unicode text, not only ASCII.
"""
from __future__ import annotations

import re
import threading
from collections import Counter

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import ragcore as rc
from reference import STOPWORDS_EN, analyze, regex_tokens

needs_stemmer = pytest.mark.requires("Stemmer")  # PyStemmer: the oracle of the three stemming tests

# Characters whose handling is easy to get wrong in a hand-written UTF-8 tokenizer.
TRICKY = [
    "\u03a3", "\u03c3", "\u03c2",  # Greek capital sigma (final-sigma lowercasing), sigma, final sigma
    "\u0391", "\u0392", "\u03b1",  # Alpha, Beta (cased letters around a sigma), alpha
    "\u0130", "\u0131", "I", "i",  # capital I with dot above (lowercases to 2 code points), dotless i
    "\u0301", "\u0307", "\u0345", "\u20dd",  # combining marks (Mn, Other_Lowercase Mn, Me): not \w
    "\u0663", "\u0969", "\u0bef", "\uff15",  # digits of other scripts (Nd): \w
    "\u00b2", "\u00bd", "\u216b", "\u3007",  # superscript two, one half, roman numeral twelve, ideographic zero
    "_", " ", "'", ".", ":", "-", "\t", "\n", "\u3000", "\u00a0",
    "\u200d", "\u00ad", "\u200b",  # zero width joiner, soft hyphen (case-ignorable Cf), zero width space
    "\u00df", "\u1e9e", "\u01c5", "\u1fbc",  # sharp s, capital sharp s, titlecase dz, titlecase alpha+ypogegrammeni
    "\u2126", "\u212a", "\u212b",  # Ohm, Kelvin, Angstrom signs (lowercase to omega, k, a-ring)
    "\u4e2d", "\ud55c", "\u0e01", "\u05d0",  # CJK, Hangul, Thai, Hebrew letters
    "\U0001f600", "\U0001d400", "\U00010400", "\U00010428",  # emoji, math bold A, Deseret capital/small
    "\u13a0", "\uab70", "\u1c90",  # Cherokee capital / small, Georgian Mtavruli
    "\ufb01", "\u24b6", "\ufffd", "\x00", "\x7f",  # ligature fi, circled A (So), replacement char, controls
    "0", "9", "a", "Z", "\u00e9", "\u00c9",
]
SIGMA_CONTEXTS = [
    "\u03a3", "\u0391\u03a3", "\u0391\u03a3\u0391", "\u0391\u03a3 ", "\u0391\u0301\u03a3", "\u0391\u03a3\u0301",
    "\u0391\u03a3\u00ad\u0391", "\u0391'\u03a3", "\u0391.\u03a3", "\u03a3\u03a3", "\u0391\u03a3\u03a3",
    "_\u03a3", "1\u03a3", "\u0391\u03a31", "\u0391\u03a3_", "A\u03a3", "\u03a3a", "\u0130\u03a3",
]

chars = st.one_of(st.characters(), st.sampled_from(TRICKY))
unicode_text = st.one_of(
    st.text(alphabet=chars, max_size=80),
    st.lists(st.one_of(st.sampled_from(SIGMA_CONTEXTS), st.text(alphabet=chars, max_size=4)), max_size=12).map(
        "".join),
)

EXAMPLES = [
    "",
    "Hello, World! hello_world 42 a b cd",
    "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u03a3\u039f\u03a6\u039f\u03a3",  # ODYSSEUS SOFOS
    "\u0130stanbul \u0130\u0130 I\u0307 \u0130a",
    "caf\u00e9 cafe\u0301 na\u00efve \u00c9COLE",
    "\u0663\u0664\u0665 \u0969\u096a x\u00b2 \u00bd\u00bd \u216b\u216b",
    "\u4e2d\u6587\u5206\u8bcd \ud55c\uad6d\uc5b4 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "\U0001f600\U0001f600 ab\U0001f600cd \U0001d400\U0001d401 \U00010400\U00010401",
    "STRASSE \u1e9e\u1e9e \u01c4\u01c5\u01c6",
    "\u2126\u2126 \u212a\u212a \u212b\u212b",
    "a\u00adb soft\u00adhyphen zero\u200bwidth join\u200der",
    "\u03a3 \u0391\u03a3 \u0391\u03a3\u0391 \u0391\u0301\u03a3 \u0391\u03a3\u0301 \u0391'\u03a3 \u0391.\u03a3.",
]


@pytest.fixture(scope="module")
def default_an():
    return rc.Analyzer()


# --------------------------------------------------------------------------------------- tokenizing
@pytest.mark.parametrize("text", EXAMPLES)
def test_examples_match_regex(default_an, text):
    assert default_an(text) == regex_tokens(text)


@given(unicode_text)
@example("\u0391\u03a3 \u03a3\u0391")
@example("\u0130\u0130")
def test_default_matches_regex(text):
    assert rc.Analyzer()(text) == regex_tokens(text)


@given(unicode_text)
def test_lowercase_false_matches_regex(text):
    an = rc.Analyzer(lowercase=False)
    assert an(text) == re.findall(r"(?u)\b\w\w+\b", text)


@pytest.mark.parametrize("min_len", [1, 3])
@given(text=unicode_text)
def test_min_token_len(min_len, text):
    an = rc.Analyzer(min_token_len=min_len)
    expected = re.findall(r"(?u)\b\w{%d,}\b" % min_len, text.lower())
    assert an(text) == expected


@given(unicode_text)
def test_min_token_len_1_lowercase_false(text):
    assert rc.Analyzer(lowercase=False, min_token_len=1)(text) == re.findall(r"(?u)\b\w+\b", text)


def test_returns_list_of_str(default_an):
    out = default_an("Alpha beta")
    assert type(out) is list and out == ["alpha", "beta"] and all(type(t) is str for t in out)


@given(unicode_text)
def test_valid_utf8_bytes_equal_str(text):
    an = rc.Analyzer()
    text = _surrogates_as_separators(text)  # st.characters() may yield lone surrogates: not encodable
    assert an(text.encode("utf-8")) == an(text)


# ------------------------------------------------------------------------------------- invalid UTF-8
BAD_BYTES = [
    b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf",  # stray, overlong
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80",  # UTF-8-encoded surrogates (CESU-8)
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80",  # > U+10FFFF, 5-byte form
    b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3", b"\xce",  # truncated sequences (next byte may be ASCII)
    b"\xe2\x28\xa1", b"\xc3\x28", b"\xf0\x28\x8c\xbc",  # invalid continuation
]
mixed_bytes = st.one_of(
    st.binary(max_size=64),
    st.lists(
        st.one_of(st.sampled_from(BAD_BYTES), unicode_text.map(lambda s: s.encode("utf-8", "surrogatepass"))), max_size=10
    ).map(b"".join),
)


@pytest.mark.parametrize("bad", BAD_BYTES)
def test_invalid_utf8_examples(default_an, bad):
    for data in (b"ab" + bad + b"cd", bad + b"xy", b"\xce\xa3" + bad + b"\xce\xa3\xce\xa3", b"AB" + bad):
        assert default_an(data) == regex_tokens(data.decode("utf-8", "replace")), data


@given(mixed_bytes)
def test_invalid_utf8_bytes_as_replace(data):
    assert rc.Analyzer()(data) == regex_tokens(data.decode("utf-8", "replace"))


def _surrogates_as_separators(text: str) -> str:
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


surrogate_text = st.lists(
    st.one_of(
        st.text(alphabet=chars, max_size=5),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
        st.sampled_from(["\ud801\udc00", "\ud83d\ude00", "\udcff", "\ud800"]),  # pairs stay two lone surrogates
    ),
    max_size=12,
).map("".join)


@given(surrogate_text)
@example("ab\ud801\udc00cd")  # would be 'ab\U00010400cd' (one token) if the pair were combined
def test_lone_surrogates_are_separators(text):
    out = rc.Analyzer()(text)
    assert out == regex_tokens(_surrogates_as_separators(text))


# ------------------------------------------------------------------------------------------ stopwords
WORDS = [
    "The", "the", "THE", "a", "A", "An", "and", "Into", "into", "of", "OF", "their", "There", "will", "with",
    "running", "Runs", "ran", "generously", "University", "universities", "caresses", "ponies", "ties",
    "caf\u00e9", "na\u00efve", "\u0130stanbul", "\u03a3\u039f\u03a6\u039f\u03a3", "it's", "don't", "x", "abc_def",
    "42", "\u0663\u0664", "donn\u00e9es", "b\u00e4ume", "STRASSE", "stra\u00dfe", "was", "such", "not", "no",
]
SEPS = [" ", ", ", ".", "\n", "-", "'", "\u00ad", "\u3000", "_"]
word_text = st.lists(st.tuples(st.one_of(st.sampled_from(WORDS), st.text(alphabet=chars, max_size=3)),
                               st.sampled_from(SEPS)), max_size=20).map(lambda ws: "".join(w + s for w, s in ws))


def test_english_stopwords_attribute():
    for name in ("english", "en"):
        an = rc.Analyzer(stopwords=name)
        assert isinstance(an.stopwords, frozenset)
        assert an.stopwords == STOPWORDS_EN, sorted(an.stopwords ^ STOPWORDS_EN)
    assert rc.Analyzer().stopwords is None


def test_default_attributes():
    an = rc.Analyzer()
    assert an.lowercase is True and an.stopwords is None and an.stemmer is None and an.min_token_len == 2
    an = rc.Analyzer(lowercase=False, min_token_len=3, stopwords=["foo"])
    assert an.lowercase is False and an.min_token_len == 3 and an.stopwords == frozenset({"foo"})


@pytest.mark.parametrize("name", ["english", "en"])
@given(text=word_text)
def test_english_stopwords(name, text):
    an = rc.Analyzer(stopwords=name)
    assert an(text) == [t for t in regex_tokens(text) if t not in STOPWORDS_EN]


CUSTOM_STOP = ["running", "caf\u00e9", "42", "x", "\u03c3\u03bf\u03c6\u03bf\u03c2", "abc_def", "\u00e9t\u00e9"]


@given(word_text)
def test_custom_stopwords(text):
    for stop in (CUSTOM_STOP, tuple(CUSTOM_STOP), set(CUSTOM_STOP), iter(CUSTOM_STOP)):
        an = rc.Analyzer(stopwords=stop)
        assert an(text) == [t for t in regex_tokens(text) if t not in set(CUSTOM_STOP)]


def test_stopwords_compared_after_lowercasing():
    an = rc.Analyzer(stopwords="english")
    assert an("THE The the Cat AND dog") == ["cat", "dog"]
    # final sigma: "ΣΟΦΟΣ" lowercases to "σοφος" with a final sigma, which is the stopword
    an = rc.Analyzer(stopwords=["\u03c3\u03bf\u03c6\u03bf\u03c2"])
    assert an("\u03a3\u039f\u03a6\u039f\u03a3 \u03a3\u039f\u03a6\u039f\u03a3\u0391") == ["\u03c3\u03bf\u03c6\u03bf\u03c3\u03b1"]


# ------------------------------------------------------------------------------------------- stemming
@needs_stemmer
@given(word_text)
def test_english_stemmer_equals_pystemmer(text):
    import Stemmer

    stem = Stemmer.Stemmer("english")
    an = rc.Analyzer(stemmer="english")
    assert an(text) == stem.stemWords(regex_tokens(text))


@needs_stemmer
@given(word_text)
def test_stopwords_then_stemmer(text):
    an = rc.Analyzer(stopwords="english", stemmer="english")
    assert an(text) == analyze(text, stopwords="english", stemmer="english")


@needs_stemmer
def test_stemmer_examples():
    import Stemmer

    an = rc.Analyzer(stopwords="english", stemmer="english")
    assert an("The runners were running; generously") == Stemmer.Stemmer("english").stemWords(
        ["runners", "were", "running", "generously"])
    assert an("running")[0] == "run"


def test_callable_stemmer_is_applied():
    """API.md: stemmer may be a callable(list[str]) -> list[str]."""
    calls = []

    def reverse_all(words):
        assert isinstance(words, list), f"stemmer callable must receive a list of words, got {type(words).__name__}"
        calls.append(list(words))
        return [w[::-1] for w in words]

    an = rc.Analyzer(stemmer=reverse_all)
    assert an("Hello wonderful World hello") == ["olleh", "lufrednow", "dlrow", "olleh"]
    assert all(isinstance(c, list) for c in calls)


class CountingStemmer:
    """A stemmer callable that records every word it is asked to stem (thread-safe).

    It accepts a list of words (the API.md contract, checked by test_callable_stemmer_is_applied) and also
    a single word, so that the caching property below is tested whichever convention the engine uses.
    """

    def __init__(self):
        self.seen = Counter()
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, words):
        single = isinstance(words, str)
        words = [words] if single else list(words)
        with self._lock:
            self.calls += 1
            self.seen.update(words)
        out = [w[:4] for w in words]
        return out[0] if single else out


def test_callable_stemmer_called_once_per_distinct_word(corpus1000):
    # documents with many repeated words and some stopwords, so per-occurrence stemming would show
    texts = [t + " the " + t.upper() for t in corpus1000.texts]
    stem = CountingStemmer()
    bm25 = rc.BM25(analyzer=rc.Analyzer(stopwords="english", stemmer=stem))
    bm25.index(texts)
    distinct = {w for t in texts for w in regex_tokens(t)} - STOPWORDS_EN
    repeated = {w: n for w, n in stem.seen.items() if n > 1}
    assert not repeated, f"stemmer called more than once for {len(repeated)} words, e.g. {list(repeated.items())[:5]}"
    missing = distinct - set(stem.seen)
    assert not missing, f"{len(missing)} distinct words never stemmed, e.g. {sorted(missing)[:5]}"
    assert stem.calls <= len(distinct)
    # the stemmer's output is what got indexed: a 4-letter prefix matches every word sharing it
    assert bm25.vocabulary_size == len({w[:4] for w in distinct})
    word = corpus1000.vocab[0]
    hits = bm25.search(word[:4] + "zzzzzz", k=len(texts))  # a str query goes through the stemmer
    expected = {i for i, d in enumerate(corpus1000.tokens) if any(t[:4] == word[:4] for t in d)}
    assert set(hits.indices[0][hits.indices[0] >= 0].tolist()) == expected


def test_callable_stemmer_index_with_threads(corpus1000):
    stem = CountingStemmer()
    bm25 = rc.BM25(analyzer=rc.Analyzer(stemmer=stem))
    bm25.index(corpus1000.texts, threads=2, batch_size=97)
    assert max(stem.seen.values()) == 1
    assert set(stem.seen) == {t for d in corpus1000.tokens for t in d}


def test_concurrent_calls_while_the_stem_cache_is_cleared(monkeypatch):
    """Threads sharing one stemming Analyzer (RAG attribution does) get the same terms as one thread, also
    while the shared stem cache is cleared under them (a tiny cache limit makes that happen constantly)."""
    import threading

    import ragcore.retrieval.analysis as A

    pytest.importorskip("Stemmer")
    monkeypatch.setattr(A, "_CACHE_LIMIT", 50)
    an = rc.Analyzer(stemmer="english")
    texts = [f"running{i} jumping{i} cats{i} houses{i % 7}" for i in range(300)]
    want = [an(t) for t in texts]
    errors = []

    def work():
        try:
            for _ in range(20):
                for t, w in zip(texts, want):
                    assert an(t) == w
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
