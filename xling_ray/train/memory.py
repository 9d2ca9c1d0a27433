"""A cap on a trial's memory (``scaling.memory_limit_gb``), so that a configuration that
cannot fit fails alone, with the reason, instead of bringing the machine's OOM killer
down on whatever process it picks (often another trial, or Ray itself).

The cap is an address-space limit (``RLIMIT_AS``, soft) on the training process, set
when training starts at what the process already maps plus ``memory_limit_gb`` GiB, and
restored when it ends (Tune reuses a trial's process for the next trial). An allocation
past it fails in the allocator, so torch raises (``DefaultCPUAllocator: can't allocate
memory``) and the trial ends with :class:`TrialOutOfMemory`. Address space counts
reservations as well as memory in use (thread stacks, allocator arenas), so leave the
cap some room above what a trial really needs. Linux only; elsewhere the setting is
refused when training starts. CPU trials only: CUDA reserves address space in bulk when
it starts, so the recipe refuses the cap with ``scaling.use_gpu`` (a CUDA out-of-memory
error already fails its trial alone, and is never reported as exceeding the cap).

What Ray does itself, and is used: the cap is also the trial's Ray ``memory`` resource
(:func:`xling_ray.tune.trainable.trial_resources`, and each Ray Train worker's), so Ray
schedules no more trials on a node than their caps fit. Ray's memory monitor (on by
default) stays the node-wide backstop: it kills a worker when the whole node runs low,
which cannot say which configuration needed the memory, hence the per-process cap.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from typing import Iterator

GIB = 2**30


class TrialOutOfMemory(MemoryError):
    """Training needed more memory than ``scaling.memory_limit_gb`` allows."""


def mapped_bytes() -> int:
    """The process's address space now (``VmSize`` of ``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/self/status has no VmSize")


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is the CPU allocator failing under the cap: Python's ``MemoryError``, or
    torch's ``DefaultCPUAllocator: can't allocate memory``. Not a CUDA out-of-memory error (GPU
    memory, which the cap does not count), nor any other message that says "out of memory"."""
    if type(err).__name__ == "OutOfMemoryError" or "CUDA" in str(err):
        return False
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


@contextlib.contextmanager
def memory_limit(gib: float | None) -> Iterator[None]:
    """Within the block, the process may map at most ``gib`` GiB more than it maps now;
    an allocation past that raises :class:`TrialOutOfMemory`. ``None``: no cap."""
    if not gib:
        yield
        return
    if not sys.platform.startswith("linux"):
        raise ValueError(f"scaling.memory_limit_gb={gib:g}: the cap is an address-space limit read from /proc, "
                         "Linux only; leave it unset here")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    start = mapped_bytes()
    cap = start + int(gib * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    except Exception as err:
        if not _out_of_memory(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrialOutOfMemory(
            f"out of memory: the trial needed more than scaling.memory_limit_gb={gib:g} GiB above the "
            f"{start / GIB:.1f} GiB its process mapped at start ({first[:200]})") from err
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def release_memory() -> None:
    """Free what the finished trial left: reference cycles, then the C heap.

    Each trial of a reused Tune actor runs in a new thread, and glibc keeps the
    memory a thread freed in that thread's arena instead of handing it to the
    next one: without ``malloc_trim`` the process grew with every trial of the
    offline model (bench/RESULTS.md, item 6 measures it). Ray-free: the GPU bundle's
    trial processes call it too (bench/gpu/part_a.py)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass
