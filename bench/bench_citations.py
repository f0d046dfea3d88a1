#!/usr/bin/env python
"""Citations: how attribution (ragcore.rag.citations) is scored and its threshold chosen, and what it
changes in the demo's answers.

``threshold``: the labelled sentences of ``tests/data/citation_cases.json`` (10 questions, the demo's top-3
passages of Python's documentation for each; answer sentences quoted, paraphrased, invented and near-miss,
plus contradictions and two-source sentences). For each way of scoring a sentence against a passage, the
threshold maximising the accuracy of supported (with the right source) against unsupported, on a 0.005
grid (the middle of the best plateau), its F1 on the supported class, the counts per kind, and the
accuracy of leave-one-question-out (the threshold fit on the other 9 questions). The scorings: recall of
the sentence's content terms in the passage ("terms"), of its term bigrams ("bigrams"), their mean
("terms+bigrams"), each with the question's terms left out ("-q"); with --encoder also the cosine of the
sentence and passage embeddings of ``rc.Encoder`` and its mean with "terms". Then ragcore's own
``attribute`` (terms+bigrams-q, with the second source of a two-source sentence and the least number of
content terms) through the real path: sentence splitting of the joined answers included.

``demo``: the demo's pipeline (``ragcore demo``: BM25 over ``pydoc_passages()``, k=3, the default generator
``rc.Generator.load()``, repetition penalty 1.2, prompt lookup 8, 160 new tokens) answers --questions;
before = the model's own citations (``RAG(..., attribute=False)``), after = with attribution. Figures: the
share of answers with at least one citation and the share of answer sentences supported (cited).

    python bench/bench_citations.py threshold [--encoder]
    python bench/bench_citations.py demo
    python bench/bench_citations.py all --encoder --out bench/results/citations.md
"""
from __future__ import annotations

import argparse
import json
import keyword
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ragcore.rag import citations as C  # noqa: E402

CASES = REPO / "tests" / "data" / "citation_cases.json"
GRID = np.round(np.arange(0.005, 1.0001, 0.005), 3)
QUESTIONS = ["What does the with statement do?", "How do I define a function?", "What is a generator?",
             "How do I raise an exception?", "What is a lambda expression?", "How does the for loop work?",
             "What does the global statement do?", "What does the assert statement do?",
             "How does the import statement work?", "What does the pass statement do?"]


# ------------------------------------------------------------------------------------------ threshold
def _rows(groups):
    """(group index, sentence, kind, acceptable sources): contradictions count as unsupported."""
    return [(gi, s["text"], s["kind"], set(s["sources"]) if s["kind"] != "contradiction" else set())
            for gi, g in enumerate(groups) for s in g["sentences"]]


def _features(groups, rows, encoder):
    """sentence -> one dict of scores per passage of its group."""
    an = C._default_analyzer()
    passages = [[C._Passage(C._terms(p["text"], an)) for p in g["passages"]] for g in groups]
    if encoder is not None:
        e_p = [encoder.encode([p["text"] for p in g["passages"]]) for g in groups]
        e_s = dict(zip([r[1] for r in rows], encoder.encode([r[1] for r in rows])))
    feats = {}
    for gi, text, _, _ in rows:
        terms = C._terms(text, an)
        asked = frozenset(C._terms(groups[gi]["question"], an))
        fs = []
        for j, p in enumerate(passages[gi]):
            f = {}
            for suffix, q in (("", frozenset()), ("-q", asked)):
                claim = C._Claim(terms, q)
                uni = len(claim.terms & p.terms) / len(claim.terms) if claim.terms else 0.0
                bi = len(claim.bigrams & p.bigrams) / len(claim.bigrams) if claim.bigrams else uni
                f.update({"terms" + suffix: uni, "bigrams" + suffix: bi, "terms+bigrams" + suffix: (uni + bi) / 2})
            if encoder is not None:
                f["encoder"] = float(e_s[text] @ e_p[gi][j])
                f["terms+encoder"] = (f["terms"] + f["encoder"]) / 2
            fs.append(f)
        feats[text] = fs
    return feats


def _predict(fs, name, th):
    best = max(range(len(fs)), key=lambda j: (fs[j][name], -j))
    return best + 1 if fs[best][name] >= th else None


def _judge(preds):
    """preds: (kind, acceptable, predicted) -> accuracy, F1 of the supported class, right counts per kind."""
    tp = fp = fn = 0
    per = {}
    for kind, acc, pred in preds:
        right = pred is None if not acc else pred in acc
        per.setdefault(kind, []).append(right)
        tp += bool(acc) and pred is not None
        fp += (not acc) and pred is not None
        fn += bool(acc) and pred is None
    n = sum(len(v) for v in per.values())
    return (sum(sum(v) for v in per.values()) / n, 2 * tp / max(2 * tp + fp + fn, 1),
            {k: (sum(v), len(v)) for k, v in per.items()})


