"""The training side: a map-style dataset of cropped samples and the collate that mixes a
batch of them into cue-conflict samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..imageio import JPEG_REDUCTIONS, decode_jpeg_reduced, decode_jpeg_whole, jpeg_size
from ..mixing import CueConflictMix, MixPlan, compose, compose_normalized
from ..shards.format import DEFAULT_MAX_PIXELS, structure_field
from ..shards.labels import SoftLabelReader, mix_soft_labels
from .batch import (
    CONFLICT_PAIRS,
    SAME_CLASS_PAIRS,
    Counters,
    Normalize,
    channels_last,
    layer_view,
    worker_batch,
)
from .crops import crop_layers, random_resized_crop_box
from .index import Located, SampleReader, decode_image, decode_structure_of
from .sampler import Ticket

__all__ = ["PlannedBatch", "TrainCollate", "TrainSet", "compose_on_device", "seed_for"]


def seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class Item:
    """A sample of a training batch: the image already cropped, the structure decoded (with
    the same crop) only when the batch's mixing plan needs it."""

    ticket: Ticket
    key: str
    cls: int
    image: np.ndarray | None  # None: the sample could not be decoded
    shape: tuple[int, ...] = ()
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    flip: bool = False
    structure_field: str = ""
    structure_data: bytes = b""
    structure: np.ndarray | None = None
    soft: np.ndarray | None = None  # 2 x C: s and t pooled over the crop (labels="soft")
    reduction: int = 1  # > 1: the box on that grid, each layer box-averaged by it first


class TrainSet(torch.utils.data.Dataset):
    """Item ``ticket`` is sample ``ticket.index`` with the crop and flip drawn from
    ``(seed, ticket.epoch, ticket.slot)``: the same pixels in any worker.

    A stored JPEG whose crop is at least twice ``image_size`` on each side is decoded at a
    reduced DCT scale (:func:`reduction_for`, :func:`crop_reduced`) unless
    ``reduced_decode`` is set to ``False`` (what ``benchmarks/bench_loader.py`` compares).
    """

    #: decode a JPEG at 1/2, 1/4 or 1/8 scale when its crop allows (see the class docstring)
    reduced_decode = True

    def __init__(self, samples: Sequence[Located], *, image_size: int, min_scale: float,
                 seed: int, counters: Counters, soft: SoftLabelReader | None = None) -> None:
        self.samples = samples
        self.soft = soft
        self.image_size = image_size
        self.min_scale = min_scale
        self.seed = seed
        self.counters = counters
        self.reader = SampleReader()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, ticket: Ticket) -> Item:
        sample = self.samples[ticket.index]
        rng = np.random.default_rng([self.seed, ticket.epoch, ticket.slot])
        try:
            if sample.cls < 0:
                raise ValueError(f"sample {sample.key!r}: the class field cannot be decoded")
            raw = self.reader.raw(sample)
            shape = jpeg_size(raw["jpg"]) if "jpg" in raw else None
            if shape is None:  # not a plain JPEG: decoded whole, then the box drawn
                image, field = decode_image(raw)
                shape = image.shape
            box = random_resized_crop_box(*shape[:2], rng, self.min_scale)
            flip = bool(rng.integers(2))
            factor = (reduction_for(box, self.image_size)
                      if self.reduced_decode and image_is_pending(shape) else 1)
            if factor > 1:
                box = snap_box(box, factor)
                image, field = _decode_reduced(raw, factor), structure_field(raw)
                shape = (*shape, 3)
            elif image_is_pending(shape):  # a colour JPEG whose header was read above
                image, field = _decode_whole(raw), structure_field(raw)
                shape = image.shape
        except ValueError as exc:
            self.counters.skip(sample.path, exc)
            return Item(ticket, sample.key, sample.cls, None)
        cropped = crop_reduced(image, box, factor, self.image_size, flip, reduced=True)
        soft = None
        if self.soft is not None:  # pooled over the box: the flip does not change it
            try:
                soft = self.soft.pooled(ticket.index, box, shape)
            except ValueError as exc:
                self.counters.skip(sample.path, exc)
                return Item(ticket, sample.key, sample.cls, None)
        return Item(ticket, sample.key, sample.cls, cropped, shape, box, flip, field,
                    raw[field], soft=soft, reduction=factor)


def image_is_pending(shape: tuple[int, ...]) -> bool:
    """Whether ``shape`` is a JPEG header's ``(height, width)`` (the image not decoded yet)
    rather than a decoded image's ``(height, width, 3)``."""
    return len(shape) == 2


def reduction_for(box: tuple[int, int, int, int], size: int) -> int:
    """The largest DCT reduction (1, or one of :data:`~stexture.imageio.JPEG_REDUCTIONS`)
    that leaves the crop ``box`` at least ``size`` pixels on each side, so that the resize
    to ``size`` still only shrinks (and area-averages)."""
    _, _, h, w = box
    fitting = [f for f in JPEG_REDUCTIONS if min(h, w) >= f * size]
    return max(fitting, default=1)


