"""The training loader's class: a ``DataLoader`` with epochs, resume and counts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from .batch import (
    CONFLICT_PAIRS,
    SAME_CLASS_PAIRS,
    SKIPPED,
    Counters,
)
from .sampler import EpochSampler, GlobalBatchSampler
from .train import PlannedBatch, TrainCollate, TrainSet, compose_on_device
from .workers import _worker_init
from .wrappers import (
    epoch_sampler_of,
    held_ahead,
    iterating_wrapper,
    uses_reproducible_batches,
)


class CueConflictLoader(DataLoader):
    """The training loader: a ``DataLoader`` over a map-style dataset of cropped samples, an
    :class:`~stexture.loader.sampler.EpochSampler` and a collate that mixes each batch.

    Each ``iter()`` runs one epoch: the one set by :meth:`set_epoch`, or the one after the
    last. Batch ``j`` of an epoch holds the same samples and the same pixels whatever the
    number of workers (crops and mixing are seeded by the epoch and the samples' places in
    the epoch's order, not by the worker); batches arrive in order. :meth:`state_dict` /
    :meth:`load_state_dict` resume at the next unseen sample of the epoch's global order, at
    any world size. ``skipped_samples``, ``conflict_pairs`` and ``same_class_pairs`` count
    over the loader's life, across its workers.

    The loader draws this rank's batches; its public ``batch_sampler`` holds every rank's
    (:class:`~stexture.loader.sampler.GlobalBatchSampler`), so a wrapper that splits the
    batches across processes itself (``accelerate``'s ``prepare``) splits the epoch once.
    Rebuilt with DataLoader keywords around a wrapper of that batch sampler (Ignite's
    ``deterministic=True``), it draws the wrapper's batches, on one process.
    """

    def __init__(self, dataset: TrainSet, *, sampler: EpochSampler | None = None,
                 collate: TrainCollate | None = None, batch_size: int | None = 1,
                 drop_last: bool = False, mix_device: torch.device | None = None,
                 counters: Counters | None = None, batch_sampler: Any = None,
                 collate_fn: TrainCollate | None = None, **options: Any) -> None:
        collate = collate if collate is not None else collate_fn
        worker_init_fn = _worker_init(options)
        if batch_sampler is None:  # from make_loader
            if not isinstance(sampler, EpochSampler):
                raise TypeError("CueConflictLoader needs an EpochSampler: build it with "
                                "make_loader")
            super().__init__(dataset, batch_size=batch_size, sampler=sampler,
                             collate_fn=collate, drop_last=drop_last,
                             worker_init_fn=worker_init_fn, **options)
            self._rank_batches = self.batch_sampler  # this rank's share, what it draws
            # DataLoader forbids setting batch_sampler once built; wrappers read it
            object.__setattr__(self, "batch_sampler",
                               GlobalBatchSampler(sampler, batch_size, drop_last))
        else:  # rebuilt around a wrapper of its batch sampler
            super().__init__(dataset, batch_sampler=batch_sampler, collate_fn=collate,
                             worker_init_fn=worker_init_fn, **options)
            sampler, self._rank_batches = epoch_sampler_of(batch_sampler), None
        self._epochs: EpochSampler = sampler
        self.mix_device = mix_device
        self.counters = counters if counters is not None else collate.counters
        # (epoch, start slot, world size, batches yielded, epoch finished) of the last run
        self._position: tuple[int, int, int, int, bool] | None = None
        self._wrapper = None  # a wrapper iterating this loader (Ray Train's), weakly

    @property
    def _index_sampler(self) -> Any:
        # where DataLoader's iterators draw the batches: this rank's share
        rank_batches = getattr(self, "_rank_batches", None)
        return self.batch_sampler if rank_batches is None else rank_batches

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run epoch ``epoch`` (as ``DistributedSampler.set_epoch``)."""
        self._epochs.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._epochs.epoch

    def __iter__(self) -> Iterator[tuple]:
        self._wrapper = iterating_wrapper(self, sys._getframe(1))
        return self._batches()

    def _batches(self) -> Iterator[tuple]:
        if self._rank_batches is None and self._epochs.num_replicas > 1:
            raise ValueError(
                "this loader was rebuilt around a wrapper of its batch_sampler (Ignite's "
                "deterministic=True), which does not split batches across the "
                f"{self._epochs.num_replicas} processes; use Ignite's Engine with the "
                "loader's epoch_started handler instead")
        collate: TrainCollate = self.collate_fn
        seen = 0
        for batch in super().__iter__():
            if isinstance(batch, PlannedBatch):
                batch = compose_on_device(batch, collate, self.mix_device)
            seen += 1
            self._position = (*self._epochs.running, seen, False)
            yield batch
        if self._epochs.running is not None:
            self._position = (*self._epochs.running, seen, True)

    def state_dict(self, batches: int | None = None) -> dict[str, Any]:
        """Where the loader stands, for :meth:`load_state_dict` at any world size.

        Parameters
        ----------
        batches : int, optional
            The batches each rank has consumed in the current run of the epoch, for a trainer
            that iterates a rebuilt copy of this loader and counts its own steps
            (``accelerate``'s ``prepare``). By default, the batches this loader handed out,
            less one that Ray Train's ``prepare_data_loader`` wrapper holds fetched ahead.

        Returns
        -------
        dict
            ``epoch`` in progress and ``position``, the slot of its global order where the
            next batch starts (the next epoch and 0 after a finished one); ``batches`` (this
            rank's, in this run of the epoch) and ``world_size``; and what fixes the order:
            ``batch_size``, ``seed``, ``samples``, ``samples_per_epoch``, ``shuffle``,
            ``drop_last``, ``shuffle_window``; with ``shuffle="blocks"``,
            ``order_world_size``, the world size the epoch's order was laid out for.
        """
        epochs = self._epochs
        if batches is not None:
            epoch, start, world = epochs.running or (*epochs.upcoming(), epochs.num_replicas)
            finished = False
        elif self._position is not None:
            epoch, start, world, batches, finished = self._position
            batches -= held_ahead(self._wrapper)
        else:
            (epoch, start), world = epochs.upcoming(), epochs.num_replicas
            batches, finished = 0, False
        size = epochs.batch_size
        position = start + batches * size * world
        per_rank = epochs.per_rank(world, start)
        run = per_rank // size if epochs.drop_last else -(-per_rank // size)
        if finished or batches >= run or position >= epochs.order_length(world):
            epoch, position, batches = epoch + 1, 0, 0
        return {"epoch": epoch, "position": position, "batches": batches, "world_size": world,
                **self._identity(), **epochs.order_state(epoch, position)}

    def _identity(self) -> dict[str, Any]:
        """What fixes the epochs' global orders: a state of another order cannot resume here."""
        epochs = self._epochs
        return {"batch_size": epochs.batch_size, "seed": epochs.seed, "samples": epochs.size,
                "samples_per_epoch": epochs.samples_per_epoch, "shuffle": epochs.shuffle,
                "drop_last": epochs.drop_last, "shuffle_window": epochs.shuffle_window}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue ``state``'s epoch at its next unseen sample, at
        this loader's world size (which may differ from the state's: the samples left in the
        epoch's order are split across the ranks there are now)."""
        if "position" not in state:
            raise ValueError("the state has no 'position' (saved before the loader recorded "
                             "its place in the global order); resume at the start of epoch "
                             f"{state.get('epoch')} with set_epoch instead")
        mine = self._identity()
        differs = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if differs:
            raise ValueError(f"the state is of another loader (state vs this loader: {differs})")
        self._epochs.resume_at(int(state["epoch"]), int(state["position"]),
                               state.get("order_world_size"))
        self._position = None

    def epoch_started(self, engine: Any) -> None:
        """An Ignite ``Events.EPOCH_STARTED`` handler:
        ``trainer.add_event_handler(Events.EPOCH_STARTED, loader.epoch_started)``.

        Parameters
        ----------
        engine : ignite.engine.Engine
            Its epoch runs next (Ignite counts from 1, the loader from 0). In a run an
            ``Engine`` resumed mid-epoch from its checkpoint, the epoch continues at its next
            unseen batch (a ``DeterministicEngine`` skips the batches itself).

        Raises
        ------
        ValueError
            The engine's ``epoch_length`` is not the loader's length.
        """
        state = engine.state
        epoch = state.epoch - 1
        self.set_epoch(epoch)
        length = state.epoch_length
        if length is None:
            return
        if length != len(self):
            raise ValueError(f"the engine's epoch_length ({length}) is not the loader's length "
                             f"({len(self)}): an epoch of the engine must be one of the loader")
        done = state.iteration - epoch * length
        if 0 < done < length and not uses_reproducible_batches(engine):
            epochs = self._epochs
            self._epochs.resume_at(epoch, done * epochs.batch_size * epochs.num_replicas)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_wrapper"] = None  # a weak reference does not pickle
        return state

    @property
    def skipped_samples(self) -> int:
        return self.counters.total(SKIPPED)

    @property
    def conflict_pairs(self) -> int:
        return self.counters.total(CONFLICT_PAIRS)

    @property
    def same_class_pairs(self) -> int:
        return self.counters.total(SAME_CLASS_PAIRS)
