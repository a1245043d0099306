"""The loaders users get: :func:`make_loader` and :func:`make_eval_loader`, both
``torch.utils.data.DataLoader`` (the training one a subclass with epochs and resume).
The evaluation loader is in :mod:`.eval_loader`, the training loader's class in
:mod:`.cue_conflict_loader`, both re-exported here."""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from .._device import CudaUnavailableError
from ..mixing import CueConflictMix, MixConfig, mix_config
from ..mixing.settings import check_unit_interval
from ..shards.folder import ShardFolder
from ..shards.format import Manifest
from ..shards.labels import SoftLabelReader, read_label_set
from .batch import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Counters,
    Normalize,
    check_view,
)
from .checks import _check_seed, _check_sizes
from .crops import check_min_scale
from .cue_conflict_loader import CueConflictLoader
from .eval_loader import make_eval_loader
from .index import locate_split
from .remote import CachedTrainSet, open_source
from .sampler import EpochSampler, check_samples_per_epoch, check_shuffle
from .train import TrainCollate, TrainSet

__all__ = ["LABEL_KINDS", "CueConflictLoader", "make_eval_loader", "make_loader"]

#: What ``make_loader``'s ``y`` is made of: the classes (one-hot) or stored soft labels.
LABEL_KINDS = ("hard", "soft")


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
    shuffle: bool | str = True,
    shuffle_window: int | None = None,
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
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    cache_limit: int | None = None,
    **dataloader_options: Any,
) -> CueConflictLoader:
    """A training loader of cue-conflict batches over the shards in ``source``.

    Parameters
    ----------
    source : path, URL, ShardFolder or Manifest
        A shard directory with ``manifest.json``, or an fsspec URL of one
        (``s3://bucket/shards``, ``gs://...``, ``https://...``; ``file://`` is the local
        folder), or the :class:`~stexture.shards.ShardFolder` (or :class:`Manifest`) it was
        opened as: then the manifest is not read again. A local folder is read in place;
        the shards at a URL through a local cache (``cache_dir``), which downloads each
        once per node, checks it against the manifest's SHA-256 before it is read and
        prefetches the next ones in this epoch's order, each worker its own batches'.
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
    shuffle : {"global", "blocks"} or bool
        The epoch's order (:class:`~stexture.loader.sampler.EpochSampler`); both change every
        epoch, keep exact epochs across ranks and workers and resume from
        :meth:`CueConflictLoader.state_dict`.
        ``"global"`` (or ``True``): one permutation of all samples; every rank reads from
        every shard all the time. Use it when the shards are local or the cache holds them
        all: the best shuffle. ``"blocks"``: the shards permuted, each rank given ``~1/W`` of
        them and reading ``shuffle_window`` shards at a time, their samples shuffled
        together. Use it when the shards come from a URL through a cache smaller than the
        data (``cache_limit``): a rank needs only its current and next block (the cache
        prefetches them, :meth:`~stexture.loader.sampler.EpochSampler.upcoming_shards`); the
        price is a coarser shuffle (samples of one shard stay within a block of the epoch,
        and a batch mixes ``shuffle_window`` shards). ``False``: the manifest's order.
    shuffle_window : int, optional
        ``shuffle="blocks"`` only: shards per block (default 8). Larger mixes better and
        needs about ``2 * shuffle_window`` shards per rank in the cache.
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
    storage_options : dict, optional
        fsspec options for a URL ``source``: for S3 ``{"client_kwargs": {"endpoint_url":
        ...}, "key": ..., "secret": ...}``. The environment applies as well
        (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
    cache_dir : str or Path, optional
        Where the shards of a URL ``source`` are cached (on a local file system); by
        default :func:`~stexture.shards.cache.default_cache_dir` (``$STEXTURE_CACHE_DIR``,
        else ``~/.cache/stexture/shards`` on Linux).
    cache_limit : int, optional
        The most bytes the cached shards of a URL ``source`` may take on this node (shards
        no process reads soon are evicted); no limit by default. It must hold the shards
        the workers read at once and their prefetch: with the global shuffle a smaller
        cache than the split fetches shards again and again (correct, but slow).
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
    StorageUnreachableError, ShardFetchError, CacheFolderError
        For a URL ``source`` (:mod:`stexture.shards.cache`): the storage cannot be
        reached; a shard could not be fetched after the retries (the error names it); the
        cache folder cannot be written or is full.
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
    shuffle, shuffle_window = check_shuffle(shuffle, shuffle_window)
    shuffle = _shuffle_from(shuffle, shuffle_buffer)
    check_min_scale(min_scale)
    check_samples_per_epoch(samples_per_epoch)  # its passes over the data: once located
    normalize = Normalize(mean, std)
    device = None if mix_device is None else _mix_device(mix_device)
    manifest, remote = open_source(source, storage_options, cache_dir, cache_limit)
    counters = Counters(num_workers)
    samples = locate_split(manifest, split, keys, remote=remote)
    sampler = EpochSampler(len(samples), batch_size=batch_size, seed=seed, shuffle=shuffle,
                           shuffle_window=shuffle_window, shards=samples.sample_paths(),
                           drop_last=drop_last, samples_per_epoch=samples_per_epoch,
                           rank=rank, world_size=world_size)
    if len(sampler) == 0:
        raise ValueError(f"samples_per_epoch={samples_per_epoch} is less than one batch of "
                         f"{batch_size} per rank ({sampler.num_replicas} rank(s))")
    if labels == "soft" and remote is not None:
        raise ValueError(f"labels='soft' reads a label set beside a local shard folder; "
                         f"{manifest.root} is a URL (copy the folder with its labels-* "
                         "sidecar to local disk to train on stored labels)")
    soft = (SoftLabelReader(read_label_set(manifest, label_set), split,
                            samples.keys) if labels == "soft" else None)
    if remote is None:
        dataset = TrainSet(samples, image_size=image_size, min_scale=min_scale, seed=seed,
                           counters=counters, soft=soft)
    else:  # read through the shard cache, prefetched in each process's order
        remote.learn_sizes(samples)
        dataset = CachedTrainSet(samples, remote=remote, sampler=sampler,
                                 image_size=image_size, min_scale=min_scale, seed=seed,
                                 counters=counters, soft=soft)
    collate = TrainCollate(CueConflictMix(manifest.num_classes, k, mix), normalize, seed=seed,
                           image_size=image_size, with_info=with_info,
                           mix_in_worker=device is None, counters=counters, view=view)
    return CueConflictLoader(dataset, sampler=sampler, collate=collate, batch_size=batch_size,
                             drop_last=drop_last, mix_device=device, counters=counters,
                             num_workers=num_workers, **dataloader_options)





def _check_labels(labels: str, view: str) -> None:
    """``ValueError`` for an unknown ``labels``, or soft labels on a layer view (the stored
    labels are of the image's crops, for a model of the image)."""
    if labels not in LABEL_KINDS:
        raise ValueError(f"unknown labels {labels!r}; expected one of {', '.join(LABEL_KINDS)}")
    if labels == "soft" and view != "image":
        raise ValueError(f"labels='soft' trains a model of the image; view={view!r} shows one "
                         "layer (use labels='hard')")


def _shuffle_from(shuffle: bool | str, shuffle_buffer: int | None) -> bool | str:
    if shuffle_buffer is None:
        return shuffle
    _check_sizes(shuffle_buffer=shuffle_buffer, least=0)
    warnings.warn("shuffle_buffer is deprecated: the loader draws a global permutation every "
                  "epoch; shuffle_buffer=0 is shuffle=False, other values are ignored",
                  DeprecationWarning, stacklevel=3)
    return shuffle if shuffle_buffer > 0 else False


def _mix_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CudaUnavailableError(
            f"mix_device={str(device)!r} but torch sees no CUDA GPU; use mix_device=None to "
            "mix in the workers")
    return device
