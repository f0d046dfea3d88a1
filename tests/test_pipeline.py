"""The RAG pipeline (ragcore.rag.pipeline) with fake generators: prompts, citations, token budget, streaming, retrievers."""
from __future__ import annotations

import doctest
import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ragcore as rc
import ragcore.rag.pipeline as pl
from ragcore.rag.pipeline import RAG, Answer, CallableGenerator, Source, parse_citations, retrieve_context

DOCS = [
    "The cat sat on the mat near the door.",
    "Dogs bark loudly at night in the city.",
    "Cats purr when they are happy and warm.",
    "Python is a dynamic programming language.",
    "The quick brown fox jumps over the lazy dog.",
    "Rust guarantees memory safety without garbage collection.",
    "A cat and a dog can live together peacefully.",
]
IDS = [f"d{i}" for i in range(len(DOCS))]
NUM = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)


def numbered(prompt):
    """{number: text} of the sources in a prompt."""
    return {int(m.group(1)): m.group(2) for m in NUM.finditer(prompt)}


class Echo:
    """A deterministic generator that cites every source it sees, and records what it was given."""

    def __init__(self):
        self.prompts, self.kwargs = [], []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        nums = sorted(numbered(prompt))
        return "Answer: " + " ".join(f"[{n}]" for n in nums) if nums else "I do not know."


@pytest.fixture(scope="module")
def bm25():
    return rc.BM25().index(DOCS, ids=IDS)


# ------------------------------------------------------------------------------------------ prompts
def test_prompt_numbers_sources_in_rank_order(bm25):
    echo = Echo()
    rag = RAG(bm25, echo, k=3, texts=DOCS)
    ans = rag.answer("cat dog")
    hits = bm25.search("cat dog", k=3)
    assert [s.index for s in ans.sources] == [i for i in hits.indices[0].tolist() if i >= 0]
    assert [s.id for s in ans.sources] == [i for i in hits.ids[0].tolist() if i is not None]
    assert [s.rank for s in ans.sources] == list(range(1, len(ans.sources) + 1))
    assert numbered(ans.prompt) == {s.rank: DOCS[s.index] for s in ans.sources}
    assert echo.prompts == [ans.prompt]
    assert ans.prompt.rstrip().endswith("Answer:")
    assert "Question: cat dog" in ans.prompt
    assert "[1]" in rag.system_prompt and "[2]" in rag.system_prompt  # the instruction to cite
    assert ans.citations == [s.rank for s in ans.sources]
    assert all(s.cited for s in ans.sources)
    assert ans.cited_ids == [s.id for s in ans.sources]
    assert np.allclose([s.score for s in ans.sources], hits.scores[0, :len(ans.sources)])


def test_fewer_matches_than_k_and_no_match(bm25):
    ans = RAG(bm25, Echo(), k=5, texts=DOCS).answer("python")
    assert [s.id for s in ans.sources] == ["d3"]
    ans = RAG(bm25, Echo(), k=5, texts=DOCS).answer("zzzz")
    assert ans.sources == [] and ans.citations == [] and "(no sources)" in ans.prompt


def test_chat_template_and_generation_kwargs_reach_the_generator(bm25):
    class Gen:
        max_context = 10_000

        def __init__(self):
            self.calls = []

        def apply_chat_template(self, messages):
            return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages) + "<|assistant|>"

        def count_tokens(self, text):
            return len(text.split())

        def generate(self, prompt, max_new_tokens=16, temperature=0, top_p=1, seed=None, stop=None):
            self.calls.append(dict(prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_p=top_p, seed=seed, stop=stop))
            return "see [2]"

    gen = Gen()
    rag = RAG(bm25, gen, k=2, texts=DOCS, max_new_tokens=7, system_prompt="SYS")
    ans = rag.answer("cat", temperature=0.5, top_p=0.9, seed=3, stop=["\n"])
    call = gen.calls[0]
    # a generator with a chat template gets the messages; Answer.prompt is their rendering
    assert call["prompt"] == rag.messages("cat", ans.sources) and call["prompt"][0] == {"role": "system", "content": "SYS"}
    assert gen.apply_chat_template(call["prompt"]) == ans.prompt
    assert ans.prompt.startswith("<|system|>SYS<|end|><|user|>Sources:\n[1] ")
    assert ans.prompt.endswith("<|assistant|>")
    assert (call["max_new_tokens"], call["temperature"], call["top_p"], call["seed"], call["stop"]) == (7, 0.5, 0.9, 3, ["\n"])
    assert ans.citations == [2] and [s.cited for s in ans.sources] == [False, True]
    assert rag.max_context_tokens == 10_000
    rag.answer("cat", max_new_tokens=3)
    assert gen.calls[-1]["max_new_tokens"] == 3


