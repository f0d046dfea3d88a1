"""Markdown report of bench_sparse.py's JSON (ragcore.bench rows of several data sets)."""
from __future__ import annotations

FAMILIES = (("BM25", ("ragcore-bm25", "bm25s", "bm25s-numba", "tantivy", "rank_bm25")),
            ("TF-IDF (cosine)", ("ragcore-tfidf", "sklearn")))
NOTES = """\
Notes
- Measured by `ragcore.bench` (what `ragcore bench` runs). Figures are queries/s, the median of the timed
  repeats after a warm-up and a calibration run; each timed run repeats the query list (shuffled per pass)
  until >= min_queries queries and >= min_time s, or is cut at max_time s, whichever comes first. No engine
  caches results.
- `1` thread: a fresh process with OMP/MKL/OPENBLAS/NUMBA/RAYON_NUM_THREADS=1 and the engine's own knob at 1
  (ragcore threads=1, bm25s n_threads=0 (numpy) / 1 (numba serial kernel), tantivy writer/searcher 1 thread).
  `all`: another process with every knob at the machine's thread count, which builds the index (the others
  reopen it). `*` marks a one-thread figure whose process used more than 1.3 CPU-seconds per second, `°` one
  that got less than 0.85 (the machine was busy with other work: that figure is pessimistic). The JSON has
  cpu_util and every timed run for each figure.
- `single`: one query per call; `batch`: the whole query list in one call (`†` = the engine has no batch call:
  a Python loop with one thread, a ThreadPoolExecutor with all threads).
- `text`: query strings (the engine analyses them in the timed path); `tokens`: pre-tokenized queries prepared
  outside the timed path -- ragcore list[list[str]], bm25s index token ids, rank_bm25/sklearn token lists,
  tantivy pre-parsed Query objects (tantivy has no token input).
- `tokens filter 50%`: batch of pre-tokenized queries restricted to a fixed random half of the documents
  (ragcore filter=bool mask, bm25s weight_mask with 0/1 weights).
- Analyzers: `plain` = lowercase + `\\b\\w\\w+\\b`; `en` = plain + Lucene's 33 English stopwords + Snowball English
  stemmer (ragcore Analyzer, bm25s.tokenize + PyStemmer, the same rules in Python for rank_bm25/sklearn).
  tantivy: `plain` = its `default` tokenizer (also keeps 1-character tokens); `en` = its simple tokenizer +
  lowercaser + the same stopwords + its English stemmer. tantivy's BM25 is fixed at k1=1.2, b=0.75; the
  others use k1=1.5, b=0.75 (ragcore and bm25s method `lucene`; rank_bm25 BM25Okapi has its own idf floor).
- Build time includes analysing the corpus; a warm-up build on 200 documents runs first (imports, numba JIT).
  Peak RSS is the process's high-water mark (reset just before the build) and includes the corpus strings;
  ΔRSS = peak - RSS before the build. Index size is the saved folder on disk; rank_bm25 and sklearn keep RAM
  only, so theirs is a pickled / in-RAM estimate. tantivy indexes with `index_option="freq"` (no positions)
  and its results include reading each hit's document index from a fast field; one Searcher is reused.
- bm25s 0.3.16 cannot take a token-id query with no known term (it substitutes an empty-token id outside the
  index: ValueError with numpy, out-of-bounds read with numba); the adapter gives such queries an empty row.
- nDCG@10: rc.evaluate (trec_eval's definitions) over the judged queries, from each engine's batch text top-10
  (rank order kept; documents an engine scores 0 are no match).
"""


def _f(x, nd=0):
    return "—" if x is None else f"{x:,.{nd}f}"


def _load(x):
    return "/".join(f"{v:.1f}" for v in x) if x else "?"


def _mib(b):
    return None if b is None else b / 2**20


