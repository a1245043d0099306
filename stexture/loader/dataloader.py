"""The loaders users get: :func:`make_loader` and :func:`make_eval_loader`, both
``torch.utils.data.DataLoader`` (the training one a subclass with epochs and resume)."""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from .._device import CudaUnavailableError
from .._lifecycle import die_with_parent
from ..mixing import CueConflictMix, MixConfig, mix_config
from ..mixing.settings import check_unit_interval
from ..shards.folder import ShardFolder
from ..shards.format import Manifest
from ..shards.labels import SoftLabelReader, read_label_set
from .batch import (
    CONFLICT_PAIRS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SAME_CLASS_PAIRS,
    SKIPPED,
    Counters,
    Normalize,
    check_view,
)
from .crops import check_min_scale
from .evaluation import EVAL_KINDS, EvalCollate, EvalSet, conflict_donors
from .index import locate_split, manifest_of
from .sampler import EpochSampler, GlobalBatchSampler, check_samples_per_epoch
from .train import PlannedBatch, TrainCollate, TrainSet, compose_on_device
from .wrappers import (
    epoch_sampler_of,
    held_ahead,
    iterating_wrapper,
    uses_reproducible_batches,
)

__all__ = ["LABEL_KINDS", "CueConflictLoader", "make_eval_loader", "make_loader"]

#: What ``make_loader``'s ``y`` is made of: the classes (one-hot) or stored soft labels.
LABEL_KINDS = ("hard", "soft")


class _WorkerInit:
    """Runs in each worker before the user's ``worker_init_fn``.

    The worker ends when the process that started it does (killed included), even while it
    is blocked where torch's own watchdog cannot see it. A worker started fresh (spawn,
    forkserver) gets one OpenCV thread: the workers are the parallelism. A forked worker
    leaves OpenCV's pool alone: reconfiguring it there waits forever on the condition
    variables of the parent's pool threads, which the child does not have (OpenCV's own fork
    handling runs the child's work without them).
    """

    def __init__(self, user_fn: Callable[[int], None] | None, forked: bool) -> None:
        self.user_fn = user_fn
        self.forked = forked

    def __call__(self, worker_id: int) -> None:
        die_with_parent(os.getppid())
        if not self.forked:
            cv2.setNumThreads(1)
        if self.user_fn is not None:
            self.user_fn(worker_id)


def _worker_init(options: dict[str, Any]) -> _WorkerInit:
    """The worker init for DataLoader ``options`` (takes out the user's ``worker_init_fn``)."""
    context = options.get("multiprocessing_context")
    if isinstance(context, str):
        context = multiprocessing.get_context(context)
    forked = (context or multiprocessing.get_context()).get_start_method() == "fork"
    user_fn = options.pop("worker_init_fn", None)
    if isinstance(user_fn, _WorkerInit):  # a loader rebuilt from another's attributes
        user_fn = user_fn.user_fn
    return _WorkerInit(user_fn, forked)


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
            ``drop_last``.
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
                **self._identity()}

    def _identity(self) -> dict[str, Any]:
        """What fixes the epochs' global orders: a state of another order cannot resume here."""
        epochs = self._epochs
        return {"batch_size": epochs.batch_size, "seed": epochs.seed, "samples": epochs.size,
                "samples_per_epoch": epochs.samples_per_epoch, "shuffle": epochs.shuffle,
                "drop_last": epochs.drop_last}

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
        self._epochs.resume_at(int(state["epoch"]), int(state["position"]))
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


