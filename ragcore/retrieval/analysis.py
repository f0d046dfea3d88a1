"""Text analysis: UTF-8 text -> terms (tokenizer, lowercasing, stopwords and stemming).

The tokenizer runs in C++. By default it yields exactly the tokens of
``re.findall(r"(?u)\\b\\w\\w+\\b", text.lower())`` (the pattern of scikit-learn and bm25s), on any
Unicode text; its tables are generated at build time from the building Python's own ``str`` methods.
Invalid UTF-8 (``bytes`` input, or ``str`` with lone surrogates) never raises: it is read as
``data.decode("utf-8", "replace")`` would read it, the invalid sequences acting as separators.
"""
from __future__ import annotations

import threading

from typing import Callable, Iterable, List, Optional, Sequence, Union

from .. import _core

#: Lucene's English stopword list (``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET``), as used by bm25s and Anserini.
ENGLISH_STOPWORDS = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this",
    "to", "was", "will", "with",
)  # fmt: skip

_STOPWORD_LISTS = {"english": ENGLISH_STOPWORDS, "en": ENGLISH_STOPWORDS}
_CACHE_LIMIT = 1 << 20

StemmerLike = Union[None, str, Callable[[List[str]], List[str]]]


def _make_stemmer(stemmer):
    """-> (name or None, function list[str] -> list[str])"""
    if isinstance(stemmer, str):
        try:
            import Stemmer  # PyStemmer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"stemmer={stemmer!r} needs PyStemmer: pip install 'ragcore[stem]' (or pip install PyStemmer)"
            ) from e
        name = stemmer.lower()
        if name not in Stemmer.algorithms():
            raise ValueError(f"unknown stemmer language {stemmer!r}; PyStemmer has {sorted(Stemmer.algorithms())}")
        return name, Stemmer.Stemmer(name).stemWords
    if hasattr(stemmer, "stemWords"):
        return None, stemmer.stemWords
    if callable(stemmer):
        return None, stemmer
    raise TypeError(f"stemmer must be None, a language name or a callable, got {type(stemmer).__name__}")


