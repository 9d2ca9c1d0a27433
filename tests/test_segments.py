"""Segment ids (``token_type_ids``) of BERT-family pair models, wherever a tokenised set flows.

A BERT tokenizer marks sentence A (with ``[CLS]`` and its ``[SEP]``) 0 and sentence B
(with the last ``[SEP]``) 1, and a BERT model with ``type_vocab_size = 2`` adds a
different embedding to each: dropping them makes the model read every pair as one
sentence. The tiny model here is a random BERT with its own small WordPiece vocabulary
(letters and their ``##`` continuations, so any Latin text tokenises), built in a
temporary folder: nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import string

import numpy as np
import pytest
import torch

from xling_ray.config import LossConfig, ModelConfig, XiteConfig
from xling_ray.data import PairDataset
from xling_ray.losses import StepContext, classification_loss
from xling_ray.methods.ding2022 import pushed_view
from xling_ray.methods.xite import xite_loss as _xite
from xling_ray.methods.xlinglearn import perturbed_view
from xling_ray.losses.views import adversarial_push
from xling_ray.models import load_model, load_tokenizer
from xling_ray.models.split import TopView, bottom_states
from xling_ray.train import training_step
from xling_ray.data.batches import collate, encode
from xling_ray.train.cache import cache_key, encode_cached
from xling_ray.train.evaluate import predict
from xling_ray.train.frozen_cache import frozen_states, frozen_weights_key
from xling_ray.methods.xite.prepare import prepare_xite

from conftest import TINY_MODEL

PAIRS = PairDataset(
    "xnli", "en", "validation", tuple(str(i) for i in range(12)),
    ("the cat sat on the mat", "a dog barked", "it rained all day long", "she reads books", "we went home early",
     "the sun is hot", "birds fly south", "he plays the piano", "they won the match", "coffee is ready",
     "the door was open", "snow fell overnight"),
    ("a cat was sitting", "the dog was quiet", "the day was dry", "she never reads", "we stayed out late",
     "the sun is cold", "birds stay north", "he plays well", "they lost the match", "tea is ready",
     "the door was shut", "it snowed at night"),
    (0, 1, 2, 0, 2, 2, 2, 1, 2, 1, 2, 0),
)


@pytest.fixture(scope="module")
def bert_cfg(tmp_path_factory) -> ModelConfig:
    from transformers import BertConfig, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    letters = list(string.ascii_lowercase + string.digits + ".,'!?-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, type_vocab_size=2, max_position_embeddings=160,
               initializer_range=0.2).save_pretrained(folder)  # BERT's 0.02 gives one class for every input
    return ModelConfig(name=str(folder), random_init=True, max_length=120)


@pytest.fixture(scope="module")
def tok(bert_cfg):
    return load_tokenizer(bert_cfg)


def bert(cfg: ModelConfig, seed: int = 0):
    """The tiny BERT, in evaluation mode."""
    torch.manual_seed(seed)
    return load_model(cfg, num_labels=3).eval()


def reference(tok, data: PairDataset, rows: list[int]) -> dict[str, torch.Tensor]:
    """The tokenizer's own padded batch: what a Hugging Face pipeline would feed the model."""
    return tok([data.text_a[i] for i in rows], [data.text_b[i] for i in rows], truncation=True, max_length=120,
               padding=True, return_tensors="pt")


# ---------------------------------------------------------------- tokenised sets and batches


def test_encoded_pairs_and_batches_carry_the_tokenizers_segment_ids(tok):
    enc = encode(tok, PAIRS, 120)
    direct = tok(list(PAIRS.text_a), list(PAIRS.text_b), truncation=True, max_length=120)
    assert enc.token_type_ids == tuple(map(tuple, direct["token_type_ids"]))
    rows = [0, 3, 1, 7]
    batch = collate(enc, rows, tok.pad_token_id)
    assert torch.equal(batch["token_type_ids"], reference(tok, PAIRS, rows)["token_type_ids"])
    for row, i in enumerate(rows):
        len_a = len(tok(PAIRS.text_a[i], add_special_tokens=False)["input_ids"])
        len_b = len(tok(PAIRS.text_b[i], add_special_tokens=False)["input_ids"])
        pad = batch["input_ids"].shape[1] - (len_a + len_b + 3)
        # [CLS] a [SEP] -> 0, b [SEP] -> 1, padding -> 0
        assert batch["token_type_ids"][row].tolist() == [0] * (len_a + 2) + [1] * (len_b + 1) + [0] * pad
    assert enc.subset([3, 1]).token_type_ids == (enc.token_type_ids[3], enc.token_type_ids[1])


