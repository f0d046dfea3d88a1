"""Per-row decoding rules shared by ``Generator.stream`` and ``Generator.generate_batch``: the next token
from a row's logits, end of sequence, stop strings, the token limit, and incremental detokenisation.

Detokenisation is incremental (the scheme of vLLM's ``detokenize_incrementally``): each step decodes only
the few tokens since the last complete piece together with a short window before them, instead of all the
tokens generated so far, so a step costs the same at token 10 and token 4,000. Decoding the window with
its left context keeps tokenizers whose decoders depend on the position (SentencePiece's leading space)
exact, and a piece ending in an incomplete UTF-8 sequence (U+FFFD) waits for the next token. The text
built this way equals ``tokenizer.decode(tokens, skip_special_tokens=True)`` (tested with random token
sequences on byte-level BPE as in GPT-2, Llama 3, Qwen and SmolLM2, on SentencePiece's Metaspace, and on
Llama 2-style byte fallback). One exception, by design: byte fallback's decoder turns *every* byte token of
a run that is not valid UTF-8 into U+FFFD, the characters completed earlier in the run included (e.g.
``é`` followed by a truncated emoji decodes as four U+FFFD); the pieces keep such a character, which was
already shown, and end with the pending bytes decoded alone (one U+FFFD per invalid byte).

Stop strings are searched only where a new occurrence can be: in the new piece and the ``len(stop) - 1``
characters before it.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np

__all__ = ["IncrementalDetokenizer", "PromptLookup", "RowDecoder"]


class IncrementalDetokenizer:
    """Token ids in, text out, piece by piece.

    ``add(token)`` returns the text that token completes ("" while a multi-byte character or a
    position-dependent piece is pending); ``flush()`` returns what is still pending at the end. The
    pieces concatenate to ``tokenizer.decode(tokens, skip_special_tokens=True)``.

    Examples
    --------
    >>> class Bytes:                     # a stand-in tokenizer: one token per UTF-8 byte
    ...     def decode(self, ids, skip_special_tokens=True):
    ...         return bytes(ids).decode("utf-8", "replace")
    >>> d = IncrementalDetokenizer(Bytes())
    >>> [d.add(b) for b in "é!".encode()] + [d.flush()]
    ['', 'é', '!', '']
    """

    __slots__ = ("_tok", "tokens", "_prefix", "_read", "partial")

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.tokens: List[int] = []
        self._prefix = 0    # start of the window decoded as left context
        self._read = 0      # tokens before this one have been returned as text
        #: the complete characters of the pending tokens, when ``add`` returned "" (else "")
        self.partial = ""

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def add(self, token: int) -> str:
        self.tokens.append(int(token))
        done = self._decode(self.tokens[self._prefix:self._read])
        text = self._decode(self.tokens[self._prefix:])
        if len(text) > len(done) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.tokens)
            self.partial = ""
            return text[len(done):]
        self.partial = text[len(done):].rstrip("\ufffd") if text.startswith(done) else ""
        return ""

    def flush(self) -> str:
        """The text of the tokens still pending (an incomplete character decodes as U+FFFD, as in a
        full decode)."""
        if self._read == len(self.tokens):
            return ""
        done = self._decode(self.tokens[self._prefix:self._read])
        text = self._decode(self.tokens[self._prefix:])
        if not text.startswith(done):   # byte fallback's invalid run: decode the pending tokens alone
            text, done = self._decode(self.tokens[self._read:]), ""
        self._prefix = self._read = len(self.tokens)
        self.partial = ""
        return text[len(done):]


class RowDecoder:
    """One row of a generation: picks its next tokens and keeps its text.

    Parameters
    ----------
    tokenizer
        Anything with ``decode(ids, skip_special_tokens=True)``.
    eos : set of int
        End-of-sequence token ids: picking one ends the row (it is not part of ``tokens``).
    limit : int
        At most this many new tokens.
    stops : list of str
        The text ends before the first occurrence of any of these (the row ends there).
    adjust : callable(logits, tokens) -> None
        Modifies the logits in place before the pick (minimum length, repetition penalty).
    pick : callable(logits) -> int
        Chooses the token (greedy or sampled).
    """

    __slots__ = ("_detok", "_eos", "limit", "_stops", "_longest_stop", "_adjust", "_pick", "text", "done")

    def __init__(self, tokenizer, eos, limit: int, stops: Sequence[str],
                 adjust: Callable[[np.ndarray, List[int]], None], pick: Callable[[np.ndarray], int]) -> None:
        self._detok = IncrementalDetokenizer(tokenizer)
        self._eos = eos
        self.limit = int(limit)
        self._stops = list(stops)
        self._longest_stop = max((len(s) for s in self._stops), default=0)
        self._adjust, self._pick = adjust, pick
        self.text = ""
        self.done = self.limit <= 0

    @property
    def tokens(self) -> List[int]:
        """The tokens generated so far (end of sequence excluded)."""
        return self._detok.tokens

    def step(self, logits: np.ndarray) -> int:
        """Pick the next token from this row's logits (adjusted in place), append it and its text;
        returns the token to feed back. Sets ``done`` at end of sequence, a stop string or the limit."""
        self._adjust(logits, self._detok.tokens)
        tok = self._pick(logits)
        if tok in self._eos:
            self._finish()
            return tok
        piece = self._detok.add(tok)
        # a stop string may also be complete before a pending multi-byte character (partial text)
        stopped = self._append(piece) if piece else self._append(self._detok.partial, keep=False)
        if stopped:
            return tok
        if len(self._detok.tokens) >= self.limit:
            self._finish()
        return tok

    def ready(self) -> int:
        """Length of the text that is final: all of it once done, else all but a tail that could be the
        start of a stop string."""
        return len(self.text) if self.done else len(self.text) - _stop_prefix_len(self.text, self._stops)

    def _append(self, piece: str, keep: bool = True) -> bool:
        """Add text (or, with ``keep=False``, only look for a stop string in it); True when a stop string
        appeared: the text is cut before it and the row is done."""
        if not piece:
            return False
        start = max(0, len(self.text) - self._longest_stop + 1)
        text = self.text + piece
        cut = _first_stop(text, self._stops, start) if self._stops else None
        if cut is not None:
            self.text, self.done = text[:cut], True
            return True
        if keep:
            self.text = text
        return False

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self._append(self._detok.flush())


class PromptLookup:
    """Draft tokens for greedy decoding by prompt lookup (Saxena 2023; transformers'
    ``prompt_lookup_num_tokens``): the tokens that followed the latest earlier occurrence of the text's
    last n-gram, longest n-gram first. A RAG answer quotes its sources, so the draft is often right; the
    model then checks a whole draft in one forward pass and keeps its longest correct prefix.

    Parameters
    ----------
    ids : list of int
        The prompt.
    max_ngram, min_ngram : int
        The n-gram sizes tried, longest first.

    Lookups cost O(1): each n-gram is indexed once, by the position of the token after its latest
    occurrence, as the text grows.

    Examples
    --------
    >>> d = PromptLookup([5, 6, 7, 8, 9, 5, 6])
    >>> d.draft([], 3)               # the text ends in 5 6, which was followed by 7 8 9
    [7, 8, 9]
    >>> d.draft([7, 1], 3)           # ... 5 6 7 1: "7 1" and "1" never occurred before
    []
    """

    __slots__ = ("_hist", "_n", "_sizes", "_index", "_indexed")

    def __init__(self, ids: Sequence[int], max_ngram: int = 3, min_ngram: int = 2) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self._hist = [int(t) for t in ids]
        self._n = len(self._hist)
        self._sizes = range(max_ngram, min_ngram - 1, -1)
        self._index = {g: {} for g in self._sizes}
        self._indexed = 0

    def draft(self, new: Sequence[int], k: int) -> List[int]:
        """Up to ``k`` tokens predicted to follow the prompt + ``new`` (the tokens generated so far; the
        caller appends to the same list, earlier entries unchanged)."""
        hist = self._hist
        hist.extend(int(t) for t in new[len(hist) - self._n:])
        end = len(hist)
        for j in range(max(self._indexed, 1), end):      # j: the token after the n-gram ending at j - 1
            for g in self._sizes:
                if j >= g:
                    self._index[g][tuple(hist[j - g:j])] = j
        self._indexed = end
        if k <= 0:
            return []
        for g in self._sizes:
            j = self._index[g].get(tuple(hist[end - g:])) if end >= g else None
            if j is not None:
                return hist[j:j + k]
        return []


def check_sampling(max_new_tokens, temperature, top_p, stop, min_new_tokens=0, repetition_penalty=1.0) -> List[str]:
    """Validate the sampling arguments; returns the stop strings as a list."""
    for name, v in (("max_new_tokens", max_new_tokens), ("min_new_tokens", min_new_tokens)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if not (temperature >= 0):
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not (repetition_penalty > 0) or repetition_penalty == float("inf"):
        raise ValueError(f"repetition_penalty must be a finite number > 0, got {repetition_penalty!r}")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop must be a non-empty str or a list of them, got {stop!r}")
    return stops


def _first_stop(text: str, stops: Sequence[str], start: int = 0) -> Optional[int]:
    """Position of the first occurrence of a stop string that begins at ``start`` or later."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
