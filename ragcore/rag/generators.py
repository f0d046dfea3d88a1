"""Generators for :class:`ragcore.RAG` besides ragcore's own :class:`~ragcore.Generator`: any ``str -> str``
callable (:class:`CallableGenerator`) and a transformers model (:class:`TransformersGenerator`), plus the
token estimate used when a generator has no tokenizer. ``ragcore.rag.pipeline`` re-exports all of them.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from .._validate import check_int as _check_int

__all__ = ["CallableGenerator", "TransformersGenerator", "estimate_tokens"]

Messages = List[Dict[str, str]]
_TIMING_KEYS = ("prefill_s", "decode_s", "first_token_s", "prompt_tokens", "new_tokens", "steps", "draft_tokens",
                "accepted_tokens")


def _cut_at_stop(text: str, stop: Union[None, str, Sequence[str]]) -> str:
    if not stop:
        return text
    stops = [stop] if isinstance(stop, str) else list(stop)
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def _render_plain(messages: Messages) -> str:
    """Messages as plain text, for generators without a chat template."""
    parts = [m["content"] for m in messages]
    return "\n\n".join(parts) + "\n\nAnswer:"


class CallableGenerator:
    """A plain function ``fn(prompt: str) -> str`` as a generator.

    Parameters
    ----------
    fn : callable
        Takes the prompt, returns the generated text (without the prompt). Sampling options are not
        passed to it; ``stop`` strings are applied to its output here.
    count_tokens : callable, optional
        ``count_tokens(text) -> int`` of the model's tokenizer, for the token budget (default: an estimate
        of one token per 3 characters).
    max_context : int, optional
        The model's window in tokens; ``RAG`` fits the prompt to it when set.
    stream_fn : callable, optional
        ``stream_fn(prompt) -> iterable of str`` for :meth:`stream`; default: one piece, ``fn(prompt)``.

    Examples
    --------
    >>> from ragcore.rag.pipeline import CallableGenerator
    >>> gen = CallableGenerator(lambda p: p.upper() + " END", max_context=512)
    >>> gen.generate("hi there", stop=["END"])
    'HI THERE '
    >>> gen.count_tokens("123456789")
    3
    """

    def __init__(self, fn: Callable[[str], str], count_tokens: Optional[Callable[[str], int]] = None,
                 max_context: Optional[int] = None, stream_fn: Optional[Callable[[str], Any]] = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        for name, f in (("count_tokens", count_tokens), ("stream_fn", stream_fn)):
            if f is not None and not callable(f):
                raise TypeError(f"{name} must be callable or None, got {type(f).__name__}")
        if max_context is not None:
            max_context = _check_int("max_context", max_context, 1)
        self.fn = fn
        self._count = count_tokens
        self.max_context = max_context
        self.stream_fn = stream_fn

    def count_tokens(self, text: str) -> int:
        return int(self._count(text)) if self._count is not None else estimate_tokens(text)

    def _prompt(self, prompt: Union[str, Messages]) -> str:
        return prompt if isinstance(prompt, str) else _render_plain(prompt)

    def generate(self, prompt: Union[str, Messages], max_new_tokens: int = 256, temperature: float = 0,
                 top_p: float = 1, seed: Optional[int] = None, stop: Any = None, **kw: Any) -> str:
        out = self.fn(self._prompt(prompt))
        if not isinstance(out, str):
            raise TypeError(f"the generator function returned {type(out).__name__}, expected str")
        return _cut_at_stop(out, stop)

    def stream(self, prompt: Union[str, Messages], max_new_tokens: int = 256, temperature: float = 0,
               top_p: float = 1, seed: Optional[int] = None, stop: Any = None, **kw: Any) -> Iterator[str]:
        if self.stream_fn is None:
            yield self.generate(prompt, max_new_tokens, temperature, top_p, seed, stop)
            return
        if not stop:
            yield from self.stream_fn(self._prompt(prompt))
            return
        # hold back enough text to see a stop string that spans pieces
        stops = [stop] if isinstance(stop, str) else [s for s in stop if s]
        hold = max(len(s) for s in stops) - 1
        buf = ""
        for piece in self.stream_fn(self._prompt(prompt)):
            buf += piece
            cut = _cut_at_stop(buf, stops)
            if len(cut) < len(buf):
                if cut:
                    yield cut
                return
            if len(buf) > hold:
                yield buf[:len(buf) - hold]
                buf = buf[len(buf) - hold:]
        if buf:
            yield buf

    def __repr__(self) -> str:
        return f"CallableGenerator({getattr(self.fn, '__name__', type(self.fn).__name__)}, max_context={self.max_context})"


class TransformersGenerator:
    """A Hugging Face transformers causal LM and its tokenizer as a generator (greedy by default).

    transformers and torch are imported when it is used (``pip install ragcore[torch]`` or
    ``pip install transformers torch``).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal language model (``AutoModelForCausalLM``).
    tokenizer : transformers tokenizer
        Its tokenizer; its chat template, when it has one, formats the RAG prompt.
    max_context : int, optional
        The window in tokens (default: ``model.config.max_position_embeddings`` when known).
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_context: Optional[int] = None) -> None:
        if not callable(getattr(model, "generate", None)):
            raise TypeError(f"model ({type(model).__name__}) has no generate method; expected a transformers "
                            "causal LM (AutoModelForCausalLM)")
        if not callable(tokenizer):
            raise TypeError(f"tokenizer ({type(tokenizer).__name__}) is not a transformers tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        if max_context is None:
            max_context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_context = None if max_context is None else _check_int("max_context", max_context, 1)
        self.last_timings: Dict[str, float] = {}

    @property
    def _has_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def apply_chat_template(self, messages: Messages) -> str:
        if not self._has_template:
            return _render_plain(messages)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, text: str) -> List[int]:
        # a templated prompt already holds its special tokens
        return list(self.tokenizer(text, add_special_tokens=not self._has_template)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def _inputs(self, prompt: Union[str, Messages]):
        torch = _require("torch")
        text = prompt if isinstance(prompt, str) else self.apply_chat_template(prompt)
        ids = torch.tensor([self._encode(text)], dtype=torch.long)
        device = getattr(self.model, "device", None)
        if device is not None:
            ids = ids.to(device)
        return torch, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def _gen_kwargs(self, torch: Any, max_new_tokens: int, temperature: float, top_p: float,
                    seed: Optional[int]) -> Dict[str, Any]:
        kw: Dict[str, Any] = {"max_new_tokens": int(max_new_tokens)}
        if temperature and temperature > 0:
            kw.update(do_sample=True, temperature=float(temperature), top_p=float(top_p))
            if seed is not None:
                torch.manual_seed(int(seed))
        else:
            kw.update(do_sample=False)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.tokenizer, "eos_token_id", None)
        if pad is not None:
            kw["pad_token_id"] = pad
        return kw

    def generate(self, prompt: Union[str, Messages], max_new_tokens: int = 256, temperature: float = 0,
                 top_p: float = 1, seed: Optional[int] = None, stop: Any = None, **kw: Any) -> str:
        torch, inputs = self._inputs(prompt)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**inputs, **self._gen_kwargs(torch, max_new_tokens, temperature, top_p, seed))
        n_in = inputs["input_ids"].shape[1]
        new = out[0, n_in:]
        self.last_timings = {"prompt_tokens": int(n_in), "new_tokens": int(new.shape[0]),
                             "generate_s": time.perf_counter() - t0}
        return _cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True), stop)

    def stream(self, prompt: Union[str, Messages], max_new_tokens: int = 256, temperature: float = 0,
               top_p: float = 1, seed: Optional[int] = None, stop: Any = None, **kw: Any) -> Iterator[str]:
        TextIteratorStreamer = _require("transformers").TextIteratorStreamer
        torch, inputs = self._inputs(prompt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        gkw = self._gen_kwargs(torch, max_new_tokens, temperature, top_p, seed)
        errors: List[BaseException] = []

        def run() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(**inputs, **gkw, streamer=streamer)
            except BaseException as e:  # re-raised on the caller's thread
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            if not piece:
                continue
            if stop:
                cut = _cut_at_stop(text + piece, stop)
                if len(cut) < len(text) + len(piece):
                    if len(cut) > len(text):
                        yield cut[len(text):]
                    break
            text += piece
            yield piece
        thread.join()
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        return f"TransformersGenerator({type(self.model).__name__}, max_context={self.max_context})"


def _require(name: str) -> Any:
    from .._optional import require
    return require(name, "TransformersGenerator", "pip install transformers torch")


def estimate_tokens(text: str) -> int:
    """A conservative token count without a tokenizer: one token per 3 characters, rounded up."""
    return math.ceil(len(text) / 3)


def _as_generator(generator: Any) -> Any:
    if callable(getattr(generator, "generate", None)):
        return generator
    if callable(generator):
        return CallableGenerator(generator)
    raise TypeError(f"generator ({type(generator).__name__}) has no generate(prompt, max_new_tokens=...) "
                    "method and is not callable; pass a callable prompt -> str, a CallableGenerator, "
                    "a TransformersGenerator or an rc.Generator")
