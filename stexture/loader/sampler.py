"""The epoch order of the training loader, split exactly across ranks (workers then take whole
batches of it, as in any map-style DataLoader): one global permutation per epoch
(``shuffle="global"``), or shard blocks (``shuffle="blocks"``): the shards permuted, each rank
given a contiguous run of them, its samples shuffled within blocks of ``shuffle_window``
shards, so that a rank reads a few shards at a time (a cache smaller than the data)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import BatchSampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["SHUFFLE_MODES", "EpochSampler", "GlobalBatchSampler", "Ticket", "check_shuffle",
           "resolve_ranks"]

#: What ``shuffle`` may be: ``True`` is ``"global"``, ``False`` keeps the manifest's order.
SHUFFLE_MODES = ("global", "blocks")
#: The default ``shuffle_window``: shards whose samples ``shuffle="blocks"`` mixes together.
DEFAULT_SHUFFLE_WINDOW = 8


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


def check_shuffle(shuffle: bool | str, window: int | None = None) -> tuple[bool | str, int | None]:
    """``(shuffle, shuffle_window)`` as the sampler keeps them: ``True`` for ``"global"`` (and
    ``True``), ``False``, or ``"blocks"`` with its window (default
    :data:`DEFAULT_SHUFFLE_WINDOW`); ``ValueError`` for any other value, or a window given to
    another mode or not a positive integer."""
    if isinstance(shuffle, str) and shuffle in SHUFFLE_MODES:
        mode: bool | str = True if shuffle == "global" else shuffle
    elif isinstance(shuffle, bool | np.bool_):
        mode = bool(shuffle)
    else:
        raise ValueError(f"shuffle must be 'global' (or True), 'blocks' or False, got {shuffle!r}")
    if mode != "blocks":
        if window is not None:
            raise ValueError(f"shuffle_window={window!r} applies to shuffle='blocks' only "
                             f"(shuffle={shuffle!r})")
        return mode, None
    if window is None:
        return mode, DEFAULT_SHUFFLE_WINDOW
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"shuffle_window must be a positive number of shards, got {window!r}")
    return mode, int(window)


class EpochSampler(DistributedSampler):
    """Tickets of one epoch for this rank.

    The epoch's global order holds ``size`` samples (or ``samples_per_epoch``), split across
    ``W`` ranks as :class:`~torch.utils.data.DistributedSampler` splits: without ``drop_last``
    it is padded with at most ``W - 1`` repeated samples, with it the last ``size mod W`` are
    left out; every sample once per epoch across ranks, the same count on every rank. With
    ``samples_per_epoch`` the order is instead that many samples rounded down to whole
    batches on every rank, pass after pass over the data, each pass freshly shuffled.

    ``shuffle=True`` (``"global"``): the order is a permutation of the samples drawn from
    ``(seed, epoch)`` (``0..size-1`` with ``False``); rank ``r`` takes slots ``r, r + W, ...``
    of it, the padding being its first ``(-size) mod W`` samples.

    ``shuffle="blocks"`` (needs ``shards``, each sample's shard): the shards are permuted
    from ``(seed, epoch)`` and laid end to end; rank ``r`` takes the ``r``-th of ``W`` equal
    contiguous runs of that sequence (a shard at a cut is shared by two ranks) and reads it
    block by block, a block being ``shuffle_window`` consecutive shards whose samples are
    shuffled together (a rank pads with its own last samples). The global order interleaves
    the ranks' runs batch by batch: slots ``[jB, (j+1)B)`` are batch ``j // W`` of rank
    ``j mod W`` (then each rank's short last batch). So a rank, and a process of a wrapper that
    deals the loader's batches round-robin (``accelerate``), reads one block of at most
    ``shuffle_window`` shards at a time and ``~1/W`` of the shards per epoch. The order depends
    on the world size the epoch started with; the resume state records it
    (:meth:`order_state`).

    Rank and world size are resolved when an epoch starts (:func:`resolve_ranks`), so a loader
    built before the process group still splits correctly. A subclass of
    ``DistributedSampler``, so trainers that would wrap a plain sampler (Lightning, Ray Train)
    leave it alone and call :meth:`set_epoch`. Iterating again without :meth:`set_epoch` runs
    the next epoch. :meth:`resume_at` starts an epoch at a slot of its global order, the
    samples left split across the ranks there are then, whatever their number before.
    :meth:`upcoming_shards` tells which shards this rank reads next, in order (for a cache's
    prefetch).
    """

    def __init__(self, size: int, *, batch_size: int, seed: int, shuffle: bool | str = True,
                 drop_last: bool = False, samples_per_epoch: int | None = None,
                 rank: int | None = None, world_size: int | None = None,
                 shards: Sequence[str] | None = None,
                 shuffle_window: int | None = None) -> None:
        # DistributedSampler.__init__ is not called: it fixes the ranks now and needs a
        # process group; this resolves them per epoch instead
        check_ranks(rank, world_size)
        check_samples_per_epoch(samples_per_epoch, size)
        self.shuffle, self.shuffle_window = check_shuffle(shuffle, shuffle_window)
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.samples_per_epoch = samples_per_epoch
        self._rank, self._world_size = rank, world_size
        self._shards_of(shards)
        self.epoch = 0
        self._started = False  # an iteration ran the current epoch
        self._in_progress = False  # an iteration started and has not run out
        # (epoch, slot it starts at, world size its order was laid out for: blocks)
        self._resume: tuple[int, int, int | None] | None = None
        self.running: tuple[int, int, int] | None = None  # (epoch, start, world size)
        self.order_world: int | None = None  # the running order's layout (blocks)
        self._layout: tuple[tuple[int, int], np.ndarray] | None = None  # the last one built
        self.dataset = range(size)  # what DistributedSampler users read

    def _shards_of(self, shards: Sequence[str] | None) -> None:
        """Keep each sample's shard; coded when first needed (:meth:`_coded`)."""
        if shards is None and self.shuffle == "blocks":
            raise ValueError("shuffle='blocks' needs each sample's shard (shards=)")
        if shards is not None and len(shards) != self.size:
            raise ValueError(f"shards names {len(shards)} samples' shards for {self.size} "
                             "samples")
        self._shards = shards
        self._codes: np.ndarray | None = None  # per sample, an index into shard_names
        self.shard_names: list[str] = []
        self._members: list[np.ndarray] = []  # each shard's samples, in order

    def _coded(self) -> np.ndarray:
        """Each sample's shard code, computed once: by runs, since a shard's samples are
        mostly adjacent (a million samples in ~30 ms)."""
        if self._codes is not None:
            return self._codes
        if self._shards is None:
            raise ValueError("this sampler was built without each sample's shard (shards=)")
        names = np.asarray(self._shards, dtype=object)
        starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
        code_of: dict[str, int] = {}
        run_codes = [code_of.setdefault(name, len(code_of)) for name in names[starts]]
        codes = np.repeat(np.asarray(run_codes, dtype=np.int64),
                          np.diff(np.r_[starts, len(names)]))
        self.shard_names = list(code_of)
        by_code = np.argsort(codes, kind="stable")
        self._members = np.split(by_code, np.cumsum(np.bincount(codes))[:-1])
        self._codes = codes
        return codes

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
        self.epoch, self._started, self._in_progress = epoch, False, False

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

    def epoch_order(self, epoch: int, end: int, order_world: int | None = None) -> np.ndarray:
        """Slots ``0..end-1`` of ``epoch``'s global order (sample indices). Global: the
        permutation, repeated from its start where the ranks need padding; with
        ``samples_per_epoch`` a fresh permutation for each pass over the data. Blocks: laid
        out for ``order_world`` ranks (default: the ranks there are now), repeated from its
        start past its end (a resume at more ranks pads more)."""
        if self.shuffle == "blocks":
            layout = self._blocks_layout(epoch, order_world or self.num_replicas)
            return np.resize(layout, end) if end > len(layout) else layout[:end]
        parts, covered = [], 0
        while covered < end:  # one part without samples_per_epoch, unless padding
            part = self._permutation(epoch, len(parts) if self.samples_per_epoch else 0)
            parts.append(part)
            covered += len(part)
        return np.concatenate(parts)[:end] if parts else np.empty(0, np.int64)

    def _shard_sequence(self, epoch: int, length: int) -> np.ndarray:
        """``length`` sample indices: the shards in a permutation drawn from ``(seed, epoch)``,
        each shard's samples in its order, a fresh permutation for each further pass."""
        passes, covered = [], 0
        while covered < length:
            order = np.random.default_rng([self.seed, epoch, 1, len(passes)]).permutation(
                len(self.shard_names))
            passes.append(np.concatenate([self._members[code] for code in order]))
            covered += len(passes[-1])
        return np.concatenate(passes)[:length]

    def _mix_blocks(self, run: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """``run`` (a rank's share, shard after shard) with its samples shuffled within each
        block of ``shuffle_window`` consecutive shards, and the size of its last block."""
        codes = self._codes[run]
        starts = np.ones(len(run), dtype=bool)
        starts[1:] = codes[1:] != codes[:-1]
        block = (np.cumsum(starts) - 1) // self.shuffle_window
        last = int(np.count_nonzero(block == block[-1])) if len(run) else 0
        # sorted by (block, random 32 bits): the blocks stay in order, each one shuffled
        keys = (block << 32) | rng.integers(0, 2**32, len(run), dtype=np.int64)
        return run[np.argsort(keys, kind="stable")], last

    def _blocks_layout(self, epoch: int, world: int) -> np.ndarray:
        """``epoch``'s global order in blocks mode, laid out for ``world`` ranks: every rank's
        padded share at its slots (:meth:`rank_slots`), then what the split leaves out."""
        if self._layout is not None and self._layout[0] == (epoch, world):
            return self._layout[1]
        self._coded()
        real = self.samples_per_epoch or self.size
        sequence = self._shard_sequence(epoch, real)
        per = self.per_rank(world)
        laid = per * world
        layout = np.empty(max(laid, real), dtype=np.int64)
        cut = 0
        for rank in range(world):
            slots = self.rank_slots(0, laid, rank, world)
            own = int(np.count_nonzero(slots < real))  # a prefix; the rest is padding
            rng = np.random.default_rng([self.seed, epoch, 2, world, rank])
            share, last = self._mix_blocks(sequence[cut:cut + own], rng)
            cut += own
            # the padding repeats its own last block, so that no further shard is opened
            padding = np.resize(share[len(share) - last:] if last else sequence, per - own)
            layout[slots] = np.concatenate([share, padding])
        layout[laid:] = sequence[laid:]  # left out of the split (drop_last, samples_per_epoch)
        self._layout = ((epoch, world), layout)
        return layout

    def rank_slots(self, start: int, end: int, rank: int, world_size: int) -> np.ndarray:
        """The slots of ``[start, end)`` rank ``rank`` of ``world_size`` takes, in order
        (``end - start`` a multiple of ``world_size``). Global: every ``world_size``-th slot.
        Blocks: every ``world_size``-th run of ``batch_size`` slots, then its equal part of the
        short last round."""
        if self.shuffle != "blocks":
            return np.arange(start + rank, end, world_size)
        size = self.batch_size
        full, rest = divmod((end - start) // world_size, size)
        batches = start + (np.arange(full)[:, None] * world_size + rank) * size + np.arange(size)
        tail = start + full * size * world_size + rank * rest + np.arange(rest)
        return np.concatenate([batches.ravel(), tail]).astype(np.int64)

    def upcoming(self) -> tuple[int, int]:
        """(epoch, start) of the next iteration: the epoch :meth:`__iter__` will run and the
        slot of its global order it starts at (0, or where a loaded state left off)."""
        epoch = self.epoch + self._started
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        return epoch, start

    def resume_at(self, epoch: int, position: int, order_world_size: int | None = None) -> None:
        """Start the next run of ``epoch`` at slot ``position`` of its global order (the
        samples before it were seen, by any number of ranks). ``order_world_size``: the world
        size that order was laid out for (blocks; default: the one when the run starts)."""
        if order_world_size is not None and (isinstance(order_world_size, bool)
                                             or int(order_world_size) < 1):
            raise ValueError(f"order_world_size must be a positive integer, got "
                             f"{order_world_size!r}")
        self.epoch, self._started, self._in_progress = int(epoch), False, False
        world = None if order_world_size is None else int(order_world_size)
        self._resume = (int(epoch), int(position), world)

    def order_state(self, epoch: int, position: int) -> dict[str, int | None]:
        """What a resume state of ``epoch`` at ``position`` needs besides them: in blocks mode
        ``order_world_size``, the world size its order was laid out for (``None`` at slot 0,
        where the next run lays it out afresh); nothing in the global mode."""
        if self.shuffle != "blocks":
            return {}
        world = None
        if position > 0:
            if self._resume is not None and self._resume[0] == epoch:
                world = self._resume[2] or self.num_replicas
            elif self.running is not None and self.running[0] == epoch:
                world = self.order_world
        return {"order_world_size": world}

    def _next_run(self, world: int) -> tuple[int, int, int | None]:
        """(epoch, start, order world) of the next iteration with ``world`` ranks."""
        epoch, start = self.upcoming()
        order_world = None
        if self.shuffle == "blocks":
            resumed = self._resume if self._resume is not None and start else None
            order_world = resumed[2] if resumed is not None and resumed[2] else world
        return epoch, start, order_world

    def begin(self) -> tuple[int, int, int, int]:
        """Start the upcoming epoch: ``(epoch, start, rank, world_size)``, the ranks resolved
        now; :attr:`running` keeps ``(epoch, start, world_size)`` for the resume state."""
        rank, world_size = resolve_ranks(self._rank, self._world_size)
        epoch, start, self.order_world = self._next_run(world_size)
        self.epoch, self._started, self._resume, self._in_progress = epoch, True, None, True
        self.running = (epoch, start, world_size)
        return epoch, start, rank, world_size

    def __iter__(self) -> Iterator[Ticket]:
        epoch, start, rank, world_size = self.begin()
        end = start + self.per_rank(world_size, start) * world_size
        order = self.epoch_order(epoch, end, self.order_world)
        for slot in self.rank_slots(start, end, rank, world_size).tolist():
            yield Ticket(int(order[slot]), epoch, slot)
        self._in_progress = False

    def global_tickets(self) -> Iterator[Ticket]:
        """Every rank's tickets of the upcoming epoch, in its global order from its start
        slot: what a wrapper that splits the batches across processes itself divides."""
        epoch, start, _, world_size = self.begin()
        end = self.order_length(world_size)
        order = self.epoch_order(epoch, end, self.order_world)
        for slot in range(start, end):
            yield Ticket(int(order[slot]), epoch, slot)
        self._in_progress = False

    def rank_order(self, *, rank: int | None = None, world_size: int | None = None,
                   epoch: int | None = None) -> np.ndarray:
        """The sample indices this rank reads, in order, in the epoch in progress (an
        iteration started and not run out), else in the one the next iteration runs, from
        where that run starts. ``rank`` / ``world_size``: another rank's (default: this
        process's, resolved now). ``epoch``: that epoch's run instead, the one in progress or
        next if it is either (a resumed one from its slot, in the order laid out for the
        world size it was saved with), else a fresh run of it from slot 0 (a later epoch of
        persistent DataLoader workers, whose copy of the sampler stays as it was)."""
        check_ranks(rank, world_size)
        explicit = rank is not None
        if not explicit:
            rank, world_size = self._rank, self._world_size
        found_rank, found_world = resolve_ranks(rank, world_size)
        running = self.running if self._in_progress else None
        if running is not None and epoch in (None, running[0]):
            epoch, start, world = running
            order_world = self.order_world
            found_world = found_world if explicit else world
        else:
            upcoming, start, order_world = self._next_run(found_world)
            if epoch is not None and epoch != upcoming:  # not the next run: a fresh one
                start = 0
                order_world = found_world if self.shuffle == "blocks" else None
            epoch = upcoming if epoch is None else epoch
        end = start + self.per_rank(found_world, start) * found_world
        order = self.epoch_order(epoch, end, order_world)
        return order[self.rank_slots(start, end, found_rank, found_world)]

    def upcoming_shards(self, done: int = 0, *, rank: int | None = None,
                        world_size: int | None = None) -> list[str]:
        """The shards this rank reads from its ``done``-th sample of the run on (the epoch in
        progress, else the next; :meth:`rank_order`), each once, in order of first use: what a
        shard cache should prefetch next (:meth:`shard_spans`: until when to keep each). In
        blocks mode about ``1/W`` of the shards, in blocks of ``shuffle_window``.

        Raises
        ------
        ValueError
            The sampler was built without ``shards``.
        """
        return self.shards_in_order(self.rank_order(rank=rank, world_size=world_size)[done:])

    def shard_spans(self, done: int = 0, *, rank: int | None = None,
                    world_size: int | None = None) -> list[tuple[str, int, int]]:
        """``(shard, first, last)`` for the shards of :meth:`upcoming_shards`, in the same
        order: the positions of the shard's first and last sample among this rank's samples
        from the ``done``-th on (counted from it). A cache that keeps each shard from its
        first to its last sample holds at most ``shuffle_window`` shards at a time for a rank
        in blocks mode (its prefetch aside); a shard is not done after its first read."""
        codes = self._coded()[self.rank_order(rank=rank, world_size=world_size)[done:]]
        shards, first = np.unique(codes, return_index=True)
        _, from_end = np.unique(codes[::-1], return_index=True)
        last = len(codes) - 1 - from_end
        return [(self.shard_names[shards[i]], int(first[i]), int(last[i]))
                for i in np.argsort(first)]

    def shards_in_order(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """The shards of the samples ``indices`` (e.g. tickets' ``index``), each once, in order
        of first use."""
        codes = self._coded()[np.asarray(indices, dtype=np.int64)]
        _, first = np.unique(codes, return_index=True)
        return [self.shard_names[code] for code in codes[np.sort(first)]]


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
