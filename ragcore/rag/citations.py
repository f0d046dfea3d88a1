"""Citations: the ``[n]`` markers an answer carries, and attribution of the sentences that carry none.

A model asked to cite its sources often does not (small models in particular), or cites some
sentences and not others. :func:`attribute` keeps every citation the model wrote and, for each
answer sentence without one, finds the retrieved passage that supports it best:

1. :func:`split_sentences` cuts the answer into sentences (at ``.``, ``!``, ``?``, ``…`` and the CJK
   ``。！？`` before a sentence start, at line breaks; not after abbreviations such as "e.g." or "i.e.",
   inside decimals such as 3.11, after an ellipsis that the sentence goes on after, or after a list
   number such as "1."; fenced code is no sentence).
2. Each sentence and passage becomes its *content terms*: an :class:`~ragcore.Analyzer` (lowercase,
   English Snowball stems) less :data:`FUNCTION_WORDS`; runs of CJK characters become character
   bigrams. The terms of the question, when given, are left out of the sentence's: an answer restates
   its question, and every retrieved passage holds those words.
3. The support of a sentence by a passage is the mean of two shares: of the sentence's distinct terms
   found in the passage, and of its term bigrams (adjacent pairs) found there (word order: a quote
   scores 1, a sentence made of a passage's words in another order less). The best passage wins, the
   better-ranked on a tie. When a second passage raises the score by :data:`PAIR_GAIN` or more (a
   sentence made of two passages' content), the sentence cites both.
4. A sentence whose score reaches the threshold (default :data:`ATTRIBUTION_THRESHOLD`) is attributed,
   if it has more than :data:`MIN_TERMS` content terms, or that many all found side by side; the
   others are unsupported (``source`` None).

The scoring and the threshold were chosen by measurement on labelled answer sentences (quoted,
paraphrased, invented, near-miss) over passages of Python's documentation: ``bench/bench_citations.py``,
figures in ``bench/results/citations.md``. Term overlap measures *lexical* support: a sentence that
reuses a passage's words while contradicting it (a negation, a swapped number) is attributed to it. The
score says how much of a sentence a passage holds, not whether the passage entails it.

Examples
--------
>>> from ragcore.rag.citations import attribute, cite
>>> passages = ["The cat sat on the mat all afternoon.", "Dogs bark at strangers during the night."]
>>> answer = "At night, dogs bark at strangers. The cat sat on a mat [1]. Birds sing in spring."
>>> for s in attribute(answer, passages):
...     print(s.source, s.by, round(s.score, 2), s.sentence)
2 attribution 0.83 At night, dogs bark at strangers.
1 model 1.0 The cat sat on a mat [1].
None attribution 0.0 Birds sing in spring.
>>> cite(answer, attribute(answer, passages))
'At night, dogs bark at strangers [2]. The cat sat on a mat [1]. Birds sing in spring.'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, FrozenSet, List, Optional, Sequence, Tuple

__all__ = ["Support", "attribute", "cite", "split_sentences", "parse_citations", "ATTRIBUTION_THRESHOLD",
           "FUNCTION_WORDS"]

#: The default support threshold of :func:`attribute`: the middle of the range of thresholds with the
#: best accuracy (supported with the right source vs unsupported) on the labelled sentences of
#: ``python bench/bench_citations.py threshold`` (``bench/results/citations.md``).
ATTRIBUTION_THRESHOLD = 0.36
#: A second passage is cited beside the best one when adding it raises a sentence's score by this much
#: (a sentence made of two passages' content). Measured like the threshold.
PAIR_GAIN = 0.2
#: Sentences with fewer content terms (outside the question's) are not attributed, and those with just
#: this many only when a passage holds both terms side by side (score 1): "try {", "The syntax is:",
#: "It is a shorthand for the following:" match some passage whatever they say.
MIN_TERMS = 2

#: English function words left out of a sentence's content terms (with Lucene's stopwords): words
#: that any passage holds say nothing of which passage supports a sentence.
FUNCTION_WORDS = frozenset("""
a about above after again against all also although am an and any are as at be because been before being
below between both but by can could did do does doing done down during each either else even ever every
few for from further had has have having he her here hers herself him himself his how however i if in into
is it its itself just let like many may me might more most much must my myself neither no nor not now of
off often on once one only or other others otherwise our ours ourselves out over own per rather really
same shall she should so some such than that the their theirs them themselves then there these they this
those though through thus to too under until up upon us use used uses using very via was we well were what
whatever when whenever where whereas wherever whether which while who whom whose why will with within
without would yes yet you your yours yourself yourselves
""".split())

# ------------------------------------------------------------------------------------- model markers
_CITE = re.compile(r"\[\s*(?:sources?\s*)?(\d+(?:\s*(?:[,;]|[-\u2013])\s*(?:sources?\s*)?\d+)*)\s*\]", re.IGNORECASE)
_PART = re.compile(r"(\d+)(?:\s*[-\u2013]\s*(\d+))?")


def parse_citations(text: str, n_sources: int) -> List[int]:
    """Source numbers cited in ``text``, in order of first appearance, without repeats.

    Understands ``[1]``, ``[1, 3]``, ``[1][2]``, ``[1-3]`` (a range, either order), ``[Source 2]``;
    numbers outside ``1..n_sources`` are ignored.

    >>> from ragcore.rag.pipeline import parse_citations
    >>> parse_citations("A [2]. B [1, 3][2]. C [4-5], D [9], E [3-1].", n_sources=5)
    [2, 1, 3, 4, 5]
    """
    out: List[int] = []
    seen = set()
    for m in _CITE.finditer(text):
        for p in _PART.finditer(m.group(1)):
            lo = int(p.group(1))
            hi = int(p.group(2)) if p.group(2) else lo
            if lo > hi:
                lo, hi = hi, lo
            for c in range(max(lo, 1), min(hi, n_sources) + 1):  # clipped: [1-10**9] costs n_sources
                if c not in seen:
                    seen.add(c)
                    out.append(c)
    return out


# ------------------------------------------------------------------------------------------ sentences
# words whose period does not end a sentence even before a capital ("e.g. Python", "Dr. Smith")
_ABBREVIATIONS = frozenset("""
e.g i.e cf vs viz approx incl esp resp al mr mrs ms dr prof st jr sr no nos fig figs eq eqs vol ch sec
p pp ed eds dept inc ltd co corp est ca u.s u.k e.u a.k.a
""".split())
# a sentence end: terminal punctuation, closing quotes / brackets, the model's markers that follow it
_END = re.compile(r"(?:[.!?\u2026]+|[\u3002\uff01\uff1f])[\"'\u201d\u2019)\]\u00bb]*"
                  r"(?:\s*\[\s*(?:sources?\s*)?\d[\d\s,;\-\u2013]*\])*", re.IGNORECASE)
_CJK_END = re.compile(r"[\u3002\uff01\uff1f]")
_LIST_MARK = re.compile(r"\s*(?:[-*\u2022]\s*)?(?:\d+|[A-Za-z])$")
_WORD_BEFORE = re.compile(r"([\w.]+)$")
_NEXT = re.compile(r"\s*(\S)")


def _ends_sentence(text: str, m: "re.Match[str]", line_start: int, line_end: int) -> bool:
    if _CJK_END.match(text, m.start()):
        return True
    if m.end() < line_end and not text[m.end()].isspace():
        return False                            # 3.11, file.txt, "...)" inside a word
    nxt = _NEXT.match(text, m.end(), line_end)
    if nxt and nxt.group(1).islower():
        return False                            # "e.g. the", "from ... import"
    if text[m.start()] == ".":
        if m.start() - line_start <= 16 and _LIST_MARK.fullmatch(text, line_start, m.start()):
            return False                        # "1. The ...": a list number
        w = _WORD_BEFORE.search(text, max(line_start, m.start() - 16), m.start())  # a word, not the line
        if w and (w.group(1).lower().strip(".") in _ABBREVIATIONS or len(w.group(1)) == 1 and w.group(1).isupper()):
            return False                        # "e.g. Python", "J. Smith"
    return True


def split_sentences(text: str) -> List[Tuple[int, int]]:
    """The sentences of ``text`` as ``(start, end)`` character spans, in order.

    A sentence ends at ``.``, ``!``, ``?`` or ``…`` (with the closing quotes, brackets and ``[n]``
    markers right after it) followed by white space and a character that is not a lowercase letter, at
    the CJK full stops ``。！？``, and at every line break. A period does not end a sentence inside a
    number or a name (3.11, file.txt), after a known abbreviation ("e.g.", "i.e.", "Dr.", ...) or a list
    number ("1."), or when the text goes on in lowercase. Spans exclude surrounding white space; pieces
    with no letter or digit (a bullet alone) and fenced code blocks (from a line starting with three
    backticks to the next such line, or the end) are not sentences.

    Examples
    --------
    >>> from ragcore.rag.citations import split_sentences
    >>> text = "Python 3.11 is fast, e.g. in loops. It ships pydoc [2].\\n1. Install it! Done"
    >>> [text[a:b] for a, b in split_sentences(text)]
    ['Python 3.11 is fast, e.g. in loops.', 'It ships pydoc [2].', '1. Install it!', 'Done']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    spans: List[Tuple[int, int]] = []

    def add(a: int, b: int) -> None:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if any(c.isalnum() for c in text[a:b]):
            spans.append((a, b))

    fenced = False
    for line in re.finditer(r"[^\n]+", text):
        if line.group(0).lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:  # code, not sentences
            continue
        pos = line.start()
        for m in _END.finditer(text, line.start(), line.end()):
            if _ends_sentence(text, m, line.start(), line.end()):
                add(pos, m.end())
                pos = m.end()
        add(pos, line.end())
    return spans