def test_texts_mapping_by_id_and_by_index(bm25):
    by_id = {i: f"passage {i}: {t}" for i, t in zip(IDS, DOCS)}
    ans = RAG(bm25, Echo(), k=2, texts=by_id).answer("python")
    assert ans.sources[0].text == by_id["d3"] and ans.sources[0].index == 3
    tfidf = rc.TfIdf().index(DOCS)  # no ids: the mapping is keyed by index, ids are the indices
    ans = RAG(tfidf, Echo(), k=1, texts=dict(enumerate(DOCS))).answer("python")
    assert (ans.sources[0].id, ans.sources[0].text) == (3, DOCS[3])


def test_answer_to_dict_is_json(bm25):
    ans = RAG(bm25, Echo(), k=2, texts=DOCS).answer("cat")
    d = ans.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["cited_ids"] == ans.cited_ids and d["text"] == ans.text == str(ans)
    assert set(d["sources"][0]) == {"rank", "id", "index", "score", "text", "cited", "truncated"}
    assert isinstance(ans, Answer) and isinstance(ans.sources[0], Source)


# ---------------------------------------------------------------------------------------- citations
@pytest.mark.parametrize("text, n, expected", [
    ("no citations here", 3, []),
    ("[1]", 3, [1]),
    ("a [2] b [1] c [2]", 3, [2, 1]),
    ("[1, 3]", 3, [1, 3]),
    ("[1,3]", 3, [1, 3]),
    ("[1][2]", 3, [1, 2]),
    ("[1-3]", 5, [1, 2, 3]),
    ("[3-1]", 5, [1, 2, 3]),
    ("[2\u20134]", 5, [2, 3, 4]),
    ("[1, 3-4]", 5, [1, 3, 4]),
    ("[0] [4] [99]", 3, []),
    ("[2-9]", 3, [2, 3]),
    ("[1-1000000000000]", 2, [1, 2]),
    ("[Source 2] and [source 1]", 3, [2, 1]),
    ("[ 2 ]", 3, [2]),
    ("[a] [1a] [-1] [1.5] (1) 1", 3, []),
    ("[1] [1] [1]", 0, []),
])
def test_parse_citations_cases(text, n, expected):
    assert parse_citations(text, n) == expected


FILLER = st.text(alphabet="abc xyz.,;:-()0123456789\n", max_size=12)


@given(st.lists(st.tuples(FILLER, st.integers(0, 30)), max_size=12), st.integers(0, 20))
def test_parse_citations_single_numbers_match_a_regex_oracle(parts, n):
    text = "".join(f"{f}[{c}]" for f, c in parts)
    oracle = []
    for c in map(int, re.findall(r"\[(\d+)\]", text)):
        if 1 <= c <= n and c not in oracle:
            oracle.append(c)
    assert parse_citations(text, n) == oracle


CITE_ITEM = st.one_of(st.integers(0, 12).map(lambda a: (a, a)), st.tuples(st.integers(0, 12), st.integers(0, 12)))


@given(st.lists(st.tuples(FILLER, st.lists(CITE_ITEM, min_size=1, max_size=4), st.sampled_from([",", ", ", ";"])),
                max_size=8), st.integers(0, 10))
def test_parse_citations_groups_and_ranges_match_a_constructive_oracle(groups, n):
    text, oracle = "", []
    for filler, items, sep in groups:
        text += filler + "[" + sep.join(str(a) if a == b else f"{a}-{b}" for a, b in items) + "]"
        for a, b in items:
            for c in range(min(a, b), max(a, b) + 1):
                if 1 <= c <= n and c not in oracle:
                    oracle.append(c)
    assert parse_citations(text, n) == oracle


