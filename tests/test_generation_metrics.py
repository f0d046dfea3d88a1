"""BLEU and ROUGE-L against sacrebleu and rouge-score; citation recall by hand."""
from __future__ import annotations

import random

import pytest

import ragcore as rc


WORDS = ('the a cat dog sat on mat, 3.5 - 10-2 "quoted" it\'s Hello. world! x&y &amp; <b> café 42,000 '
         'Über naïve x-ray e.g. U.S.A. $5 50% (paren) [brackets] {braces} a--b').split()


def random_pairs(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    make = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 15)))  # noqa: E731
    return [make() for _ in range(n)], [make() for _ in range(n)]


@pytest.mark.parametrize("seed", range(300))
@pytest.mark.requires("sacrebleu")
def test_bleu_equals_sacrebleu(seed):
    import sacrebleu

    hyps, refs = random_pairs(seed)
    assert rc.bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=0.01)


@pytest.mark.parametrize("seed", range(300))
@pytest.mark.requires("rouge_score.rouge_scorer")
def test_rouge_l_equals_rouge_score(seed):
    from rouge_score import rouge_scorer

    hyps, refs = random_pairs(seed)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)) / len(hyps)
    assert rc.rouge_l(hyps, refs) == pytest.approx(expected, abs=1e-6)


def test_known_values():
    assert rc.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert rc.bleu(["completely different"], ["nothing alike here"]) == 0.0
    assert rc.rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    assert rc.rouge_l([""], ["anything"]) == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        rc.bleu(["a", "b"], ["a"])
    with pytest.raises(TypeError):
        rc.rouge_l("a b", "a b")
    with pytest.raises(TypeError, match="hypothesis 1"):
        rc.bleu(["a", 3], ["a", "b"])


def test_citation_recall():
    qrels = {"q1": {"a": 1, "b": 2, "c": 0}, "q2": {"x": 1}, "q3": {"y": 0}}
    cited = {"q1": ["a", "c", "z"], "q2": []}
    # q1: 1 of 2 relevant cited; q2: 0 of 1; q3 has no relevant document: not counted
    assert rc.citation_recall(cited, qrels) == pytest.approx((0.5 + 0.0) / 2)
