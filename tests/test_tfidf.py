"""rc.TfIdf against scikit-learn: TfidfVectorizer(norm="l2", use_idf=True) + cosine_similarity."""
from __future__ import annotations

import numpy as np
import pytest

import ragcore as rc
from conftest import load_beir
from reference import RefTfIdf, analyze, assert_hits_match, assert_scores_close

sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
from sklearn.metrics.pairwise import cosine_similarity  # noqa: E402

TfidfVectorizer = sklearn_text.TfidfVectorizer


def _identity(tokens):
    return tokens


def sklearn_scores(doc_tokens, query_tokens, **kw):
    vec = TfidfVectorizer(analyzer=_identity, **kw)
    D = vec.fit_transform(doc_tokens)
    return cosine_similarity(vec.transform(query_tokens), D), len(vec.vocabulary_)


@pytest.mark.parametrize("smooth_idf", [True, False], ids=["smooth", "nosmooth"])
@pytest.mark.parametrize("sublinear_tf", [False, True], ids=["tf", "sublinear"])
def test_vs_sklearn_random_corpora(corpus, sublinear_tf, smooth_idf):
    expected, n_vocab = sklearn_scores(corpus.tokens, corpus.queries, sublinear_tf=sublinear_tf, smooth_idf=smooth_idf)
    tf = rc.TfIdf(sublinear_tf=sublinear_tf, smooth_idf=smooth_idf).index(corpus.tokens)
    assert len(tf) == len(corpus)
    assert tf.vocabulary_size == n_vocab
    ref = RefTfIdf(sublinear_tf=sublinear_tf, smooth_idf=smooth_idf).index(corpus.tokens)
    matching = [ref.matching(q) for q in corpus.queries]
    for qi, q in enumerate(corpus.queries):
        got = tf.get_scores(q)
        assert got.dtype == np.float32 and got.shape == (len(corpus),)
        assert_scores_close(got, expected[qi], what=f"query {q}")
        assert_scores_close(tf.get_scores(" ".join(q)), expected[qi], what=f"text query {q}")
    for k in sorted({1, 10, len(corpus) + 2}):
        hits = tf.search(corpus.queries, k=k)
        assert hits.indices.dtype == np.int64 and hits.scores.dtype == np.float32
        assert_hits_match(hits, list(expected), matching, k, what=f"tfidf k={k}")


def test_defaults_are_sklearn_defaults(corpus97):
    c = corpus97
    expected, _ = sklearn_scores(c.tokens, c.queries)
    tf = rc.TfIdf().index(c.texts)
    for qi, q in enumerate(c.query_texts):
        assert_scores_close(tf.get_scores(q), expected[qi])
    sub, _ = sklearn_scores(c.tokens, c.queries, sublinear_tf=True)
    assert not np.allclose(sub, expected)  # the corpus distinguishes the variants


def test_sublinear_differs_when_tf_repeats():
    docs = [["apple"] * 5 + ["pear"], ["apple", "pear", "plum"], ["plum"]]
    plain, _ = sklearn_scores(docs, [["apple"]])
    sub, _ = sklearn_scores(docs, [["apple"]], sublinear_tf=True)
    a = rc.TfIdf().index(docs).get_scores(["apple"])
    b = rc.TfIdf(sublinear_tf=True).index(docs).get_scores(["apple"])
    assert_scores_close(a, plain[0])
    assert_scores_close(b, sub[0])
    assert not np.allclose(a, b, rtol=1e-3)


def test_with_analyzer_options(corpus97):
    texts = [t + " The AND of Running " * (i % 3) for i, t in enumerate(corpus97.texts)]
    queries = ["the running " + q for q in corpus97.query_texts]

    def an(t):
        return analyze(t, stopwords="english", stemmer="english")

    pytest.importorskip("Stemmer")
    expected, n_vocab = sklearn_scores([an(t) for t in texts], [an(q) for q in queries])
    tf = rc.TfIdf(analyzer=rc.Analyzer(stopwords="english", stemmer="english")).index(texts)
    assert tf.vocabulary_size == n_vocab
    for qi, q in enumerate(queries):
        assert_scores_close(tf.get_scores(q), expected[qi], what=q)


@pytest.mark.parametrize("sublinear_tf", [False, True])
@pytest.mark.parametrize("name", ["msmarco-5k", "dbpedia-5k"])
def test_shared_data_sample_vs_sklearn(shared_data, name, sublinear_tf):
    data = load_beir(shared_data, name, max_docs=2000)
    # end to end on raw text: sklearn's default tokenizer is the same regex on str.lower()
    vec = TfidfVectorizer(sublinear_tf=sublinear_tf, dtype=np.float64)
    D = vec.fit_transform(data.texts)
    expected = cosine_similarity(vec.transform(data.queries), D)
    tf = rc.TfIdf(sublinear_tf=sublinear_tf).index(data.texts, ids=data.doc_ids)
    assert tf.vocabulary_size == len(vec.vocabulary_)
    analyzer = vec.build_analyzer()
    doc_sets = [set(analyzer(t)) for t in data.texts]
    matching = [np.array([bool(set(analyzer(q)) & d) for d in doc_sets]) for q in data.queries]
    hits = tf.search(data.queries, k=20)
    assert_hits_match(hits, list(expected), matching, 20, what=f"{name} tfidf")
    for qi in range(0, len(data.queries), 5):
        assert_scores_close(tf.get_scores(data.queries[qi]), expected[qi], what=data.queries[qi])