# ----------------------------------------------------------------------------------------- budget
def words(text):
    return len(text.split())


class Ranked:
    """A retriever returning fixed documents in a fixed order (to control the budget exactly)."""

    def __init__(self, n):
        self.n = n

    def search(self, queries, k=10):
        idx = np.full((1, k), -1, np.int64)
        m = min(k, self.n)
        idx[0, :m] = np.arange(m)
        scores = np.where(idx >= 0, 10.0 - np.arange(k), -np.inf).astype(np.float32)
        return rc.Hits(idx, scores)


def budget_rag(texts, window, new=10, **kw):
    gen = CallableGenerator(lambda p: "[1]", count_tokens=words, max_context=window)
    return RAG(Ranked(len(texts)), gen, k=len(texts), max_new_tokens=new, texts=texts, **kw)


def test_budget_drops_lowest_ranked_first():
    texts = [" ".join([f"w{i}"] * 20) for i in range(5)]  # 21 words each once numbered
    rag = budget_rag(texts, window=10_000)
    full = rag.answer("the question")
    assert len(full.sources) == 5 and full.dropped == 0
    base = words(rag.build_prompt("the question", []))
    for keep in range(1, 5):
        rag = budget_rag(texts, window=base + 21 * keep + 10 + 5)  # room for `keep` sources and a bit
        ans = rag.answer("the question")
        assert [s.index for s in ans.sources] == list(range(keep)) and ans.dropped == 5 - keep
        assert not any(s.truncated for s in ans.sources)
        assert words(ans.prompt) <= rag.max_context_tokens - rag.max_new_tokens
        assert "Question: the question" in ans.prompt


def test_budget_truncates_the_top_source_keeping_its_start():
    texts = [" ".join(f"t{j}" for j in range(300)), "short one"]
    rag = budget_rag(texts, window=120, new=20)
    ans = rag.answer("what is t0")
    assert len(ans.sources) == 1 and ans.dropped == 1
    top = ans.sources[0]
    assert top.truncated and top.text.endswith(" ...")
    kept = top.text[:-4].split()
    assert kept == texts[0].split()[:len(kept)] and 0 < len(kept) < 300
    assert words(ans.prompt) <= 100 < words(rag.build_prompt("what is t0", [Source(1, 0, 0, 1.0, " ".join(
        texts[0].split()[:len(kept) + 1]) + " ...")]))  # the longest start that fits
    assert "Question: what is t0" in ans.prompt
    assert numbered(ans.prompt)[1] == top.text


def test_budget_never_cuts_the_question_and_errors_when_it_alone_is_too_long():
    question = " ".join(f"q{i}" for i in range(200))
    rag = budget_rag(["a passage"], window=150, new=10)
    with pytest.raises(ValueError, match=r"question does not fit.*\d+ tokens.*140"):
        rag.answer(question)
    with pytest.raises(ValueError, match="leaves no room"):
        budget_rag(["a"], window=10, new=10).answer("q")
    # a question that just fits, with no room for any source: it is kept whole
    rag = budget_rag(["a b c d e f g h"], window=10_000)
    base = words(rag.build_prompt(question, []))
    rag = budget_rag(["a b c d e f g h"], window=base + 10)
    ans = rag.answer(question)
    assert ans.sources == [] and ans.dropped == 1 and question in ans.prompt


def test_budget_default_estimate_is_chars_over_3():
    texts = ["x" * 3000, "y" * 30]
    gen = CallableGenerator(lambda p: "ok", max_context=600)  # no tokenizer: ceil(len / 3)
    ans = RAG(Ranked(2), gen, k=2, max_new_tokens=100, texts=texts).answer("q?")
    assert pl.estimate_tokens(ans.prompt) <= 500
    assert len(ans.sources) == 1 and ans.sources[0].truncated and ans.sources[0].text.startswith("xxx")
    assert pl.estimate_tokens("abcd") == 2 and pl.estimate_tokens("") == 0


def test_no_budget_without_a_window():
    texts = ["x " * 5000]
    ans = RAG(Ranked(1), lambda p: "ok", k=1, texts=texts).answer("q")
    assert not ans.sources[0].truncated and ans.dropped == 0