class Analyzer:
    """Turns text into terms: tokenize (C++), lowercase, drop stopwords, stem.

    Parameters
    ----------
    lowercase : bool, default True
        Apply Python's ``str.lower`` (full Unicode mapping, Final_Sigma included) before tokenizing.
    stopwords : None, "english" or iterable of str, default None
        Words to drop, compared with the (lowercased) token before stemming. ``"english"`` (alias
        ``"en"``) is Lucene's 33-word list (:data:`ENGLISH_STOPWORDS`).
    stemmer : None, str or callable, default None
        A Snowball language name for PyStemmer (``"english"``; ``pip install 'ragcore[stem]'``), an
        object with ``stemWords(list) -> list`` (a ``Stemmer.Stemmer``), or a callable taking a list of
        distinct words and returning their stems (wrap a one-word function ``f`` as
        ``lambda words: [f(w) for w in words]``). Indexes stem once per distinct word of the
        vocabulary, never once per occurrence; an empty stem drops the word.
    min_token_len : int, default 2
        Shortest token kept, in code points (2 reproduces the ``\\w\\w+`` pattern).

    Examples
    --------
    >>> from ragcore import Analyzer
    >>> Analyzer()("The CATS sat; a cat's hat")
    ['the', 'cats', 'sat', 'cat', 'hat']
    >>> Analyzer(stopwords="english", stemmer="english")("The cats are running")
    ['cat', 'run']
    """

    def __init__(
        self,
        lowercase: bool = True,
        stopwords: Union[None, str, Iterable[str]] = None,
        stemmer: StemmerLike = None,
        min_token_len: int = 2,
    ) -> None:
        if not isinstance(lowercase, bool):
            raise TypeError(f"lowercase must be a bool, got {type(lowercase).__name__}")
        if isinstance(min_token_len, bool) or not isinstance(min_token_len, int):
            raise TypeError(f"min_token_len must be an int, got {type(min_token_len).__name__}")
        if min_token_len < 1:
            raise ValueError(f"min_token_len must be >= 1, got {min_token_len}")
        if stopwords is None:
            words: Sequence[str] = ()
            self._stopwords_name: Optional[str] = None
        elif isinstance(stopwords, str):
            key = stopwords.lower()
            if key not in _STOPWORD_LISTS:
                raise ValueError(f"unknown stopword list {stopwords!r}; use 'english', a list of words or None")
            words, self._stopwords_name = _STOPWORD_LISTS[key], "english"
        else:
            words = list(stopwords)
            bad = [w for w in words if not isinstance(w, str)]
            if bad:
                raise TypeError(f"stopwords must be strings, got {bad[0]!r}")
            self._stopwords_name = None
        self.lowercase = lowercase
        self.min_token_len = min_token_len
        self.stopwords = frozenset(words) if stopwords is not None else None
        self.stemmer = stemmer
        self._stemmer_name, self._stem_words = (None, None) if stemmer is None else _make_stemmer(stemmer)
        self._core = _core.Analyzer(lowercase, min_token_len, sorted(words))
        self._cache: dict = {}
        self._lock = threading.Lock()

    @property
    def stems(self) -> bool:
        """Whether this analyzer stems."""
        return self._stem_words is not None

    def stem_words(self, words: List[str]) -> List[str]:
        """Stem distinct words (no caching here; indexes cache per vocabulary entry)."""
        if self._stem_words is None:
            return list(words)
        with self._lock:  # PyStemmer's objects are not thread-safe
            stems = list(self._stem_words(list(words)))
        if len(stems) != len(words) or not all(isinstance(s, str) for s in stems):
            raise TypeError("the stemmer must return one str per word")
        return stems

    def __call__(self, text: Union[str, bytes]) -> List[str]:
        """Terms of one text (str or bytes), in order."""
        tokens = self._core.tokenize(text)
        if self._stem_words is None:
            return tokens
        # Thread-safe: the stems of this call are read from a local dict (another thread may clear the shared
        # cache meanwhile); stem_words runs the stemmer under a lock.
        cache = self._cache
        local = {w: cache.get(w) for w in dict.fromkeys(tokens)}
        new = [w for w, s in local.items() if s is None]
        if new:
            stems = self.stem_words(new)
            local.update(zip(new, stems))
            if len(cache) + len(new) > _CACHE_LIMIT:
                cache.clear()
            cache.update(zip(new, stems))
        return [s for s in (local[w] for w in tokens) if s]

    def to_config(self) -> dict:
        """JSON-serialisable settings (what an index saves). Custom stemmer callables cannot be saved."""
        if self.stemmer is not None and self._stemmer_name is None:
            raise ValueError("an analyzer with a custom stemmer callable cannot be saved; use a PyStemmer language name")
        if self.stopwords is None:
            stop = None
        elif self._stopwords_name:
            stop = self._stopwords_name
        else:
            stop = sorted(self.stopwords)
        return {"lowercase": self.lowercase, "stopwords": stop, "stemmer": self._stemmer_name,
                "min_token_len": self.min_token_len}

    @classmethod
    def from_config(cls, config: dict) -> "Analyzer":
        """The analyzer described by :meth:`to_config`."""
        return cls(lowercase=config["lowercase"], stopwords=config["stopwords"], stemmer=config["stemmer"],
                   min_token_len=config["min_token_len"])

    def __repr__(self) -> str:
        stop = self._stopwords_name or (None if self.stopwords is None else f"<{len(self.stopwords)} words>")
        stem = self._stemmer_name or (None if self.stemmer is None else repr(self.stemmer))
        return (f"Analyzer(lowercase={self.lowercase}, stopwords={stop!r}, stemmer={stem!r}, "
                f"min_token_len={self.min_token_len})")
