"""Sweeps: typed search spaces -> Tune trials (Optuna TPE, optional ASHA)."""
from xling_ray.tune.space import Distribution, SearchSpace, SweepConfig, load_search_space


def __getattr__(name: str):
    """``run_sweep`` on first use: the sweep imports Ray, the spaces and budgets do not."""
    if name == "run_sweep":
        from xling_ray.tune.sweep import run_sweep

        return run_sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Distribution", "SearchSpace", "SweepConfig", "load_search_space", "run_sweep"]
