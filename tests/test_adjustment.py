"""Cross-lingual adjustment (Cao et al. 2020): word grouping, SimAlign-style
alignment, Pharaoh files and the alignment / regularization losses."""
from __future__ import annotations

import doctest
import re

import pytest
import torch

from conftest import TINY_MODEL
from xling_ray.config import ModelConfig
from xling_ray.methods.adjustment import aligner, objective, words
from xling_ray.methods.adjustment import (
    AlignedCollator,
    adjustment_objective,
    align_corpus,
    align_sentence_pair,
    alignment_loss,
    build_aligned_batch,
    encode_words,
    encoder_hidden,
    frozen_copy,
    mutual_argmax,
    read_pharaoh,
    regularization_loss,
    word_spans,
    word_vectors,
    write_pharaoh,
)
from xling_ray.models import load_model, load_tokenizer

SENTENCE = "Hello world, unbelievable tokenization!"
# Distinct words, so that a sentence aligned with itself has one right answer.
DISTINCT = "Unbelievably, the quick brown fox jumped over lazy dogs yesterday ."


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_MODEL)


@pytest.fixture(scope="module")
def tiny(tok):
    torch.manual_seed(0)
    return load_model(TINY_MODEL, num_labels=3).eval()


def test_doctests():
    for module in (words, aligner, objective):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# --------------------------------------------------------------------------- words


