"""Citations (ragcore.rag.citations): sentence splitting, attribution of uncited sentences, markers, the pipeline.

The labelled answers (tests/data/citation_cases.json) are built from real passages: the demo's top 3 of
Python's documentation topics for 10 questions, with sentences quoted, paraphrased, invented and near-miss,
and the source(s) that support each.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ragcore as rc
from ragcore.rag import citations as C
from ragcore.rag.citations import ATTRIBUTION_THRESHOLD, Support, attribute, cite, split_sentences
from ragcore.rag.pipeline import RAG, Answer

CASES = json.loads((Path(__file__).parent / "data" / "citation_cases.json").read_text(encoding="utf-8"))
GROUPS = CASES["groups"]
# measured with the default threshold: 32 of the 33 paraphrases get their source (bench/results/citations.md)
PARAPHRASE_FLOOR = 0.9


def texts(passages):
    return [p["text"] for p in passages]


def sentences(text):
    return [text[a:b] for a, b in split_sentences(text)]


@pytest.fixture(scope="module")
def labelled():
    """(kind, acceptable sources, Support) of every labelled sentence, each group's sentences joined into one answer."""
    out = []
    for g in GROUPS:
        answer = " ".join(s["text"] for s in g["sentences"])
        sup = attribute(answer, texts(g["passages"]), question=g["question"])
        assert [s.sentence for s in sup] == [s["text"] for s in g["sentences"]]  # the splitter found each sentence
        out += [(s["kind"], set(s["sources"]), got) for s, got in zip(g["sentences"], sup)]
    return out


# ------------------------------------------------------------------------------------ labelled answers
def test_quoted_sentences_always_get_their_source(labelled):
    quoted = [(acc, s) for kind, acc, s in labelled if kind == "verbatim"]
    assert len(quoted) == 30
    for acc, s in quoted:
        assert s.source in acc and s.by == "attribution" and s.sources == (s.source,), s
        assert s.score == pytest.approx(1.0)  # every term and bigram of a quote is in its passage


def test_paraphrases_get_their_source_in_the_large_majority(labelled):
    para = [(acc, s) for kind, acc, s in labelled if kind == "paraphrase"]
    right = sum(s.source in acc for acc, s in para)
    assert right / len(para) >= PARAPHRASE_FLOOR, [s.sentence for acc, s in para if s.source not in acc]
    assert all(s.source is None or s.source in acc for acc, s in para)  # a miss is uncited, never miscited


def test_invented_and_near_miss_sentences_get_no_source(labelled):
    unsupported = [s for kind, _, s in labelled if kind in ("invented", "near-miss")]
    assert len(unsupported) == 28
    for s in unsupported:
        assert s.source is None and s.sources == () and s.score < ATTRIBUTION_THRESHOLD, s
        assert s.by == "attribution"


def test_contradictions_are_lexically_supported_a_documented_limit(labelled):
    # reusing a passage's words while saying the opposite is attributed: the score is lexical, not entailment
    for kind, acc, s in labelled:
        if kind == "contradiction":
            assert s.source in acc


def test_one_sentence_with_two_sources_content_cites_both():
    for case in CASES["two_sources"]:
        [s] = attribute(case["text"], texts(case["passages"]))
        assert set(s.sources) == set(case["sources"]) and s.source == s.sources[0], (case["text"], s)
        alone = C._Claim(C._terms(case["text"], C._default_analyzer()), frozenset())
        best = max(alone.score(p.terms, p.bigrams) for p in
                   (C._Passage(C._terms(t, C._default_analyzer())) for t in texts(case["passages"])))
        assert s.score >= best + C.PAIR_GAIN - 1e-9  # the pair holds more of the sentence than any passage alone


def test_pydoc_passages_through_the_pipeline():
    """RAG over Python's documentation with a generator that quotes its sources without citing them."""
    from ragcore.io.corpus import pydoc_passages

    passages = pydoc_passages()
    texts_ = [f"{title}\n{text}" for _, title, text in passages]
    bm25 = rc.BM25(analyzer=rc.Analyzer(stopwords="english", stemmer="english")).index(texts_)
    target = next(i for i, (pid, _, _) in enumerate(passages) if pid == "pass#0")
    quote = '"pass" is a null operation — when it is executed, nothing happens.'
    if quote.rstrip(".") not in " ".join(texts_[target].split()):
        pytest.skip("this Python's pydoc topics word the pass statement otherwise")

    def generate(prompt):
        return f"{quote} Cheese is made from milk by adding rennet."

    rag = RAG(bm25, generate, k=3, texts=texts_)
    ans = rag.answer("What does the pass statement do?")
    rank = next(s.rank for s in ans.sources if s.index == target)
    assert ans.raw_text == generate("")
    assert ans.text == f"{quote[:-1]} [{rank}]. Cheese is made from milk by adding rennet."
    assert ans.citations == [rank] and [s.cited for s in ans.sources] == [s.rank == rank for s in ans.sources]
    assert [(s.source, s.by) for s in ans.support] == [(rank, "attribution"), (None, "attribution")]


