"""``scaling.memory_limit_gb``: a cap for CPU trials only, reported as exceeded only when the
CPU allocator failed under it, and reserved in Ray's scheduler as the trial's ``memory``."""
from __future__ import annotations

import pytest
import torch

from xling_ray.config import ConfigError, recipe_from_dict
from xling_ray.train.memory import GIB, TrialOutOfMemory, memory_limit
from xling_ray.tune.trainable import trial_resources


def test_the_cap_is_refused_with_a_gpu_in_one_line():
    with pytest.raises(ConfigError) as err:
        recipe_from_dict({"scaling": {"use_gpu": True, "gpus_per_worker": 0.5, "memory_limit_gb": 4}}, source="r.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("r.yaml: scaling: Value error, "
                                                                     "scaling.memory_limit_gb=4 caps")
    assert recipe_from_dict({"scaling": {"use_gpu": False, "memory_limit_gb": 4}}).scaling.memory_limit_gb == 4


def test_the_cpu_allocators_failure_under_the_cap_is_reported_as_exceeding_it():
    with pytest.raises(TrialOutOfMemory, match=r"more than scaling.memory_limit_gb=0.5 GiB .*can't allocate memory"):
        with memory_limit(0.5):
            torch.empty(2 * GIB // 4, dtype=torch.float32).fill_(1.0)  # 2 GiB, past 0.5 GiB more than mapped now
    torch.empty(2 * GIB // 4, dtype=torch.float32)  # the cap is lifted when the block ends


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.2 GiB total capacity)"),
    RuntimeError("CUDA error: out of memory"),
    RuntimeError("NCCL error: unhandled system error (out of memory)"),
    RuntimeError("tokenizer ran out of memory budget for the vocabulary"),
])
def test_other_out_of_memory_errors_are_not_reported_as_exceeding_the_cap(error):
    with pytest.raises(type(error)) as raised:
        with memory_limit(64.0):
            raise error
    assert raised.value is error and not isinstance(raised.value, TrialOutOfMemory)


def test_the_cap_is_the_trials_ray_memory_resource():
    capped = recipe_from_dict({"scaling": {"cpus_per_worker": 2, "memory_limit_gb": 1.5}})
    assert trial_resources(capped) == {"cpu": 2, "memory": 1.5 * 2**30}
    assert trial_resources(recipe_from_dict({"scaling": {"cpus_per_worker": 2}})) == {"cpu": 2}
