"""Methods that use target-language text, wired into the loop: XITE (and the leakage guard)."""
from __future__ import annotations

import pytest
import torch

from xling_ray.config import LossConfig
from xling_ray.data import LeakageError, get_benchmark, load_eval_sets, load_train_set
from xling_ray.losses import StepContext
from xling_ray.methods.xite import mixing_site, xite_loss as _xite
from xling_ray.models import load_model, load_tokenizer
from xling_ray.train import LocalSession, run_recipe
from xling_ray.data.batches import encode
from xling_ray.methods.xite.prepare import prepare_xite
from xling_ray.methods.target_text import target_pairs

SKIP = {"xnli": 1245, "pawsx": 1000}


@pytest.fixture(scope="module")
def xite_recipe(tiny_recipe):
    return tiny_recipe.with_updates({"data.eval_skip_first": SKIP, "data.languages": ["en", "de", "zh", "ja"],
                                     "losses.xite.ratio": 0.5, "losses.pool.max_per_language": 12})


def test_pools_come_from_the_unevaluated_part_and_never_share_ids_or_text(xite_recipe):
    evals = load_eval_sets(xite_recipe.data)
    for task in ("xnli", "pawsx"):
        pools = target_pairs(xite_recipe, task, evals)
        assert set(pools) == ({"de", "zh"} if task == "xnli" else {"de", "zh", "ja"})
        evaluated_ids = set(evals[task]["en"].ids)
        for lang, pool in pools.items():
            assert len(pool) == 12 and not set(pool.ids) & evaluated_ids
            assert all(int(i) < SKIP[task] or task == "pawsx" for i in pool.ids)
            texts = set(evals[task][lang].text_a) | set(evals[task][lang].text_b)
            assert not (set(pool.text_a) | set(pool.text_b)) & texts


def test_the_leakage_guard_refuses_a_pool_that_is_evaluated(xite_recipe):
    leaky = xite_recipe.with_updates({"data.eval_skip_first": {}})
    with pytest.raises(LeakageError, match=r"shares \d+ ids with the evaluation.*eval_skip_first"):
        run_recipe(leaky, LocalSession())


def test_xite_with_lam_one_trains_on_the_source_examples_exactly(xite_recipe):
    recipe = xite_recipe.with_updates({"losses.xite.lam": 1.0, "losses.xite.lda": False, "losses.xite.layer": 1})
    tok = load_tokenizer(recipe.model)
    torch.manual_seed(0)
    model = load_model(recipe.model, get_benchmark("xnli").num_labels).eval()
    train_data = load_train_set(recipe.data, "xnli")
    train = encode(tok, train_data, recipe.model.max_length)
    data = prepare_xite(model, tok, train_data, train, target_pairs(recipe, "xnli", load_eval_sets(recipe.data)),
                        recipe.losses.xite, recipe.model.max_length, tok.pad_token_id)
    assert len(data) == 24  # every target pair kept (tau unset)
    # The matched labels are the matched English examples' labels (k = 1).
    assert all(data.labels[i] == train_data.labels[data.matched[i]] for i in range(len(data)))
    batch = {"input_ids": torch.zeros(8, 4, dtype=torch.long)}
    torch.manual_seed(1)
    ctx = StepContext(model=model, batch=batch, outputs=None, config=recipe.losses, state={"xite": data})
    value = _xite(ctx)
    torch.manual_seed(1)
    b = data.draw(4, torch.device("cpu"))
    logits = model(input_ids=b["src_ids"], attention_mask=b["mask"]).logits
    assert torch.allclose(value, torch.nn.functional.cross_entropy(logits, b["labels"]), atol=1e-6)


def test_xite_with_a_vote_pairs_each_target_with_an_example_of_its_label(xite_recipe):
    """k = 3: the synthetic example is trained on the voted label, so the English example it is
    interpolated with (``matched``) must carry that label, even where the nearest one does not."""
    recipe = xite_recipe.with_updates({"losses.xite.k": 3, "losses.xite.lda": False})
    tok = load_tokenizer(recipe.model)
    torch.manual_seed(0)
    model = load_model(recipe.model, get_benchmark("xnli").num_labels).eval()
    train_data = load_train_set(recipe.data, "xnli")
    targets = target_pairs(recipe, "xnli", load_eval_sets(recipe.data))
    data = prepare_xite(model, tok, train_data, encode(tok, train_data, recipe.model.max_length), targets,
                        recipe.losses.xite, recipe.model.max_length, tok.pad_token_id)
    assert len(data) == 24
    assert [train_data.labels[int(j)] for j in data.matched] == data.labels.tolist()
    nearest = prepare_xite(model, tok, train_data, encode(tok, train_data, recipe.model.max_length), targets,
                           recipe.losses.xite.model_copy(update={"k": 1}), recipe.model.max_length, tok.pad_token_id)
    assert (nearest.matched != data.matched).any()  # the vote moved some pairs off the nearest example
    # A drawn batch: each source row is the tokens of an English example whose label is the row's label.
    torch.manual_seed(1)
    idx = torch.randint(len(data), (16,))
    torch.manual_seed(1)
    b = data.draw(16, torch.device("cpu"))
    for row, i in enumerate(idx.tolist()):
        j = int(data.matched[i])
        assert b["src_ids"][row][b["src_mask"][row].bool()].tolist() == list(data.source.input_ids[j])
        assert int(b["labels"][row]) == train_data.labels[j]