def snap_box(box: tuple[int, int, int, int], factor: int) -> tuple[int, int, int, int]:
    """``box`` on the grid of ``factor``: each of top, left, height, width rounded down to a
    multiple of it (the box moves and shrinks by less than ``factor`` pixels; every layer is
    cropped by the snapped box, so image and structure stay aligned)."""
    return tuple(v - v % factor for v in box)  # type: ignore[return-value]


def crop_reduced(layer: np.ndarray, box: tuple[int, int, int, int], factor: int, size: int,
                 flip: bool, *, reduced: bool = False) -> np.ndarray:
    """:func:`~.crops.crop_layers` of one layer, through a ``factor``-times smaller layer:
    ``box`` (on the grid of ``factor``) of the full layer, box-averaged ``factor x factor``
    (``reduced=False``), or the same box of a layer already decoded at ``1/factor``
    (``reduced=True``, the JPEG's scaled DCT, which approximates that average), then
    area-resized to ``size``. ``factor`` 1 is :func:`~.crops.crop_layers` itself."""
    if factor == 1:
        return crop_layers((layer,), box, size, flip)[0]
    top, left, h, w = box
    if reduced:
        small = layer[top // factor:(top + h) // factor, left // factor:(left + w) // factor]
    else:  # an integer factor: OpenCV's exact block average
        small = cv2.resize(layer[top:top + h, left:left + w], (w // factor, h // factor),
                           interpolation=cv2.INTER_AREA)
    return crop_layers((small,), (0, 0, h // factor, w // factor), size, flip)[0]


def _decode_reduced(raw: dict, factor: int) -> np.ndarray:
    """The sample's JPEG at ``1/factor``; ``ValueError`` naming the sample as
    :func:`~.index.decode_image` does."""
    return _decode_jpeg(raw, lambda data: decode_jpeg_reduced(data, factor, DEFAULT_MAX_PIXELS))


def _decode_whole(raw: dict) -> np.ndarray:
    """The sample's colour JPEG decoded whole, the pixels of :func:`~.index.decode_image`
    without Pillow's second read of a header :func:`~stexture.imageio.jpeg_size` read."""
    return _decode_jpeg(raw, lambda data: decode_jpeg_whole(data, DEFAULT_MAX_PIXELS))


def _decode_jpeg(raw: dict, decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
    key = raw.get("__key__", "<no key>")
    if "cls" not in raw:
        raise ValueError(f"sample {key!r} lacks a field (has {sorted(raw)})")
    try:
        return decode(raw["jpg"])
    except ValueError as exc:
        raise ValueError(f"sample {key!r} cannot be decoded: {exc}") from exc


class TrainCollate:
    """Mixes a list of :class:`Item` into ``(x, y)`` or ``(x, y, info)``.

    The plan (which samples give structure and texture) is drawn from a generator seeded by
    the batch's first ticket, before any structure layer is decoded; only the layers the plan
    needs are decoded. A sample that cannot be decoded is dropped (the batch shrinks) with a
    :class:`~stexture.loader.CorruptSampleWarning`. With ``mix_in_worker=False`` it returns
    the planned uint8 batch instead, for the loader to compose on its ``mix_device``.
    """

    def __init__(self, mix: CueConflictMix, normalize: Normalize, *, seed: int,
                 image_size: int, with_info: bool, mix_in_worker: bool,
                 counters: Counters, view: str = "image") -> None:
        self.mix = mix
        self.view = view
        self.normalize = normalize
        self.seed = seed
        self.image_size = image_size
        self.with_info = with_info
        self.mix_in_worker = mix_in_worker
        self.counters = counters

    def _add_structure(self, item: Item) -> bool:
        if item.structure is None:
            try:
                structure = decode_structure_of(item.structure_data, item.structure_field,
                                                item.key, item.shape)
            except ValueError as exc:
                self.counters.skip("a training shard", exc)
                return False
            item.structure = crop_reduced(structure, item.box, item.reduction,
                                          self.image_size, item.flip)
        return True

    def _planned(self, items: list[Item]) -> tuple[list[Item], MixPlan | None]:
        """Draw the plan and decode the structures it needs; a corrupt structure drops its
        sample and the plan is drawn again for the rest."""
        size = (self.image_size, self.image_size)
        while items:
            labels = torch.tensor([it.cls for it in items], dtype=torch.int64)
            plan = self.mix.draw(labels, size)
            needed = plan.needs_structure() if self.view == "image" else range(len(items))
            failed = {i for i in sorted(needed) if not self._add_structure(items[i])}
            if not failed:
                return items, plan
            items = [it for i, it in enumerate(items) if i not in failed]
        return items, None

    def __call__(self, batch: list[Item]) -> tuple:
        first = batch[0].ticket
        self.mix.generator = torch.Generator().manual_seed(
            seed_for(self.seed, first.epoch, first.slot))
        items, plan = self._planned([it for it in batch if it.image is not None])
        if plan is None:
            return self._empty()
        labels = torch.tensor([it.cls for it in items], dtype=torch.int64)
        keys = [it.key for it in items]
        soft = (torch.from_numpy(np.stack([it.soft for it in items]))
                if items[0].soft is not None else None)
        images = np.stack([it.image for it in items])
        # a sample whose structure is not needed stands in its image: texture 0, never used
        structures = np.stack([it.image if it.structure is None else it.structure
                               for it in items])
        images = layer_view(images, structures, self.view)
        if not self.mix_in_worker:
            return PlannedBatch(channels_last(images), channels_last(structures), labels,
                                plan, keys, soft)
        x = worker_batch((len(plan), images.shape[3], *images.shape[1:3]))
        compose_normalized(images, structures, plan, alpha=self.mix.alpha,
                           texture_scale=self.mix.texture_scale, scale=self.normalize.scale,
                           shift=self.normalize.shift, out=x.numpy())
        return self.finish(x, labels, plan, keys, soft)

    def finish(self, x: torch.Tensor, labels: torch.Tensor, plan: MixPlan,
               keys: list[str], soft: torch.Tensor | None = None) -> tuple:
        """``(x, y[, info])`` of a composed, normalised batch, counting its pairs; with
        ``soft`` (``B x 2 x C``: each sample's pooled ``s`` and ``t``), ``y`` mixes those
        (:func:`~stexture.shards.labels.mix_soft_labels`) instead of the one-hot classes."""
        y, info = self.mix.targets(labels, plan)
        if soft is not None:
            y = mix_soft_labels(soft[:, 0], soft[:, 1], info["structure_index"],
                                info["texture_index"], self.mix.k, self.mix.label_smoothing)
        conflict = info["is_conflict"]
        self.counters.add(CONFLICT_PAIRS, int(conflict.sum()))
        self.counters.add(SAME_CLASS_PAIRS,
                          int((info["structure_cls"] == info["texture_cls"])[conflict].sum()))
        if not self.with_info:
            return x, y
        info["key"] = [keys[j] for j in info["structure_index"].tolist()]
        info["texture_key"] = [keys[j] for j in info["texture_index"].tolist()]
        return x, y, info

    def _empty(self) -> tuple:
        size = self.image_size
        x = torch.empty(0, 3, size, size)
        y = torch.empty(0, self.mix.num_classes)
        if not self.with_info:
            return x, y
        empty = torch.empty(0, dtype=torch.int64)
        return x, y, {"structure_cls": empty, "texture_cls": empty,
                      "is_conflict": torch.empty(0, dtype=torch.bool),
                      "structure_index": empty, "texture_index": empty,
                      "key": [], "texture_key": []}


@dataclass
class PlannedBatch:
    """A batch the workers planned and the main process composes on ``mix_device``."""

    image: torch.Tensor  # uint8 B x 3 x H x W, channels last in memory (the workers' HWC)
    structure: torch.Tensor  # uint8 B x 3 x H x W, likewise
    labels: torch.Tensor
    plan: MixPlan
    keys: list[str]
    soft: torch.Tensor | None = None  # float32 B x 2 x C (labels="soft")

    def pin_memory(self) -> PlannedBatch:
        return PlannedBatch(self.image.pin_memory(), self.structure.pin_memory(), self.labels,
                            self.plan, self.keys, self.soft)


def compose_on_device(batch: PlannedBatch, collate: TrainCollate, device: torch.device
                      ) -> tuple:
    """A planned batch composed and normalised on ``device``: on the CPU by the workers' fused
    kernel (:func:`~stexture.mixing.compose_normalized`, one pass, the same values as
    composing in the workers), elsewhere by the float path of
    :func:`~stexture.mixing.compose`."""
    if device.type == "cpu":
        return _compose_on_cpu(batch, collate)
    return compose_float(batch, collate, device)


def compose_float(batch: PlannedBatch, collate: TrainCollate, device: torch.device) -> tuple:
    """The float path of :func:`~stexture.mixing.compose` for a planned batch, on ``device``
    (any memory layout of the layers)."""
    image = batch.image.to(device, non_blocking=True).float() / 255.0
    structure = batch.structure.to(device, non_blocking=True).float() / 255.0
    mix = collate.mix
    x = compose(structure, image - structure, batch.plan, alpha=mix.alpha,
                texture_scale=mix.texture_scale)
    soft = None if batch.soft is None else batch.soft.to(device)
    return collate.finish(collate.normalize.unit(x), batch.labels.to(device), batch.plan,
                          batch.keys, soft)


def _compose_on_cpu(batch: PlannedBatch, collate: TrainCollate) -> tuple:
    # the float path's five passes over float32 batches cost the main process, which shares
    # the cores with the workers, about as much as a worker's decoding (benchmarks/README.md)
    mix, normalize = collate.mix, collate.normalize
    x = torch.from_numpy(compose_normalized(
        batch.image.permute(0, 2, 3, 1).numpy(), batch.structure.permute(0, 2, 3, 1).numpy(),
        batch.plan, alpha=mix.alpha, texture_scale=mix.texture_scale, scale=normalize.scale,
        shift=normalize.shift))
    return collate.finish(x, batch.labels, batch.plan, batch.keys, batch.soft)