def _fit(evaluate, rows):
    """The middle of the best plateau of accuracy over GRID -> (threshold, lo, hi)."""
    accs = [evaluate(th, rows)[0] for th in GRID]
    top = max(accs)
    best = [th for th, a in zip(GRID, accs) if a == top]
    return float(best[len(best) // 2]), float(best[0]), float(best[-1])


def _report(name, evaluate, rows, groups, contradictions):
    fit = [r for r in rows if r[2] != "contradiction"]
    th, lo, hi = _fit(evaluate, fit)
    acc, f1, per = evaluate(th, fit)
    held = []
    for g in range(len(groups)):
        t, _, _ = _fit(evaluate, [r for r in fit if r[0] != g])
        part = [r for r in fit if r[0] == g]
        held.append(evaluate(t, part)[0] * len(part))
    contra = len(contradictions) - evaluate(th, contradictions)[2].get("contradiction", (0, 0))[0]
    kinds = "  ".join(f"{k} {a}/{n}" for k, (a, n) in per.items())
    return (f"| {name} | {th:.3f} ({lo:.3f}-{hi:.3f}) | {acc:.3f} | {f1:.3f} | {sum(held) / len(fit):.3f} | {kinds} | "
            f"{contra}/{len(contradictions)} |"), th


def threshold(args) -> list:
    data = json.loads(CASES.read_text(encoding="utf-8"))
    groups = data["groups"]
    rows = _rows(groups)
    encoder = None
    if args.encoder:
        import ragcore as rc
        encoder = rc.Encoder.load(progress=False)
    t0 = time.perf_counter()
    feats = _features(groups, rows, encoder)
    contradictions = [r for r in rows if r[2] == "contradiction"]
    names = ["terms", "bigrams", "terms+bigrams", "terms-q", "bigrams-q", "terms+bigrams-q"]
    names += ["encoder", "terms+encoder"] if encoder is not None else []
    out = [f"{len(rows) - len(contradictions)} labelled sentences ({', '.join(f'{k} {n}' for k, n in _count(rows).items() if k != 'contradiction')}) "
           f"in {len(groups)} answers, plus {len(contradictions)} contradictions (not in the fit; the last column: how "
           "many are cited, i.e. wrongly).", "",
           "| scoring | threshold (best plateau) | accuracy | F1 (supported) | accuracy, leave one question out | right, per kind | contradictions cited |",
           "|---|---|---|---|---|---|---|"]
    for name in names:
        line, _ = _report(name, lambda th, rs, n=name: _judge([(k, a, _predict(feats[t], n, th)) for _, t, k, a in rs]),
                          rows, groups, contradictions)
        out.append(line)

    # ragcore's attribute(), through the real path: the joined answer is split into sentences. Which
    # sources a sentence gets does not depend on the threshold, only whether it keeps them: run once
    supports = {}
    for gi, g in enumerate(groups):
        answer = " ".join(s["text"] for s in g["sentences"])
        sup = C.attribute(answer, [p["text"] for p in g["passages"]], question=g["question"], threshold=1e-9)
        if [s.sentence for s in sup] != [s["text"] for s in g["sentences"]]:
            raise SystemExit(f"sentence splitting differs on {g['question']!r}")
        supports.update({(gi, s.sentence): s for s in sup})

    def real(th, rs):
        return _judge([(k, a, supports[gi, t].source if supports[gi, t].score >= th else None) for gi, t, k, a in rs])

    line, th = _report("**ragcore `attribute`** (terms+bigrams-q, two sources, short sentences)", real, rows, groups,
                       contradictions)
    out.append(line)
    two = data["two_sources"]
    both = sum(set(C.attribute(c["text"], [p["text"] for p in c["passages"]], threshold=th)[0].sources)
               == set(c["sources"]) for c in two)
    single = sum(len(s.sources) > 1 and s.score >= th for s in supports.values())
    out += ["", f"At the chosen threshold {th:.3f} (ATTRIBUTION_THRESHOLD = {C.ATTRIBUTION_THRESHOLD}): "
            f"{both}/{len(two)} two-source sentences get both their sources; {single} of the "
            f"{len(supports)} sentences above get a second (PAIR_GAIN = {C.PAIR_GAIN}). "
            f"({time.perf_counter() - t0:.1f} s)"]
    return out


def _count(rows):
    out = {}
    for r in rows:
        out[r[2]] = out.get(r[2], 0) + 1
    return out


# ----------------------------------------------------------------------------------------------- demo
def demo_rag(attribute: bool):
    """The pipeline of ``ragcore demo`` (cli.cmd_demo): BM25 over pydoc_passages(), the default generator."""
    import ragcore as rc
    from ragcore.io.corpus import pydoc_passages
    from ragcore.retrieval.analysis import ENGLISH_STOPWORDS

    passages = pydoc_passages()
    stop = (set(ENGLISH_STOPWORDS) - set(keyword.kwlist)) | {"what", "does", "do", "how", "why", "when", "which"}
    bm25 = rc.BM25(analyzer=rc.Analyzer(stopwords=sorted(stop), stemmer="english"))
    bm25.index([f"{title} {text}" for _, title, text in passages], ids=[p[0] for p in passages])
    texts = {pid: f"{title}\n{text}" for pid, title, text in passages}
    return rc.RAG(bm25, rc.Generator.load(progress=False), k=3, texts=texts, max_new_tokens=160, attribute=attribute)


def demo(args) -> list:
    rag = demo_rag(attribute=True)
    rows, answers = [], []
    t0 = time.perf_counter()
    for q in args.questions:
        a = rag.answer(q, repetition_penalty=1.2, prompt_lookup=8)
        model = [s for s in a.support if s.by == "model"]
        supported = [s for s in a.support if s.source is not None]
        rows.append({"question": q, "sentences": len(a.support), "model_cited": len(model), "supported": len(supported),
                     "model_citations": C.parse_citations(a.raw_text, len(a.sources)), "citations": a.citations})
        answers.append((q, a))
    gen_s = time.perf_counter() - t0
    n = len(rows)
    sents = sum(r["sentences"] for r in rows)
    before_ans = sum(bool(r["model_citations"]) for r in rows)
    after_ans = sum(bool(r["citations"]) for r in rows)
    before_s = sum(r["model_cited"] for r in rows)
    after_s = sum(r["supported"] for r in rows)
    out = [f"{n} questions, {sents} answer sentences (fenced code left out); generation {gen_s:.0f} s in all.", "",
           "| | answers with >= 1 citation | answer sentences supported (cited) |", "|---|---|---|",
           f"| before: the model's own citations | {before_ans}/{n} ({before_ans / n:.0%}) | {before_s}/{sents} ({before_s / max(sents, 1):.0%}) |",
           f"| after: with attribution | {after_ans}/{n} ({after_ans / n:.0%}) | {after_s}/{sents} ({after_s / max(sents, 1):.0%}) |",
           "", "| question | sentences | cited by the model | supported after | citations after |", "|---|---|---|---|---|"]
    out += [f"| {r['question']} | {r['sentences']} | {r['model_cited']} | {r['supported']} | {r['citations']} |" for r in rows]
    scores = [s.score for _, a in answers for s in a.support if s.source is not None]
    if scores:
        out += ["", f"Scores of the supported sentences: median {statistics.median(scores):.2f}, min {min(scores):.2f}."]
    cost = []
    for _ in range(5):  # the cost of attribution alone: attribute + cite of each answer (stems cached after the first)
        for q, a in answers:
            t = time.perf_counter()
            C.cite(a.raw_text, C.attribute(a.raw_text, a.sources, question=q))
            cost.append(time.perf_counter() - t)
    out += [f"Attribution of one answer (attribute + cite, {len(cost)} calls): median {statistics.median(cost) * 1e3:.2f} ms, "
            f"max {max(cost) * 1e3:.2f} ms."]
    out += ["", "The answers as the demo shows them after the stream (sources: the retrieved passage ids):", ""]
    for q, a in answers:
        out += [f"**{q}** (sources: {', '.join(f'[{s.rank}] {s.id}' for s in a.sources)})", "",
                "> " + a.text.replace("\n", "\n> "), ""]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["threshold", "demo", "all"])
    p.add_argument("--encoder", action="store_true", help="also score with rc.Encoder (all-MiniLM-L6-v2) cosine")
    p.add_argument("--questions", nargs="+", default=QUESTIONS)
    p.add_argument("--out", type=Path, default=None, help="write the report (markdown) here too")
    args = p.parse_args(argv)
    lines = [f"Command: `python bench/bench_citations.py {' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    if args.what in ("threshold", "all"):
        lines += ["## Threshold and scoring (labelled sentences)", ""] + threshold(args) + [""]
    if args.what in ("demo", "all"):
        lines += ["## The demo's answers, before and after attribution", ""] + demo(args) + [""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
