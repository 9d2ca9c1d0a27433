"""XITE's building blocks: encoding, matching to English, language LDA, interpolation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xling_ray.methods.xite.blocks import LanguageLDA, Match, interpolate, match_to_english, sample_lambda
from xling_ray.models.encode import encode_texts
from xling_ray.models import load_model, load_tokenizer

from conftest import TINY_MODEL


# ---------------------------------------------------------------- encode


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model(TINY_MODEL, num_labels=3), load_tokenizer(TINY_MODEL)


SENTENCES = [
    "The children played in the park until the sun went down.",
    "Hi.",
    "Les enfants ont joué dans le parc jusqu'au coucher du soleil, puis ils sont rentrés à la maison.",
    "孩子们在公园里玩到太阳落山。",
    "Asante sana.",
]


def test_encode_matches_hand_computation(tiny):
    model, tok = tiny
    model.train()  # dropout on: encode_texts must switch it off and restore the mode
    emb = encode_texts(model, tok, SENTENCES, batch_size=2, max_length=48)
    assert model.training
    assert emb.shape == (len(SENTENCES), model.config.hidden_size) and emb.dtype == torch.float32
    model.eval()
    with torch.no_grad():
        ids = tok(SENTENCES[2], return_tensors="pt", truncation=True, max_length=48)
        hidden = model.base_model(**ids).last_hidden_state[0]  # one sentence: no padding
    hand = hidden.mean(0)
    assert torch.allclose(emb[2], hand, atol=1e-5)
    # Not L2-normalised unless asked.
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(len(SENTENCES)))
    unit = encode_texts(model, tok, SENTENCES, batch_size=2, max_length=48, normalize=True)
    assert torch.allclose(unit, F.normalize(emb, dim=-1), atol=1e-6)


def test_encode_is_order_preserving_and_batch_independent(tiny):
    model, tok = tiny
    one_batch = encode_texts(model, tok, SENTENCES, batch_size=64, max_length=48)
    singles = torch.cat([encode_texts(model, tok, [s], max_length=48) for s in SENTENCES])
    assert torch.allclose(one_batch, singles, atol=1e-5)  # padding does not leak into the mean
    perm = [3, 0, 4, 2, 1]
    shuffled = encode_texts(model, tok, [SENTENCES[i] for i in perm], batch_size=2, max_length=48)
    assert torch.allclose(shuffled, one_batch[perm], atol=1e-5)
    assert encode_texts(model, tok, [], max_length=48).shape == (0, model.config.hidden_size)
    layer0 = encode_texts(model, tok, SENTENCES[:2], max_length=48, layer=0)
    assert not torch.allclose(layer0, one_batch[:2])


# ---------------------------------------------------------------- match


def test_match_finds_the_translation():
    g = torch.Generator().manual_seed(0)
    english = torch.randn(200, 32, generator=g)
    labels = torch.randint(0, 3, (200,), generator=g)
    perm = torch.randperm(200, generator=g)[:150]
    # Targets: shuffled, rescaled (norm must not matter) noisy copies of English rows.
    target = 3.0 * (english[perm] + 0.1 * torch.randn(150, 32, generator=g))
    m = match_to_english(target, english, labels, chunk_size=16)
    assert isinstance(m, Match) and len(m) == 150
    assert torch.equal(m.indices, perm) and torch.equal(m.labels, labels[perm])
    assert m.keep.all() and (m.similarity > 0.9).all() and (m.similarity <= 1.0 + 1e-6).all()


def test_topk_vote_and_tau():
    english = torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.9, 0.44], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    k1 = match_to_english(target, english, labels, k=1)
    assert k1.indices.tolist() == [0, 3, 3] and k1.labels.tolist() == [0, 2, 2]  # target 2: best is row 3, at 0
    # k=3: rows 0,1,2 are nearest to target 0; labels 0,1,1 vote 1. The example paired with it is the
    # nearest of the rows that voted 1 (row 1, not row 0: row 0's label is 0), and so is the similarity.
    k3 = match_to_english(target, english, labels, k=3)
    assert k3.labels[0] == 1 and k3.indices[0] == 1
    assert k3.similarity[0] == pytest.approx(0.95 / (0.95**2 + 0.31**2) ** 0.5, abs=1e-5)
    # tau filters on the paired example: targets 0 and 1 have a row at similarity 1 (passes 0.96), but with
    # k=3 both are labelled 1 by rows 1 and 2 and paired with one of them (similarity 0.95 and 0.44).
    assert match_to_english(target, english, labels, k=3).labels.tolist() == [1, 1, 1]
    assert match_to_english(target, english, labels, k=3, tau=0.96).keep.tolist() == [False, False, False]
    assert match_to_english(target, english, labels, k=1, tau=0.96).keep.tolist() == [True, True, False]
    # k=2: one vote each for 0 and 1: the tie goes to the nearest (label 0), so k=2 agrees with k=1.
    k2 = match_to_english(target, english, labels, k=2)
    assert torch.equal(k2.labels, k1.labels)
    kept = match_to_english(target, english, labels, tau=0.5)
    assert kept.keep.tolist() == [True, True, False]  # target 2 is at similarity 0 at best
    assert torch.equal(kept.labels, k1.labels)  # tau masks, it does not relabel
    with pytest.raises(ValueError, match="k must be"):
        match_to_english(target, english, labels, k=5)
    with pytest.raises(ValueError, match="share d"):
        match_to_english(target, torch.zeros(4, 3), labels)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
def test_the_paired_english_example_carries_the_assigned_label(k):
    """With any k the interpolation partner ``indices[i]`` has the label the target gets: it is
    the nearest of the top-k neighbours whose label won the vote; with k = 1 it is the nearest."""
    g = torch.Generator().manual_seed(3)
    english = torch.randn(60, 8, generator=g)
    labels = torch.randint(0, 3, (60,), generator=g)
    target = torch.randn(300, 8, generator=g) * torch.rand(300, 1, generator=g)
    m = match_to_english(target, english, labels, k=k, chunk_size=7)
    assert torch.equal(labels[m.indices], m.labels)
    sims = F.normalize(target, dim=-1) @ F.normalize(english, dim=-1).T
    assert torch.allclose(m.similarity, sims[torch.arange(300), m.indices], atol=1e-6)
    top = sims.topk(k, dim=1).indices
    for i in range(300):
        votes = torch.bincount(labels[top[i]], minlength=3)
        assert votes[m.labels[i]] == votes.max()  # the label won the vote
        voters = top[i][labels[top[i]] == m.labels[i]]
        assert m.indices[i] == voters[0]  # the nearest of its voters
    nearest = sims.argmax(1)
    if k == 1:
        assert torch.equal(m.indices, nearest) and torch.equal(m.labels, labels[nearest])
        assert torch.allclose(m.similarity, sims.max(1).values, atol=1e-6)
    elif k >= 3:
        assert (m.indices != nearest).any()  # the vote overrules the nearest neighbour somewhere
    assert torch.equal(match_to_english(target, english, labels, k=k, tau=0.3).keep, m.similarity >= 0.3)


# ---------------------------------------------------------------- LDA


def fisher_ratio(x: torch.Tensor, langs: list[str]) -> float:
    """tr(S_B) / tr(S_W): between- over within-language scatter."""
    mu = x.mean(0)
    between = within = 0.0
    for lang in sorted(set(langs)):
        rows = x[[i for i, l in enumerate(langs) if l == lang]]
        between += len(rows) * (rows.mean(0) - mu).pow(2).sum().item()
        within += (rows - rows.mean(0)).pow(2).sum().item()
    return between / within


@pytest.fixture(scope="module")
def languages_in_noise():
    """4 languages, 300 points each in d=48: means differ along 3 random directions, isotropic noise."""
    g = torch.Generator().manual_seed(1)
    d, per = 48, 300
    basis = torch.linalg.qr(torch.randn(d, 3, generator=g)).Q
    offsets = torch.randn(4, 3, generator=g) * 1.5
    x = torch.cat([offsets[i] @ basis.T + torch.randn(per, d, generator=g) for i in range(4)])
    langs = [lang for lang in ("en", "hi", "ur", "sw") for _ in range(per)]
    return x, langs


@pytest.mark.parametrize("shrinkage", [None, "auto", 0.1])
def test_lda_projection_raises_fisher_ratio(languages_in_noise, shrinkage):
    x, langs = languages_in_noise
    lda = LanguageLDA().fit(x, langs, shrinkage=shrinkage)
    assert lda.n_components == 3 and lda.languages == ("en", "hi", "ur", "sw")
    proj = lda.project(x)
    assert proj.shape == x.shape
    raw, projected = fisher_ratio(x, langs), fisher_ratio(proj, langs)
    assert projected > 5 * raw, (raw, projected)
    # Idempotent: phi(phi(e)) = phi(e).
    assert torch.allclose(lda.project(proj), proj, atol=1e-4)
    # Coordinates: (n, k); fewer components on request.
    assert lda.transform(x).shape == (len(x), 3)
    assert LanguageLDA().fit(x, langs, n_components=1, shrinkage=shrinkage).transform(x).shape == (len(x), 1)


def test_lda_matches_sklearn_and_handles_token_tensors(languages_in_noise):
    x, langs = languages_in_noise
    lda = LanguageLDA().fit(x, langs)
    ours = lda.transform(x.double())
    theirs = torch.from_numpy(lda.lda.transform(x.double().numpy()))
    assert torch.allclose(ours, theirs, atol=1e-4)
    tokens = x[:24].reshape(2, 12, x.shape[1])  # (B, T, d)
    assert torch.allclose(lda.project(tokens), lda.project(x[:24]).reshape(2, 12, -1), atol=1e-5)
    assert lda.transform(tokens).shape == (2, 12, 3)


def test_lda_needs_two_languages(languages_in_noise):
    x, _ = languages_in_noise
    with pytest.raises(ValueError, match="at least 2 languages"):
        LanguageLDA().fit(x[:10], ["sw"] * 10)
    with pytest.raises(ValueError, match="n_components"):
        LanguageLDA().fit(x[:10], ["sw"] * 5 + ["en"] * 5, n_components=2)
    with pytest.raises(RuntimeError, match="fit"):
        LanguageLDA().project(x)


# ---------------------------------------------------------------- interpolate


def test_interpolate_endpoints_and_broadcast():
    g = torch.Generator().manual_seed(2)
    src, tgt = torch.randn(4, 7, 16, generator=g), torch.randn(4, 7, 16, generator=g)
    assert torch.equal(interpolate(src, tgt, 1.0), src)
    assert torch.equal(interpolate(src, tgt, 0.0), tgt)
    lam = torch.tensor([1.0, 0.0, 0.5, 0.25])
    mixed = interpolate(src, tgt, lam)
    assert torch.equal(mixed[0], src[0]) and torch.equal(mixed[1], tgt[1])
    assert torch.allclose(mixed[2], (src[2] + tgt[2]) / 2)
    assert torch.allclose(mixed[3], 0.25 * src[3] + 0.75 * tgt[3])
    with pytest.raises(ValueError, match="same shape"):
        interpolate(src, tgt[:3], 0.5)
    with pytest.raises(ValueError, match="rows"):
        interpolate(src, tgt, torch.ones(3))


def test_sample_lambda():
    a = sample_lambda(0.4, 1000, torch.Generator().manual_seed(5))
    assert a.shape == (1000,) and a.dtype == torch.float32
    assert (a >= 0).all() and (a <= 1).all()
    assert torch.equal(a, sample_lambda(0.4, 1000, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, sample_lambda(0.4, 1000, torch.Generator().manual_seed(6)))
    # alpha < 1 piles mass at the ends, alpha > 1 in the middle.
    assert ((a < 0.1) | (a > 0.9)).float().mean() > 0.4
    b = sample_lambda(20.0, 1000, torch.Generator().manual_seed(5))
    assert (b - 0.5).abs().mean() < 0.1 and abs(b.mean().item() - 0.5) < 0.02
    with pytest.raises(ValueError, match="alpha"):
        sample_lambda(0.0, 3)