# ---------------------------------------------------------------------------------------------- terms
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_analyzer = None


def _default_analyzer():
    global _analyzer
    if _analyzer is None:
        from ..retrieval.analysis import ENGLISH_STOPWORDS, Analyzer
        try:
            _analyzer = Analyzer(stopwords=sorted(FUNCTION_WORDS | set(ENGLISH_STOPWORDS)), stemmer="english")
        except ImportError:  # PyStemmer missing: unstemmed terms (inflections then differ)
            _analyzer = Analyzer(stopwords=sorted(FUNCTION_WORDS | set(ENGLISH_STOPWORDS)))
    return _analyzer


def _terms(text: str, analyzer: Any) -> List[str]:
    """Content terms of ``text`` in order; a run of CJK characters becomes its character bigrams."""
    out: List[str] = []
    for t in analyzer(_CITE.sub(" ", text)):
        if len(t) > 1 and _CJK.search(t):
            out += [t[i:i + 2] for i in range(len(t) - 1)]
        else:
            out.append(t)
    return out


class _Passage:
    __slots__ = ("terms", "bigrams")

    def __init__(self, terms: Sequence[str]) -> None:
        self.terms: FrozenSet[str] = frozenset(terms)
        self.bigrams: FrozenSet[Tuple[str, str]] = frozenset(zip(terms, terms[1:]))


