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
    from .analysis import Analyzer

    stop = None if args.stopwords == "none" else args.stopwords
    stem = None if args.stemmer == "none" else args.stemmer
    return Analyzer(lowercase=not args.no_lowercase, stopwords=stop, stemmer=stem)


def cmd_index(args) -> int:
    from . import corpus as corpus_mod
    from .sparse import BM25, TfIdf

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
    return 0


def cmd_search(args) -> int:
    from .sparse import load

    retriever = load(args.index, verify=False)
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


def cmd_demo(args) -> int:
    """Retrieval over the embedded default corpus (Python's documentation topics)."""
    import textwrap

    from .analysis import Analyzer
    from .corpus import pydoc_passages
    from .sparse import BM25

    passages = pydoc_passages()
    t0 = time.perf_counter()
    # Lucene's stopwords less Python's keywords ("with", "is", "not", "in", ... are worth finding
    # in Python's documentation), plus the words questions are made of
    import keyword

    from .analysis import ENGLISH_STOPWORDS

    stop = (set(ENGLISH_STOPWORDS) - set(keyword.kwlist)) | {"what", "does", "do", "how", "why", "when", "which"}
    bm25 = BM25(analyzer=Analyzer(stopwords=sorted(stop), stemmer="english"))
    bm25.index([f"{title} {text}" for _, title, text in passages], ids=[p[0] for p in passages])
    print(f"indexed {len(passages):,} passages of Python's documentation in {time.perf_counter() - t0:.2f} s")
    by_id = {p[0]: p for p in passages}

    def answer(question: str) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragcore", description="Fast retrieval for RAG.")
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
    pi.set_defaults(func=cmd_index)

    ps = sub.add_parser("search", help="search an index")
    ps.add_argument("index", help="index directory")
    ps.add_argument("query", nargs="+", help="one or more query texts")
    ps.add_argument("-k", type=int, default=10)
    ps.add_argument("--threads", type=int, default=None)
    ps.set_defaults(func=cmd_search)

    pd = sub.add_parser("demo", help="search Python's own documentation (embedded default corpus)")
    pd.add_argument("--question", default=None, help="ask one question (default: interactive prompt)")
    pd.add_argument("-k", type=int, default=5)
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
