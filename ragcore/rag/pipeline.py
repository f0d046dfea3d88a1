"""The RAG pipeline: retrieve -> build a prompt of numbered sources -> generate -> cite the sources.

``rc.RAG(retriever, generator, k=5, texts=passages)`` works with any retriever of ragcore (``BM25``,
``TfIdf``, ``DenseRetriever``, ``Hybrid``: anything with ``search(queries, k) -> Hits``) and any
generator. A *generator* is one of:

- an object with ``generate(prompt, max_new_tokens=..., temperature=0, top_p=1, seed=None, stop=None)
  -> str`` (such as ``rc.Generator``), and optionally ``stream(prompt, ...)`` yielding text pieces,
  ``count_tokens(text) -> int``, ``max_context`` (its window, in tokens), ``apply_chat_template(messages)
  -> str`` and ``last_timings`` (a dict with ``prefill_s``, ``decode_s``, ``first_token_s``, ...);
- a plain callable ``f(prompt: str) -> str`` (your own model, an HTTP client, ...), wrapped as
  :class:`CallableGenerator` (pass it directly, or wrap it yourself to give a tokenizer and a window);
- a Hugging Face transformers model and its tokenizer: :class:`TransformersGenerator(model, tokenizer)`.

The prompt is a system message (the instructions) and a user message (the numbered sources, then the
question). A generator with ``apply_chat_template`` is given these messages (``generate(messages, ...)``)
and the token budget counts ``apply_chat_template(messages)``, exactly what the model sees; any other
generator is given them rendered as plain text (a ``str`` ending in ``Answer:``). ``Answer.prompt`` holds
the rendered text in both cases. The ``[n]`` the model writes are kept; a sentence without one is given
the source that supports it best (:mod:`ragcore.rag.citations`; ``Answer.support``), or none.

The other direction, ragcore retrieval inside your own PyTorch / transformers code, is one function,
:func:`retrieve_context`, which returns the numbered sources as text::

    import ragcore as rc
    from transformers import pipeline

    bm25 = rc.BM25().index(passages)
    pipe = pipeline("text-generation", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    question = "What does the with statement do?"
    context = rc.retrieve_context(bm25, passages, question, k=3, max_chars=3000)
    messages = [{"role": "system", "content": "Answer from the sources; cite them as [1], [2]."},
                {"role": "user", "content": f"Sources:\\n{context}\\n\\nQuestion: {question}"}]
    print(pipe(messages, max_new_tokens=128)[0]["generated_text"][-1]["content"])

or the same model through the pipeline, with parsed citations::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(name); model = AutoModelForCausalLM.from_pretrained(name)
    rag = rc.RAG(bm25, rc.TransformersGenerator(model, tok), k=3, texts=passages)
    print(rag.answer(question).text)

Examples
--------
>>> import ragcore as rc
>>> from ragcore.rag.pipeline import RAG
>>> docs = ["The cat sat on the mat.", "Dogs bark at night.", "Cats purr when happy."]
>>> bm25 = rc.BM25().index(docs, ids=["mat", "bark", "purr"])
>>> rag = RAG(bm25, lambda prompt: "Cats purr [2] and sit on mats [1].", k=2, texts=docs)
>>> ans = rag.answer("Why does the cat purr?")
>>> ans.text
'Cats purr [2] and sit on mats [1].'
>>> [(s.rank, s.id, s.cited) for s in ans.sources]
[(1, 'mat', True), (2, 'purr', True)]
>>> ans.citations, ans.cited_ids
([2, 1], ['purr', 'mat'])
>>> print(ans.prompt.split("Sources:")[1].strip())
[1] The cat sat on the mat.
<BLANKLINE>
[2] Cats purr when happy.
<BLANKLINE>
Question: Why does the cat purr?
<BLANKLINE>
Answer:
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["RAG", "Answer", "Source", "Support", "AnswerStream", "CallableGenerator", "TransformersGenerator",
           "retrieve_context", "parse_citations", "DEFAULT_SYSTEM_PROMPT"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the question using only the numbered sources below. "
    "Cite the sources you use in square brackets, like [1] or [2]. "
    "If the sources do not contain the answer, say that you do not know.")

from .citations import ATTRIBUTION_THRESHOLD, Support, _check_threshold, parse_citations  # noqa: F401 (re-exported)
from .citations import attribute as _attribute, cite as _cite
from .generators import (  # noqa: F401  (re-exported: ragcore.rag.pipeline.CallableGenerator, ...)
    _TIMING_KEYS, CallableGenerator, Messages, TransformersGenerator, _as_generator, _check_int, _render_plain,
    estimate_tokens)


# ------------------------------------------------------------------------------------------- results
@dataclass
class Source:
    """One retrieved passage as it was given to the model.

    Attributes
    ----------
    rank : int
        Its number in the prompt, ``[rank]``, 1-based, best first.
    id : object
        The caller's document id (``Hits.ids``), or the index when the retriever has no ids.
    index : int
        The document index in the retriever (``Hits.indices``).
    score : float
        The retrieval score.
    text : str
        The text put in the prompt (the start of the passage when ``truncated``).
    cited : bool
        Whether the answer cites it.
    truncated : bool
        Whether the token budget cut its text.
    """

    rank: int
    id: Any
    index: int
    score: float
    text: str
    cited: bool = False
    truncated: bool = False


@dataclass
class Answer:
    """A generated answer with its sources.

    Attributes
    ----------
    question, prompt : str
    text : str
        The answer to show: the model's text with a ``[n]`` after each sentence attributed to source n.
    sources : list of Source
        The sources in the prompt, in rank order (those the budget dropped are absent).
    citations : list of int
        Source numbers ``text`` cites, the model's and the attributed ones, in order of first appearance
        (numbers outside ``1..len(sources)`` are ignored).
    timings : dict
        Seconds: ``retrieve_s``, ``prompt_s``, ``generate_s``, ``total_s``; plus what the generator reports
        in ``last_timings`` (``prefill_s``, ``decode_s``, ``first_token_s``, token counts; with prompt lookup
        ``steps``, ``draft_tokens`` and ``accepted_tokens``); when streaming,
        ``first_token_s`` is measured from the generator call to the first text piece if not reported.
    dropped : int
        Retrieved sources left out of the prompt by the token budget.
    support : list of Support
        One per sentence of ``raw_text``: the source the model cited (``by="model"``) or that attribution
        found (``by="attribution"``), or None; empty with ``RAG(..., attribute=False)``.
    raw_text : str
        The text as the model wrote it (default: ``text``).
    """

    question: str
    text: str
    sources: List[Source]
    citations: List[int]
    prompt: str
    timings: Dict[str, float] = field(default_factory=dict)
    dropped: int = 0
    support: List[Support] = field(default_factory=list)
    raw_text: Optional[str] = None

    def __post_init__(self) -> None:
        if self.raw_text is None:
            self.raw_text = self.text

    @property
    def cited_ids(self) -> List[Any]:
        """The ids of the cited sources, in citation order."""
        return [self.sources[c - 1].id for c in self.citations]

    @property
    def cited_sources(self) -> List[Source]:
        return [self.sources[c - 1] for c in self.citations]

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (numpy scalars become Python numbers)."""
        d = asdict(self)
        d["cited_ids"] = self.cited_ids
        return _plain(d)

    def __str__(self) -> str:
        return self.text


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


