"""Incremental detokenisation and the per-row decoding rules (ragcore.models._decoding) against full decodes.

Oracles: ``tokenizer.decode(all tokens)`` for the text, and the straightforward per-step rule (decode all
tokens after every step, stop at the first step whose text holds a stop string, cut it there) for
``RowDecoder``. Three real ``tokenizers`` tokenizers built here, no files: byte-level BPE (GPT-2, SmolLM2),
SentencePiece-style Metaspace (its decoder drops the leading space of the first token), and Llama-style
byte fallback (``<0xNN>`` tokens fused into UTF-8, then one leading space stripped). Random token
sequences hit incomplete and invalid UTF-8, special tokens and position-dependent spaces.
"""
import functools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ragcore.models._decoding import IncrementalDetokenizer, RowDecoder, _first_stop

# the detokenizer tests build real tokenizers; the prompt lookup tests need none
needs_tokenizers = pytest.mark.requires("tokenizers")

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Écris « bonjour » en chinois : 你好，世界！",
          "Emoji: 😀 🎉 👩‍💻 and accents é è ê ë ñ ü ß.", "def f(x):\n    return x ** 2  # ok\n",
          "Straße, naïve café, Ελληνικά, русский язык, العربية."] * 4


def _byte_level():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _metaspace():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    return tok


def _byte_fallback():
    from tokenizers import Tokenizer, decoders, models

    vocab = {"<unk>": 0, "<eos>": 1}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["▁", "▁the", "▁fox", "a", "b", "é", "你", "好", "▁▁", "ing", "."]:
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<eos>"])
    return tok


_BUILDERS = {"byte-level": _byte_level, "metaspace": _metaspace, "byte-fallback": _byte_fallback}
TOKENIZER_NAMES = sorted(_BUILDERS)


@functools.lru_cache(maxsize=None)
def _tokenizer(name):
    return _BUILDERS[name]()


def _full(tok, ids):
    return tok.decode(list(ids), skip_special_tokens=True)


def _ids(tok, seed, n):
    """Random ids, half of them from real encodings (so that real words and multi-byte characters
    appear), the rest uniform over the vocabulary (partial and invalid UTF-8, specials).

    Byte fallback: the byte tokens come as whole UTF-8 characters, since its
    decoder turns every byte of a run that is not valid UTF-8 into U+FFFD, including the characters
    completed earlier in the run, which no incremental decoder can take back (see ragcore.models._decoding)."""
    rng = np.random.default_rng(seed)
    real = tok.encode(CORPUS[int(rng.integers(len(CORPUS)))]).ids
    vocab = tok.get_vocab()
    fallback = "<0x41>" in vocab
    out = []
    while len(out) < n:
        if rng.random() < 0.5 and real and not fallback:
            s = int(rng.integers(len(real)))
            out.extend(real[s:s + int(rng.integers(1, 6))])
        elif fallback and rng.random() < 0.5:
            ch = chr(int(rng.choice([rng.integers(0x20, 0x7f), rng.integers(0xa0, 0x800), rng.integers(0x4e00, 0x9fff),
                                     rng.integers(0x1f600, 0x1f650)])))
            out.extend(vocab[f"<0x{b:02X}>"] for b in ch.encode())
        elif fallback:
            out.append(int(rng.integers(258, tok.get_vocab_size())))   # the pieces and <eos>
        else:
            out.append(int(rng.integers(tok.get_vocab_size())))
    return out if fallback else out[:n]     # byte fallback: no character cut in the middle


@needs_tokenizers
@pytest.mark.parametrize("name", TOKENIZER_NAMES)
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40))
def test_pieces_concatenate_to_the_full_decode(name, seed, n):
    tok = _tokenizer(name)
    ids = _ids(tok, seed, n)
    full = _full(tok, ids)
    d = IncrementalDetokenizer(tok)
    text = ""
    for t in ids:
        text += d.add(t)
        assert full.startswith(text)      # what is out at each step is final
    text += d.flush()
    assert text == full
    assert d.tokens == ids and d.flush() == ""


@needs_tokenizers
def test_multibyte_character_waits_for_its_last_byte():
    tok = _tokenizer("byte-fallback")
    v = tok.get_vocab()
    ids = [v[f"<0x{b:02X}>"] for b in "😀".encode()] + [v["a"]]
    d = IncrementalDetokenizer(tok)
    assert [d.add(t) for t in ids] == ["", "", "", "😀", "a"]
    assert d.flush() == ""
    d = IncrementalDetokenizer(tok)
    assert [d.add(t) for t in ids[:2]] == ["", ""]
    assert d.flush() == _full(tok, ids[:2])         # an unfinished character ends as U+FFFD, as in a full decode
    # byte fallback: a full decode replaces every byte of an invalid run, the characters completed
    # before in the run included; the pieces keep them (documented in ragcore.models._decoding)
    e = [v[f"<0x{b:02X}>"] for b in "é".encode()]
    d = IncrementalDetokenizer(tok)
    assert "".join(d.add(t) for t in e + ids[:2]) + d.flush() == "é\ufffd\ufffd"
    assert _full(tok, e + ids[:2]) == "\ufffd" * 4


