"""What a method is to the recipe, the sweep and the step: one notion of "off" (each settings
class's ``off()``), the methods a recipe has (the built-in ones and those it names), and the
terms the step weighs (the active methods' only)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from xling_ray.config import ConfigError, recipe_from_dict
from xling_ray.method_settings import BUILTIN
from xling_ray.tune.space import SearchSpace, load_search_space, methods_on

REPO = Path(__file__).resolve().parents[1]
TOY = "tests.toy_method"

#: A plug-in whose ``active`` reads a setting its ``off()`` does not name (``weight``), and
#: whose term is weighted by ``weight`` whether or not the method is on.
LEAKY = '''
from typing import Any

import torch
from pydantic import Field

from xling_ray.config import MethodSettings
from xling_ray.losses.base import NONE, Term
from xling_ray.methods import Method, register


class LeakySettings(MethodSettings):
    enabled: bool = False
    weight: float = Field(0.0, ge=0)

    @classmethod
    def off(cls) -> dict[str, Any]:
        return {"enabled": False}

    @property
    def active(self) -> bool:
        return self.enabled or self.weight > 0


class HalfSettings(MethodSettings):
    """On when ``enabled``; its term's weight is ``weight`` either way."""

    enabled: bool = False
    weight: float = Field(1.0, ge=0)

    @classmethod
    def off(cls) -> dict[str, Any]:
        return {"enabled": False}


def half_value(ctx) -> torch.Tensor:
    return ctx.state["half_table"]  # what its preparation would have made: a KeyError when it did not run


register(Method("leaky", LeakySettings))
register(Method("half", HalfSettings, terms=(Term("half", NONE, lambda c: c.half.weight, half_value),)))
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """``tests.toy_method`` and a ``leaky_plugin`` module importable (here only), unregistered after."""
    from xling_ray.methods import unregister

    (tmp_path / "leaky_plugin.py").write_text(LEAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(REPO))
    yield tmp_path
    for key in ("toy", "leaky", "half"):
        unregister(key)
    for name in (TOY, "leaky_plugin"):
        sys.modules.pop(name, None)