# -------------------------------------------------------------------------------------- validation
def _check_question(question: Any) -> str:
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if not question.strip():
        raise ValueError("question is empty")
    return question.strip()


def _check_retriever(retriever: Any) -> None:
    if not callable(getattr(retriever, "search", None)):
        raise TypeError(f"retriever ({type(retriever).__name__}) has no search(queries, k) method")


def _check_texts(texts: Any) -> None:
    if texts is None or isinstance(texts, (str, bytes)) or not (
            isinstance(texts, Mapping) or hasattr(texts, "__getitem__") and hasattr(texts, "__len__")):
        raise TypeError("texts must be a sequence of passage texts indexed like the retriever's documents, or a "
                        f"mapping from document id to text; got {type(texts).__name__}")


# ---------------------------------------------------------------------------------------- retrieval
def _retrieve(retriever: Any, texts: Any, question: str, k: int) -> List[Source]:
    hits = retriever.search(question, k=k)
    indices = np.asarray(hits.indices)
    if indices.ndim != 2 or indices.shape[0] != 1:
        raise ValueError(f"retriever returned hits of shape {indices.shape} for one query; expected (1, k)")
    scores = np.asarray(hits.scores)
    ids = hits.ids
    by_id = isinstance(texts, Mapping)
    out: List[Source] = []
    for j, idx in enumerate(indices[0].tolist()):
        if idx < 0:  # padding: fewer than k documents matched
            continue
        doc_id = ids[0, j] if ids is not None else idx
        if by_id:
            if doc_id not in texts:
                raise KeyError(f"texts has no passage for document id {doc_id!r} (index {idx}, rank {len(out) + 1}) "
                               "returned by the retriever")
            text = texts[doc_id]
        else:
            if idx >= len(texts):
                raise IndexError(f"texts has {len(texts)} passages but the retriever returned document index {idx} "
                                 f"(id {doc_id!r}); texts must hold every indexed document, in indexing order")
            text = texts[idx]
        if not isinstance(text, str):
            raise TypeError(f"texts[{(doc_id if by_id else idx)!r}] must be a str, got {type(text).__name__}")
        out.append(Source(rank=len(out) + 1, id=_plain(doc_id), index=int(idx), score=float(scores[0, j]), text=text))
    return out


