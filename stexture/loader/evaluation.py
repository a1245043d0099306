"""The evaluation side: a fixed, centre-cropped set, clean or cue-conflict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..mixing import MixPlan, compose_normalized, soft_targets
from .batch import Counters, Normalize, layer_view
from .crops import center_crop_box, crop_layers
from .index import Located, SampleReader, decode_image, decode_structure_of

__all__ = ["EVAL_KINDS", "EvalCollate", "EvalSet", "conflict_donors"]

EVAL_KINDS = ("clean", "conflict")


def conflict_donors(classes: np.ndarray, seed: int) -> np.ndarray:
    """For every sample, a uniformly drawn sample of another class (fixed by ``seed``)."""
    order = np.argsort(classes, kind="stable")
    sorted_cls = classes[order]
    start = np.searchsorted(sorted_cls, classes, side="left")
    own = np.searchsorted(sorted_cls, classes, side="right") - start
    others = len(classes) - own
    if (others == 0).any():
        raise ValueError("a cue-conflict set needs samples of at least two classes")
    draw = (np.random.default_rng(seed).random(len(classes)) * others).astype(np.int64)
    # draws past the start of the sample's own class block skip over that block
    return order[np.where(draw < start, draw, draw + own)]


class EvalSet(torch.utils.data.Dataset):
    """Item ``i`` pairs sample ``i``'s structure with the texture of ``donors[i]`` (itself for
    the clean set, whose structure layer is then not needed: its texture is 0)."""

    def __init__(self, samples: Sequence[Located], donors: np.ndarray, image_size: int,
                 counters: Counters, with_structure: bool) -> None:
        self.samples = samples
        self.donors = donors
        self.image_size = image_size
        self.counters = counters
        self.with_structure = with_structure
        self.reader = SampleReader()

    def __len__(self) -> int:
        return len(self.samples)

    def _layers(self, sample: Located) -> tuple[np.ndarray, np.ndarray]:
        raw = self.reader.raw(sample)
        image, field = decode_image(raw)
        structure = (decode_structure_of(raw[field], field, sample.key, image.shape)
                     if self.with_structure else image)
        box = center_crop_box(*image.shape[:2])
        image, structure = crop_layers((image, structure), box, self.image_size, flip=False)
        return image, structure

    def __getitem__(self, i: int) -> tuple | None:
        a, b = self.samples[i], self.samples[int(self.donors[i])]
        try:
            if a.cls < 0 or b.cls < 0:
                raise ValueError("the class field cannot be decoded")
            image_a, structure_a = self._layers(a)
            image_b, structure_b = (image_a, structure_a) if b is a else self._layers(b)
        except ValueError as exc:
            self.counters.skip(f"{a.path} (sample {a.key!r} or its donor)", exc)
            return None
        return image_a, structure_a, image_b, structure_b, a.cls, b.cls, a.key, b.key


class EvalCollate:
    """``(x, y, info)`` of a list of :class:`EvalSet` items, composed by the same kernel as
    the training batches (every row a composite of the set, or every row an original)."""

    def __init__(self, num_classes: int, k: float, normalize: Normalize,
                 is_conflict: bool, image_size: int, view: str = "image") -> None:
        self.view = view
        self.num_classes = num_classes
        self.image_size = image_size
        self.k = k
        self.normalize = normalize
        self.is_conflict = is_conflict

    def __call__(self, items: list[tuple | None]) -> tuple:
        items = [it for it in items if it is not None]
        n = len(items)
        structure_cls = torch.tensor([it[4] for it in items], dtype=torch.int64)
        texture_cls = torch.tensor([it[5] for it in items], dtype=torch.int64)
        info: dict[str, Any] = {
            "structure_cls": structure_cls,
            "texture_cls": texture_cls,
            "is_conflict": torch.full((n,), self.is_conflict),
            "key": [it[6] for it in items],
            "texture_key": [it[7] for it in items],
        }
        y = soft_targets(structure_cls, texture_cls, self.k, self.num_classes)
        if not n:  # every sample of the batch was corrupt
            return torch.empty(0, 3, self.image_size, self.image_size), y, info
        # rows 0..n-1 are the samples, n..2n-1 their donors
        images = np.stack([it[0] for it in items] + [it[2] for it in items])
        structures = np.stack([it[1] for it in items] + [it[3] for it in items])
        images = layer_view(images, structures, self.view)
        plan = MixPlan(torch.arange(n), torch.arange(n) + n if self.is_conflict
                       else torch.arange(n), torch.full((n,), self.is_conflict))
        x = compose_normalized(images, structures, plan, scale=self.normalize.scale,
                               shift=self.normalize.shift)
        return torch.from_numpy(x), y, info
