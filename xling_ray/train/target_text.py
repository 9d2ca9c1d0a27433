"""Moved: target-language pools are :mod:`xling_ray.methods.target_text`'s, XITE's and
adjustment's preparations their methods' (:mod:`xling_ray.methods.xite.prepare`,
:mod:`xling_ray.methods.adjustment.prepare`). Kept for old imports (``xling_ray.preflight``)."""
from xling_ray.methods.adjustment.prepare import AdjustmentData, adjust_before_fine_tuning, prepare_adjustment  # noqa: F401
from xling_ray.methods.target_text import parallel_pairs, target_pairs  # noqa: F401
from xling_ray.methods.xite.prepare import XiteData, prepare_xite  # noqa: F401
