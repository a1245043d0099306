"""What the training loader knows of the wrappers trainers put around a DataLoader: Ray
Train's, which fetches a batch ahead of its consumer; Ignite's deterministic mode, which
rebuilds the loader around its batch sampler; and Ignite's epochs, which it never tells a
sampler. (accelerate's ``prepare`` needs nothing here: it splits the loader's
:class:`~stexture.loader.sampler.GlobalBatchSampler` across its processes.)"""

from __future__ import annotations

import weakref
from types import FrameType
from typing import Any

from torch.utils.data import DataLoader

from .sampler import EpochSampler

__all__ = ["epoch_sampler_of", "held_ahead", "iterating_wrapper", "uses_reproducible_batches"]


def iterating_wrapper(loader: DataLoader, caller: FrameType | None) -> weakref.ref | None:
    """The DataLoader that called ``iter(loader)`` from ``caller`` if it wraps ``loader`` (Ray
    Train's ``prepare_data_loader`` wrapper: it keeps the wrapped loader in ``_dataloader``),
    as a weak reference; else ``None``."""
    wrapper = caller.f_locals.get("self") if caller is not None else None
    if (isinstance(wrapper, DataLoader) and wrapper is not loader
            and getattr(wrapper, "_dataloader", None) is loader):
        return weakref.ref(wrapper)
    return None


def held_ahead(wrapper: weakref.ref | None) -> int:
    """Batches the wrapper took from the loader but has not handed to its consumer yet: Ray
    Train's wrapper fetches the next batch (into ``next_batch``) before it returns one."""
    held = wrapper() if wrapper is not None else None
    return int(held is not None and getattr(held, "next_batch", None) is not None)


def epoch_sampler_of(batch_sampler: Any) -> EpochSampler:
    """The :class:`EpochSampler` under ``batch_sampler`` and the wrappers around it (each
    exposing the one below as ``sampler`` or ``batch_sampler``, as Ignite's
    ``ReproducibleBatchSampler`` does)."""
    seen: set[int] = set()
    node = batch_sampler
    while node is not None and id(node) not in seen:
        if isinstance(node, EpochSampler):
            return node
        seen.add(id(node))
        sampler = getattr(node, "sampler", None)
        node = sampler if sampler is not None else getattr(node, "batch_sampler", None)
    raise TypeError("CueConflictLoader rebuilt with a batch_sampler that does not draw from "
                    f"its EpochSampler ({type(batch_sampler).__name__}); build it with "
                    "make_loader")


def uses_reproducible_batches(engine: Any) -> bool:
    """Whether an Ignite engine resumes mid-epoch itself, by skipping batches of its
    ``ReproducibleBatchSampler`` (``DeterministicEngine``, ``deterministic=True``)."""
    try:
        from ignite.engine.deterministic import DeterministicEngine
    except ImportError:
        return False
    return isinstance(engine, DeterministicEngine)
