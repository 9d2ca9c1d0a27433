"""The perturbed views: token substitution, neighbour tables, embedding pushes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_MODEL

from xling_ray.losses.views import (
    NeighbourTable,
    RunningCentroid,
    adversarial_push,
    centroid_push,
    mean_pooled,
    mean_token_norm,
    substitute_tokens,
)
from xling_ray.models import load_model, load_tokenizer

SPECIALS = [0, 1, 2]  # think <s>, <pad>, </s>
PAD = 1


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clustered_embeddings(n_clusters: int = 10, size: int = 4, dim: int = 16) -> torch.Tensor:
    """Ids 3.. come in clusters of ``size`` around orthogonal directions: an id's
    nearest neighbours are exactly its cluster mates."""
    centres = torch.eye(dim)[:n_clusters] * 3.0
    members = centres.repeat_interleave(size, dim=0) + 0.3 * torch.randn(n_clusters * size, dim, generator=_gen(0))
    return torch.cat([torch.randn(3, dim, generator=_gen(1)), members])


def _cluster(token: int, size: int = 4) -> int:
    return (token - 3) // size


@pytest.fixture(scope="module")
def table() -> NeighbourTable:
    E = _clustered_embeddings()
    return NeighbourTable.from_embeddings(E, range(E.shape[0]), k=3, special_ids=SPECIALS, chunk_size=7)


def _batch(rows: int = 64, length: int = 64, vocab: int = 43, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids with <s> ... </s> and a random amount of right padding per row."""
    g = _gen(seed)
    ids = torch.randint(3, vocab, (rows, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    ids[:, 0] = 0
    ids[torch.arange(rows), lengths - 1] = 2
    ids[mask == 0] = PAD
    return ids, mask


# --------------------------------------------------------------------------- neighbour tables


def test_embedding_neighbours_are_the_nearest_tokens(table):
    E = _clustered_embeddings()
    unit = F.normalize(E, dim=-1)
    for token in range(3, E.shape[0]):
        nbrs = table.neighbours_of(token)
        assert len(nbrs) == 3 and token not in nbrs and not set(nbrs) & set(SPECIALS)
        assert {_cluster(n) for n in nbrs} == {_cluster(token)}
        others = [s for s in range(3, E.shape[0]) if s != token and s not in nbrs]
        assert (unit[token] @ unit[nbrs].T).min() > (unit[token] @ unit[others].T).max()
    for special in SPECIALS:
        assert table.neighbours_of(special) == []


def test_embedding_table_does_not_depend_on_the_chunk_size(table):
    E = _clustered_embeddings()
    whole = NeighbourTable.from_embeddings(E, range(E.shape[0]), k=3, special_ids=SPECIALS, chunk_size=10_000)
    assert torch.equal(whole.neighbours, table.neighbours) and torch.equal(whole.row_of, table.row_of)


def test_embedding_table_only_holds_candidates():
    E = _clustered_embeddings()
    candidates = [3, 4, 5, 7, 20]
    small = NeighbourTable.from_embeddings(E, candidates, k=8)
    assert len(small) == 5
    assert small.neighbours_of(3) and set(small.neighbours_of(3)) <= set(candidates) - {3}
    assert len(small.neighbours_of(3)) == 4  # fewer candidates than k: all the others
    assert small.neighbours_of(6) == []


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TINY_MODEL)


def test_synonym_file_keeps_single_token_entries(tmp_path, tokenizer):
    path = tmp_path / "synonyms.tsv"
    path.write_text(
        "# word<TAB>synonyms\n"
        "house\thome building mansion dwelling Haus\n"
        "big\tlarge huge\n"
        "\n"
        "photosynthesis\tlight\n"
        "nice\tmansion\n"
        "big\tgreat large\n",
        encoding="utf-8",
    )
    table = NeighbourTable.from_synonym_file(path, tokenizer)
    one = lambda w: tokenizer.encode(w, add_special_tokens=False)[0]  # noqa: E731
    assert table.neighbours_of(one("house")) == [one(w) for w in ("home", "building", "Haus")]
    assert table.neighbours_of(one("big")) == [one(w) for w in ("large", "huge", "great")]
    assert table.neighbours_of(one("nice")) == []
    assert table.vocab_size == len(tokenizer)
    r = table.report
    assert (r.entries, r.words_kept, r.words_multi_token, r.words_without_synonym) == (5, 2, 1, 1)
    assert (r.synonyms_kept, r.synonyms_multi_token) == (6, 3)
    assert "multi-token" in r.summary()


@pytest.mark.parametrize(
    "bad_line",
    ["house home building", "house\t\n", "\thome", "house\thome\tbuilding"],
    ids=["no tab", "no synonym", "no word", "two tabs"],
)
def test_synonym_file_errors_name_file_and_line(tmp_path, tokenizer, bad_line):
    path = tmp_path / "bad.tsv"
    path.write_text("# header\nbig\tlarge\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv, line 3"):
        NeighbourTable.from_synonym_file(path, tokenizer)


def test_synonym_file_must_be_utf8(tmp_path, tokenizer):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("big\tlarge\ncaf\u00e9\tbar\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.tsv, line 2: not UTF-8"):
        NeighbourTable.from_synonym_file(path, tokenizer)


# --------------------------------------------------------------------------- substitution


def test_substitution_rate_and_what_it_never_touches(table):
    ids, mask = _batch()
    out = substitute_tokens(ids, mask, table, p_sub=0.3, special_ids=SPECIALS, generator=_gen(0))
    assert out.shape == ids.shape and out.dtype == ids.dtype
    eligible = (mask == 1) & ~torch.isin(ids, torch.tensor(SPECIALS))
    changed = out != ids
    assert not changed[~eligible].any()  # specials and padding untouched
    assert eligible.sum() > 2000
    assert abs(changed[eligible].float().mean().item() - 0.3) < 0.05
    for i, j in changed.nonzero().tolist()[:200]:
        assert out[i, j].item() in table.neighbours_of(ids[i, j].item())


def test_substitution_extremes_cap_and_determinism(table):
    ids, mask = _batch(rows=16, length=32, seed=1)
    assert torch.equal(substitute_tokens(ids, mask, table, 0.0, special_ids=SPECIALS, generator=_gen(0)), ids)
    eligible = (mask == 1) & ~torch.isin(ids, torch.tensor(SPECIALS))
    everything = substitute_tokens(ids, mask, table, 1.0, special_ids=SPECIALS, generator=_gen(0))
    assert torch.equal(everything != ids, eligible)
    capped = substitute_tokens(ids, mask, table, 1.0, max_per_example=2, special_ids=SPECIALS, generator=_gen(0))
    assert ((capped != ids).sum(1) == 2).all()
    same = [substitute_tokens(ids, mask, table, 0.3, special_ids=SPECIALS, generator=_gen(7)) for _ in range(2)]
    assert torch.equal(same[0], same[1])
    assert not torch.equal(same[0], substitute_tokens(ids, mask, table, 0.3, special_ids=SPECIALS, generator=_gen(8)))


def test_substitution_chooses_neighbours_uniformly(table):
    ids = torch.full((1, 3000), 3)
    out = substitute_tokens(ids, torch.ones_like(ids), table, 1.0, generator=_gen(0))
    counts = torch.bincount(out.flatten(), minlength=43)[table.neighbours_of(3)]
    assert counts.sum() == 3000 and (counts - 1000).abs().max() < 100


# --------------------------------------------------------------------------- embedding pushes


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = load_model(TINY_MODEL, num_labels=3).eval()
    enc = load_tokenizer(TINY_MODEL)(
        [
            "The children played in the park until the sun went down.",
            "I don't think the meeting will start on time, do you?",
            "Hello world.",
            "A cat sat on the mat near the door of the old house.",
            "Les enfants ont joué dans le parc.",
            "We should leave early tomorrow morning.",
        ],
        padding=True,
        return_tensors="pt",
    )
    embeds = model.get_input_embeddings()(enc["input_ids"]).detach()
    with torch.no_grad():
        clean = model(inputs_embeds=embeds, attention_mask=enc["attention_mask"]).logits
    return model, embeds, enc["attention_mask"], clean


def _kl(model, embeds, mask, clean) -> torch.Tensor:
    with torch.no_grad():
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
    return F.kl_div(F.log_softmax(logits, -1), F.log_softmax(clean, -1), log_target=True, reduction="none").sum(-1)


def test_adversarial_push_stays_in_the_ball_and_off_padding(tiny):
    model, embeds, mask, clean = tiny
    assert (mask == 0).any()  # the batch has padding
    rho = 0.5
    delta = adversarial_push(model, embeds, mask, clean, rho=rho, steps=2, generator=_gen(0))
    assert delta.shape == embeds.shape and not delta.requires_grad
    norms = delta.flatten(1).norm(dim=1)
    assert (norms <= rho * mean_token_norm(embeds, mask) + 1e-5).all()
    assert (delta[mask == 0] == 0).all()
    assert all(p.grad is None for p in model.parameters())
    again = adversarial_push(model, embeds, mask, clean, rho=rho, steps=2, generator=_gen(0))
    assert torch.equal(delta, again)


def test_adversarial_push_beats_random_noise_of_the_same_norm(tiny):
    model, embeds, mask, clean = tiny
    delta = adversarial_push(model, embeds, mask, clean, rho=0.5, steps=2, generator=_gen(0))
    norms = delta.flatten(1).norm(dim=1)[:, None, None]
    pushed = _kl(model, embeds + delta, mask, clean).mean()
    random_kls = []
    for seed in range(5):
        noise = torch.randn(embeds.shape, generator=_gen(100 + seed)) * mask[..., None]
        noise = noise * norms / noise.flatten(1).norm(dim=1)[:, None, None]
        random_kls.append(_kl(model, embeds + noise, mask, clean).mean())
    assert pushed > 0
    assert pushed >= 2.0 * torch.stack(random_kls).mean()


def test_adversarial_push_leaves_parameter_grads_alone_in_training(tiny):
    model, embeds, mask, clean = tiny
    model.train()
    try:
        embeds = embeds.clone().requires_grad_()
        adversarial_push(model, embeds, mask, clean, rho=0.1, steps=1)
        assert all(p.grad is None for p in model.parameters())
        assert embeds.grad is None
    finally:
        model.eval()


def test_centroid_push_moves_away_from_the_centroid(tiny):
    _, embeds, mask, _ = tiny
    centroid = mean_pooled(embeds, mask).mean(0) + 0.01 * torch.randn(embeds.shape[-1], generator=_gen(0))
    rho = 0.3
    delta = centroid_push(embeds, mask, centroid, rho)
    assert (delta[mask == 0] == 0).all()
    before = (mean_pooled(embeds, mask) - centroid).norm(dim=-1)
    after = (mean_pooled(embeds + delta, mask) - centroid).norm(dim=-1)
    assert (after > before).all()
    # Straight away from c, so the distance grows by exactly the step.
    assert torch.allclose(after, before + rho * mean_token_norm(embeds, mask), rtol=1e-4, atol=1e-6)


def test_running_centroid_is_an_ema_of_batch_means():
    e1, e2 = torch.randn(4, 5, 3, generator=_gen(0)), torch.randn(4, 5, 3, generator=_gen(1))
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 4)
    centroid = RunningCentroid(momentum=0.9)
    first = centroid.update(e1, mask).clone()
    assert torch.allclose(first, e1[:, :3].mean(dim=(0, 1)))
    second = centroid.update(e2, mask)
    assert torch.allclose(second, 0.9 * first + 0.1 * e2[:, :3].mean(dim=(0, 1)))
    restored = RunningCentroid()
    restored.load_state_dict(centroid.state_dict())
    assert torch.equal(restored.value, second) and restored.num_updates == 2