@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(1, 200), st.integers(1, 30))
def test_budget_keeps_the_longest_prefix_that_fits(lengths, room, qlen):
    texts = [" ".join([f"w{i}"] * n) for i, n in enumerate(lengths)]
    question = " ".join(["q"] * qlen)
    probe = budget_rag(texts, window=100_000)
    window = words(probe.build_prompt(question, [])) + 10 + room
    rag = budget_rag(texts, window=window)
    ans = rag.answer(question)
    limit = window - 10
    assert words(ans.prompt) <= limit and question in ans.prompt
    m = len(ans.sources)
    assert [s.index for s in ans.sources] == list(range(m)) and ans.dropped == len(texts) - m
    if m < len(texts) and not any(s.truncated for s in ans.sources):
        nxt = [Source(i + 1, i, i, 0.0, texts[i]) for i in range(m + 1)]
        assert words(rag.build_prompt(question, nxt)) > limit  # one more would not fit
    if any(s.truncated for s in ans.sources):
        assert m == 1


# ---------------------------------------------------------------------------------------- streaming
def test_stream_equals_answer(bm25):
    def reply(prompt):
        return "Cats purr [1] and sit [2]. Also [1][3]."

    gen = CallableGenerator(reply, stream_fn=lambda p: iter([c for c in reply(p)]))
    rag = RAG(bm25, gen, k=3, texts=DOCS)
    ans = rag.answer("cat purr")
    stream = rag.stream("cat purr")
    assert [s.id for s in stream.sources] == [s.id for s in ans.sources]  # known before generating
    with pytest.raises(RuntimeError, match="iterate"):
        stream.answer
    pieces = list(stream)
    assert len(pieces) == len(ans.text) and "".join(pieces) == ans.text
    s = stream.answer
    assert (s.text, s.citations, s.cited_ids, s.prompt, s.sources) == (ans.text, ans.citations, ans.cited_ids,
                                                                        ans.prompt, ans.sources)
    assert s.timings["first_token_s"] <= s.timings["generate_s"]
    with pytest.raises(RuntimeError, match="once"):
        list(stream)


def test_stream_without_generator_stream_gives_one_piece(bm25):
    class Gen:
        def generate(self, prompt, max_new_tokens=1):
            return "one [1]"

    stream = RAG(bm25, Gen(), k=2, texts=DOCS).stream("cat")
    assert list(stream) == ["one [1]"] and stream.answer.citations == [1]


def test_callable_generator_stop_strings_and_streaming():
    gen = CallableGenerator(lambda p: "abc STOP def", stream_fn=lambda p: iter(["ab", "c S", "TO", "P def"]))
    assert gen.generate("x", stop="STOP") == "abc "
    assert gen.generate("x", stop=["zz", " d"]) == "abc STOP"
    assert "".join(gen.stream("x", stop=["STOP"])) == "abc "
    assert "".join(gen.stream("x")) == "abc STOP def"
    assert "".join(gen.stream("x", stop="nothing")) == "abc STOP def"
    assert gen.generate([{"role": "user", "content": "hi"}]) == "abc STOP def"  # messages rendered as text
    with pytest.raises(TypeError, match="returned int"):
        CallableGenerator(lambda p: 3).generate("x")


# ------------------------------------------------------------------------------------------ timings
def test_timings_present_and_reported_timings_copied(bm25):
    ans = RAG(bm25, Echo(), k=2, texts=DOCS).answer("cat")
    assert {"retrieve_s", "prompt_s", "generate_s", "total_s"} <= set(ans.timings)
    assert all(v >= 0 for v in ans.timings.values())
    assert ans.timings["total_s"] >= ans.timings["retrieve_s"] + ans.timings["generate_s"]

    class Reporting:
        def generate(self, prompt, **kw):
            self.last_timings = {"prefill_s": 0.25, "decode_s": 0.5, "first_token_s": 0.3, "new_tokens": 4,
                                 "other": "ignored"}
            return "x"

        def stream(self, prompt, **kw):
            yield self.generate(prompt, **kw)

    rag = RAG(bm25, Reporting(), k=2, texts=DOCS)
    for ans in (rag.answer("cat"), None):
        if ans is None:
            stream = rag.stream("cat")
            list(stream)
            ans = stream.answer
        t = ans.timings
        assert (t["prefill_s"], t["decode_s"], t["first_token_s"], t["new_tokens"]) == (0.25, 0.5, 0.3, 4)
        assert isinstance(t["new_tokens"], int)
        assert "other" not in t


