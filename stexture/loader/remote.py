"""Shards at a URL as the loaders read them: through the shard cache, prefetched in the order
this process will read them.

A loader over ``s3://bucket/shards`` (or any fsspec URL) locates its samples as for a local
folder (their ``path`` is the shard's URL), and its :class:`~.index.SampleReader` asks a
:class:`RemoteShards` for the local copy of a shard when it reads one: the
:class:`~stexture.shards.cache.ShardCache` downloads it once per node, checks it against the
manifest's SHA-256 and keeps it pinned while it is read. Each process (the main one, each
DataLoader worker) tells its cache in which order it will need the shards, so the next ones
download while the current ones are read: for the training loader the shards of this
process's batches in this epoch's order (:func:`process_order`), for the evaluation loader
the split's shards in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..shards import storage
from ..shards.cache import ShardCache, ShardRef
from ..shards.folder import ShardFolder
from ..shards.format import Manifest
from .index import SampleIndex, SampleReader
from .sampler import EpochSampler, Ticket
from .train import Item, TrainSet

__all__ = ["PREFETCH_AHEAD", "CachedTrainSet", "RemoteShards", "open_source", "process_order"]

#: Shards each reading process keeps downloaded ahead of the one it reads.
PREFETCH_AHEAD = 8


class RemoteShards:
    """The shards of a remote folder, by URL, and the cache that holds their local copies.

    Parameters
    ----------
    manifest : Manifest
        A manifest read from a URL (its ``storage_options`` reach the storage).
    cache_dir : str or Path, optional
        The cache folder (default :func:`~stexture.shards.cache.default_cache_dir`).
    cache_limit : int, optional
        The most bytes the cached shards of this folder may take.
    **cache_options
        Passed to :class:`~stexture.shards.cache.ShardCache` (``retries``, ``backoff``,
        ``prefetch_workers``).

    Notes
    -----
    Picklable (to DataLoader workers): each process gets its own pins and prefetch order.
    """

    def __init__(self, manifest: Manifest, *, cache_dir: str | Path | None = None,
                 cache_limit: int | None = None, **cache_options: Any) -> None:
        self.cache = ShardCache(str(manifest.root), cache_dir, cache_limit,
                                manifest.storage_options, **cache_options)
        self.refs: dict[str, ShardRef] = {}
        for infos in manifest.splits.values():
            for info in infos:
                url = str(storage.join(manifest.root, info.name))
                self.refs[url] = ShardRef(info.name, info.sha256)
        self._planned: tuple[int, Any] | None = None  # (pid, what the plan was made for)

    def learn_sizes(self, samples: SampleIndex) -> None:
        """Take the shard sizes an offsets file recorded (each spares a request when the
        shard is fetched)."""
        for path, check in zip(samples.paths, samples.checks, strict=True):
            ref = self.refs.get(path)
            if check is not None and ref is not None and ref.size is None:
                self.refs[path] = ShardRef(ref.name, ref.sha256, check.size)

    def pin(self, url: str) -> Path:
        """The verified local copy of the shard at ``url``, kept from eviction until
        :meth:`unpin` (:meth:`~stexture.shards.cache.ShardCache.pin`)."""
        ref = self.refs[url]
        return self.cache.pin(ref.name, ref.sha256, ref.size)

    def unpin(self, url: str) -> None:
        """Release a :meth:`pin` of the shard at ``url``."""
        self.cache.unpin(self.refs[url].name)

    def ref(self, url: str) -> ShardRef:
        """The manifest's record of the shard at ``url``."""
        return self.refs[url]

    def planned(self, key: Any) -> bool:
        """Whether this process has set its prefetch order for ``key`` (an epoch, say)."""
        return self._planned == (os.getpid(), key)

    def plan(self, urls: Iterable[str], key: Any) -> None:
        """Prefetch the shards at ``urls`` (the shard of each sample this process reads,
        in order) in this process, the order for ``key``: each shard once, in order of
        first use, and kept (from eviction) until its last sample is read."""
        self._planned = (os.getpid(), key)
        order: dict[str, None] = {}
        until: dict[str, int] = {}
        for url in urls:
            order.setdefault(url, None)
            until[url] = len(order)  # needed until the next new shard is asked for
        self.cache.prefetch([self.refs[url] for url in order], ahead=self._ahead(),
                            until={self.refs[url].name: end for url, end in until.items()})

    def _ahead(self) -> int:
        """Shards to prefetch: :data:`PREFETCH_AHEAD`, or with a ``cache_limit`` what this
        process's share of it holds beside the two it reads (a prefetch past that only
        evicts shards it fetched, which are then fetched again)."""
        limit = self.cache.cache_limit
        sizes = [ref.size for ref in self.refs.values() if ref.size]
        if limit is None or not sizes:
            return PREFETCH_AHEAD
        worker = torch.utils.data.get_worker_info()
        share = limit // max(sizes) // (worker.num_workers if worker else 1)
        return max(1, min(PREFETCH_AHEAD, share - 2))

    def __getstate__(self) -> dict[str, Any]:
        return {"cache": self.cache, "refs": self.refs, "_planned": None}