def _number(sources: Sequence[Source]) -> str:
    return "\n\n".join(f"[{s.rank}] {' '.join(s.text.split())}" for s in sources)


def _fit(sources: List[Source], render: Callable[[List[Source]], Any], size: Callable[[Any], int],
         limit: int, what: str) -> Tuple[List[Source], int]:
    """Keep the best-ranked sources whose rendering fits ``limit``; truncate the top one if it alone is too big.

    ``render(sources)`` builds the prompt, ``size`` measures it. Returns the kept sources and the count dropped.
    """
    base = size(render([]))
    if base > limit:
        raise ValueError(f"the question does not fit: the prompt without any source takes {base} {what}, "
                         f"more than the {limit} available")
    n = len(sources)
    # the prompt grows with each source: binary search for the largest prefix that fits
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(render(sources[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    if lo > 0 or n == 0:
        return sources[:lo], n - lo
    # not even the top source fits whole: keep its longest start that fits (on a word boundary when possible)
    top = sources[0]
    text = " ".join(top.text.split())

    def cut(m: int) -> Source:
        kept = text[:m]
        if m < len(text) and " " in kept and not text[m].isspace():
            kept = kept[:kept.rindex(" ")]  # shorter, so it still fits
        return Source(top.rank, top.id, top.index, top.score, kept.rstrip() + " ...", truncated=True)

    a, b = 0, len(text) - 1  # characters kept, fewer than all
    while a < b:
        mid = (a + b + 1) // 2
        if size(render([cut(mid)])) <= limit:
            a = mid
        else:
            b = mid - 1
    if a == 0 or not cut(a).text[:-4].strip():
        return [], n
    return [cut(a)], n - 1


def retrieve_context(retriever: Any, texts: Any, question: str, k: int = 5, max_chars: Optional[int] = None) -> str:
    """The top-``k`` passages for ``question`` as numbered text, ``[1] ...\\n\\n[2] ...``, for your own prompt.

    Parameters
    ----------
    retriever : ragcore retriever
        Anything with ``search(queries, k) -> Hits``.
    texts : sequence of str or mapping
        The passages: indexed by ``Hits.indices`` (a sequence in indexing order) or by document id (a mapping).
    question : str
    k : int, default 5
    max_chars : int, optional
        Length limit of the returned text: lowest-ranked passages are dropped first, and the top one is
        cut (keeping its start) when it alone is too long.

    Examples
    --------
    >>> import ragcore as rc
    >>> docs = ["Paris is the capital of France.", "Berlin is in Germany.", "France has cheese."]
    >>> print(rc.retrieve_context(rc.BM25().index(docs), docs, "capital of France", k=2))
    [1] Paris is the capital of France.
    <BLANKLINE>
    [2] France has cheese.
    """
    _check_retriever(retriever)
    _check_texts(texts)
    question = _check_question(question)
    k = _check_int("k", k, 1)
    sources = _retrieve(retriever, texts, question, k)
    if max_chars is not None:
        max_chars = _check_int("max_chars", max_chars, 1)
        sources, _ = _fit(sources, _number, len, max_chars, "characters")
    return _number(sources)


# -------------------------------------------------------------------------------------------- RAG
class AnswerStream:
    """What :meth:`RAG.stream` returns: iterate it for the text pieces; then ``.answer`` holds the Answer.

    Retrieval and the prompt are done when it is created (so bad input raises at once, and ``.sources``
    can be shown before the text); generation runs as it is iterated.
    """

    def __init__(self, rag: "RAG", question: str, sources: List[Source], prompt: str, model_input: Any,
                 dropped: int, timings: Dict[str, float], gen_kwargs: Dict[str, Any], t_start: float) -> None:
        self.question = question
        self.sources = sources
        self.prompt = prompt
        self._input = model_input
        self._rag = rag
        self._dropped = dropped
        self._timings = timings
        self._kw = gen_kwargs
        self._t_start = t_start
        self._answer: Optional[Answer] = None
        self._started = False

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("an AnswerStream can be iterated only once")
        self._started = True
        gen = self._rag.generator
        pieces: List[str] = []
        t0 = time.perf_counter()
        first = None
        if callable(getattr(gen, "stream", None)):
            it = gen.stream(self._input, **self._kw)
        else:
            it = iter([gen.generate(self._input, **self._kw)])
        for piece in it:
            if not piece:
                continue
            if first is None:
                first = time.perf_counter() - t0
            pieces.append(piece)
            yield piece
        timings = dict(self._timings, generate_s=time.perf_counter() - t0)
        if first is not None:
            timings["first_token_s"] = first
        timings.update(_reported(gen))
        self._answer = self._rag._finish(self.question, "".join(pieces), self.sources, self.prompt,
                                         self._dropped, timings, self._t_start)

    @property
    def answer(self) -> Answer:
        """The Answer, once the stream is exhausted (RuntimeError before)."""
        if self._answer is None:
            raise RuntimeError("the answer is not complete: iterate the stream to its end first")
        return self._answer


def _reported(gen: Any) -> Dict[str, float]:
    rep = getattr(gen, "last_timings", None)
    if not isinstance(rep, Mapping):
        return {}
    return {k: (int(rep[k]) if k.endswith("_tokens") or k == "steps" else float(rep[k]))
            for k in _TIMING_KEYS if k in rep and rep[k] is not None}


class RAG:
    """Retrieval-augmented generation: retrieve ``k`` passages, number them in a prompt, generate, parse citations.

    Parameters
    ----------
    retriever : ragcore retriever
        ``rc.BM25``, ``rc.TfIdf``, ``rc.DenseRetriever``, ``rc.Hybrid`` or anything with ``search(queries, k)``
        returning :class:`~ragcore.Hits`.
    generator : generator or callable
        See the module docs: an object with ``generate(prompt, max_new_tokens=..., ...) -> str`` (``rc.Generator``,
        :class:`CallableGenerator`, :class:`TransformersGenerator`) or a callable ``prompt -> str``.
    k : int, default 5
        Passages retrieved per question.
    max_context_tokens : int, optional
        The model's window; default the generator's ``max_context`` (no budget when neither is known). The
        prompt is fitted to ``max_context_tokens - max_new_tokens`` tokens, counted with the generator's
        ``count_tokens`` (else estimated as characters / 3): the lowest-ranked sources are dropped first;
        when the top source alone is too long its start is kept; the question is never cut (a ValueError
        names the sizes when the question alone does not fit).
    max_new_tokens : int, default 256
    system_prompt : str
        The instructions; the default asks to answer from the sources and cite them as [1], [2].
    texts : sequence of str or mapping, required
        The passage texts: a sequence indexed by ``Hits.indices`` (the documents in indexing order), or a
        mapping from document id (``Hits.ids``) to text. Without it, ``retriever.texts`` is used when present.
    attribute : bool, default True
        Cite the best-supporting source after each sentence the model left uncited
        (:func:`~ragcore.rag.citations.attribute`; see :class:`Answer`). False: the model's citations only.
    attribute_threshold : float, default ATTRIBUTION_THRESHOLD
        The least support score (0 to 1) for an attributed citation.

    Examples
    --------
    >>> import ragcore as rc
    >>> from ragcore.rag.pipeline import RAG, CallableGenerator
    >>> docs = ["Rust is a systems language.", "Python is dynamic.", "Go has goroutines."]
    >>> gen = CallableGenerator(lambda p: "It is dynamic [1]." if "Python" in p else "?", max_context=200)
    >>> rag = RAG(rc.TfIdf().index(docs), gen, k=3, texts=docs, max_new_tokens=20)
    >>> stream = rag.stream("Is Python dynamic?")
    >>> "".join(stream)
    'It is dynamic [1].'
    >>> stream.answer.cited_ids, sorted(stream.answer.timings)[:3]
    ([1], ['first_token_s', 'generate_s', 'prompt_s'])
    """

    def __init__(self, retriever: Any, generator: Any, k: int = 5, *, max_context_tokens: Optional[int] = None,
                 max_new_tokens: int = 256, system_prompt: str = DEFAULT_SYSTEM_PROMPT, texts: Any = None,
                 attribute: bool = True, attribute_threshold: float = ATTRIBUTION_THRESHOLD) -> None:
        _check_retriever(retriever)
        self.retriever = retriever
        self.generator = _as_generator(generator)
        self.k = _check_int("k", k, 1)
        self.max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1)
        if max_context_tokens is None:
            max_context_tokens = getattr(self.generator, "max_context", None)
        self.max_context_tokens = (None if max_context_tokens is None
                                   else _check_int("max_context_tokens", max_context_tokens, 1))
        if not isinstance(system_prompt, str):
            raise TypeError(f"system_prompt must be a str, got {type(system_prompt).__name__}")
        self.system_prompt = system_prompt
        if texts is None:
            texts = getattr(retriever, "texts", None)
            if texts is None:
                raise TypeError("RAG needs the passage texts: pass texts= (a sequence in indexing order, or a "
                                "mapping from document id to text)")
        _check_texts(texts)
        self.texts = texts
        if not isinstance(attribute, bool):
            raise TypeError(f"attribute must be a bool, got {type(attribute).__name__}")
        self.attribute, self.attribute_threshold = attribute, _check_threshold(attribute_threshold)

    # -- prompt
    def messages(self, question: str, sources: Sequence[Source]) -> Messages:
        """The chat messages for ``question`` and ``sources``: the system prompt, then sources and question."""
        body = _number(sources) if sources else "(no sources)"
        return [{"role": "system", "content": self.system_prompt},
                {"role": "user", "content": f"Sources:\n{body}\n\nQuestion: {question}"}]

    def build_prompt(self, question: str, sources: Sequence[Source]) -> str:
        """The prompt as text: the messages through the generator's chat template when it has one, else plain."""
        msgs = self.messages(question, sources)
        template = getattr(self.generator, "apply_chat_template", None)
        return template(msgs) if callable(template) else _render_plain(msgs)

    def count_tokens(self, text: str) -> int:
        count = getattr(self.generator, "count_tokens", None)
        return int(count(text)) if callable(count) else estimate_tokens(text)

    def _model_input(self, question: str, sources: Sequence[Source]) -> Union[str, Messages]:
        # a generator with a chat template gets the messages (it renders them exactly as build_prompt does
        # and adds no special tokens of its own); any other gets the plain-text prompt
        if callable(getattr(self.generator, "apply_chat_template", None)):
            return self.messages(question, sources)
        return self.build_prompt(question, sources)

    def _prepare(self, question: Any, k: Optional[int], max_new_tokens: int):
        t_start = time.perf_counter()
        question = _check_question(question)
        k = self.k if k is None else _check_int("k", k, 1)
        max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1)
        t0 = time.perf_counter()
        sources = _retrieve(self.retriever, self.texts, question, k)
        t1 = time.perf_counter()
        dropped = 0
        if self.max_context_tokens is not None:
            limit = self.max_context_tokens - max_new_tokens
            if limit <= 0:
                raise ValueError(f"max_new_tokens ({max_new_tokens}) leaves no room for the prompt in the "
                                 f"{self.max_context_tokens}-token window")
            sources, dropped = _fit(sources, lambda s: self.build_prompt(question, s), self.count_tokens, limit,
                                    f"tokens (window {self.max_context_tokens} - max_new_tokens {max_new_tokens})")
        prompt = self.build_prompt(question, sources)
        model_input = self._model_input(question, sources)
        timings = {"retrieve_s": t1 - t0, "prompt_s": time.perf_counter() - t1}
        return question, sources, prompt, model_input, dropped, timings, t_start

    def _finish(self, question: str, text: str, sources: List[Source], prompt: str, dropped: int,
                timings: Dict[str, float], t_start: float) -> Answer:
        support = (_attribute(text, sources, question=question, threshold=self.attribute_threshold)
                   if self.attribute else [])
        shown = _cite(text, support)
        citations = parse_citations(shown, len(sources))
        for s in sources:
            s.cited = s.rank in citations
        timings["total_s"] = time.perf_counter() - t_start
        return Answer(question=question, text=shown, sources=sources, citations=citations, prompt=prompt,
                      timings=timings, dropped=dropped, support=support, raw_text=text)

    # -- public
    def answer(self, question: str, *, k: Optional[int] = None, **gen_kwargs: Any) -> Answer:
        """Retrieve, generate and return the :class:`Answer`.

        Parameters
        ----------
        question : str
        k : int, optional
            Overrides the pipeline's ``k``.
        **gen_kwargs
            Passed to ``generator.generate``: ``max_new_tokens`` (default the pipeline's), ``temperature``,
            ``top_p``, ``seed``, ``stop``.
        """
        gen_kwargs.setdefault("max_new_tokens", self.max_new_tokens)
        question, sources, prompt, model_input, dropped, timings, t_start = self._prepare(
            question, k, gen_kwargs["max_new_tokens"])
        t0 = time.perf_counter()
        text = self.generator.generate(model_input, **gen_kwargs)
        if not isinstance(text, str):
            raise TypeError(f"the generator returned {type(text).__name__}, expected str")
        timings["generate_s"] = time.perf_counter() - t0
        timings.update(_reported(self.generator))
        return self._finish(question, text, sources, prompt, dropped, timings, t_start)

    def answer_batch(self, questions: Sequence[str], *, k: Optional[int] = None, **gen_kwargs: Any) -> List[Answer]:
        """:meth:`answer` for several questions, generated together when the generator has
        ``generate_batch`` (ragcore's :class:`~ragcore.Generator`: one batched prefill and decode), else one
        after the other.

        Each :class:`Answer` is what :meth:`answer` gives for its question (greedy decoding; float sums
        in another order can flip a near-tie). Their ``generate_s`` and the generator's reported timings
        are those of the whole batch, with ``batch`` the number of questions.

        Examples
        --------
        >>> answers = rag.answer_batch(["What does the with statement do?", "What is a generator?"])  # doctest: +SKIP
        >>> [a.citations for a in answers]                                                          # doctest: +SKIP
        [[1], [2]]
        """
        if isinstance(questions, (str, bytes)) or not isinstance(questions, Sequence) or not questions:
            raise ValueError("questions must be a non-empty list of str")
        gen_kwargs.setdefault("max_new_tokens", self.max_new_tokens)
        prepared = [self._prepare(q, k, gen_kwargs["max_new_tokens"]) for q in questions]
        batch = getattr(self.generator, "generate_batch", None)
        t0 = time.perf_counter()
        if callable(batch):
            texts = batch([p[3] for p in prepared], **gen_kwargs)
        else:
            texts = [self.generator.generate(p[3], **gen_kwargs) for p in prepared]
        if len(texts) != len(prepared) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"the generator returned {type(texts).__name__} of {len(texts)} items, expected "
                            f"{len(prepared)} str")
        generate_s = time.perf_counter() - t0
        reported = _reported(self.generator)
        rows = getattr(self.generator, "last_tokens", None) if callable(batch) else None
        answers = []
        for i, ((question, sources, prompt, _, dropped, timings, t_start), text) in enumerate(zip(prepared, texts)):
            timings.update(reported, generate_s=generate_s, batch=len(prepared))
            if "prompt_tokens" in reported:          # the batch's totals -> this answer's own counts
                timings["prompt_tokens"] = self.count_tokens(prompt)
                if isinstance(rows, list) and len(rows) == len(prepared) and isinstance(rows[i], list):
                    timings["new_tokens"] = len(rows[i])
            answers.append(self._finish(question, text, sources, prompt, dropped, timings, t_start))
        return answers

    def stream(self, question: str, *, k: Optional[int] = None, **gen_kwargs: Any) -> AnswerStream:
        """Like :meth:`answer`, streaming: returns an :class:`AnswerStream` to iterate for the text pieces.

        Retrieval happens now; after the last piece, ``stream.answer`` is the same :class:`Answer` that
        :meth:`answer` returns (the text is the pieces joined). Generators without ``stream`` give one piece.
        """
        gen_kwargs.setdefault("max_new_tokens", self.max_new_tokens)
        question, sources, prompt, model_input, dropped, timings, t_start = self._prepare(
            question, k, gen_kwargs["max_new_tokens"])
        return AnswerStream(self, question, sources, prompt, model_input, dropped, timings, gen_kwargs, t_start)

    def __call__(self, question: str, **kw: Any) -> Answer:
        return self.answer(question, **kw)

    def __repr__(self) -> str:
        return (f"RAG({type(self.retriever).__name__}, {self.generator!r}, k={self.k}, "
                f"max_context_tokens={self.max_context_tokens}, max_new_tokens={self.max_new_tokens})")