# --------------------------------------------------------------------------------------- retrievers
class LetterEncoder:
    """A toy encoder: counts of a few letters, L2-normalised."""

    def encode(self, texts, batch_size=64):
        v = np.array([[t.lower().count(c) for c in "catdogpy"] for t in texts], np.float32) + 1e-3
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def retrievers():
    bm25 = rc.BM25().index(DOCS, ids=IDS)
    tfidf = rc.TfIdf().index(DOCS)
    dense = rc.DenseRetriever(rc.DenseIndex(dim=8, metric="cosine", device="cpu"), LetterEncoder()).index(DOCS)
    return {"bm25": bm25, "tfidf": tfidf, "dense": dense, "hybrid": rc.Hybrid([bm25, tfidf])}


@pytest.mark.parametrize("name", ["bm25", "tfidf", "dense", "hybrid"])
def test_works_with_every_retriever(name):
    retriever = retrievers()[name]
    hits = retriever.search("cat dog", k=3)
    ans = RAG(retriever, Echo(), k=3, texts=DOCS).answer("cat dog")
    expected = [i for i in hits.indices[0].tolist() if i >= 0]
    assert expected and [s.index for s in ans.sources] == expected
    assert numbered(ans.prompt) == {r + 1: DOCS[i] for r, i in enumerate(expected)}
    assert ans.citations == list(range(1, len(expected) + 1))
    ctx = retrieve_context(retriever, DOCS, "cat dog", k=3)
    assert numbered(ctx) == numbered(ans.prompt)


def test_retrieve_context_max_chars(bm25):
    full = retrieve_context(bm25, DOCS, "cat dog", k=3)
    assert full.startswith("[1] ") and full.count("\n\n") == 2
    two = retrieve_context(bm25, DOCS, "cat dog", k=3, max_chars=len(full) - 1)
    assert full.startswith(two) and two.count("\n\n") == 1
    cut = retrieve_context(bm25, DOCS, "cat dog", k=3, max_chars=20)
    assert len(cut) <= 20 and cut.startswith("[1] ") and cut.endswith(" ...")
    assert retrieve_context(bm25, DOCS, "cat dog", k=3, max_chars=3) == ""
    assert retrieve_context(bm25, DOCS, "zzzz") == ""


# -------------------------------------------------------------------------------------- bad input
def test_bad_input(bm25):
    rag = RAG(bm25, Echo(), texts=DOCS)
    for q in ("", "   \n\t"):
        with pytest.raises(ValueError, match="empty"):
            rag.answer(q)
        with pytest.raises(ValueError, match="empty"):
            rag.stream(q)
        with pytest.raises(ValueError, match="empty"):
            retrieve_context(bm25, DOCS, q)
    for q in (None, 3, b"cat", ["cat"]):
        with pytest.raises(TypeError, match="question must be a str"):
            rag.answer(q)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be >= 1"):
            RAG(bm25, Echo(), k=k, texts=DOCS)
        with pytest.raises(ValueError, match="k must be >= 1"):
            rag.answer("cat", k=k)
        with pytest.raises(ValueError, match="k must be >= 1"):
            retrieve_context(bm25, DOCS, "cat", k=k)
    for k in (1.5, "3", True):
        with pytest.raises(TypeError, match="k must be an int"):
            RAG(bm25, Echo(), k=k, texts=DOCS)
    with pytest.raises(TypeError, match="no search"):
        RAG(object(), Echo(), texts=DOCS)
    with pytest.raises(TypeError, match="no search"):
        retrieve_context("bm25", DOCS, "cat")
    with pytest.raises(TypeError, match="no generate"):
        RAG(bm25, "not a generator", texts=DOCS)
    with pytest.raises(TypeError, match="passage texts"):
        RAG(bm25, Echo())
    for texts in ("abc", 42):
        with pytest.raises(TypeError, match="texts must be"):
            RAG(bm25, Echo(), texts=texts)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        RAG(bm25, Echo(), texts=DOCS, max_new_tokens=0)
    with pytest.raises(ValueError, match="max_context_tokens must be >= 1"):
        RAG(bm25, Echo(), texts=DOCS, max_context_tokens=0)
    with pytest.raises(TypeError, match="system_prompt"):
        RAG(bm25, Echo(), texts=DOCS, system_prompt=None)
    with pytest.raises(ValueError, match="max_chars must be >= 1"):
        retrieve_context(bm25, DOCS, "cat", max_chars=0)