def _space(tmp_path, tiny_recipe, methods, losses, search) -> Path:
    recipe = tiny_recipe.model_dump(mode="json")
    recipe["methods"], recipe["losses"] = list(methods), losses
    doc = {"recipe": recipe, "search": search,
           "sweep": {"num_samples": 2, "seeds": 1, "constraint": {"metric": "acc_en", "baseline": "plain", "delta": 2}}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# ---------------------------------------------------------------- one notion of "off"

def test_every_built_in_method_is_off_by_default_and_at_its_off_settings_and_on_otherwise():
    for key, settings in BUILTIN.items():
        off = settings.off()
        assert off and set(off) <= set(settings.model_fields), key
        assert not settings().active and not settings.model_validate(off).active, key
    assert BUILTIN["xite"](ratio=0.5).active and BUILTIN["adjustment"](regime="continual").active
    assert BUILTIN["xlinglearn"](w_ot=0.1).active and BUILTIN["ding2022"](w_attention_pull=0.1).active
    # What off() does not name does not switch a method on: adjustment's weights without a regime.
    assert not BUILTIN["adjustment"](w_align=5.0, base_rate=3.0).active


def test_the_plain_point_switches_the_documented_toy_method_off_searched_or_fixed(plugins, tiny_recipe, tmp_path):
    searched = load_search_space(_space(tmp_path, tiny_recipe, [TOY], {"toy": {"weight": 0.5}},
                                        {"losses.toy.weight": {"uniform": [0.1, 1.0]},
                                         "train.warmup_ratio": {"uniform": [0.0, 0.2]}}))
    assert searched.baseline_point == {"losses.toy.weight": 0.0, "train.warmup_ratio": 0.1}
    fixed = load_search_space(_space(tmp_path, tiny_recipe, [TOY], {"toy": {"weight": 0.5}},
                                     {"train.warmup_ratio": {"uniform": [0.0, 0.2]}}))
    assert fixed.baseline_point == {"train.warmup_ratio": 0.1, "losses.toy.weight": 0.0}
    plain = fixed.recipe.with_updates(fixed.baseline_point)
    assert methods_on(plain) == [] and methods_on(fixed.recipe) == ["toy"]


def test_a_plain_point_that_leaves_a_method_on_is_refused_at_load_in_one_line(plugins, tiny_recipe, tmp_path):
    path = _space(tmp_path, tiny_recipe, ["leaky_plugin"], {"leaky": {"enabled": True}},
                  {"losses.leaky.weight": {"uniform": [0.5, 1.0]}})
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert "the plain configuration" in message and "leaves ['leaky'] on" in message
    # Without the leak (weight fixed at 0, enabled searched off) the same plug-in loads, plain is off.
    ok = load_search_space(_space(tmp_path, tiny_recipe, ["leaky_plugin"], {"leaky": {"enabled": True}},
                                  {"train.warmup_ratio": {"uniform": [0.0, 0.2]}}))
    assert ok.baseline_point == {"train.warmup_ratio": 0.1, "losses.leaky.enabled": False}


def test_register_refuses_settings_without_off_or_still_on_at_off(plugins):
    from pydantic import Field

    from xling_ray.config import MethodSettings
    from xling_ray.methods import Method, register

    class NoOff(MethodSettings):
        weight: float = Field(0.0, ge=0)

    class StillOn(MethodSettings):
        weight: float = 1.0
        switch: bool = True

        @classmethod
        def off(cls):
            return {"weight": 0.0}

        @property
        def active(self):
            return self.switch

    with pytest.raises(NotImplementedError, match="NoOff must say which settings switch its method off"):
        register(Method("no_off", NoOff))
    with pytest.raises(ValueError, match=r"method 'still_on': its settings at off\(\) \{'weight': 0.0\} are still active"):
        register(Method("still_on", StillOn))
    assert "no_off" not in recipe_from_dict({}).losses.methods()


# ---------------------------------------------------------------- the methods a recipe has

def test_a_recipe_has_the_built_in_methods_and_those_it_names_whatever_was_imported(plugins, tiny_recipe):
    import importlib

    importlib.import_module(TOY)  # registered in this process, as a test's toy used to leak into others
    plain = recipe_from_dict(tiny_recipe.model_dump(mode="json") | {"methods": []})
    assert list(plain.losses.methods()) == list(BUILTIN) and "toy" not in plain.model_dump()["losses"]
    named = recipe_from_dict(tiny_recipe.model_dump(mode="json") | {"methods": [TOY]})
    assert list(named.losses.methods()) == [*BUILTIN, "toy"]
    with pytest.raises(ConfigError) as err:
        recipe_from_dict({"losses": {"toy": {"weight": 1.0}}}, source="r.yaml")
    assert str(err.value) == ("r.yaml: losses.toy: method 'toy' is registered by tests.toy_method, which the recipe's "
                              "`methods:` does not name (it has []); add it there")


def test_reading_a_recipe_and_its_methods_sections_imports_no_torch():
    code = textwrap.dedent("""
        import sys
        from xling_ray.config import recipe_from_dict
        r = recipe_from_dict({"losses": {"xite": {"ratio": 0.5}, "adjustment": {"regime": "continual"},
                                         "xlinglearn": {"w_ot": 0.1}, "ding2022": {"w_robust": 0.2}}})
        assert r.losses.xite.ratio == 0.5 and r.losses.adjustment.active
        print(sorted(m for m in ("torch", "transformers", "ray") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


def test_a_search_space_from_a_fresh_process_validates_its_plugin_sections(plugins, tiny_recipe, tmp_path):
    """The same YAML, read where nothing was imported before: its ``methods:`` brings the toy."""
    path = _space(tmp_path, tiny_recipe, [TOY], {"toy": {"weight": 0.5}}, {"losses.toy.weight": {"uniform": [0.1, 1.0]}})
    code = (f"from xling_ray.tune.space import load_search_space; "
            f"print(load_search_space({str(path)!r}).baseline_point)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**__import__("os").environ, "PYTHONPATH": f"{REPO}:{plugins}"})
    assert out.stdout.strip() == "{'losses.toy.weight': 0.0}"


# ---------------------------------------------------------------- the step

def test_the_step_weighs_the_terms_of_active_methods_only(plugins, tiny_recipe):
    from xling_ray.data import get_benchmark, load_train_set
    from xling_ray.data.batches import collate, encode
    from xling_ray.losses import classification_loss
    from xling_ray.models import load_model, load_tokenizer
    from xling_ray.train import training_step

    recipe = recipe_from_dict(tiny_recipe.model_dump(mode="json") | {"methods": ["leaky_plugin"]})
    tok = load_tokenizer(recipe.model)
    batch = collate(encode(tok, load_train_set(recipe.data, "xnli"), recipe.model.max_length), list(range(4)),
                    tok.pad_token_id)
    torch.manual_seed(0)
    model = load_model(recipe.model, num_labels=get_benchmark("xnli").num_labels).eval()
    ce = classification_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                             batch["labels"])
    # Off (enabled False), though its term's weight is 1: no term, and no KeyError for the state
    # its preparation (which did not run) would have made.
    assert recipe.losses.half.weight == 1.0 and not recipe.losses.half.active
    off = training_step(model, batch, recipe.losses, state={})
    assert set(off.parts) == {"ce"} and torch.equal(off.loss, ce)
    on = recipe.with_updates({"losses.half.enabled": True}).losses
    out = training_step(model, batch, on, state={"half_table": torch.tensor(2.5)})
    assert set(out.parts) == {"ce", "half"} and torch.allclose(out.loss, ce + 1.0 * 2.5)