# ------------------------------------------------------------------------------------ model citations
PETS = ["The cat sat on the mat near the door all afternoon.", "Dogs bark loudly at strangers during the night.",
        "Cats purr when they are happy and warm."]


def test_model_citations_are_kept_even_where_another_source_fits_better():
    text = "Dogs bark loudly at strangers during the night [3]. The cat sat on the mat near the door."
    s1, s2 = attribute(text, PETS)
    assert (s1.source, s1.sources, s1.by) == (3, (3,), "model")
    assert s1.score < 0.2                            # the score tells the model's citation is dubious
    assert (s2.source, s2.by) == (1, "attribution")
    assert cite(text, [s1, s2]) == ("Dogs bark loudly at strangers during the night [3]. "
                                    "The cat sat on the mat near the door [1].")


def test_model_markers_forms_and_placement():
    text = "Cats purr when happy. [1, 3] Dogs bark at night [Source 2]! Cats sat on mats [2-3]."
    sup = attribute(text, PETS)
    assert [s.sentence for s in sup] == ["Cats purr when happy. [1, 3]", "Dogs bark at night [Source 2]!",
                                         "Cats sat on mats [2-3]."]
    assert [(s.sources, s.by) for s in sup] == [((1, 3), "model"), ((2,), "model"), ((2, 3), "model")]
    assert cite(text, sup) == text


def test_out_of_range_model_marker_is_no_citation():
    [s] = attribute("Dogs bark loudly at strangers during the night [7].", PETS)
    assert (s.source, s.by) == (2, "attribution")


# ---------------------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("text", ["", "   \n\n ", "```\n```", "- \n* "])
def test_empty_answer(text):
    assert attribute(text, PETS) == [] and split_sentences(text) == [] and cite(text, []) == text


def test_no_passages():
    sup = attribute("Dogs bark loudly at night. Cats purr [1].", [])
    assert [(s.source, s.by) for s in sup] == [(None, "attribution"), (None, "attribution")]  # [1]: out of range


def test_rag_without_sources_leaves_the_text_alone():
    rag = RAG(rc.BM25().index(PETS), lambda p: "I do not know. Nothing matched.", k=2, texts=PETS)
    ans = rag.answer("zebra quantum")
    assert ans.sources == [] and ans.text == ans.raw_text and ans.citations == []
    assert [s.source for s in ans.support] == [None, None]


@pytest.mark.parametrize("text, expected", [
    ("Use a context manager, e.g. the with statement. It closes files.",
     ["Use a context manager, e.g. the with statement.", "It closes files."]),
    ("Use a context manager, e.g. Python's with statement, i.e. The Way. Done.",
     ["Use a context manager, e.g. Python's with statement, i.e. The Way.", "Done."]),
    ("Python 3.11 is 1.25 times faster than 3.10. It shipped in 2022.",
     ["Python 3.11 is 1.25 times faster than 3.10.", "It shipped in 2022."]),
    ("Write from ... import * at module level. Dr. Smith agrees. Open file.txt first.",
     ["Write from ... import * at module level.", "Dr. Smith agrees.", "Open file.txt first."]),
    ("Is it lazy? Yes! It yields values… One at a time.", ["Is it lazy?", "Yes!", "It yields values…", "One at a time."]),
    ('He said "stop." Then he left (quietly.) The end', ['He said "stop."', "Then he left (quietly.)", "The end"]),
    ("Steps:\n1. Define it.\n2. Call it.\n- A bullet without a stop\n\nLast paragraph.",
     ["Steps:", "1. Define it.", "2. Call it.", "- A bullet without a stop", "Last paragraph."]),
    ("Example:\n```python\ndef f(): pass. Not a sentence.\n```\nAfter the code.", ["Example:", "After the code."]),
    ("Lists, tuples, etc. Then sets.", ["Lists, tuples, etc.", "Then sets."]),
])
def test_split_sentences(text, expected):
    assert sentences(text) == expected


