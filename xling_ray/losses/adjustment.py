"""Moved to the package :mod:`xling_ray.methods.adjustment` (words, aligner, Pharaoh files,
batches, objective, preparation). Kept for old imports."""
from xling_ray.methods.adjustment import *  # noqa: F401,F403
from xling_ray.methods.adjustment import __all__  # noqa: F401