def test_a_tokenizer_without_segment_ids_gives_none():
    xlmr_like = load_tokenizer(TINY_MODEL)  # e5's (XLM-R's) tokenizer: no token_type_ids
    enc = encode(xlmr_like, PAIRS, 48)
    assert enc.token_type_ids is None and "token_type_ids" not in collate(enc, [0, 1], xlmr_like.pad_token_id)


def test_training_and_evaluation_feed_the_segment_ids_to_the_model(bert_cfg, tok):
    model = bert(bert_cfg)
    enc = encode(tok, PAIRS, 120)
    rows = list(range(len(PAIRS)))
    with torch.no_grad():
        want = model(**reference(tok, PAIRS, rows)).logits
        unsegmented = model(**{k: v for k, v in reference(tok, PAIRS, rows).items() if k != "token_type_ids"}).logits
        swapped = reference(tok, PAIRS, rows)
        swapped["token_type_ids"] = (1 - swapped["token_type_ids"]) * swapped["attention_mask"]
        flipped = model(**swapped).logits
    # The segment ids matter to this model: reading the pair as one sentence, or with A and B swapped, changes predictions.
    assert (want.argmax(-1) != unsegmented.argmax(-1)).any() and (want.argmax(-1) != flipped.argmax(-1)).any()
    # Evaluation predicts what the model predicts with them ...
    assert predict(model, enc, 5, tok.pad_token_id, torch.device("cpu")) == want.argmax(-1).tolist()
    assert predict(model, dataclasses.replace(enc, token_type_ids=None), 5, tok.pad_token_id,
                   torch.device("cpu")) == unsegmented.argmax(-1).tolist()
    # ... and a training step's loss is the cross-entropy of those logits.
    batch = collate(enc, rows, tok.pad_token_id)
    with torch.no_grad():
        ce = training_step(model, batch, LossConfig()).loss
    assert torch.allclose(ce, classification_loss(want, batch["labels"]), atol=1e-5)


# ---------------------------------------------------------------- tokenisation cache


def test_the_tokenisation_cache_keeps_segment_ids_and_refuses_a_file_without_them(tok, tmp_path):
    first = encode_cached(tok, PAIRS, 120, tmp_path)
    assert first == encode(tok, PAIRS, 120) and first.token_type_ids is not None
    (path,) = tmp_path.glob("*.npz")
    with np.load(path) as f:
        assert "types" in f.files
    again = encode_cached(tok, PAIRS, 120, tmp_path)
    assert again == first
    # A file of the old layout (ids, offsets, labels: no segment ids) at this key is not read back as a set without them.
    with np.load(path) as f:
        old = {k: f[k] for k in ("ids", "offsets", "labels")}
    path.unlink()
    np.savez(path, **old)
    assert encode_cached(tok, PAIRS, 120, tmp_path) == first
    with np.load(path) as f:
        assert "types" in f.files  # rewritten
    assert path.name == f"{cache_key(tok, PAIRS, 120)}.npz"


# ---------------------------------------------------------------- frozen-layer cache


def test_frozen_states_are_computed_with_the_segment_ids_and_keyed_by_them(bert_cfg, tok, tmp_path):
    model = bert(bert_cfg)
    enc = encode(tok, PAIRS, 120)
    rows = list(range(len(PAIRS)))
    key = frozen_weights_key(model, 1)
    states = frozen_states(model, 1, enc, 5, tok.pad_token_id, torch.device("cpu"), tmp_path, weights_key=key)
    ref = reference(tok, PAIRS, rows)
    h = bottom_states(model, 1, ref["input_ids"], ref["attention_mask"], token_type_ids=ref["token_type_ids"])
    for i in rows:
        n = len(enc.input_ids[i])
        assert np.allclose(states.states[i].astype(np.float32), h[i, :n].numpy(), atol=2e-2)
    # From the cached states, the layers above give the full model's logits (with segment ids).
    with torch.no_grad():
        top = TopView(model, 1)(**{k: v for k, v in states.collate(rows).items() if k != "labels"}).logits
        want = model(**ref).logits
    assert torch.allclose(top, want, atol=5e-2) and torch.equal(top.argmax(-1), want.argmax(-1))
    # The same token ids with other segment ids are another entry, not a cache hit.
    swapped = dataclasses.replace(enc, token_type_ids=tuple(tuple(1 - t for t in s) for s in enc.token_type_ids))
    other = frozen_states(model, 1, swapped, 5, tok.pad_token_id, torch.device("cpu"), tmp_path, weights_key=key)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    assert not np.allclose(other.states[0].astype(np.float32), states.states[0].astype(np.float32), atol=1e-2)


