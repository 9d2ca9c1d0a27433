"""Moved: each method's terms live in its module under :mod:`xling_ray.methods`. Kept for old imports."""
from xling_ray.losses.base import ATTENTIONS, HIDDEN, NONE, Term  # noqa: F401
from xling_ray.losses.views import substitute_tokens  # noqa: F401
from xling_ray.methods.adjustment import TERMS as ADJUSTMENT_TERMS  # noqa: F401
from xling_ray.methods.ding2022 import TERMS as DING2022_TERMS, pushed_view  # noqa: F401
from xling_ray.methods.xite import mixing_site, xite_loss as _xite  # noqa: F401
from xling_ray.methods.xite import METHOD as _XITE
from xling_ray.methods.xlinglearn import TERMS as XLINGLEARN_TERMS, neighbour_table, perturbed_view  # noqa: F401
from xling_ray.models.encode import segments, unwrap  # noqa: F401

XITE_TERMS = _XITE.terms
