"""The evaluation loader: a split in a fixed order, clean or as a fixed cue-conflict set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from ..mixing.settings import check_unit_interval
from ..shards.folder import ShardFolder
from ..shards.format import Manifest
from .batch import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Counters,
    Normalize,
    check_view,
)
from .checks import _check_seed, _check_sizes
from .evaluation import EVAL_KINDS, EvalCollate, EvalSet, conflict_donors
from .index import SampleReader, locate_split
from .remote import open_source
from .workers import _worker_init


def make_eval_loader(
    source: str | Path | Manifest | ShardFolder,
    *,
    kind: str = "clean",
    split: str = "val",
    batch_size: int = 64,
    image_size: int = 96,
    num_workers: int = 0,
    seed: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    k: float = 1.0,
    view: str = "image",
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    cache_limit: int | None = None,
    **dataloader_options: Any,
) -> DataLoader:
    """A deterministic evaluation loader over ``split``; yields ``(x, y, info)``.

    Every image is resized so its shorter side is ``image_size`` and centre-cropped (no flip).
    Samples come in manifest order (shard by shard, tar order within a shard), whatever
    ``num_workers``.

    ``kind="clean"``: the original images, one-hot ``y``; ``info`` has ``structure_cls`` =
    ``texture_cls`` = the label and ``is_conflict`` False. ``kind="conflict"``: every sample's
    structure with the texture of a sample of another class drawn once from ``seed`` (the same
    set on every call), ``y = k * onehot(structure) + (1 - k) * onehot(texture)``,
    ``is_conflict`` True; this is the set for the shape-bias metric. ``info`` also holds
    ``key`` and ``texture_key``. Undecodable samples are dropped with a
    :class:`CorruptSampleWarning`, so a batch may be smaller. ``view`` shows the image or
    one of its layers, as in :func:`make_loader` (layer views: ``kind="clean"`` only).
    ``dataloader_options`` go to ``torch.utils.data.DataLoader`` (``pin_memory``,
    ``persistent_workers``, ...).

    ``source`` may be an fsspec URL (``s3://bucket/shards``, ...): its shards are then read
    through the shard cache, as in :func:`make_loader`, with ``storage_options``,
    ``cache_dir`` and ``cache_limit`` (prefetched in the split's order).
    """
    if kind not in EVAL_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(EVAL_KINDS)}")
    k = check_unit_interval("k", k)
    check_view(view, mixes=kind == "conflict")
    _check_sizes(batch_size=batch_size, image_size=image_size, num_workers=num_workers)
    _check_seed(seed)
    normalize = Normalize(mean, std)
    manifest, remote = open_source(source, storage_options, cache_dir, cache_limit)
    samples = locate_split(manifest, split, remote=remote)
    if kind == "clean":
        donors = np.arange(len(samples))
    else:
        donors = conflict_donors(samples.classes, seed)
    dataset = EvalSet(samples, donors, image_size, Counters(num_workers),
                      with_structure=kind == "conflict" or view != "image")
    if remote is not None:  # through the shard cache, prefetched in the split's order
        remote.learn_sizes(samples)
        dataset.reader = SampleReader(remote, plan=samples.sample_paths())
    collate = EvalCollate(manifest.num_classes, k if kind == "conflict" else 1.0, normalize,
                          kind == "conflict", image_size, view)
    worker_init_fn = _worker_init(dataloader_options)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate, worker_init_fn=worker_init_fn, **dataloader_options)