def test_non_english_text():
    fr = ["L'instruction with enveloppe l'exécution d'un bloc avec des méthodes définies par un gestionnaire de contexte.",
          "Une fonction lambda crée une fonction anonyme sans nom."]
    answer = ("Une fonction lambda crée une fonction anonyme sans nom. Le chat dort toute la journée sur le canapé. "
              "Les méthodes définies par un gestionnaire de contexte enveloppent l'exécution du bloc.")
    sup = attribute(answer, fr)
    assert [s.source for s in sup] == [2, None, 1]
    # a French analyzer (stemmer, stopwords) for inflected French paraphrases
    fr_an = rc.Analyzer(stopwords=["le", "la", "les", "de", "du", "des", "un", "une", "par", "avec", "sans", "sur"],
                        stemmer="french")
    [s] = attribute("Les gestionnaires de contexte définissent les méthodes qui enveloppent un bloc.", fr, analyzer=fr_an)
    assert s.source == 1
    ru = ["Оператор with оборачивает выполнение блока методами менеджера контекста.",
          "Генератор возвращает итератор при вызове функции."]
    assert [s.source for s in attribute("Генератор возвращает итератор при вызове функции. Кошка спит.", ru)] == [2, None]
    zh = ["生成器函数在调用时返回一个迭代器对象。", "上下文管理器定义了进入和退出方法。"]
    answer = "上下文管理器定义了进入和退出方法。今天天气很好，我们去公园散步吧！"
    assert sentences(answer) == ["上下文管理器定义了进入和退出方法。", "今天天气很好，我们去公园散步吧！"]
    assert [s.source for s in attribute(answer, zh)] == [2, None]


def test_question_terms_are_not_evidence():
    passages = texts(next(g for g in GROUPS if g["question"] == "What does the assert statement do?")["passages"])
    restated = "The assert statement does not do anything."
    [with_q] = attribute(restated, passages, question="What does the assert statement do?")
    [without] = attribute(restated, passages)
    assert with_q.source is None and with_q.score == 0.0
    assert without.score > with_q.score


def test_the_pipeline_leaves_the_question_terms_out():
    passages = texts(next(g for g in GROUPS if g["question"] == "What does the assert statement do?")["passages"])
    rag = RAG(rc.BM25().index(passages), lambda p: "The assert statement does not do anything.", k=3, texts=passages)
    ans = rag.answer("What does the assert statement do?")
    assert [s.source for s in ans.support] == [None] and ans.citations == []


def test_too_few_content_terms_are_not_attributed():
    sup = attribute("The syntax is: Function definition. Directive parser. Shorthand for the following:",
                    ["Function definitions have a syntax.", "A directive to the parser.",
                     "Shorthand for RULE; the following patterns."])
    assert [(s.sentence, s.source) for s in sup] == [("The syntax is: Function definition.", 1),
                                                    ("Directive parser.", 2),   # two terms, side by side
                                                    ("Shorthand for the following:", None)]  # two, apart
    assert sup[2].score == 0.5
    [s] = attribute("Function definition.", ["Function definitions have a syntax."],
                    question="How do I write a function?")
    assert s.source is None and s.score == 1.0  # one term beyond the question's: a match says nothing


def test_threshold_trades_citations_for_precision():
    g = GROUPS[0]
    answer = " ".join(s["text"] for s in g["sentences"])
    counts = [sum(s.source is not None for s in attribute(answer, texts(g["passages"]), threshold=t))
              for t in (0.05, ATTRIBUTION_THRESHOLD, 1.0)]
    assert counts[0] >= counts[1] >= counts[2] >= 3  # three quotes score 1.0


# ------------------------------------------------------------------------------------------- markers
def test_cite_places_markers():
    text = ('Dogs bark loudly at strangers during the night! The cat sat on the mat "near the door." Cats purr when '
            'warm\nCats purr when happy:')
    sup = attribute(text, PETS)
    assert cite(text, sup) == ('Dogs bark loudly at strangers during the night [2]! '
                               'The cat sat on the mat "near the door." [1] Cats purr when warm [3]\n'
                               'Cats purr when happy [3]:')


@given(st.lists(st.sampled_from(["Dogs bark loudly at night.", "The cat sat on the mat!", "Zebras juggle?",
                                 "e.g. cats purr when warm.", "Version 3.11 [2].", "\n", "1.", "```", "…", " "]),
                max_size=12))
def test_spans_and_markers_invariants(parts):
    text = " ".join(parts)
    spans = split_sentences(text)
    assert all(0 <= a < b <= len(text) for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))          # ordered, disjoint
    assert all(not text[a].isspace() and not text[b - 1].isspace() for a, b in spans)
    sup = attribute(text, PETS)
    assert [(s.start, s.end) for s in sup] == spans and all(text[s.start:s.end] == s.sentence for s in sup)
    shown = cite(text, sup)
    inserted = [s for s in sup if s.by == "attribution" and s.sources]
    assert len(shown) - len(text) == sum(1 + 3 * len(s.sources) for s in inserted)
    marker = re.compile(r" (?:\[\d+\])+")
    assert marker.sub("", shown) == marker.sub("", text)  # the markers are the only change