def process_order(sampler: EpochSampler, epoch: int) -> np.ndarray:
    """The sample indices of ``epoch`` that this process will read, in order: this rank's
    share of the epoch (:meth:`~.sampler.EpochSampler.rank_order`), and of it (in a
    DataLoader worker) the batches this worker gets, every ``num_workers``-th from its id
    (a DataLoader hands its workers batches in turn, from worker 0 each epoch).

    Read from the sampler as it stands in this process: in a worker, the sampler as it was
    when the workers started (so its upcoming epoch and start slot are the ones the main
    process runs, a resumed epoch included, laid out for the world size it was saved with);
    in the main process, the running epoch. A later epoch of persistent workers starts at
    slot 0. A plan that is off costs speed (a shard fetched when needed), never correctness.
    """
    order = sampler.rank_order(epoch=epoch)
    size = sampler.batch_size
    if sampler.drop_last:  # the DataLoader drops a short last batch too
        order = order[:len(order) // size * size]
    worker = torch.utils.data.get_worker_info()
    if worker is None or worker.num_workers <= 1:
        return order
    return order[(np.arange(len(order)) // size) % worker.num_workers == worker.id]


class CachedTrainSet(TrainSet):
    """A :class:`~.train.TrainSet` over remote shards: the first ticket of an epoch in a
    process works out that process's order (:func:`process_order`) and hands it to the
    cache, which prefetches the shards in it and spares each from eviction until its last
    sample is read (:meth:`RemoteShards.plan`)."""

    def __init__(self, samples: SampleIndex, *, remote: RemoteShards, sampler: EpochSampler,
                 **options: Any) -> None:
        super().__init__(samples, **options)
        self.remote = remote
        self.sampler = sampler
        self.reader = SampleReader(remote)

    def __getitem__(self, ticket: Ticket) -> Item:
        if not self.remote.planned(ticket.epoch):
            try:
                order = process_order(self.sampler, ticket.epoch)
            except Exception:  # noqa: BLE001 - a plan is an optimisation: read without one
                order = np.empty(0, np.int64)
            paths, shard = self.samples.paths, self.samples.shard
            self.remote.plan((paths[i] for i in shard[order].tolist()), ticket.epoch)
        return super().__getitem__(ticket)


def open_source(source: Any, storage_options: dict[str, Any] | None,
                cache_dir: str | Path | None, cache_limit: int | None
                ) -> tuple[Manifest, RemoteShards | None]:
    """A loader's ``source`` opened: its manifest (read with ``storage_options`` for a
    URL), and for a folder at a URL the :class:`RemoteShards` its shards are read through
    (None for a local folder, read in place: ``cache_dir`` and ``cache_limit`` do not
    apply to it)."""
    manifest = ShardFolder.open(source, storage_options=storage_options).manifest
    if not isinstance(manifest.root, str):
        return manifest, None
    return manifest, RemoteShards(manifest, cache_dir=cache_dir, cache_limit=cache_limit)
