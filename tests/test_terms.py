"""The registered regularizers inside the training step, on a tiny random model."""
from __future__ import annotations

import pytest
import torch

from xling_ray.config import LossConfig
from xling_ray.data import get_benchmark, load_train_set
from xling_ray.losses import classification_loss
from xling_ray.methods import registered_terms
from xling_ray.losses.views import RunningCentroid
from xling_ray.models import load_model, load_tokenizer
from xling_ray.train import LocalSession, run_recipe, training_step
from xling_ray.data.batches import collate, encode
from xling_ray.train.loop import model_config_for

XLL_ON = {"w_ce_perturbed": 0.3, "w_dispersion": 0.2, "w_attention": 0.5, "w_ot": 0.4, "ot_eps": 0.01}
DING_ON = {"w_robust": 0.5, "w_attention_pull": 0.5, "steps": 2, "rho": 0.1}


@pytest.fixture(scope="module")
def setup(tiny_recipe):
    tok = load_tokenizer(tiny_recipe.model)
    data = encode(tok, load_train_set(tiny_recipe.data, "xnli"), tiny_recipe.model.max_length)
    batch = collate(data, list(range(8)), tok.pad_token_id)
    state = {"train_token_ids": sorted({i for s in data.input_ids for i in s}),
             "special_ids": sorted(tok.all_special_ids), "tokenizer": tok}
    return batch, state


def _model(recipe, losses: LossConfig | None = None):
    torch.manual_seed(0)
    r = recipe if losses is None else recipe.model_copy(update={"losses": losses})
    return load_model(model_config_for(r), num_labels=get_benchmark("xnli").num_labels)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_every_method_term_is_registered_and_off_by_default():
    names = {t.name for t in registered_terms()}
    assert {"xll_ce", "xll_dispersion", "xll_attention", "xll_ot", "ding_robust", "ding_attention"} <= names
    assert all(t.weight(LossConfig()) == 0 for t in registered_terms())


def test_all_weights_zero_gives_exactly_plain_cross_entropy_and_its_gradients(tiny_recipe, setup):
    batch, state = setup
    model = _model(tiny_recipe).eval()
    out = training_step(model, batch, LossConfig(), state=dict(state))
    out.loss.backward()
    got = _grads(model)
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = classification_loss(logits, batch["labels"])
    plain.backward()
    assert torch.equal(out.loss, plain)
    assert set(out.parts) == {"ce"}
    want = _grads(model)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


@pytest.mark.parametrize("method,settings", [("xlinglearn", XLL_ON), ("ding2022", DING_ON),
                                             ("ding2022", {**DING_ON, "push": "centroid"})])
def test_each_method_adds_its_terms_with_finite_values_and_gradients(tiny_recipe, setup, method, settings):
    batch, state = setup
    losses = LossConfig.model_validate({method: settings})
    model = _model(tiny_recipe, losses).train()
    out = training_step(model, batch, losses, state=dict(state))
    prefix = "xll_" if method == "xlinglearn" else "ding_"
    active = {t.name for t in registered_terms() if t.weight(losses) > 0}
    assert set(out.parts) == {"ce"} | active and all(n.startswith(prefix) for n in active)
    weighted = out.parts["ce"] + sum(t.weight(losses) * out.parts[t.name] for t in registered_terms() if t.name in active)
    assert torch.allclose(out.loss.detach(), weighted, atol=1e-5)
    out.loss.backward()
    grads = _grads(model)
    assert grads and all(torch.isfinite(g).all() for g in grads.values())


def test_the_perturbed_view_is_built_once_per_step_for_all_xlinglearn_terms(tiny_recipe, setup, monkeypatch):
    import xling_ray.methods.xlinglearn as terms

    batch, state = setup
    losses = LossConfig.model_validate({"xlinglearn": XLL_ON})
    calls = []
    real = terms.substitute_tokens
    monkeypatch.setattr(terms, "substitute_tokens", lambda *a, **k: calls.append(1) or real(*a, **k))
    training_step(_model(tiny_recipe, losses), batch, losses, state=dict(state))
    assert len(calls) == 1


def test_attention_dropout_is_off_only_when_an_attention_term_is_on(tiny_recipe):
    plain = _model(tiny_recipe)
    pulled = _model(tiny_recipe, LossConfig.model_validate({"ding2022": {"w_attention_pull": 0.1}}))
    assert plain.config.attention_probs_dropout_prob > 0
    assert pulled.config.attention_probs_dropout_prob == 0


def test_the_running_centroid_is_checkpointed_and_restored(tiny_recipe, tmp_path):
    recipe = tiny_recipe.with_updates({"data.tasks": ["pawsx"], "train.epochs": 1, "train.eval_every_steps": 1,
                                       "losses.ding2022.push": "centroid", "losses.ding2022.w_robust": 0.5})

    class Stop(Exception):
        pass

    class StopAfterFirst(LocalSession):
        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            raise Stop

    with pytest.raises(Stop):
        run_recipe(recipe, StopAfterFirst(checkpoint_root=str(tmp_path)))
    saved = torch.load(tmp_path / "latest" / "state.pt", weights_only=True)["pawsx"]["terms"]["centroid"]
    assert saved["num_updates"] == 1 and saved["value"].shape == (64,)
    restored = RunningCentroid()
    restored.load_state_dict(saved)
    assert torch.equal(restored.value, saved["value"])