def test_texts_missing_a_document_is_named(bm25):
    with pytest.raises(IndexError, match=r"texts has 2 passages.*index 3.*'d3'"):
        RAG(bm25, Echo(), texts=DOCS[:2]).answer("python")
    with pytest.raises(KeyError, match=r"no passage for document id 'd3'"):
        RAG(bm25, Echo(), texts={"d0": "x"}).answer("python")
    with pytest.raises(TypeError, match=r"must be a str, got int"):
        RAG(bm25, Echo(), texts=[1] * len(DOCS)).answer("python")


def test_generator_returning_non_str(bm25):
    class Bad:
        def generate(self, prompt, **kw):
            return None

    with pytest.raises(TypeError, match="returned NoneType"):
        RAG(bm25, Bad(), texts=DOCS).answer("cat")


def test_callable_generator_bad_arguments():
    with pytest.raises(TypeError, match="fn must be callable"):
        CallableGenerator("x")
    with pytest.raises(TypeError, match="count_tokens must be callable"):
        CallableGenerator(len, count_tokens=3)
    with pytest.raises(ValueError, match="max_context must be >= 1"):
        CallableGenerator(len, max_context=0)


# ---------------------------------------------------------------------------------------- doctests
def test_docstring_examples():
    res = doctest.testmod(pl, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


# ------------------------------------------------------------------------------ transformers model
@pytest.fixture(scope="module")
def tiny_hf():
    """A tiny randomly initialised Llama and a word-level tokenizer: no download."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = ["<unk>", "<s>", "</s>", "<pad>"] + sorted(set(
        " ".join(DOCS).lower().replace(".", " . ").split() + "sources question answer : [ ] 1 2 3 ? <|user|> <|end|> "
        "<|system|> <|assistant|>".split()))
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                               eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                                   bos_token_id=1, eos_token_id=None, pad_token_id=3)  # no eos: full length
    model = transformers.LlamaForCausalLM(cfg).eval()
    return torch, model, tok


def test_transformers_generator_greedy_matches_model_generate(tiny_hf):
    torch, model, tok = tiny_hf
    gen = pl.TransformersGenerator(model, tok)
    assert gen.max_context == 512 and gen.count_tokens("the cat sat") == 3
    prompt = "the cat sat on the mat ."
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        ref = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=3)
    expected = tok.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    out = gen.generate(prompt, max_new_tokens=6)
    assert out == expected and gen.last_timings["new_tokens"] == 6 and gen.last_timings["prompt_tokens"] == 7
    assert "".join(gen.stream(prompt, max_new_tokens=6)).strip() == out.strip()
    stop = out[len(out) // 2:]
    cut = gen.generate(prompt, max_new_tokens=6, stop=stop)
    assert cut == out[:out.find(stop)]
    assert "".join(gen.stream(prompt, max_new_tokens=6, stop=[stop])).strip() == cut.strip()
    a = gen.generate(prompt, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7)
    assert a == gen.generate(prompt, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7)
    with pytest.raises(TypeError, match="no generate method"):
        pl.TransformersGenerator(object(), tok)


def test_rag_with_a_transformers_model(tiny_hf, bm25):
    torch, model, tok = tiny_hf
    gen = pl.TransformersGenerator(model, tok)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    try:
        rag = RAG(bm25, gen, k=2, texts=DOCS, max_new_tokens=5)
        ans = rag.answer("cat dog")
        assert ans.prompt.startswith("<|system|> ") and ans.prompt.endswith("<|assistant|>")
        assert ans.text == gen.generate(ans.prompt, max_new_tokens=5) and len(ans.sources) == 2
        stream = rag.stream("cat dog")
        assert "".join(stream).strip() == ans.text.strip()
        assert gen.count_tokens(ans.prompt) == len(tok(ans.prompt, add_special_tokens=False)["input_ids"])
        # the window is the model's: a question longer than it is refused
        with pytest.raises(ValueError, match="question does not fit"):
            rag.answer("cat " * 600)
    finally:
        tok.chat_template = None


# ------------------------------------------------------------------------- ragcore's own Generator
def exported_generator():
    """An exported generator folder: $RAGCORE_TEST_GENERATOR, else one already in the cache (never exports)."""
    import os
    from pathlib import Path

    env = os.environ.get("RAGCORE_TEST_GENERATOR")
    if env:
        return Path(env)
    import json

    try:
        from ragcore.io.model_folder import default_cache_dir
        from ragcore.models.generation import FORMAT_VERSION
    except ImportError:
        return None
    for f in sorted((default_cache_dir() / "generators").glob("*/ragcore_generator.json")):
        try:
            if json.loads(f.read_text()).get("format_version") == FORMAT_VERSION:   # not a stale export
                return f.parent
        except ValueError:
            continue
    return None


def test_answer_batch_one_by_one_without_generate_batch(bm25):
    echo = Echo()
    rag = RAG(bm25, echo, k=2, texts=DOCS)
    qs = ["Why do cats purr?", "Which language is dynamic?"]
    out = rag.answer_batch(qs)
    assert [a.question for a in out] == qs and len(echo.prompts) == 2
    single = [rag.answer(q) for q in qs]
    assert [a.text for a in out] == [a.text for a in single]
    assert [a.citations for a in out] == [a.citations for a in single] and out[0].citations == [1]
    assert all(a.timings["batch"] == 2 for a in out)
    for bad in ("one question", [], ["fine", "   "]):
        with pytest.raises(ValueError):
            rag.answer_batch(bad)
    with pytest.raises(TypeError):
        rag.answer_batch(["fine", 3])


@pytest.mark.slow
def test_rag_with_ragcore_generator():
    folder = exported_generator()
    if folder is None:
        pytest.skip("no exported generator (set RAGCORE_TEST_GENERATOR or run rc.export_generator() once)")
    generation = pytest.importorskip("ragcore.models.generation")
    pytest.importorskip("onnxruntime")
    gen = generation.Generator.load(folder, device="cpu")
    rag = RAG(rc.BM25().index(DOCS, ids=IDS), gen, k=3, texts=DOCS, max_new_tokens=8)
    assert rag.max_context_tokens == gen.max_context
    ans = rag.answer("Why do cats purr?")
    # the budget counts exactly the tokens the model is given
    assert gen.count_tokens(ans.prompt) == gen.last_timings["prompt_tokens"] == ans.timings["prompt_tokens"]
    assert {"prefill_s", "decode_s", "first_token_s"} <= set(ans.timings)
    stream = rag.stream("Why do cats purr?")
    assert "".join(stream) == ans.text == stream.answer.text
    # a window too small for all three sources: the prompt is fitted to it
    small = RAG(rc.BM25().index(DOCS, ids=IDS), gen, k=3, texts=DOCS, max_new_tokens=8,
                max_context_tokens=gen.count_tokens(ans.prompt) + 8 - 5)
    fitted = small.answer("Why do cats purr?")
    assert len(fitted.sources) < len(ans.sources) or fitted.sources[0].truncated
    assert gen.last_timings["prompt_tokens"] <= small.max_context_tokens - 8
    # a batch gives each question what answer() gives it, with its own token counts
    qs = ["Why do cats purr?", "Which language guarantees memory safety?", "What do dogs do at night?"]
    single = [rag.answer(q) for q in qs]
    batch = rag.answer_batch(qs)
    assert [a.text for a in batch] == [a.text for a in single]
    assert [[s.id for s in a.sources] for a in batch] == [[s.id for s in a.sources] for a in single]
    for a, b in zip(batch, single):
        assert a.timings["batch"] == 3 and a.timings["prompt_tokens"] == b.timings["prompt_tokens"]
        assert a.timings["new_tokens"] == b.timings["new_tokens"]