def test_xite_mixes_with_the_projected_target_at_the_chosen_layer(xite_recipe):
    recipe = xite_recipe.with_updates({"losses.xite.lam": 0.0, "losses.xite.layer": 2})
    tok = load_tokenizer(recipe.model)
    torch.manual_seed(0)
    model = load_model(recipe.model, get_benchmark("xnli").num_labels).eval()
    train_data = load_train_set(recipe.data, "xnli")
    data = prepare_xite(model, tok, train_data, encode(tok, train_data, recipe.model.max_length),
                        target_pairs(recipe, "xnli", load_eval_sets(recipe.data)), recipe.losses.xite,
                        recipe.model.max_length, tok.pad_token_id)
    assert data.projector is not None and data.projector.n_components == 2  # 3 languages (en, de, zh) -> 2
    seen = {}
    site = mixing_site(model, 2)
    handle = site.register_forward_hook(lambda m, i, o: seen.setdefault("h", o[0] if isinstance(o, tuple) else o))
    try:
        torch.manual_seed(1)
        _xite(StepContext(model=model, batch={"input_ids": torch.zeros(8, 4, dtype=torch.long)}, outputs=None,
                          config=recipe.losses, state={"xite": data}))
    finally:
        handle.remove()
    # The first call of the site is the target pass: with lam = 0 the source's states are replaced by phi(h_tgt).
    torch.manual_seed(1)
    b = data.draw(4, torch.device("cpu"))
    h_tgt = model.base_model(input_ids=b["tgt_ids"], attention_mask=b["tgt_mask"], output_hidden_states=True).hidden_states[2]
    assert torch.allclose(seen["h"], h_tgt, atol=1e-5)
    projected = data.projector.project(h_tgt)
    assert torch.allclose(data.projector.project(projected), projected, atol=1e-4)


def test_a_run_with_xite_reports_its_term(xite_recipe):
    last = run_recipe(xite_recipe.with_updates({"train.epochs": 1}), LocalSession())
    assert last["loss_xnli_xite"] > 0 and last["loss_pawsx_xite"] > 0


# ---------------------------------------------------------------- cross-lingual adjustment

from xling_ray.methods.adjustment import adjustment_objective  # noqa: E402
from xling_ray.methods.adjustment.prepare import adjust_before_fine_tuning, prepare_adjustment  # noqa: E402
from xling_ray.methods.target_text import parallel_pairs  # noqa: E402


@pytest.fixture(scope="module")
def adj_recipe(tiny_recipe):
    return tiny_recipe.with_updates({
        "data.eval_skip_first": SKIP, "data.languages": ["en", "de", "zh"], "losses.pool.max_per_language": 16,
        "losses.adjustment.align_layer": 1, "losses.adjustment.batch_size": 8, "losses.adjustment.steps": 12,
        "losses.adjustment.lr": 1e-3,
    })


@pytest.fixture(scope="module")
def adj_data(adj_recipe):
    tok = load_tokenizer(adj_recipe.model)
    torch.manual_seed(0)
    model = load_model(adj_recipe.model, get_benchmark("xnli").num_labels)
    pairs = parallel_pairs(adj_recipe, "xnli", load_eval_sets(adj_recipe.data))
    return model, prepare_adjustment(model, tok, pairs, adj_recipe.losses.adjustment, adj_recipe.model.max_length)


def test_parallel_pairs_are_translations_from_the_unevaluated_part(adj_recipe):
    evals = load_eval_sets(adj_recipe.data)
    pairs = parallel_pairs(adj_recipe, "xnli", evals)
    assert len(pairs) == 32  # 16 per target language
    english_eval = set(evals["xnli"]["en"].text_a) | set(evals["xnli"]["en"].text_b)
    assert not {e for _, e in pairs} & english_eval


def test_l_reg_is_zero_at_the_start_and_before_regime_lowers_the_adjustment_loss(adj_recipe, adj_data):
    model, data = adj_data
    model.eval()
    torch.manual_seed(0)
    parts = adjustment_objective(model, data.original, data.draw(8, torch.device("cpu")), 1.0)
    assert parts.reg.item() == 0.0 and parts.align.item() > 0
    losses = adjust_before_fine_tuning(model, data, adj_recipe.losses.adjustment, torch.device("cpu"))
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert all(not p.requires_grad for p in data.original.parameters())


def test_a_file_pool_that_holds_an_evaluated_sentence_is_refused(adj_recipe, tmp_path):
    evals = load_eval_sets(adj_recipe.data)
    leaked = evals["xnli"]["de"].text_a[0]
    files = {}
    for lang in ("de", "zh"):
        path = tmp_path / f"{lang}.txt"
        path.write_text(f"{leaked if lang == 'de' else 'ein Satz'} ||| a sentence\n", encoding="utf-8")
        files[lang] = str(path)
    recipe = adj_recipe.with_updates({"losses.pool.source": "files", "losses.pool.files": files})
    with pytest.raises(LeakageError, match="de"):
        parallel_pairs(recipe, "xnli", evals)


def test_continual_adjustment_computes_both_terms(adj_recipe):
    recipe = adj_recipe.with_updates({"losses.adjustment.regime": "continual", "data.tasks": ["xnli"], "train.epochs": 1,
                                      "train.lr": 1e-3})
    last = run_recipe(recipe, LocalSession())
    # After fine-tuning steps the English vectors have left f0's: L_reg is positive, not skipped.
    assert last["loss_xnli_adj_align"] > 0 and last["loss_xnli_adj_reg"] > 0
    # With w_reg = 0 the frozen pass is skipped and L_reg is not computed.
    last = run_recipe(recipe.with_updates({"losses.adjustment.w_reg": 0.0}), LocalSession())
    assert last["loss_xnli_adj_align"] > 0 and "loss_xnli_adj_reg" not in last