def _oracle(tok, picks, eos, limit, stops):
    """The per-step rule: decode everything after each token; the first stop string ends the text."""
    toks = []
    for t in picks:
        if len(toks) >= limit or t in eos:
            break
        toks.append(t)
        text = _full(tok, toks)
        cut = _first_stop(text, stops)
        if cut is not None:
            return text[:cut], toks
    return _full(tok, toks), toks


@needs_tokenizers
@pytest.mark.parametrize("name", TOKENIZER_NAMES)
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), limit=st.integers(0, 45), n_stops=st.integers(0, 3),
       eos_at=st.integers(-1, 45))
def test_row_decoder_matches_the_per_step_rule(name, seed, n, limit, n_stops, eos_at):
    tok = _tokenizer(name)
    eos_id = tok.token_to_id("<eos>")
    picks = [t for t in _ids(tok, seed, n) if t != eos_id]
    if name == "byte-fallback":   # its runs cut mid-character decode differently by design (see _ids)
        limit, eos_at = max(limit, len(picks)), -1
    if 0 <= eos_at < len(picks):
        picks.insert(eos_at, eos_id)
    # stop strings cut from the text the picks would give, so that they do fire
    rng = np.random.default_rng(seed + 1)
    whole = _full(tok, picks).replace("\ufffd", "")
    stops = []
    for _ in range(n_stops):
        if whole:
            a = int(rng.integers(len(whole)))
            stops.append(whole[a:a + int(rng.integers(1, 5))])
    stops = [s for s in stops if s] or (["never-in-the-text"] if n_stops else [])
    it = iter(picks + [eos_id] * 50)
    row = RowDecoder(tok, {eos_id}, limit, stops, adjust=lambda logits, new: None, pick=lambda logits: next(it))
    shown = []
    while not row.done:
        row.step(np.zeros(1))
        shown.append(row.text[:row.ready()])
    want_text, want_tokens = _oracle(tok, picks + [eos_id], {eos_id}, limit, stops)
    assert row.text == want_text
    assert row.tokens == want_tokens
    # what a stream shows at each step is final: a prefix of the answer, never a partial stop string
    assert all(want_text.startswith(s) for s in shown)


@needs_tokenizers
def test_row_decoder_stops_before_a_pending_character():
    # a byte-level token that ends in the first byte of a two-byte character (" \xc3" of " é"): its text
    # is withheld until the next byte, but a stop string complete before that byte ends the row now
    tok = _tokenizer("byte-level")
    lead = next(i for i in range(tok.get_vocab_size())
                if len(_full(tok, [i])) > 1 and _full(tok, [i]).endswith("\ufffd") and "\ufffd" not in _full(tok, [i])[:-1])
    stop = _full(tok, [lead])[:-1]
    from tokenizers import pre_tokenizers
    cont = tok.token_to_id(pre_tokenizers.ByteLevel.alphabet()[0])  # any next token
    it = iter([lead, cont])
    row = RowDecoder(tok, set(), 10, [stop], adjust=lambda logits, new: None, pick=lambda logits: next(it))
    row.step(None)
    assert row.done and row.text == "" and row.tokens == [lead]
    assert _oracle(tok, [lead, cont], set(), 10, [stop]) == ("", [lead])


@needs_tokenizers
def test_limit_zero_is_done_at_once():
    row = RowDecoder(_tokenizer("byte-level"), set(), 0, [], adjust=None, pick=None)
    assert row.done and row.text == "" and row.tokens == []


# ---------------------------------------------------------------------------------------------------
# prompt lookup: the drafter against a brute-force search of the whole text at every step

def _lookup_oracle(hist, k, max_ngram, min_ngram):
    """The tokens after the latest earlier occurrence of the text's last g tokens, g from max_ngram down."""
    if k <= 0:
        return []
    n = len(hist)
    for g in range(max_ngram, min_ngram - 1, -1):
        if n < g:
            continue
        suffix = hist[n - g:]
        for j in range(n - 1, g - 1, -1):          # j: the position after an occurrence ending at j - 1
            if hist[j - g:j] == suffix:
                return hist[j:j + k]
    return []


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), vocab=st.integers(2, 6), n_prompt=st.integers(0, 40), n_new=st.integers(1, 30),
       k=st.integers(0, 6), sizes=st.sampled_from([(3, 2), (3, 1), (1, 1), (4, 2)]))
def test_prompt_lookup_matches_brute_force(seed, vocab, n_prompt, n_new, k, sizes):
    from ragcore.models._decoding import PromptLookup
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, vocab, n_prompt).tolist()
    new = []
    d = PromptLookup(prompt, *sizes)
    while len(new) < n_new:                           # the generated list grows by 1-3 tokens per call
        new.extend(rng.integers(0, vocab, int(rng.integers(1, 4))).tolist())
        assert d.draft(new, k) == _lookup_oracle(prompt + new, k, *sizes)


def test_prompt_lookup_bad_sizes():
    from ragcore.models._decoding import PromptLookup
    for sizes in ((2, 3), (0, 0), (3, 0)):
        with pytest.raises(ValueError, match="ngram"):
            PromptLookup([1, 2, 3], *sizes)
