"""What ``ragcore bench`` writes: results.json (the rows), report.md (a table per mode, the machine),
qps.png and latency.png (matplotlib, when installed)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

TITLES = {"sparse": "Sparse retrieval", "dense": "Dense top-k search"}
ORDER = ("ragcore-bm25", "bm25s", "bm25s-numba", "tantivy", "rank_bm25", "ragcore-tfidf", "sklearn",
         "ragcore-dense", "ragcore-dense-prefilter", "ragcore-dense-float16", "ragcore-dense-int8", "faiss", "numpy")
NOTES = """\
How to read it
- `qps`: queries per second, the median of the timed repeats after a warm-up and a calibration run; each
  timed run repeats the queries (shuffled per pass) until it has at least min_queries queries and lasts
  min_time s, or is cut at max_time s. No engine caches results.
- `single`: one query per call, each call timed for the latency percentiles (`p50`/`p95`/`p99`, ms);
  `batch`: every timed query in one call (`†`: the engine has no batch call, a thread pool stands in).
- `threads`: each engine runs in its own process per thread count, with OMP/MKL/OPENBLAS/NUMBA/RAYON
  thread variables, threadpoolctl and the engine's own setting at that count. The index is built in the
  process with the most threads and reopened from disk by the others (engines that cannot save rebuild).
  `°`: the process got less than 0.85 CPU-seconds per second on one thread (a busy machine: pessimistic).
