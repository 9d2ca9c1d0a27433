"""Check a run's inputs in the driver, before Ray starts.

A trial reads its benchmark files, builds the target-language pools (XITE,
cross-lingual adjustment), runs the leakage guard and loads the model. Any of
these failing inside the trials would fail every trial the same way, after Ray
has started, and fill the leaderboard with ERROR rows. :func:`check_space` and
:func:`check_recipe` do the same reads once, in the driver, with the same code
the trials run, so that a bad input fails at once with the trial's own one-line
message (the CLI exits with status 2) and nothing is written.

What is checked, for each recipe a sweep can run (its fixed recipe, the
configurations it tries first, and the middle of the searched ranges, which
turns on every searched loss term):

* every evaluation file of each task, language and split, and each task's
  English training file (local folder or hub), parsed as a trial parses them;
* the held-out and skipped parts (``data.heldout``, ``data.eval_skip_first``)
  leave something to evaluate;
* what each active method reads before training (its ``Method.check``: XITE's and
  adjustment's pools, and the leakage guard between them and the evaluated examples);
* the model: a local folder or a hub name that ``AutoConfig`` and
  ``AutoTokenizer`` can open (the offline default is converted here, once), its
  ``config_overrides`` and ``num_layers``.

Files are parsed once per process (:mod:`xling_ray.data.sources` caches them),
so the check costs a few seconds and the trials started in this process pay
nothing more.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from xling_ray.config import RecipeConfig

if TYPE_CHECKING:
    from xling_ray.tune.space import SearchSpace


def check_recipe(recipe: RecipeConfig) -> None:
    """Read everything a trial of ``recipe`` reads; raise its error (``DataError``,
    ``LeakageError``, ``ModelLoadError``: all ``ValueError``) if any read fails."""
    check_recipes([recipe])


def check_recipes(recipes: Iterable[RecipeConfig]) -> None:
    """:func:`check_recipe` for several recipes, each distinct input read once."""
    from xling_ray.data import load_eval_sets, load_train_set
    from xling_ray.methods.base import active_methods
    from xling_ray.models.loading import check_model

    recipes = list(recipes)
    seen: set[str] = set()
    for recipe in recipes:  # the data first: it fails in seconds, a model may take a conversion
        checks = [m for m in active_methods(recipe.losses) if m.check is not None]
        key = recipe.data.model_dump_json() + recipe.losses.model_dump_json() * bool(checks)
        if key in seen:
            continue
        seen.add(key)
        eval_sets = load_eval_sets(recipe.data)
        for task in recipe.data.tasks:
            load_train_set(recipe.data, task)
            for method in checks:  # what each active method's preparation reads (its pools)
                method.check(recipe, task, eval_sets)
    for model in {r.model.model_dump_json(): r.model for r in recipes}.values():
        check_model(model)


def space_recipes(space: "SearchSpace") -> list[RecipeConfig]:
    """The recipes :func:`check_space` checks: the fixed recipe, the configurations the
    sweep tries first, and the middle of every searched range (every searched term on)."""
    recipe = space.recipe
    points = [{}, *space.first_points()]
    if space.search:
        points.append({key: dist.midpoint() for key, dist in space.search.items()})
    return [recipe.with_updates(p) for p in points]


def check_space(space: "SearchSpace") -> None:
    """Check every input a sweep over ``space`` reads (:func:`space_recipes`)."""
    check_recipes(space_recipes(space))