# ---------------------------------------------------------------- perturbed views and XITE


def _ctx(model, batch, losses: LossConfig, tok) -> StepContext:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    outputs = model(**inputs, output_hidden_states=True)
    state = {"train_token_ids": sorted(set(batch["input_ids"].flatten().tolist())), "special_ids": tok.all_special_ids,
             "tokenizer": tok}
    return StepContext(model=model, batch=batch, outputs=outputs, config=losses, state=state)


def test_views_that_change_nothing_give_the_clean_pass(bert_cfg, tok):
    """A substitution view with p_sub = 0 and a push of radius ~0 are the clean input: with the
    segment ids kept aligned, their logits are the clean pass's."""
    model = bert(bert_cfg)
    rows = [0, 2, 4, 6]
    batch = collate(encode(tok, PAIRS, 120), rows, tok.pad_token_id)
    losses = LossConfig.model_validate({"xlinglearn": {"w_ce_perturbed": 1.0, "p_sub": 0.0},
                                        "ding2022": {"w_robust": 1.0, "rho": 1e-9, "push": "centroid"}})
    with torch.no_grad():
        clean = model(**reference(tok, PAIRS, rows)).logits
        ctx = _ctx(model, batch, losses, tok)
        assert torch.allclose(ctx.outputs.logits, clean, atol=1e-5)
        assert torch.allclose(perturbed_view(ctx).logits, clean, atol=1e-5)
        assert torch.allclose(pushed_view(ctx).logits, clean, atol=1e-5)


def test_the_adversarial_push_runs_the_model_with_the_segment_ids(bert_cfg, tok):
    model = bert(bert_cfg)
    batch = collate(encode(tok, PAIRS, 120), [1, 3, 5], tok.pad_token_id)
    seen = []

    def spy(**inputs):
        seen.append(inputs.get("token_type_ids"))
        return model(**inputs)

    embeds = model.get_input_embeddings()(batch["input_ids"]).detach()
    clean = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.detach()
    adversarial_push(spy, embeds, batch["attention_mask"], clean, rho=0.1, steps=2,
                     token_type_ids=batch["token_type_ids"])
    assert len(seen) == 2 and all(t is not None and torch.equal(t, batch["token_type_ids"]) for t in seen)
    # Through the term: Ding et al.'s view with the adversarial push.
    losses = LossConfig.model_validate({"ding2022": {"w_robust": 1.0, "rho": 1e-9, "steps": 1}})
    ctx = _ctx(model, batch, losses, tok)
    with torch.no_grad():
        assert torch.allclose(pushed_view(ctx).logits, model(**reference(tok, PAIRS, [1, 3, 5])).logits, atol=1e-5)


def test_xite_reads_both_sides_segment_ids(bert_cfg, tok):
    model = bert(bert_cfg)
    train = encode(tok, PAIRS, 120)
    target = PairDataset("xnli", "de", "validation", ("a", "b", "c"), ("die katze", "ein hund", "es regnet"),
                         ("eine katze", "der hund", "es ist nass"), (0, 0, 0))
    cfg = XiteConfig(ratio=1.0, lam=1.0, lda=False, layer=1)
    data = prepare_xite(model, tok, PAIRS, train, {"de": target}, cfg, 120, tok.pad_token_id)
    assert data.target.token_type_ids == encode(tok, target, 120).token_type_ids
    torch.manual_seed(1)
    idx = torch.randint(len(data), (4,)).tolist()
    torch.manual_seed(1)
    b = data.draw(4, torch.device("cpu"))
    width = b["src_ids"].shape[1]
    for row, i in enumerate(idx):
        src, tgt = train.token_type_ids[int(data.matched[i])], data.target.token_type_ids[i]
        assert b["src_types"][row].tolist() == list(src) + [0] * (width - len(src))
        assert b["tgt_types"][row].tolist() == list(tgt) + [0] * (width - len(tgt))
    # lam = 1: the synthetic example is the source pair itself, read with its segment ids.
    losses = LossConfig.model_validate({"xite": cfg.model_dump()})
    ctx = StepContext(model=model, batch={"input_ids": torch.zeros(4, 3, dtype=torch.long)}, outputs=None,
                      config=losses, state={"xite": data})
    torch.manual_seed(1)
    with torch.no_grad():
        value = _xite(ctx)
        logits = model(input_ids=b["src_ids"], attention_mask=b["mask"], token_type_ids=b["src_types"]).logits
    assert torch.allclose(value, torch.nn.functional.cross_entropy(logits, b["labels"]), atol=1e-5)
