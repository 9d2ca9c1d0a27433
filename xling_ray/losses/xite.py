"""Moved to :mod:`xling_ray.methods.xite` (building blocks in :mod:`~xling_ray.methods.xite.blocks`;
the sentence encoder is :func:`xling_ray.models.encode.encode_texts`). Kept for old imports."""
from xling_ray.methods.xite.blocks import LanguageLDA, Match, interpolate, match_to_english, sample_lambda  # noqa: F401
from xling_ray.models.encode import encode_texts  # noqa: F401

__all__ = ["LanguageLDA", "Match", "encode_texts", "interpolate", "match_to_english", "sample_lambda"]
