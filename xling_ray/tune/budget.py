"""Budgets: how much each trial of a search space trains, set apart from what it searches.

A search space says what to search; a budget says at what size: the CPU learning budget the
shipped spaces are written at (``search_spaces/budgets/cpu.yaml``: nothing changed) or the full
one (``full.yaml``: XTREME's fine-tuning protocol, Hu et al. 2020). ``xling-ray sweep SPACE
--budget NAME`` composes the two, so each space exists once:

.. code-block:: yaml

    recipe:                   # dotted recipe fields, set over the space's recipe
      train.lr: 2.0e-5
      data.train_size: null
    sweep:                    # sweep fields, set over the space's sweep
      seeds: 3

A searched field the budget sets is fixed: it leaves ``search`` and every
``points_to_evaluate`` entry (a budget that fixes the learning rate searches it no more).
``NAME`` is a YAML file, or a name looked up as ``budgets/NAME.yaml`` beside the space.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xling_ray.config import ConfigError, format_validation_error, set_dotted

#: The budgets shipped beside the spaces (``search_spaces/budgets/``).
BUDGETS = ("cpu", "full")


class Budget(BaseModel):
    """A budget file, validated: dotted recipe fields and sweep fields to set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: dict[str, Any] = Field(default_factory=dict, description="dotted recipe field -> value")
    sweep: dict[str, Any] = Field(default_factory=dict, description="sweep field -> value")


def budget_path(budget: str | Path, space_path: str | Path) -> Path:
    """The file of ``budget``: itself when it names a file, else ``budgets/<budget>.yaml``
    beside the space (``search_spaces/budgets/full.yaml`` for ``search_spaces/xite.yaml``)."""
    given = Path(budget)
    if given.suffix in (".yaml", ".yml") or given.is_file():
        return given
    return Path(space_path).parent / "budgets" / f"{budget}.yaml"


def load_budget(budget: str | Path, space_path: str | Path) -> Budget:
    """Read and validate a budget; errors name the file (and the budgets there are)."""
    path = budget_path(budget, space_path)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ConfigError(f"--budget {budget}: {path} not found" + (f"; budgets there: {known}" if known else
                                                                     "; give a budget YAML file"))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Budget.model_validate(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None


def apply_budget(raw: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """The raw search space ``raw`` (a YAML mapping) at ``budget`` (a copy): its recipe fields
    set, the searched fields it sets taken out of ``search`` and ``points_to_evaluate``, its
    sweep fields set."""
    out = copy.deepcopy(raw)
    out["recipe"] = set_dotted(out.get("recipe") or {}, budget.recipe)
    fixed = set(budget.recipe)
    search = {k: v for k, v in (out.get("search") or {}).items() if k not in fixed}
    if "search" in out or search:
        out["search"] = search
    sweep = dict(out.get("sweep") or {})
    if sweep.get("points_to_evaluate"):
        points = [{k: v for k, v in p.items() if k not in fixed} for p in sweep["points_to_evaluate"]]
        sweep["points_to_evaluate"] = [p for p in points if p] if search else []
    sweep.update(budget.sweep)
    out["sweep"] = sweep
    return out
