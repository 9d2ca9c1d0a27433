"""Sweeps: typed search spaces -> Tune trials (Optuna TPE, optional ASHA)."""
from xling_ray.tune.space import Distribution, SearchSpace, SweepConfig, load_search_space
from xling_ray.tune.sweep import run_sweep

__all__ = ["Distribution", "SearchSpace", "SweepConfig", "load_search_space", "run_sweep"]