def test_word_spans_group_sentencepiece_pieces(tok):
    enc = tok(SENTENCE)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    # The tokenisation the expectations below are written against.
    assert pieces == [
        "<s>", "▁Hello", "▁world", ",", "▁un", "beli", "ev", "able", "▁to", "ken", "ization", "!", "</s>"
    ]
    words = [[1], [2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]  # "world," is one whitespace word
    assert word_spans(tok, enc) == [words]  # word_ids() of the fast tokenizer
    assert word_spans(tok, enc["input_ids"]) == [words]  # the "▁" rule on bare ids
    assert word_spans(tok, encode_words(tok, [SENTENCE.split()], 48)) == [words]  # pre-split words
    with_special = [[0]] + words + [[12]]
    assert word_spans(tok, enc, include_special=True) == [with_special]
    assert word_spans(tok, torch.tensor(enc["input_ids"]), include_special=True) == [with_special]


def test_word_spans_skip_padding(tok):
    enc = encode_words(tok, [["Hund"], SENTENCE.split()], 48)
    assert enc["attention_mask"][0].sum() < enc["attention_mask"].shape[1]  # the first row is padded
    for spans in (word_spans(tok, enc), word_spans(tok, enc["input_ids"])):
        assert len(spans[0]) == 1 and spans[0][0][0] == 1
        assert all(p < int(enc["attention_mask"][0].sum()) - 1 for p in spans[0][0])
        assert spans[1] == [[1], [2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    special = word_spans(tok, enc, include_special=True)[0]
    assert special[0] == [0] and special[-1] == [int(enc["attention_mask"][0].sum()) - 1]


def test_word_spans_refuse_pieces_without_word_start(tok):
    ids = [tok.cls_token_id, tok.convert_tokens_to_ids("beli"), tok.sep_token_id]
    with pytest.raises(ValueError, match="word_ids"):
        word_spans(tok, ids)


def test_word_vectors_modes():
    h = torch.arange(10, dtype=torch.float32).view(5, 2)
    spans = [[0], [1, 2, 3], [4]]
    assert word_vectors(h, spans, "first").tolist() == [[0, 1], [2, 3], [8, 9]]
    assert word_vectors(h, spans, "last").tolist() == [[0, 1], [6, 7], [8, 9]]
    assert word_vectors(h, spans, "mean").tolist() == [[0, 1], [4, 5], [8, 9]]
    with pytest.raises(ValueError, match="empty"):
        word_vectors(h, [[0], []])
    with pytest.raises(ValueError, match="mode"):
        word_vectors(h, spans, "max")


# --------------------------------------------------------------------------- alignment without an aligner


def test_mutual_argmax_hand_matrices():
    assert mutual_argmax(torch.eye(3)) == [(0, 0), (1, 1), (2, 2)]
    # Row 0 prefers column 0 but column 0 prefers row 1: (0, 0) is not mutual.
    assert mutual_argmax(torch.tensor([[0.9, 0.8], [0.95, 0.1]])) == [(1, 0)]
    # Both rows prefer column 1; only its favourite row keeps it, row 1 stays unaligned.
    assert mutual_argmax(torch.tensor([[0.1, 0.9, 0.2], [0.3, 0.8, 0.1]])) == [(0, 1)]
    # A permutation is recovered as such.
    assert mutual_argmax(torch.tensor([[0.1, 0.7], [0.6, 0.2]])) == [(0, 1), (1, 0)]
    assert mutual_argmax(torch.zeros(0, 3)) == []
    assert mutual_argmax(torch.ones(2, 2)) == [(0, 0)]  # ties go to the lowest index


@pytest.mark.parametrize("pooling", ["max", "any"])
def test_a_sentence_aligns_with_itself(tiny, tok, pooling):
    # Guaranteed for "max" and "any": a subword's cosine with itself is 1, the maximum.
    n = len(DISTINCT.split())
    assert align_sentence_pair(tiny, tok, DISTINCT, DISTINCT, subword_pooling=pooling) == [(i, i) for i in range(n)]


def test_align_corpus_batches_like_single_pairs_and_restores_mode(tiny, tok):
    pairs = [
        ("Der Hund bellt laut .", "The dog barks loudly ."),
        (DISTINCT, DISTINCT),
        ("Ja", "Yes"),
        ("", "Nothing on the other side"),
    ]
    tiny.train()
    try:
        batched = align_corpus(tiny, tok, pairs, batch_size=3, layer=1)
        assert tiny.training
    finally:
        tiny.eval()
    assert batched == [align_sentence_pair(tiny, tok, t, s, layer=1) for t, s in pairs]
    assert batched[2] == [(0, 0)] and batched[3] == []
    for (t, s), alignment in zip(pairs, batched):
        assert all(0 <= i < len(t.split()) and 0 <= j < len(s.split()) for i, j in alignment)
        assert len({i for i, _ in alignment}) == len(alignment) == len({j for _, j in alignment})  # one-to-one


def test_encoder_hidden_layers(tiny, tok):
    enc = encode_words(tok, [["Hallo"]], 48)
    assert torch.equal(encoder_hidden(tiny, enc, -1), encoder_hidden(tiny, enc, 2))
    with pytest.raises(ValueError, match="2 layers"):
        encoder_hidden(tiny, enc, 3)


def test_offline_model_aligns_translations():
    cfg = ModelConfig()
    model, tokenizer = load_model(cfg, num_labels=3).eval(), load_tokenizer(cfg)
    n = len(DISTINCT.split())
    assert align_sentence_pair(model, tokenizer, DISTINCT, DISTINCT) == [(i, i) for i in range(n)]
    alignment = align_sentence_pair(
        model, tokenizer, "Die Katze schläft auf dem roten Sofa .", "The cat sleeps on the red sofa ."
    )
    assert {(1, 1), (5, 5), (6, 6), (7, 7)} <= set(alignment)  # Katze-cat, roten-red, Sofa-sofa, .-.


# --------------------------------------------------------------------------- Pharaoh files


def test_read_pharaoh(tmp_path):
    path = tmp_path / "de-en.align"
    path.write_text("0-0 1-2 1-2\n\n2-1 0-3\n", encoding="utf-8")
    assert read_pharaoh(path, 3) == [[(0, 0), (1, 2)], [], [(2, 1), (0, 3)]]
    assert read_pharaoh(path, 3, english_first=True) == [[(0, 0), (2, 1)], [], [(1, 2), (3, 0)]]
    path.write_text("0-0\n\n", encoding="utf-8")  # the second pair has no alignment
    assert read_pharaoh(path, 2) == [[(0, 0)], []]
    out = tmp_path / "out.align"
    write_pharaoh(out, [[(0, 0), (1, 2)], [], [(3, 4)]])
    assert read_pharaoh(out, 3) == [[(0, 0), (1, 2)], [], [(3, 4)]]


@pytest.mark.parametrize("bad", ["1:2", "a-1", "1-2-3", "-1-2", "1?2", "1-"])
def test_read_pharaoh_malformed_token(tmp_path, bad):
    path = tmp_path / "bad.align"
    path.write_text(f"0-0\n0-1 {bad}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"bad.align, line 2: malformed alignment '{bad}'")):
        read_pharaoh(path, 2)


def test_read_pharaoh_line_count(tmp_path):
    path = tmp_path / "short.align"
    path.write_text("0-0\n1-1\n", encoding="utf-8")
    for n_pairs in (1, 3):
        with pytest.raises(ValueError, match=rf"short\.align: 2 alignment lines for {n_pairs} sentence pairs"):
            read_pharaoh(path, n_pairs)


# --------------------------------------------------------------------------- losses


def _identity(text: str) -> list[tuple[int, int]]:
    return [(i, i) for i in range(len(text.split()))]


def _hidden(model, batch):
    return encoder_hidden(model, batch.target), encoder_hidden(model, batch.english)


@pytest.mark.parametrize("mode", ["mean", "first", "last"])
def test_alignment_loss_zero_for_the_same_sentence(tiny, tok, mode):
    texts = [SENTENCE, DISTINCT]  # two lengths: padded batch
    batch = build_aligned_batch(tok, [(t, t) for t in texts], [_identity(t) for t in texts], max_length=48)
    assert batch.n_aligned == sum(len(t.split()) for t in texts) and batch.dropped == 0
    h_t, h_s = _hidden(tiny, batch)
    for include_special in (False, True):
        assert alignment_loss(h_t, h_s, batch, mode, include_special).item() == pytest.approx(0.0, abs=1e-10)
    other = build_aligned_batch(tok, [(texts[1], texts[0])], [[(0, 0), (3, 2), (4, 1)]], max_length=48)
    assert alignment_loss(*_hidden(tiny, other), other, mode).item() > 0


def test_build_aligned_batch_truncation_and_bad_indices(tok):
    # <s> ▁Hello ▁world , ▁un </s>: "unbelievable" is cut after its first piece.
    # <s> ▁The ▁dog ▁bar ks </s>: "barks" is whole, "loudly" is gone.
    items = [(SENTENCE, "The dog barks loudly .", [(0, 0), (1, 1), (2, 2), (3, 3)])]
    batch = AlignedCollator(tok, max_length=6)(items)
    assert batch.target_spans == [[[1], [2, 3], []]] and batch.english_spans == [[[1], [2], [3, 4]]]
    assert batch.alignments == [[(0, 0), (1, 1)]] and batch.dropped == 2
    assert batch.target["input_ids"].shape == (1, 6) and batch.target_special == [[0, 5]]
    # Cut exactly at a word's end, the word is kept whole.
    assert AlignedCollator(tok, max_length=5)(items).target_spans == [[[1], [2, 3]]]
    with pytest.raises(ValueError, match="example 0 aligns 0-4"):
        build_aligned_batch(tok, [(DISTINCT, SENTENCE)], [[(0, 4)]])


def test_regularization_loss_ignores_padding():
    h0 = torch.zeros(2, 2, 3)
    h = torch.tensor([[[1.0, 0, 0], [0, 2, 0]], [[0, 0, 3], [5, 5, 5]]])
    # Real tokens: 1 + 4 + 9 over 3; the padded (5, 5, 5) is ignored.
    assert regularization_loss(h, h0, torch.tensor([[1, 1], [1, 0]])).item() == pytest.approx(14 / 3)


def test_adjustment_step_moves_the_model_not_its_frozen_copy(tok):
    torch.manual_seed(0)
    model = load_model(TINY_MODEL, num_labels=3).eval()  # no dropout: L_reg is exactly 0 at the start
    f0 = frozen_copy(model)
    before = {k: v.clone() for k, v in f0.state_dict().items()}
    batch = build_aligned_batch(
        tok, [("Der Hund bellt laut .", "The dog barks loudly ."), (DISTINCT, SENTENCE)],
        [[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)], [(0, 1), (3, 3)]],
    )
    parts = adjustment_objective(model, f0, batch, base_rate=0.5, include_special=True)
    assert parts.reg.item() == 0.0 and parts.align.item() > 0
    assert parts.total.item() == pytest.approx(parts.align.item())

    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    parts.total.backward()
    assert all(not p.requires_grad and p.grad is None for p in f0.parameters())
    grads = [p.grad for p in model.base_model.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    optimizer.step()

    after = adjustment_objective(model, f0, batch, base_rate=0.5)
    assert after.reg.item() > 0
    assert after.total.item() == pytest.approx(after.align.item() + 0.5 * after.reg.item(), rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in f0.state_dict().items())


def test_word_spans_keep_unknown_pieces_inside_words(tok):
    ids = [tok.cls_token_id, tok.convert_tokens_to_ids("▁un"), tok.unk_token_id, tok.convert_tokens_to_ids("▁to"),
           tok.sep_token_id, tok.pad_token_id]
    assert word_spans(tok, ids) == [[[1, 2], [3]]]
