"""Moved to :mod:`xling_ray.data.batches` (methods read tokenised sets too); kept for old imports."""
from xling_ray.data.batches import *  # noqa: F401,F403
from xling_ray.data.batches import EncodedSet, collate, encode, epoch_batches, eval_batches, with_prefix  # noqa: F401