# ------------------------------------------------------------------------------------------- support
@dataclass(frozen=True)
class Support:
    """How one answer sentence is supported.

    Attributes
    ----------
    sentence : str
        The sentence as the model wrote it (with its own markers, if any).
    source : int or None
        The 1-based number of the passage that supports it best (the first the model cited, for
        ``by="model"``); None when no passage supports it enough (see :func:`attribute`).
    score : float
        How much of the sentence ``sources`` hold, 0 to 1: the mean of the shares of its content terms
        and of its term bigrams found there (see the module docs); for ``by="model"``, in the passages
        the model cited; 0 for a sentence without content terms.
    by : {"model", "attribution"}
        "model": the sentence carries the model's own ``[n]``; "attribution": found by :func:`attribute`.
    sources : tuple of int
        Every source given to the sentence: the model's markers in order, or the best passage and, when
        it covers only part of the sentence, a second one holding the rest; () when unsupported.
    start, end : int
        The sentence's span in the answer text.
    """

    sentence: str
    source: Optional[int]
    score: float
    by: str
    sources: Tuple[int, ...] = ()
    start: int = 0
    end: int = 0


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return float(threshold)


class _Claim:
    """A sentence's evidence: its content terms and term bigrams, less those of the question."""

    __slots__ = ("terms", "bigrams")

    def __init__(self, terms: Sequence[str], question: FrozenSet[str]) -> None:
        self.terms = set(terms) - question
        self.bigrams = {g for g in zip(terms, terms[1:]) if not (g[0] in question and g[1] in question)}

    def score(self, covered: FrozenSet[str], covered_bigrams: FrozenSet[Tuple[str, str]]) -> float:
        """Mean of the recall of the terms and of the bigrams in ``covered`` (the terms' alone without bigrams)."""
        if not self.terms:
            return 0.0
        uni = len(self.terms & covered) / len(self.terms)
        return (uni + len(self.bigrams & covered_bigrams) / len(self.bigrams)) / 2 if self.bigrams else uni


def _best(claim: _Claim, passages: List[_Passage], threshold: float) -> Tuple[Optional[int], float, Tuple[int, ...]]:
    """(source, score, sources) of one sentence against the passages, sources numbered from 1."""
    if not passages or not claim.terms:
        return None, 0.0, ()
    scores = [claim.score(p.terms, p.bigrams) for p in passages]
    best = max(range(len(passages)), key=lambda i: (scores[i], -i))
    score, sources = scores[best], (best + 1,)
    missing = claim.terms - passages[best].terms
    if len(missing) >= 2:  # a second passage for the rest of the sentence, when it adds enough
        other = max((i for i in range(len(passages)) if i != best),
                    key=lambda i: (len(missing & passages[i].terms), scores[i], -i), default=None)
        if other is not None and len(missing & passages[other].terms) >= 2:
            both = claim.score(passages[best].terms | passages[other].terms,
                               passages[best].bigrams | passages[other].bigrams)
            if both - score >= PAIR_GAIN:
                score, sources = both, (best + 1, other + 1)
    if score < threshold or len(claim.terms) < MIN_TERMS or len(claim.terms) == MIN_TERMS and score < 1.0:
        return None, score, ()
    return best + 1, score, sources