- `index s`: the timed build, analysis included. `peak RSS`: the high-water mark of the building process
  (reset just before the build; it includes the corpus as loaded and the searches). `index`: bytes on disk
  after saving, or an in-memory estimate where the engine does not save (the JSON's index_note says which).
- `nDCG@10`: rc.evaluate (trec_eval's definitions) over the judged queries, from each engine's batch top-10
  in its own order; `recall@10` (dense): overlap with the exact top-10 (numpy) of the first 200 queries.
- `ragcore ×`: ragcore's queries/s divided by this engine's in the same setting (k, threads, call):
  above 1, ragcore is faster. BM25 rows compare with ragcore-bm25, TF-IDF with ragcore-tfidf, dense with
  ragcore-dense.
"""


def _f(x, nd=0) -> str:
    return "—" if x is None else f"{x:,.{nd}f}"


def _mib(b) -> Optional[float]:
    return None if b is None else b / 2**20


def _sort_key(r: Dict):
    eng = ORDER.index(r["engine"]) if r["engine"] in ORDER else len(ORDER)
    return (r["threads"], r["k"], r["call"] != "single", r["input"], r["filter"] or 0, eng)


def machine_lines(m: Dict) -> List[str]:
    """The machine, described: CPU, cores, memory, OS, Python, load, library versions."""
    load = lambda v: "/".join(f"{x:.1f}" for x in v) if v else "?"  # noqa: E731
    return [f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs ({m['logical_cpus']} logical), "
            f"{m['ram_gib']} GiB RAM{', L3 ' + m['l3_cache'] if m.get('l3_cache') else ''}; {m['os']}; "
            f"Python {m['python']}; load average (1/5/15 min) {load(m.get('loadavg_at_start'))} at start, "
            f"{load(m.get('loadavg_at_end'))} at end.", "",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if k != "python") + ".", ""]


def markdown(rows: List[Dict], meta: Dict) -> str:
    d, s = meta["data"], meta["settings"]
    judged = f", {d['n_judged']:,} judged" if d.get("n_judged") else ", no judgements"
    out = [f"# ragcore bench: {d['name']}", ""]
    if meta.get("note"):
        out += [meta["note"], ""]
    out += machine_lines(meta["machine"])
    out += [f"Data: {d['name']} ({d['kind']}), {d['n_docs']:,} documents, {d['n_queries']:,} queries{judged}"
            + (f"; dense vectors: {d['vectors']}" if d.get("vectors") else "") + ".", "",
            f"Settings: k {', '.join(map(str, s['k']))}; threads {', '.join(map(str, s['threads']))}; analyzer "
            f"`{s['analyzer']}`; repeats {s['repeats']}, min_queries {s['min_queries']}, min_time {s['min_time']} s, "
            f"max_time {s['max_time']} s; total {meta['total_s']:.0f} s.", ""]
    for mode in s["modes"]:
        mrows = sorted((r for r in rows if r["mode"] == mode), key=_sort_key)
        out += [f"## {TITLES[mode]}", ""]
        if mrows:
            out += _table(mrows, mode)
        notes = [f"- skipped {x['engine']}: {x['reason']}" for x in meta["skipped"] if x["mode"] == mode]
        notes += [f"- error {x['engine']} ({x['threads']} threads): {x['error']}" for x in meta["errors"]
                  if x["mode"] == mode]
        if not mrows:
            notes.append("- nothing measured")
        out += notes + ([""] if notes else [])
    return "\n".join(out + [NOTES])


def _table(rows: List[Dict], mode: str) -> List[str]:
    quality = "recall@10" if mode == "dense" else None
    has_ndcg = any(r.get("ndcg@10") is not None for r in rows)
    inputs = len({r["input"] for r in rows}) > 1 or any(r["filter"] for r in rows)
    head = ["engine", "k", "threads", "call"] + (["input"] if inputs else []) + [
        "qps", "p50 ms", "p95 ms", "p99 ms", "index s", "peak RSS MiB", "index MiB"]
    head += (["nDCG@10"] if has_ndcg else []) + ([quality] if quality else []) + ["ragcore ×"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h in ("engine", "call", "input") else "---:"
                                                          for h in head) + "|"]
    for r in rows:
        mark = "†" if r.get("batch_kind") == "emulated" else ""
        mark += "°" if r["threads"] == 1 and r["cpu_util"] < 0.85 else ""
        cells = [r["engine"], str(r["k"]), str(r["threads"]), r["call"]]
        if inputs:
            cells.append(r["input"] + (f" filter {r['filter']:.0%}" if r["filter"] else ""))
        cells += [_f(r["qps"]) + mark, _f(r.get("latency_p50_ms"), 3), _f(r.get("latency_p95_ms"), 3),
                  _f(r.get("latency_p99_ms"), 3), _f(r["build_s"], 2), _f(_mib(r["peak_rss_bytes"])),
                  _f(_mib(r["index_bytes"]), 1)]
        cells += ([_f(r.get("ndcg@10"), 4)] if has_ndcg else []) + ([_f(r.get(quality), 4)] if quality else [])
        cells.append("—" if r["ragcore_speedup"] is None else f"{r['ragcore_speedup']:.2f}")
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def summary(rows: List[Dict]) -> List[str]:
    """A few lines for the terminal: per mode and engine, quality and queries/s at the smallest k, single
    calls on the fewest threads and batches on the most, with ragcore's ratio."""
    out = []
    for mode in TITLES:
        mrows = [r for r in rows if r["mode"] == mode and not r["filter"] and r["input"] in ("text", "vectors")]
        if not mrows:
            continue
        k = min(r["k"] for r in mrows)
        lo, hi = min(r["threads"] for r in mrows), max(r["threads"] for r in mrows)
        qual = "recall@10" if mode == "dense" else "nDCG@10"
        out += ["", f"{TITLES[mode]} (k={k}; qps, ragcore × in brackets)",
                f"{'engine':<24} {qual:>9} {f'single, {lo} thr':>22} {f'batch, {hi} thr':>22}"]
        for eng in [e for e in ORDER if any(r["engine"] == e for r in mrows)]:
            cells = []
            for call, t in (("single", lo), ("batch", hi)):
                r = next((r for r in mrows if r["engine"] == eng and r["k"] == k and r["call"] == call
                          and r["threads"] == t), None)
                cells.append("—" if r is None else f"{r['qps']:,.0f} ({_f(r['ragcore_speedup'], 2)})")
            any_r = next(r for r in mrows if r["engine"] == eng)
            q = any_r.get("recall@10" if mode == "dense" else "ndcg@10")
            out.append(f"{eng:<24} {_f(q, 4):>9} {cells[0]:>22} {cells[1]:>22}")
    return out


def plots(rows: List[Dict], out: Path, modes) -> List[Path]:
    """qps.png (queries/s per engine and k) and latency.png (single-query percentiles); ImportError
    without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError('the plots need matplotlib: pip install "ragcore[plot]"') from e
    modes = [m for m in modes if any(r["mode"] == m for r in rows)]
    written = []
    if not modes:
        return written
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 3.6 * len(modes)), squeeze=False)
    for ax_row, mode in zip(axes, modes):
        for ax, call in zip(ax_row, ("single", "batch")):
            sel = [r for r in rows if r["mode"] == mode and r["call"] == call and not r["filter"]
                   and r["input"] in ("text", "vectors")]
            _bars(ax, sel, f"{TITLES[mode]}: {call} queries")
    fig.tight_layout()
    fig.savefig(out / "qps.png", dpi=80)
    plt.close(fig)
    written.append(out / "qps.png")
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 3.6), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sel = [r for r in rows if r["mode"] == mode and r["call"] == "single" and r["input"] in ("text", "vectors")]
        t1 = min((r["threads"] for r in sel), default=1)
        k1 = min((r["k"] for r in sel), default=10)
        sel = sorted((r for r in sel if r["threads"] == t1 and r["k"] == k1), key=_sort_key)
        names = [r["engine"] for r in sel]
        for j, (p, mk) in enumerate((("latency_p50_ms", "o"), ("latency_p95_ms", "s"), ("latency_p99_ms", "^"))):
            ax.scatter(range(len(sel)), [r[p] for r in sel], marker=mk, label=p.split("_")[1])
        ax.set_xticks(range(len(sel)), names, rotation=30, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms per query")
        ax.set_title(f"{TITLES[mode]}: latency, k={k1}, {t1} thread{'s' if t1 > 1 else ''}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=80)
    plt.close(fig)
    written.append(out / "latency.png")
    return written


def _bars(ax, rows: List[Dict], title: str) -> None:
    engines = [e for e in ORDER if any(r["engine"] == e for r in rows)]
    groups = sorted({(r["k"], r["threads"]) for r in rows})
    width = 0.8 / max(1, len(groups))
    for j, (k, t) in enumerate(groups):
        vals = [next((r["qps"] for r in rows if r["engine"] == e and r["k"] == k and r["threads"] == t), 0)
                for e in engines]
        ax.bar([i + j * width for i in range(len(engines))], vals, width, label=f"k={k}, {t} thr")
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(engines))], engines, rotation=30,
                  ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("queries/s")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    if groups:
        ax.legend(fontsize=7)


def write(rows: List[Dict], meta: Dict, out: Path, plots_wanted: bool = True) -> List[str]:
    """Write results.json (the rows), meta.json (machine, data, settings, skipped engines, errors),
    report.md and the plots; returns lines saying what was written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    (out / "report.md").write_text(markdown(rows, meta))
    lines = [f"wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'meta.json'}"]
    if plots_wanted:
        try:
            drawn = plots(rows, out, meta["settings"]["modes"])
            if drawn:
                lines.append("wrote " + ", ".join(str(p) for p in drawn))
        except ImportError as e:
            lines.append(f"no plots: {e}")
    return lines