def markdown(rep: dict) -> str:
    m, s = rep["machine"], rep["settings"]
    out = ["# Sparse retrieval benchmark", "",
           f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs ({m['logical_cpus']} logical), {m['ram_gib']} GiB RAM, "
           f"{m['platform']}; load average (1/5/15 min) at start {_load(m.get('loadavg_at_start'))}, "
           f"at end {_load(m.get('loadavg_at_end'))}", "",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
           f"Settings: repeats {s['repeats']}, min_queries {s['min_queries']}, min_time {s['min_time']} s, max_time "
           f"{s['max_time']} s, threads {', '.join(map(str, s['threads']))}{', QUICK smoke-test sizes' if s['quick'] else ''}; "
           f"total run {rep.get('total_s', 0):.0f} s"
           f"{'' if rep.get('complete', True) else ' -- PARTIAL: the run is still going or was interrupted'}.", ""]
    for ds, info in rep["datasets"].items():
        rows = [r for r in rep["rows"] if r["dataset"] == ds]
        judged = f" ({info['n_judged']} judged)" if info.get("n_judged") else ""
        out += [f"## {ds} — {info['n_docs']:,} documents, {info['n_queries']:,} distinct queries{judged}", ""]
        out += ["| engine | analyzer | build s | index MiB | index | peak RSS MiB | build ΔRSS MiB | nDCG@10 |",
                "|---|---|---:|---:|---|---:|---:|---:|"]
        seen = set()
        for r in rows:
            if (r["engine"], r["analyzer"]) in seen:
                continue
            seen.add((r["engine"], r["analyzer"]))
            out.append(f"| {r['engine']} | {r['analyzer']} | {_f(r['build_s'], 2)} | {_f(_mib(r['index_bytes']), 1)} "
                       f"| {r['index_note']} | {_f(_mib(r['peak_rss_bytes']))} | {_f(_mib(r.get('build_rss_delta_bytes')))} "
                       f"| {_f(r.get('ndcg@10'), 4)} |")
        out.append("")
        for fam, names in FAMILIES:
            out += _speed_table(fam, names, [r for r in rows if r["speed"]], rep)
        out += [f"- {x['engine']} ({x['analyzer']}): skipped — {x['reason']}" for x in rep["skipped"] if x["dataset"] == ds]
        out += [f"- {x['engine']} ({x['analyzer']}, {x['threads']} thr): ERROR {x['error']}" for x in rep["errors"]
                if x["dataset"] == ds]
        out.append("")
    out.append(NOTES)
    return "\n".join(out)


def _fig(r):
    return (r["k"], r["threads"], r["call"], r["input"], r["filter"])


def _speed_table(fam, names, rows, rep):
    by = {}
    for r in rows:
        if r["engine"] in names:
            by.setdefault(r["engine"], {})[_fig(r)] = r
    if not by:
        return []
    analyzer = next(r["analyzer"] for r in rows if r["engine"] in by)
    cols = [n for n in names if n in by]
    ratio_of = {tuple(x["figure"]): x for x in rep["ratios"] if x["dataset"] == rows[0]["dataset"]
                and x["analyzer"] == analyzer and x["engine"] == names[0]}
    figs = sorted({f for e in by.values() for f in e}, key=lambda f: (f[1] != 1, f[0], f[2] != "single", f[3] != "text",
                                                                      f[4] or 0))
    out = [f"**{fam} queries/s** (analyzer `{analyzer}`; ratio = {names[0]} ÷ fastest peer)", "",
           "| threads | k | calls | queries | " + " | ".join(cols) + " | ratio (peer) |",
           "|---|---:|---|---|" + "---:|" * len(cols) + "---|"]
    ndcg = {c: next(iter(by[c].values())).get("ndcg@10") for c in cols}
    if any(v is not None for v in ndcg.values()):
        out.append("| nDCG@10 | | | | " + " | ".join(_f(ndcg[c], 4) for c in cols) + " | |")
    for f in figs:
        k, th, call, inp, flt = f
        cells = []
        for c in cols:
            v = by[c].get(f)
            if v is None:
                cells.append("—")
                continue
            mark = "†" if v.get("batch_kind") == "emulated" else ""
            mark += "*" if th == 1 and v["cpu_util"] > 1.3 else ""
            mark += "°" if th == 1 and v["cpu_util"] < 0.85 else ""
            cells.append(_f(v["qps"]) + mark)
        rt = ratio_of.get(f)
        rcell = f"{rt['ratio']:.2f}× ({rt['peer']})" if rt else "—"
        label = inp + (f" filter {flt:.0%}" if flt else "")
        out.append(f"| {th if th == 1 else 'all'} | {k} | {call} | {label} | " + " | ".join(cells) + f" | {rcell} |")
    return out + [""]