# ---------------------------------------------------------------------------------------- bad input
def test_bad_input():
    with pytest.raises(TypeError, match="text must be a str"):
        attribute(b"bytes", PETS)
    with pytest.raises(TypeError, match="passages must be a sequence"):
        attribute("x", "one passage")
    with pytest.raises(TypeError, match=r"passages\[1\] must be a str"):
        attribute("x", ["ok", 3])
    with pytest.raises(TypeError, match="question must be a str"):
        attribute("x", PETS, question=["q"])
    with pytest.raises(TypeError, match="threshold must be a number"):
        attribute("x", PETS, threshold="0.5")
    with pytest.raises(TypeError, match="threshold must be a number"):
        attribute("x", PETS, threshold=True)
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
            attribute("x", PETS, threshold=bad)
    with pytest.raises(TypeError, match="analyzer must be callable"):
        attribute("x", PETS, analyzer="english")
    with pytest.raises(TypeError, match="text must be a str"):
        split_sentences(None)
    sup = attribute("Dogs bark loudly at night.", PETS)
    with pytest.raises(ValueError, match="pass the text it was computed from"):
        cite("Something else entirely here.", sup)
    with pytest.raises(TypeError, match="Support items"):
        cite("x", [("x", 1)])
    with pytest.raises(TypeError, match="attribute must be a bool"):
        RAG(rc.BM25().index(PETS), lambda p: "", texts=PETS, attribute="yes")
    with pytest.raises(ValueError, match="threshold must be in"):
        RAG(rc.BM25().index(PETS), lambda p: "", texts=PETS, attribute_threshold=0)


# ------------------------------------------------------------------------------------------ pipeline
def test_pipeline_answer_carries_support_and_raw_text():
    bm25 = rc.BM25().index(PETS, ids=["mat", "bark", "purr"])
    gen = lambda p: "Cats purr when they are happy [1]. Dogs bark at strangers loudly at night. Pigs fly."  # noqa: E731
    ans = RAG(bm25, gen, k=3, texts=PETS).answer("Do cats purr and dogs bark?")
    ranks = {s.id: s.rank for s in ans.sources}
    assert ans.raw_text == gen("")
    assert ans.text == f"Cats purr when they are happy [1]. Dogs bark at strangers loudly at night [{ranks['bark']}]. Pigs fly."
    assert ans.citations == [1, ranks["bark"]] and ans.cited_ids == [ans.sources[0].id, "bark"]
    assert [(s.by, s.source) for s in ans.support] == [("model", 1), ("attribution", ranks["bark"]),
                                                        ("attribution", None)]
    d = json.loads(json.dumps(ans.to_dict()))
    assert d["raw_text"] == ans.raw_text and d["support"][1]["sources"] == [ranks["bark"]]
    off = RAG(bm25, gen, k=3, texts=PETS, attribute=False).answer("Do cats purr and dogs bark?")
    assert off.text == off.raw_text == gen("") and off.citations == [1] and off.support == []
    stream = RAG(bm25, gen, k=3, texts=PETS).stream("Do cats purr and dogs bark?")
    assert "".join(stream) == ans.raw_text
    assert (stream.answer.text, stream.answer.support, stream.answer.citations) == (ans.text, ans.support, ans.citations)
    strict = RAG(bm25, gen, k=3, texts=PETS, attribute_threshold=1.0).answer("Do cats purr and dogs bark?")
    assert strict.citations == [1] and strict.text == strict.raw_text  # reordered: < 1.0


def test_answer_built_by_hand_defaults():
    a = Answer(question="q", text="t", sources=[], citations=[], prompt="p")
    assert a.raw_text == "t" and a.support == []


def test_demo_shows_citations_after_the_stream(capsys):
    from ragcore.cli import _show_citations

    sup = attribute("Dogs bark loudly at strangers during the night. Pigs fly.", PETS)
    a = Answer("q", cite("Dogs bark loudly at strangers during the night. Pigs fly.", sup), [], [2], "p",
               support=sup, raw_text="Dogs bark loudly at strangers during the night. Pigs fly.")
    _show_citations(a)
    out = capsys.readouterr().out
    assert "with citations:\nDogs bark loudly at strangers during the night [2]. Pigs fly." in out
    assert "(1 of 2 sentences cited; no source was found for the others)" in out
    _show_citations(Answer("q", "Pigs fly.", [], [], "p", support=[Support("Pigs fly.", None, 0.0, "attribution")]))
    assert "with citations" not in capsys.readouterr().out  # nothing attributed: the answer is not repeated
