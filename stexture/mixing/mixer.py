"""The mixer: :class:`CueConflictMix`, a batch's composites and soft labels in one call."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Any

import torch

from .composition import MixPlan, compose, soft_targets
from .settings import MixConfig, check_unit_interval

__all__ = ["CueConflictMix"]


def _check_batch(structure: torch.Tensor, texture: torch.Tensor, labels: torch.Tensor,
                 num_classes: int) -> None:
    if structure.ndim != 4 or structure.shape[1] != 3:
        raise ValueError(f"structure must be B x 3 x H x W, got shape {tuple(structure.shape)}")
    if texture.shape != structure.shape:
        raise ValueError(
            f"texture shape {tuple(texture.shape)} differs from structure "
            f"shape {tuple(structure.shape)}"
        )
    if not (structure.is_floating_point() and texture.is_floating_point()):
        raise ValueError(
            f"structure and texture must be float tensors, got {structure.dtype} and "
            f"{texture.dtype} (divide uint8 layers by 255)"
        )
    if labels.shape != (structure.shape[0],) or labels.dtype != torch.int64:
        raise ValueError(
            f"labels must be int64 of shape ({structure.shape[0]},), got {labels.dtype} "
            f"of shape {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, "
            f"{int(labels.max())}]"
        )



class CueConflictMix:
    """Mix a batch with cue-conflict composites and soft labels.

    Parameters
    ----------
    num_classes : int
        Number of classes ``C`` (at least 2).
    k : float in [0, 1]
        Weight of the structure class in a cue-conflict target (1 - k goes to the texture
        class).
    config : MixConfig, optional
        How the batch is mixed (the defaults of :class:`MixConfig` when not given).
    generator : torch.Generator, optional
        CPU generator for every random draw; the draws do not depend on the tensors' device,
        so a seeded generator gives the same batches on CPU and CUDA. ``None`` uses torch's
        global RNG.
    **settings
        Fields of :class:`MixConfig` (``p_conflict``, ``mode``, ...), which replace those of
        ``config``: ``CueConflictMix(10, 0.8, mode="add")``.

    Attributes
    ----------
    config : MixConfig
        The settings; each is also an attribute of its own (``mix.p_conflict``).
    conflict_pairs : int
        Composites made so far.
    same_class_pairs : int
        Of those, how many got a donor of their own class (one-hot targets).

    Examples
    --------
    >>> mix = CueConflictMix(num_classes=10, k=0.8)
    >>> x, y = mix(structure, texture, labels)  # doctest: +SKIP
    >>> loss = torch.nn.functional.cross_entropy(model(x), y)  # doctest: +SKIP
    """

    def __init__(
        self,
        num_classes: int,
        k: float,
        config: MixConfig | None = None,
        generator: torch.Generator | None = None,
        **settings: Any,
    ) -> None:
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
        config = config if config is not None else MixConfig()
        self.config = replace(config, **settings) if settings else config
        self.num_classes = int(num_classes)
        self.k = check_unit_interval("k", k)
        for setting in fields(MixConfig):
            setattr(self, setting.name, getattr(self.config, setting.name))
        self.generator = generator
        self.conflict_pairs = 0
        self.same_class_pairs = 0

    def __repr__(self) -> str:
        settings = ", ".join(f"{setting.name}={getattr(self.config, setting.name)!r}"
                             for setting in fields(MixConfig))
        return f"{type(self).__name__}(num_classes={self.num_classes}, k={self.k}, {settings})"

    def _conflict_count(self, batch: int) -> int:
        expected = round(self.p_conflict * batch, 9)  # 0.3 * 10 is 3.0000000000000004
        count = math.floor(expected)
        if expected > count and torch.rand((), generator=self.generator).item() < expected - count:
            count += 1
        return count

    def _draw_donors(self, labels: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """For each chosen sample, the batch index of its texture donor (never itself when the
        batch has another sample), by the preferences documented under ``pairing``."""
        batch = labels.shape[0]
        others = torch.ones(len(chosen), batch, dtype=torch.bool)
        others[torch.arange(len(chosen)), chosen] = batch == 1
        in_conflict = torch.zeros(batch, dtype=torch.bool)
        in_conflict[chosen] = True
        preferences = [others & in_conflict, others]
        if self.pairing == "different-class":
            differs = labels[chosen][:, None] != labels[None, :]
            preferences = [differs & in_conflict, differs, *preferences]
        # each row takes the first preference that has a candidate
        allowed = preferences[-1]
        for candidates in reversed(preferences[:-1]):
            allowed = torch.where(candidates.any(dim=1, keepdim=True), candidates, allowed)
        scores = torch.rand(len(chosen), batch, generator=self.generator)
        return torch.where(allowed, scores, -1.0).argmax(dim=1)

    def _draw_tiles(self, rows: torch.Tensor, image_size: tuple[int, int] | None
                    ) -> torch.Tensor | None:
        if self.texture_layout == "aligned":
            return None
        if image_size is None:
            raise ValueError("texture_layout='shuffled' needs the image size to draw tiles")
        count = (image_size[0] // self.tile_size) * (image_size[1] // self.tile_size)
        if count < 2:
            raise ValueError(f"tile_size={self.tile_size} leaves fewer than 2 tiles in a "
                             f"{image_size[0]}x{image_size[1]} image")
        tiles = torch.arange(count).repeat(len(rows), 1)
        for r in torch.nonzero(rows).flatten().tolist():
            tiles[r] = torch.randperm(count, generator=self.generator)
        return tiles

    def draw(self, labels: torch.Tensor, image_size: tuple[int, int] | None = None) -> MixPlan:
        """The random part of mixing a batch with these ``labels``, on the CPU.

        A loader draws the plan before decoding and decodes the structure layer only of the
        samples in :meth:`MixPlan.needs_structure`, then composes. ``image_size`` (height,
        width) is needed by the shuffled layout.
        """
        labels = labels.cpu()
        batch = labels.shape[0]
        count = self._conflict_count(batch)
        chosen = torch.randperm(batch, generator=self.generator)[:count]
        if self.mode == "add":
            chosen = chosen.sort().values  # composites follow the originals in batch order
        donors = self._draw_donors(labels, chosen) if count else chosen
        if self.mode == "replace":
            structure_index = torch.arange(batch)
            texture_index = torch.arange(batch)
            texture_index[chosen] = donors
            is_conflict = torch.zeros(batch, dtype=torch.bool)
            is_conflict[chosen] = True
        else:
            structure_index = torch.cat([torch.arange(batch), chosen])
            texture_index = torch.cat([torch.arange(batch), donors])
            is_conflict = torch.arange(batch + count) >= batch
        return MixPlan(structure_index, texture_index, is_conflict,
                       self._draw_tiles(is_conflict, image_size), self.tile_size)

    def __call__(
        self,
        structure: torch.Tensor,
        texture: torch.Tensor,
        labels: torch.Tensor,
        return_info: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict]:
        """Mix a batch.

        Parameters
        ----------
        structure : float tensor B x 3 x H x W in [0, 1]
        texture : float tensor B x 3 x H x W in [-1, 1], same device
        labels : int64 tensor B, the class of each sample
        return_info : bool
            Also return ``info``: ``structure_cls``, ``texture_cls`` (int64 R),
            ``is_conflict`` (bool R), ``structure_index`` and ``texture_index`` (int64 R,
            the samples of the batch each row comes from).

        Returns
        -------
        x : float tensor R x 3 x H x W in [0, 1] (R = B in "replace" mode)
        y : float32 tensor R x C, rows summing to 1
        info : dict, only with ``return_info=True``
        """
        plan = self.draw(labels, tuple(structure.shape[2:]))
        return self.apply(structure, texture, labels, plan, return_info)

    def apply(
        self,
        structure: torch.Tensor,
        texture: torch.Tensor,
        labels: torch.Tensor,
        plan: MixPlan,
        return_info: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict]:
        """The deterministic part of a call: compose and label the batch for a plan from
        :meth:`draw`. Arguments and results as in :meth:`__call__`."""
        _check_batch(structure, texture, labels, self.num_classes)
        x = compose(structure, texture, plan, alpha=self.alpha, texture_scale=self.texture_scale)
        y, info = self.targets(labels, plan)
        return (x, y, info) if return_info else (x, y)

    def targets(self, labels: torch.Tensor, plan: MixPlan
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Soft targets and ``info`` of a planned batch (on the labels' device), counting the
        pairs: the labelling half of :meth:`apply`, for callers that compose themselves."""
        device = labels.device
        structure_index = plan.structure_index.to(device)
        texture_index = plan.texture_index.to(device)
        is_conflict = plan.is_conflict.to(device)
        structure_cls, texture_cls = labels[structure_index], labels[texture_index]
        self.conflict_pairs += int(is_conflict.sum())
        self.same_class_pairs += int((texture_cls == structure_cls)[is_conflict].sum())
        y = soft_targets(structure_cls, texture_cls, self.k, self.num_classes,
                         self.label_smoothing)
        info = {
            "structure_cls": structure_cls,
            "texture_cls": texture_cls,
            "is_conflict": is_conflict,
            "structure_index": structure_index,
            "texture_index": texture_index,
        }
        return y, info