def _check_passages(passages: Any) -> List[str]:
    if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence):
        raise TypeError(f"passages must be a sequence of str, got {type(passages).__name__}")
    out = []
    for i, p in enumerate(passages):
        text = getattr(p, "text", p)  # a Source, or a str
        if not isinstance(text, str):
            raise TypeError(f"passages[{i}] must be a str (or have a str .text), got {type(text).__name__}")
        out.append(text)
    return out


def attribute(text: str, passages: Sequence[Any], *, question: Optional[str] = None,
              threshold: float = ATTRIBUTION_THRESHOLD, analyzer: Any = None) -> List[Support]:
    """The support of each sentence of an answer: the model's own ``[n]``, else the best passage.

    Parameters
    ----------
    text : str
        The answer as generated.
    passages : sequence of str or Source
        The passages the model was given, in prompt order: ``passages[n - 1]`` is source ``[n]``.
    question : str, optional
        The question answered: its terms are left out of the sentences' (they are evidence of nothing).
    threshold : float in (0, 1], default ATTRIBUTION_THRESHOLD
        The least score for a source; below it the sentence is unsupported (``source`` None). Higher:
        fewer wrong attributions, more sentences left uncited.
    analyzer : Analyzer, optional
        Turns text into terms; default lowercase English stems without :data:`FUNCTION_WORDS`. Pass
        one with another language's stemmer and stopwords for answers in that language.

    Returns
    -------
    list of Support
        One per sentence (see :func:`split_sentences`), in order.

    Examples
    --------
    >>> from ragcore.rag.citations import attribute
    >>> docs = ["Lambda expressions are used to create anonymous functions.",
    ...         "The global statement is a declaration which holds for the entire code block."]
    >>> [(s.source, s.sources) for s in attribute("Lambdas create anonymous functions. Pigs fly.", docs)]
    [(1, (1,)), (None, ())]
    >>> both = attribute("A global declaration holds for the entire block; lambdas create anonymous functions.", docs)
    >>> both[0].source, both[0].sources, both[0].by
    (2, (2, 1), 'attribution')
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    texts = _check_passages(passages)
    threshold = _check_threshold(threshold)
    if analyzer is None:
        analyzer = _default_analyzer()
    elif not callable(analyzer):
        raise TypeError(f"analyzer must be callable (an rc.Analyzer), got {type(analyzer).__name__}")
    if question is not None and not isinstance(question, str):
        raise TypeError(f"question must be a str or None, got {type(question).__name__}")
    spans = split_sentences(text)
    if not spans:
        return []
    prepared = [_Passage(_terms(p, analyzer)) for p in texts]
    asked = frozenset(_terms(question, analyzer)) if question else frozenset()
    out: List[Support] = []
    for a, b in spans:
        sentence = text[a:b]
        claim = _Claim(_terms(sentence, analyzer), asked)
        cited = parse_citations(sentence, len(texts))
        if cited:
            score = claim.score(frozenset().union(*(prepared[c - 1].terms for c in cited)),
                                frozenset().union(*(prepared[c - 1].bigrams for c in cited)))
            out.append(Support(sentence, cited[0], score, "model", tuple(cited), a, b))
        else:
            source, score, sources = _best(claim, prepared, threshold)
            out.append(Support(sentence, source, score, "attribution", sources, a, b))
    return out


_TAIL = re.compile(r"[.!?:;\u2026\u3002\uff01\uff1f]+$")


def cite(text: str, supports: Sequence[Support]) -> str:
    """``text`` with a ``[n]`` marker after each attributed sentence.

    The marker goes before the sentence's final punctuation (``... block [2].``, ``... following [3]:``),
    or at its end when it ends otherwise (a closing quote or bracket, no punctuation). Sentences the model cited itself and
    unsupported ones are left as they are. ``supports`` is what :func:`attribute` returned for ``text``.

    Examples
    --------
    >>> from ragcore.rag.citations import attribute, cite
    >>> answer = "Dogs bark at night! Cats purr."
    >>> cite(answer, attribute(answer, ["Cats purr when happy.", "Dogs bark at night."]))
    'Dogs bark at night [2]! Cats purr [1].'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    out, pos = [], 0
    for s in supports:
        if not isinstance(s, Support):
            raise TypeError(f"supports must hold Support items, got {type(s).__name__}")
        if s.by != "attribution" or not s.sources:
            continue
        if text[s.start:s.end] != s.sentence:
            raise ValueError(f"support {s.sentence!r} is not at {s.start}:{s.end} of text: pass the text it was "
                             "computed from")
        tail = _TAIL.search(s.sentence)
        at = s.end - (len(tail.group(0)) if tail else 0)
        out += [text[pos:at], " " + "".join(f"[{n}]" for n in s.sources)]
        pos = at
    out.append(text[pos:])
    return "".join(out)