def make_loader(
    source: str | Path | Manifest | ShardFolder,
    *,
    k: float,
    split: str = "train",
    batch_size: int = 64,
    image_size: int = 96,
    num_workers: int = 0,
    seed: int = 0,
    p_conflict: float = 0.5,
    pairing: str = "different-class",
    texture_scale: float = 1.0,
    label_smoothing: float = 0.0,
    mode: str = "replace",
    alpha: float = 1.0,
    texture_layout: str = "aligned",
    tile_size: int = 16,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    keys: Collection[str] | None = None,
    with_info: bool = False,
    shuffle: bool = True,
    shuffle_buffer: int | None = None,
    drop_last: bool = False,
    mix_device: str | torch.device | None = None,
    samples_per_epoch: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    min_scale: float = 0.35,
    view: str = "image",
    labels: str = "hard",
    label_set: str | None = None,
    mix: MixConfig | None = None,
    **dataloader_options: Any,
) -> CueConflictLoader:
    """A training loader of cue-conflict batches over the shards in ``source``.

    Parameters
    ----------
    source : path, ShardFolder or Manifest
        A shard directory with ``manifest.json``, or the
        :class:`~stexture.shards.ShardFolder` (or :class:`Manifest`) it was opened as: then
        the manifest is not read again.
    k : float in [0, 1]
        Weight of the structure class in a cue-conflict target, as in
        :class:`~stexture.mixing.CueConflictMix`; the batch is the mixing unit.
    p_conflict, pairing, texture_scale, label_smoothing, mode, alpha, texture_layout, \
tile_size
        The fields of :class:`~stexture.mixing.MixConfig`, a shorthand for ``mix``: they
        make the same config (``mix=MixConfig(mode="add")`` and ``mode="add"`` give the same
        loader). With ``mode="add"`` a batch has ``batch_size`` originals plus the
        composites.
    split : str
        The split to read.
    batch_size, image_size : int
        Samples per batch (per rank); side of the square crops.
    num_workers : int
        DataLoader worker processes. They change how fast, never what: batch ``j`` of an epoch
        is the same samples with the same pixels and labels for any ``num_workers``.
    seed : int
        Seeds the epoch's order, the crops and the mixing (per epoch, sample and batch).
    mean, std : 3 floats
        ``x`` is normalised as ``(x - mean) / std``.
    keys : collection of str, optional
        Only these sample keys of the split (e.g. a stratified subset computed from
        ``index.csv``).
    with_info : bool
        Yield ``(x, y, info)``: ``structure_cls``, ``texture_cls``, ``is_conflict``,
        ``structure_index``, ``texture_index`` (tensors), ``key`` and ``texture_key`` (lists).
    shuffle : bool
        Draw a new global permutation every epoch (else the manifest's order).
    shuffle_buffer : int, optional
        Deprecated (the loader now permutes globally): 0 means ``shuffle=False``.
    drop_last : bool
        As in ``DistributedSampler`` and ``DataLoader``: leave out the last ``size mod
        world_size`` samples of the epoch's order (instead of repeating up to ``world_size
        - 1`` of its first ones so that every rank gets as many) and the last incomplete
        batch of each rank.
    mix_device : str or torch.device, optional
        Compose and normalise on this device in the main process: workers decode, crop and
        plan, and send uint8 layers (4x fewer bytes than float). ``None``: all in the workers.
        Applies when iterating this loader; a trainer that rebuilds the DataLoader
        (``accelerate.prepare``) should use ``None``.
    samples_per_epoch : int, optional
        Fixed epoch length in samples for all ranks together: each rank yields
        ``samples_per_epoch // (batch_size * world_size)`` full batches, going over the data
        again (freshly permuted) when it runs out. ``None``: one pass.
    rank, world_size : int, optional
        This process's place among data-parallel processes. By default resolved when each
        epoch starts: an initialised ``torch.distributed``, else ``RANK`` / ``WORLD_SIZE``
        (torchrun, Lightning), else 0 of 1; so the loader may be built before the process
        group.
    min_scale : float in (0, 1]
        Smallest crop area of the random-resized crop, as a fraction of the image.
    view : {"image", "structure", "texture"}
        What ``x`` shows: the image (mixed as above), or one layer of it for a structure-only
        or texture-only model (the texture offset to mid-grey, ``image - structure + 128``
        clipped to 8 bits); a layer view takes ``p_conflict=0``.
    labels : {"hard", "soft"}
        ``"hard"``: ``y = k * onehot(structure class) + (1 - k) * onehot(texture class)``.
        ``"soft"``: the report's recipe from the stored labels of ``stexture label``
        (:mod:`stexture.shards.labels`): for each crop, the ``s`` and ``t`` label maps of its
        sample pooled over the crop's box (the same label for the flipped crop) and mixed
        as ``y = k * s + (1 - k) * t`` (then ``label_smoothing``); no teacher runs at
        training time. With ``p_conflict > 0`` the two combine: a composite of the structure
        of ``a`` and the texture of ``b`` gets ``k * s_a + (1 - k) * t_b``, the structure
        model's label of ``a``'s crop and the texture model's label of ``b``'s (each model
        speaks for the layer it reads); ``p_conflict=0`` is the report's recipe alone.
        Image view only.
    label_set : str, optional
        The label set to read with ``labels="soft"`` (``SHARDS/labels-NAME``); ``None``:
        the shard folder's only one.
    mix : MixConfig, optional
        How batches are mixed; given, the mixing keywords above must keep their defaults.
    **dataloader_options
        Passed to ``torch.utils.data.DataLoader``: ``pin_memory``, ``persistent_workers``,
        ``prefetch_factor``, ``multiprocessing_context`` (default: the platform's),
        ``worker_init_fn``, ``generator``, ``timeout``, ``in_order``.

    Returns
    -------
    CueConflictLoader
        A ``DataLoader``: one epoch per ``iter``, with ``len``, ``set_epoch``, ``state_dict``
        and ``load_state_dict``; yields ``(x, y)`` with ``x`` float32 ``R x 3 x S x S``
        (normalised) and ``y`` float32 ``R x C`` (rows sum to 1), or ``(x, y, info)``.

    Raises
    ------
    ValueError
        Out-of-range arguments; keys not in the split; a shard whose sample count or class
        indices disagree with the manifest. (A sample that cannot be decoded is skipped with
        a :class:`CorruptSampleWarning`, and its batch is smaller.)
    FileNotFoundError
        No manifest, or a shard it lists is missing.
    CudaUnavailableError
        ``mix_device`` is a CUDA device and torch sees no GPU.
    """
    # checked before anything is read from disk
    mix = mix_config(mix, p_conflict=p_conflict, pairing=pairing, texture_scale=texture_scale,
                     label_smoothing=label_smoothing, mode=mode, alpha=alpha,
                     texture_layout=texture_layout, tile_size=tile_size)
    check_unit_interval("k", k)
    check_view(view, mixes=mix.p_conflict > 0)
    _check_labels(labels, view)
    _check_sizes(batch_size=batch_size, image_size=image_size, num_workers=num_workers)
    _check_seed(seed)
    shuffle = _shuffle_from(shuffle, shuffle_buffer)
    check_min_scale(min_scale)
    check_samples_per_epoch(samples_per_epoch)  # its passes over the data: once located
    normalize = Normalize(mean, std)
    device = None if mix_device is None else _mix_device(mix_device)
    manifest = manifest_of(source)
    counters = Counters(num_workers)
    samples = locate_split(manifest, split, keys)
    sampler = EpochSampler(len(samples), batch_size=batch_size, seed=seed, shuffle=shuffle,
                           drop_last=drop_last, samples_per_epoch=samples_per_epoch,
                           rank=rank, world_size=world_size)
    if len(sampler) == 0:
        raise ValueError(f"samples_per_epoch={samples_per_epoch} is less than one batch of "
                         f"{batch_size} per rank ({sampler.num_replicas} rank(s))")
    soft = (SoftLabelReader(read_label_set(manifest, label_set), split,
                            [sample.key for sample in samples]) if labels == "soft" else None)
    dataset = TrainSet(samples, image_size=image_size, min_scale=min_scale, seed=seed,
                       counters=counters, soft=soft)
    collate = TrainCollate(CueConflictMix(manifest.num_classes, k, mix), normalize, seed=seed,
                           image_size=image_size, with_info=with_info,
                           mix_in_worker=device is None, counters=counters, view=view)
    return CueConflictLoader(dataset, sampler=sampler, collate=collate, batch_size=batch_size,
                             drop_last=drop_last, mix_device=device, counters=counters,
                             num_workers=num_workers, **dataloader_options)


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
    """
    if kind not in EVAL_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(EVAL_KINDS)}")
    k = check_unit_interval("k", k)
    check_view(view, mixes=kind == "conflict")
    _check_sizes(batch_size=batch_size, image_size=image_size, num_workers=num_workers)
    _check_seed(seed)
    normalize = Normalize(mean, std)
    manifest = manifest_of(source)
    samples = locate_split(manifest, split)
    if kind == "clean":
        donors = np.arange(len(samples))
    else:
        donors = conflict_donors(np.array([s.cls for s in samples]), seed)
    dataset = EvalSet(samples, donors, image_size, Counters(num_workers),
                      with_structure=kind == "conflict" or view != "image")
    collate = EvalCollate(manifest.num_classes, k if kind == "conflict" else 1.0, normalize,
                          kind == "conflict", image_size, view)
    worker_init_fn = _worker_init(dataloader_options)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate, worker_init_fn=worker_init_fn, **dataloader_options)


def _check_labels(labels: str, view: str) -> None:
    """``ValueError`` for an unknown ``labels``, or soft labels on a layer view (the stored
    labels are of the image's crops, for a model of the image)."""
    if labels not in LABEL_KINDS:
        raise ValueError(f"unknown labels {labels!r}; expected one of {', '.join(LABEL_KINDS)}")
    if labels == "soft" and view != "image":
        raise ValueError(f"labels='soft' trains a model of the image; view={view!r} shows one "
                         "layer (use labels='hard')")


def _shuffle_from(shuffle: bool, shuffle_buffer: int | None) -> bool:
    if shuffle_buffer is None:
        return bool(shuffle)
    _check_sizes(shuffle_buffer=shuffle_buffer, least=0)
    warnings.warn("shuffle_buffer is deprecated: the loader draws a global permutation every "
                  "epoch; shuffle_buffer=0 is shuffle=False, other values are ignored",
                  DeprecationWarning, stacklevel=3)
    return bool(shuffle) and shuffle_buffer > 0


def _mix_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CudaUnavailableError(
            f"mix_device={str(device)!r} but torch sees no CUDA GPU; use mix_device=None to "
            "mix in the workers")
    return device


def _check_seed(seed: int) -> None:
    if int(seed) != seed or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed}")


def _check_sizes(*, least: int | None = None, **sizes: int) -> None:
    for name, value in sizes.items():
        low = least if least is not None else (0 if name == "num_workers" else 1)
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
