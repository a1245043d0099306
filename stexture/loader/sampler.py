"""The epoch order of the training loader: one global permutation per epoch, split exactly
across ranks (workers then take whole batches of it, as in any map-style DataLoader)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import BatchSampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["EpochSampler", "GlobalBatchSampler", "Ticket", "resolve_ranks"]


class Ticket(NamedTuple):
    """What the sampler hands the dataset: the sample, and the epoch and slot (its position
    in the epoch's global order) that seed its crop and its batch's mixing, so the pixels do
    not depend on which worker or rank reads it."""

    index: int
    epoch: int
    slot: int


def resolve_ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size): the explicit values, else an initialised ``torch.distributed``, else
    the ``RANK`` / ``WORLD_SIZE`` environment variables (torchrun, Lightning), else 0 of 1."""
    if rank is not None and world_size is not None:
        return rank, world_size
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    env_rank, env_world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if env_rank is not None and env_world is not None:
        found = int(env_rank), int(env_world)
        if not 0 <= found[0] < found[1]:
            raise ValueError(f"RANK={env_rank} and WORLD_SIZE={env_world} are inconsistent")
        return found
    return 0, 1


def check_ranks(rank: int | None, world_size: int | None) -> None:
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is not None and (world_size < 1 or not 0 <= rank < world_size):
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


#: The longest epoch ``samples_per_epoch`` may ask for: the epoch's order is held in memory
#: (8 bytes a sample, 512 MiB here), and built before its first batch.
MAX_SAMPLES_PER_EPOCH = 2**26
#: The most passes over the data one epoch may make: each pass is a fresh permutation, drawn
#: before the first batch (1000 passes: about 30 ms).
MAX_PASSES = 1000


def check_samples_per_epoch(samples_per_epoch: int | None, size: int | None = None) -> None:
    """``ValueError`` for a ``samples_per_epoch`` that is not ``None`` or an integer in
    ``1..MAX_SAMPLES_PER_EPOCH``, or (given the ``size`` of the data) that asks for more than
    :data:`MAX_PASSES` passes over it: ``10**12`` would never reach its first batch."""
    if samples_per_epoch is None:
        return
    try:
        whole = (not isinstance(samples_per_epoch, bool)
                 and int(samples_per_epoch) == samples_per_epoch)
    except (TypeError, ValueError, OverflowError):  # a string, nan, inf
        whole = False
    if not whole or not 1 <= samples_per_epoch <= MAX_SAMPLES_PER_EPOCH:
        raise ValueError(f"samples_per_epoch must be an integer in 1..{MAX_SAMPLES_PER_EPOCH} "
                         f"(the epoch's order is held in memory), got {samples_per_epoch}")
    if size is not None and samples_per_epoch > MAX_PASSES * size:
        raise ValueError(f"samples_per_epoch={samples_per_epoch} is more than {MAX_PASSES} "
                         f"passes over the {size} samples: at most {MAX_PASSES * size}")


class EpochSampler(DistributedSampler):
    """Tickets of one epoch for this rank.

    The epoch's order is a permutation of the ``size`` samples drawn from ``(seed, epoch)``
    (or ``0..size-1`` without ``shuffle``). Split across ``W`` ranks as
    :class:`~torch.utils.data.DistributedSampler` does: without ``drop_last`` the order is
    padded with its first ``(-size) mod W`` samples (at most ``W - 1`` repeats), with it the
    last ``size mod W`` are left out, and rank ``r`` takes positions ``r, r + W, ...``: every
    sample once per epoch across ranks, the same count on every rank. With
    ``samples_per_epoch`` the order is instead that many samples rounded down to whole
    batches on every rank, pass after pass over the data, each pass a fresh permutation.

    Rank and world size are resolved when an epoch starts (:func:`resolve_ranks`), so a loader
    built before the process group still splits correctly. A subclass of
    ``DistributedSampler``, so trainers that would wrap a plain sampler (Lightning, Ray Train)
    leave it alone and call :meth:`set_epoch`. Iterating again without :meth:`set_epoch` runs
    the next epoch. :meth:`resume_at` starts an epoch at a slot of its global order, the
    samples left split across the ranks there are then, whatever their number before.
    """

    def __init__(self, size: int, *, batch_size: int, seed: int, shuffle: bool = True,
                 drop_last: bool = False, samples_per_epoch: int | None = None,
                 rank: int | None = None, world_size: int | None = None) -> None:
        # DistributedSampler.__init__ is not called: it fixes the ranks now and needs a
        # process group; this resolves them per epoch instead
        check_ranks(rank, world_size)
        check_samples_per_epoch(samples_per_epoch, size)
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.samples_per_epoch = samples_per_epoch
        self._rank, self._world_size = rank, world_size
        self.epoch = 0
        self._started = False  # an iteration ran the current epoch
        self._resume: tuple[int, int] | None = None  # (epoch, slot it starts at)
        self.running: tuple[int, int, int] | None = None  # (epoch, start, world size)
        self.dataset = range(size)  # what DistributedSampler users read

    # DistributedSampler's attributes, resolved when read
    @property
    def rank(self) -> int:
        return resolve_ranks(self._rank, self._world_size)[0]

    @property
    def num_replicas(self) -> int:
        return resolve_ranks(self._rank, self._world_size)[1]

    @property
    def num_samples(self) -> int:
        return len(self)

    @property
    def total_size(self) -> int:
        return len(self) * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run ``epoch``."""
        epoch = int(epoch)
        if self._resume is not None and self._resume[0] != epoch:
            # a loaded state of another epoch: this one starts afresh, but never unnoticed
            warnings.warn(f"set_epoch({epoch}) drops the loaded state, which continues epoch "
                          f"{self._resume[0]} at slot {self._resume[1]} of its order; set the "
                          "state's epoch to resume it", UserWarning, stacklevel=3)
            self._resume = None
        self.epoch, self._started = epoch, False

    def order_length(self, world_size: int) -> int:
        """Slots of an epoch's global order that hold samples for ``world_size`` ranks: the
        split's size, or ``samples_per_epoch`` rounded down to whole batches on every rank."""
        if self.samples_per_epoch is not None:
            whole = self.batch_size * world_size
            return (self.samples_per_epoch // whole) * whole
        return self.size

    def per_rank(self, world_size: int, start: int = 0) -> int:
        """Samples each of ``world_size`` ranks takes from an epoch's order, from slot
        ``start`` on (padded as ``DistributedSampler`` pads, or left out with ``drop_last``)."""
        left = max(self.order_length(world_size) - start, 0)
        if self.samples_per_epoch is not None or self.drop_last:
            return left // world_size
        return -(-left // world_size)

    def __len__(self) -> int:
        return self.per_rank(self.num_replicas)

    def _permutation(self, epoch: int, part: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch, part]).permutation(self.size)

    def epoch_order(self, epoch: int, end: int) -> np.ndarray:
        """Slots ``0..end-1`` of ``epoch``'s global order (sample indices): the permutation,
        repeated from its start where the ranks need padding; with ``samples_per_epoch`` a
        fresh permutation for each pass over the data."""
        parts, covered = [], 0
        while covered < end:  # one part without samples_per_epoch, unless padding
            part = self._permutation(epoch, len(parts) if self.samples_per_epoch else 0)
            parts.append(part)
            covered += len(part)
        return np.concatenate(parts)[:end] if parts else np.empty(0, np.int64)

    def upcoming(self) -> tuple[int, int]:
        """(epoch, start) of the next iteration: the epoch :meth:`__iter__` will run and the
        slot of its global order it starts at (0, or where a loaded state left off)."""
        epoch = self.epoch + self._started
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        return epoch, start

    def resume_at(self, epoch: int, position: int) -> None:
        """Start the next run of ``epoch`` at slot ``position`` of its global order (the
        samples before it were seen, by any number of ranks)."""
        self.epoch, self._started = int(epoch), False
        self._resume = (int(epoch), int(position))

    def begin(self) -> tuple[int, int, int, int]:
        """Start the upcoming epoch: ``(epoch, start, rank, world_size)``, the ranks resolved
        now; :attr:`running` keeps ``(epoch, start, world_size)`` for the resume state."""
        epoch, start = self.upcoming()
        self.epoch, self._started, self._resume = epoch, True, None
        rank, world_size = resolve_ranks(self._rank, self._world_size)
        self.running = (epoch, start, world_size)
        return epoch, start, rank, world_size

    def __iter__(self) -> Iterator[Ticket]:
        epoch, start, rank, world_size = self.begin()
        end = start + self.per_rank(world_size, start) * world_size
        order = self.epoch_order(epoch, end)
        for slot in range(start + rank, end, world_size):
            yield Ticket(int(order[slot]), epoch, slot)

    def global_tickets(self) -> Iterator[Ticket]:
        """Every rank's tickets of the upcoming epoch, in its global order from its start
        slot: what a wrapper that splits the batches across processes itself divides."""
        epoch, start, _, world_size = self.begin()
        end = self.order_length(world_size)
        order = self.epoch_order(epoch, end)
        for slot in range(start, end):
            yield Ticket(int(order[slot]), epoch, slot)


class GlobalBatchSampler(BatchSampler):
    """The training loader's ``batch_sampler``: batches of ``batch_size`` consecutive slots of
    the epoch's global order, every rank's.

    A wrapper that rebuilds the loader and hands each of ``W`` processes every ``W``-th batch
    of its ``batch_sampler`` (``accelerate``'s ``prepare``) thus splits the epoch once, every
    sample once across processes; the loader itself draws this rank's share of the
    :class:`EpochSampler` instead. Its length is the batches of a whole epoch.
    """

    def __init__(self, sampler: EpochSampler, batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)

    def __iter__(self) -> Iterator[list[Ticket]]:
        batch: list[Ticket] = []
        for ticket in self.sampler.global_tickets():
            batch.append(ticket)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        samples = self.sampler.order_length(self.sampler.num_replicas)
        if self.drop_last:
            return samples // self.batch_size
        return -(-samples // self.batch_size)
