"""The ``ragcore bench`` subcommand: its arguments, and the call of :func:`ragcore.bench.run`."""
from __future__ import annotations

import sys


def add_bench_parser(sub) -> None:
    """Add ``bench`` to the ``ragcore`` command's subparsers."""
    pb = sub.add_parser(
        "bench", help="measure ragcore against the installed peers on your data",
        description="Measure ragcore against the installed peers (sparse: bm25s, tantivy, rank_bm25, "
                    "scikit-learn; dense: faiss, numpy) on a BEIR folder, a JSONL corpus with its queries, "
                    "or a synthetic corpus. Writes report.md, results.json, meta.json and plots into -o DIR.",
        epilog="examples: ragcore bench data/msmarco -o out | ragcore bench --synthetic 100k -o out "
               "--k 10 100 | ragcore bench --corpus docs.jsonl --queries q.jsonl -o out --dense")
    pb.add_argument("data", nargs="?", default=None, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    pb.add_argument("--corpus", default=None, help="JSONL corpus file ({_id, title, text} per line)")
    pb.add_argument("--queries", default=None, help="queries JSONL ({_id, text} per line): with --corpus")
    pb.add_argument("--qrels", default=None, help="judgements TSV (query-id, corpus-id, score): nDCG@10")
    pb.add_argument("--split", default="test", help="the BEIR folder's qrels split (default test)")
    pb.add_argument("--synthetic", default=None, metavar="SIZE",
                    help="a seeded synthetic corpus of SIZE documents (10k, 100k, 1m, ...): Zipfian vocabulary, "
                         "queries drawn from it, no judgements")
    pb.add_argument("-o", "--output", required=True, help="folder to write the report into")
    pb.add_argument("--dense", action="store_true", help="dense mode (same as --mode dense)")
    pb.add_argument("--mode", choices=["sparse", "dense", "both"], default=None, help="default sparse")
    pb.add_argument("--engines", nargs="+", default=None, metavar="NAME",
                    help="engines (comma or space separated; 'ragcore' = ragcore's own; default: every "
                         "default engine, those not installed skipped): " + _engine_names())
    pb.add_argument("--k", nargs="+", type=int, default=[10], help="result depths (default 10)")
    pb.add_argument("--threads", nargs="+", type=int, default=None,
                    help="thread counts (default: 1 and every usable CPU)")
    pb.add_argument("--calls", nargs="+", choices=["single", "batch"], default=["single", "batch"])
    pb.add_argument("--tokens", action="store_true", help="also time pre-tokenized sparse queries")
    pb.add_argument("--filter", type=float, default=None, metavar="FRACTION",
                    help="also time batches restricted to this random fraction of the documents")
    pb.add_argument("--analyzer", choices=["en", "plain"], default="en",
                    help="en: lowercase, Lucene stopwords, Snowball stemming (default); plain: lowercase only")
    pb.add_argument("--vectors", choices=["auto", "encoder", "random"], default="auto",
                    help="dense vectors: rc.Encoder (auto, when installed) or random unit vectors (--synthetic)")
    pb.add_argument("--dim", type=int, default=384, help="dimension of random vectors (default 384)")
    pb.add_argument("--n-queries", type=int, default=1000, help="queries of a synthetic corpus (default 1000)")
    pb.add_argument("--repeats", type=int, default=3, help="timed repeats per figure, median (default 3)")
    pb.add_argument("--min-queries", type=int, default=1000, help="queries per timed run, at least (default 1000)")
    pb.add_argument("--min-time", type=float, default=0.2, help="seconds per timed run, at least (default 0.2)")
    pb.add_argument("--max-time", type=float, default=1.0, help="seconds per timed run, at most (default 1)")
    pb.add_argument("--timeout", type=float, default=1800, help="seconds one engine process may take")
    pb.add_argument("--no-plots", action="store_true", help="no qps.png / latency.png")
    pb.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pb.set_defaults(func=cmd_bench)


def _engine_names() -> str:
    from ._runner import REGISTRY

    return ", ".join(sorted({*REGISTRY["sparse"], *REGISTRY["dense"]}))


def _data(args):
    given = [x for x in (args.data, args.corpus, args.synthetic) if x is not None]
    if len(given) != 1:
        raise ValueError("give one source of data: a BEIR folder, --corpus FILE --queries FILE, or --synthetic SIZE")
    if args.synthetic is not None:
        return f"synthetic:{args.synthetic}"
    return args.data if args.data is not None else args.corpus


def cmd_bench(args) -> int:
    """Run ``ragcore bench``: measure, write the report, print a summary."""
    import signal

    from ._report import summary
    from ._runner import run

    modes = {"sparse": ("sparse",), "dense": ("dense",), "both": ("sparse", "dense"), None: ("sparse",)}[
        "dense" if args.dense and args.mode is None else args.mode]
    if args.dense and args.mode not in (None, "dense", "both"):
        raise ValueError(f"--dense contradicts --mode {args.mode}")
    engines = None if args.engines is None else [e.strip() for x in args.engines for e in x.split(",") if e.strip()]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so that the temporary folder is removed
    command = "ragcore bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else None
    rows = run(_data(args), args.output, engines, k=args.k, threads=args.threads, modes=modes,
               queries=args.queries, qrels=args.qrels, split=args.split, analyzer=args.analyzer,
               vectors=args.vectors, dim=args.dim, calls=args.calls, inputs=("text", "tokens") if args.tokens else ("text",),
               filter_fraction=args.filter, repeats=args.repeats, min_queries=args.min_queries,
               min_time=args.min_time, max_time=args.max_time, n_queries=args.n_queries, timeout=args.timeout,
               plots=not args.no_plots, progress=not args.quiet,
               log=None if not args.quiet else (lambda m: print(m, file=sys.stderr)),
               note=f"Command: `{command}`" if command else None)
    print("\n".join(summary(rows)))
    if not rows:
        print("ragcore bench: nothing was measured (see the messages above)", file=sys.stderr)
        return 1
    return 0

